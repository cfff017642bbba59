"""The PPO family's couplings to TRL internals (checked against TRL 1.16 by ``tests/test_trl_compat.py``).

``PPOTrainer`` subclasses ``trl.GRPOTrainer`` and overrides four of its private methods, with the signatures and
return values listed in ``grpo_private_methods`` below; it also relies on:

* ``num_generations_check``: ``GRPOConfig.__post_init__`` rejects ``num_generations < 2`` (GRPO's group baseline);
  PPO has a value baseline and works with one completion per prompt, so :class:`AtLeastTwo` passes that one
  comparison while every divisibility check still sees 1;
* ``rollout_buffer``: ``GRPOTrainer._prepare_inputs`` generates a new rollout when
  ``self._step % (steps_per_generation · num_iterations) == 0`` or ``self._buffered_inputs is None``, and
  ``training_step`` increments ``self._step``; PPO's early stopping skips a step the same way
  (:func:`starts_rollout`, :func:`skip_rollout_step`);
* ``vllm_param_iterator``: ``trl.generation.vllm_generation.VLLMGeneration._iter_named_params`` yields the
  ``(name, parameter)`` pairs pushed to vLLM; :func:`exclude_params_from_vllm` wraps it so the value head's
  parameters are not pushed;
* ``grpo_group_metrics``: ``GRPOTrainer._generate_and_score_completions`` appends to ``self._metrics[mode]``
  (the ``trainer_metrics`` coupling) ``frac_reward_zero_std``, the share of completions whose group's reward std
  is 0, which :func:`drop_group_metrics` removes when there is one completion per prompt (it is then always 1);
  and ``reward_std`` and ``rewards/<name>/std`` as the std over the whole gathered batch (``nanstd(rewards)``,
  ``nanstd(rewards_per_func[:, i])``), which PPO keeps: were they ever computed per group, they would become
  meaningless too, and the check fails.
"""

from __future__ import annotations

from typing import Any

from trl_ext.common._trl_compat import Coupling, TRLCouplingError, metrics_of, require_params, require_source

__all__ = [
    "COUPLINGS",
    "GROUP_METRICS",
    "AtLeastTwo",
    "drop_group_metrics",
    "exclude_params_from_vllm",
    "skip_rollout_step",
    "starts_rollout",
]

# GRPO's metrics of a group of completions of one prompt: constant with one completion per prompt.
GROUP_METRICS = ("frac_reward_zero_std",)


class AtLeastTwo(int):
    """An int that reports ``< 2`` as False: lets ``num_generations=1`` through ``GRPOConfig.__post_init__``."""

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return False if other == 2 else int(self) < other  # type: ignore[operator]


def starts_rollout(trainer: Any) -> bool:
    """Whether GRPO's next ``_prepare_inputs`` call generates a new rollout."""
    generate_every = trainer.args.steps_per_generation * trainer.num_iterations
    return trainer._step % generate_every == 0 or trainer._buffered_inputs is None


def skip_rollout_step(trainer: Any) -> None:
    """Advance GRPO's step counter for a training step that is skipped (no forward, no backward)."""
    trainer._step += 1


def exclude_params_from_vllm(generation: Any, prefix: str) -> None:
    """Wrap a TRL ``VLLMGeneration`` so that weight syncs skip the parameters named ``prefix*`` (or ``*.prefix*``).

    The underlying iteration still visits every parameter (gathers under ZeRO-3 are collective); only those names
    are not yielded to vLLM, whose model has no such weights.
    """
    original = generation._iter_named_params

    def _iter_named_params():
        for name, param in original():
            if not (name.startswith(prefix) or f".{prefix}" in name):
                yield name, param

    generation._iter_named_params = _iter_named_params


def drop_group_metrics(trainer: Any, mode: str) -> None:
    """Remove :data:`GROUP_METRICS` from the host's metrics of ``mode`` (``"train"``/``"eval"``), so that its next
    ``log()`` does not report them (GRPO appends them once per rollout; ``log()`` clears the metrics)."""
    metrics = metrics_of(trainer, mode)
    for name in GROUP_METRICS:
        metrics.pop(name, None)


def _check_num_generations() -> None:
    from trl import GRPOConfig

    require_source("num_generations_check", GRPOConfig.__post_init__, (r"num_generations\w*\s*<\s*2",))


def _check_rollout_buffer() -> None:
    from trl import GRPOTrainer

    require_source(
        "rollout_buffer",
        GRPOTrainer._prepare_inputs,
        (r"self\._step\s*%\s*generate_every", r"self\._buffered_inputs is None"),
    )
    require_source("rollout_buffer", GRPOTrainer.training_step, (r"self\._step\s*\+=\s*1",))


def _check_vllm_iterator() -> None:
    from trl.generation.vllm_generation import VLLMGeneration

    if not callable(getattr(VLLMGeneration, "_iter_named_params", None)):
        raise TRLCouplingError("vllm_param_iterator: VLLMGeneration._iter_named_params is gone")
    require_source("vllm_param_iterator", VLLMGeneration, (r"self\._iter_named_params\(\)",))


def _check_grpo_methods() -> None:
    from trl import GRPOTrainer

    name = "grpo_private_methods"
    require_params(name, GRPOTrainer._generate_and_score_completions, ("inputs",))
    require_params(
        name,
        GRPOTrainer._get_per_token_logps_and_entropies,
        ("model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy"),
    )
    require_params(name, GRPOTrainer._calculate_rewards, ("inputs", "prompts", "completions", "completion_ids_list"))
    require_params(name, GRPOTrainer._compute_loss, ("model", "inputs"))
    # the keys PPO reads from (and writes back into) the rollout dict
    require_source(
        name,
        GRPOTrainer._generate_and_score_completions,
        tuple(
            rf'"{key}"'
            for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_per_token_logps")
        )
        + (r"ref_per_token_logps", r"tool_mask"),
    )


def _check_group_metrics() -> None:
    from trl import GRPOTrainer

    require_source(
        "grpo_group_metrics",
        GRPOTrainer._generate_and_score_completions,
        (
            # dropped: the zero-std flag comes from the per-group std, repeated per completion
            r"std_rewards\s*=\s*nanstd\(rewards\.view\(-1,\s*num_generations\),\s*dim=1\)",
            r"is_std_zero\s*=\s*torch\.isclose\(std_rewards",
            r'self\._metrics\[mode\]\["frac_reward_zero_std"\]\.append\(is_std_zero',
            # kept: batch stds (over every gathered completion), meaningful with one completion per prompt
            r'self\._metrics\[mode\]\["reward_std"\]\.append\(nanstd\(rewards\)\.item\(\)\)',
            r"std_func_rewards\s*=\s*nanstd\(rewards_per_func\[:,\s*i\]\)",
            r'self\._metrics\[mode\]\[f"rewards/\{reward_func_name\}/std"\]\.append\(std_func_rewards\)',
        ),
    )


COUPLINGS = (
    Coupling("num_generations_check", "trl.GRPOConfig.__post_init__ (num_generations < 2)", _check_num_generations),
    Coupling(
        "rollout_buffer",
        "trl.GRPOTrainer._prepare_inputs / training_step (_step, _buffered_inputs)",
        _check_rollout_buffer,
    ),
    Coupling(
        "vllm_param_iterator", "trl.generation.vllm_generation.VLLMGeneration._iter_named_params", _check_vllm_iterator
    ),
    Coupling(
        "grpo_private_methods",
        "trl.GRPOTrainer._generate_and_score_completions / _get_per_token_logps_and_entropies / _calculate_rewards / "
        "_compute_loss",
        _check_grpo_methods,
    ),
    Coupling(
        "grpo_group_metrics",
        "trl.GRPOTrainer._generate_and_score_completions (frac_reward_zero_std, reward_std, rewards/<name>/std)",
        _check_group_metrics,
    ),
)
