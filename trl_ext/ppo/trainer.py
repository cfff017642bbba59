"""PPO with a learned value function, as a thin subclass of TRL's ``GRPOTrainer``.

Why GRPO (and not RLOO or a trainer of its own): GRPO is TRL's maintained online trainer. Its rollout path
(transformers or vLLM generation, tools, prompt and conversational datasets, reward functions and reward
models, reference log-probs with the PEFT adapter disabled, logging of completions) is exactly what PPO needs,
its loss takes per-token ``(B, T)`` advantages, its per-token importance ratio is PPO's, and extra batch-first
tensors returned by ``_generate_and_score_completions`` survive its split/shuffle. RLOO's ratio and KL are
sequence-level. So this class only:

* post-processes each rollout (``_generate_and_score_completions``): the rollout log-probs and values (from
  GRPO's own no-grad "old log-probs" forward when it runs one, else from one forward of its own), per-token
  rewards with the KL penalty, GAE, whitening, KL control;
* replaces the loss (``_compute_loss``): clipped surrogate + clipped value loss − entropy bonus;
* owns the value function (a head on the policy's last hidden states, captured by a forward hook on the
  backbone, or a separate value model), attached to the policy as ``model.v_head`` so that DDP, DeepSpeed and
  the optimizer see it, but saved *beside* the policy (``value_head.safetensors``) and never pushed to vLLM;
* skips the remaining PPO epochs of a rollout past ``1.5 · target_kl`` (early stopping);
* narrows the vocabulary tiles of TRL's fused LM head where they are folded with torch ops (CPU):
  ``lm_head_vocab_tile``, see :mod:`trl_ext.common.lm_head_tiles` (like every trl_ext trainer).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from trl import GRPOTrainer

from trl_ext.common._trl_compat import metrics_of
from trl_ext.common.checkpoint import ExtensionStateMixin, read_json, write_json
from trl_ext.common.errors import InputTypeError
from trl_ext.common.inputs import (
    PROMPT_FORMATS,
    PROMPT_HINT,
    check_dataset_columns,
    check_model_argument,
    checked_reward_function,
)
from trl_ext.common.lm_head_tiles import LMHeadTileMixin
from trl_ext.ppo._trl_compat import drop_group_metrics, exclude_params_from_vllm, skip_rollout_step, starts_rollout
from trl_ext.ppo.config import PPOConfig
from trl_ext.ppo.kl_control import make_kl_controller
from trl_ext.ppo.losses import (
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from trl_ext.ppo.value_head import (
    SeparateValueModel,
    ValueHead,
    has_value_head,
    load_value_function,
    save_value_function,
)

logger = logging.getLogger(__name__)

VALUE_ATTR = "v_head"
VALUE_PREFIX = f"{VALUE_ATTR}."
PPO_STATE_FILE = "ppo_state.json"


class PPOTrainer(ExtensionStateMixin, LMHeadTileMixin, GRPOTrainer):
    """PPO (docs/ppo.md) on TRL's online-RL machinery. See :class:`~trl_ext.ppo.config.PPOConfig`.

    Args:
        model: policy, as for ``GRPOTrainer`` (hub id, folder or ``PreTrainedModel``; with ``peft_config`` a LoRA
            is trained and the reference is the model with the adapter disabled).
        reward_funcs: as for ``GRPOTrainer``: callables ``f(prompts, completions, **columns) -> list[float]`` or
            reward models; the completion's score is their weighted sum.
        value_model: optional value function module: a :class:`ValueHead` (on the policy's hidden states) or a
            :class:`SeparateValueModel`. Default: built from ``args`` (a head, or a separate model when
            ``args.value_model_name_or_path`` is set), and loaded from ``args.value_init_path`` (or from the policy
            folder when it holds a saved value function).
        Every other argument is ``GRPOTrainer``'s.

    Raises:
        ValueError: a dataset without a ``prompt`` column (e.g. pre-tokenised ``input_ids``), a value head whose
            input size differs from the policy's hidden size, or early stopping together with DeepSpeed.
    """

    _tag_names = ["trl", "trl_ext", "ppo"]

    def __init__(
        self,
        model,
        reward_funcs,
        args: PPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        value_model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = PPOConfig(output_dir="ppo-output")
        if not isinstance(args, PPOConfig):
            raise InputTypeError(f"PPOTrainer needs a PPOConfig, got {type(args).__name__}")
        for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            _check_prompt_dataset(name, data)
        model = check_model_argument(model)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            **kwargs,
        )
        if args.target_kl is not None and self.is_deepspeed_enabled:
            raise ValueError(
                "target_kl (early stopping of PPO epochs) is not supported with DeepSpeed: skipped steps would still "
                "move DeepSpeed's optimizer state. Unset target_kl or use DDP."
            )
        self.reward_funcs = [checked_reward_function(f, n) for f, n in zip(self.reward_funcs, self.reward_func_names)]
        self.kl_ctl = make_kl_controller(args.kl_coef, args.adaptive_kl, args.kl_target, args.kl_horizon)
        self._ppo_stop_rollout = False
        self._captured_values: list[torch.Tensor] = []
        self._capture_values = False
        self._capture_rollout = False
        self._rollout_capture: tuple[torch.Tensor, torch.Tensor] | None = None
        self._last_rewards_per_func: torch.Tensor | None = None
        self._attach_value_function(model, value_model)
        self._register_hidden_state_hook()
        if getattr(self, "use_vllm", False) and hasattr(self, "vllm_generation"):
            exclude_params_from_vllm(self.vllm_generation, VALUE_PREFIX)

    # ------------------------------------------------------------------ value function plumbing

    @property
    def value_function(self) -> nn.Module:
        """The value head or separate value model (unwrapped)."""
        return getattr(self.accelerator.unwrap_model(self.model), VALUE_ATTR)

    def _policy_hidden_size(self) -> int:
        config = self.accelerator.unwrap_model(self.model).config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return int(config.hidden_size)

    def _attach_value_function(self, model_arg, value_model: nn.Module | None) -> None:
        policy = self.accelerator.unwrap_model(self.model)
        if hasattr(policy, VALUE_ATTR):
            raise ValueError(f"the policy already has an attribute {VALUE_ATTR!r}; PPOTrainer needs that name")
        hidden = self._policy_hidden_size()
        init_path = self.args.value_init_path
        if init_path is None and isinstance(model_arg, (str, os.PathLike)) and has_value_head(model_arg):
            init_path = str(model_arg)
        if value_model is None:
            if self.args.value_model_name_or_path is not None:
                from transformers import AutoModel

                value_model = SeparateValueModel(
                    AutoModel.from_pretrained(self.args.value_model_name_or_path), self.args.value_head_hidden_size
                )
            elif init_path is not None and (Path(init_path) / "value_model").is_dir():
                value_model = SeparateValueModel.from_pretrained(init_path)
                init_path = None
            else:
                with torch.random.fork_rng(devices=[]):  # the same initial head on every process
                    torch.manual_seed(self.args.seed)
                    value_model = ValueHead(hidden, self.args.value_head_hidden_size, self.args.detach_value_trunk)
        if isinstance(value_model, ValueHead) and value_model.input_size != hidden:
            raise ValueError(
                f"value head input size {value_model.input_size} does not match the policy's hidden size {hidden}"
            )
        if not isinstance(value_model, (ValueHead, SeparateValueModel)):
            raise TypeError(f"value_model must be a ValueHead or SeparateValueModel, got {type(value_model).__name__}")
        if init_path is not None and isinstance(value_model, ValueHead):
            load_value_function(value_model, init_path, hidden)
        emb = policy.get_input_embeddings().weight
        dtype = emb.dtype if emb.dtype.is_floating_point else torch.float32
        value_model.to(device=emb.device, dtype=dtype)
        value_model.requires_grad_(True)
        policy.add_module(VALUE_ATTR, value_model)

    def _register_hidden_state_hook(self) -> None:
        """Compute values inside the policy's forward, from a forward hook on its backbone.

        Running the value function inside the (DDP/DeepSpeed-wrapped) forward is what lets the wrappers see its
        parameters: DDP refuses parameters used outside ``forward`` ("Expected to mark a variable ready only
        once"), and ZeRO-3 gathers a submodule's weights only when it runs within the engine's forward. The hook
        is active only while :meth:`_logps_and_values` asks for values, so generation and the adapter-disabled
        reference forwards pass through untouched.
        """
        policy = self.accelerator.unwrap_model(self.model)
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        backbone = getattr(base, "base_model", None)
        if backbone is None or backbone is base:
            raise ValueError(f"cannot find the backbone of {type(base).__name__} to read its hidden states")

        def hook(_module, args, kwargs, output):
            if not self._capture_values:
                return
            value_fn = getattr(policy, VALUE_ATTR)
            if isinstance(value_fn, SeparateValueModel):
                input_ids = kwargs.get("input_ids", args[0] if args else None)
                self._captured_values.append(value_fn(input_ids, kwargs.get("attention_mask")))
            else:
                hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
                self._captured_values.append(value_fn(hidden))

        self._hidden_hook = backbone.register_forward_hook(hook, with_kwargs=True)

    @contextmanager
    def _capturing(self):
        self._captured_values = []
        self._capture_values = True
        try:
            yield
        finally:
            self._capture_values = False

    def _logps_and_values(self, model, input_ids, attention_mask, logits_to_keep, **kwargs):
        """Per-token log-probs (and entropies) of the completion and the values of the states that emit them.

        Position ``P − 1 + t`` of the full sequence (P prompt tokens) emits completion token ``t``, so the values are
        read at ``[-T − 1 : −1]``.
        """
        with self._capturing():
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, **kwargs
            )
        values = torch.cat(self._captured_values, dim=0)
        self._captured_values = []
        if values.shape[0] != input_ids.shape[0]:
            raise RuntimeError(f"computed values for {values.shape[0]} rows, expected {input_ids.shape[0]}")
        return logps, entropies, values[:, -logits_to_keep - 1 : -1].float()

    # ------------------------------------------------------------------ rollout

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):
        """GRPO's no-grad forwards of a rollout; the first one on the policy also captures the values.

        GRPO computes the rollout ("old") log-probs with a no-grad policy forward whenever the rollout is reused
        (``num_ppo_epochs`` or ``num_mini_batches`` > 1, or vLLM importance sampling). That forward is turned into
        :meth:`_logps_and_values`, so :meth:`_generate_and_score_completions` can take the log-probs and values of
        that single forward instead of running another one. Whether the captured forward really was the old-log-probs
        one (and not, say, the adapter-disabled reference forward of a PEFT policy) is checked afterwards by the
        identity of the returned tensor; otherwise the values are dropped and recomputed.
        """
        if self._capture_rollout and model is self.model and not torch.is_grad_enabled():
            self._capture_rollout = False
            logps, entropies, values = self._logps_and_values(model, *args, **kwargs)
            self._rollout_capture = (logps, values)
            return logps, entropies, None
        return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        """GRPO's rollout (generation, rewards, reference log-probs), then PPO's values, per-token rewards, GAE and
        KL control; GRPO's group metrics (``frac_reward_zero_std``) are dropped with one completion per prompt."""
        self._capture_rollout, self._rollout_capture = True, None
        self._rollout_rows = inputs  # for a rollout_func that needs the rows, not only the prompts (EpisodeRollout)
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            self._capture_rollout, self._rollout_rows = False, None
        captured, self._rollout_capture = self._rollout_capture, None
        mode = "train" if self.model.training else "eval"
        if (self.num_generations if mode == "train" else self.num_generations_eval) == 1:
            drop_group_metrics(self, mode)  # always 1 without groups (docs/ppo.md, "Logged metrics")
        if mode == "train":
            self._ppo_stop_rollout = False
        device = self.accelerator.device
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        batch = completion_ids.size(0)
        local = self._last_rewards_per_func[
            self.accelerator.process_index * batch : (self.accelerator.process_index + 1) * batch
        ]
        mask = completion_mask if "tool_mask" not in out else completion_mask * out["tool_mask"]
        scores = self._scores(local, completion_ids, mask)

        input_ids = torch.cat([out["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([out["prompt_mask"], completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        if captured is not None and out.get("old_per_token_logps") is captured[0]:
            logps, values = captured  # GRPO's old-log-probs forward, which computed the values too
        else:
            with torch.no_grad():
                logps, _, values = self._logps_and_values(
                    self.model,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    batch_size=self.args.per_device_train_batch_size,
                )
        ref = out.get("ref_per_token_logps")
        kl = kl_estimate(logps, ref, self.args.kl_estimator) if ref is not None else torch.zeros_like(logps)
        kl = kl * mask
        kl_coef = self.kl_ctl.value
        valid = mask.sum(dim=1) > 0  # masked-out rows (mask_truncated_completions) carry no reward
        rewards = torch.zeros_like(logps)
        if valid.any():
            rewards[valid] = token_rewards(scores[valid], kl[valid], mask[valid], kl_coef)
        if self.args.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        # environment/tool turns inside a completion are not episode ends: GAE runs over the policy's tokens
        bridge = "tool_mask" in out
        advantages, returns = gae(rewards, values * mask, mask, self.args.gamma, self.args.lam, bridge_gaps=bridge)
        if self.args.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        out["advantages"] = advantages
        out["returns"] = returns
        out["old_values"] = values
        out["old_per_token_logps"] = logps

        # metrics, averaged over all processes
        seq_kl = kl.sum(dim=1)
        non_score = (-kl_coef * kl).sum(dim=1)
        gathered = self.accelerator.gather(torch.stack([scores, seq_kl, non_score], dim=1).to(device))
        mean_score, mean_kl, mean_non_score = gathered.mean(dim=0).tolist()
        metrics = metrics_of(self, mode)
        metrics["ppo/objective/scores"].append(mean_score)
        metrics["ppo/objective/kl"].append(mean_kl)
        metrics["ppo/objective/non_score_reward"].append(mean_non_score)
        metrics["ppo/objective/rlhf_reward"].append(mean_score + mean_non_score)
        metrics["ppo/kl_coef"].append(kl_coef)
        metrics["ppo/value/mean"].append(self._gathered_masked_mean(values, mask))
        if mode == "train":
            self.kl_ctl.update(mean_kl, gathered.shape[0])
        return out

    def _scores(self, local_rewards: torch.Tensor, completion_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the reward functions per completion, minus the missing-EOS penalty (an EOS the policy
        wrote: ``mask`` excludes padding and environment/tool text, which may hold EOS tokens of its own)."""
        nan_rows = torch.isnan(local_rewards).all(dim=1)
        if nan_rows.any():
            row = int(nan_rows.nonzero()[0, 0])
            raise ValueError(
                f"reward function(s) {self.reward_func_names} returned NaN/None for completion {row} of this "
                "process's batch: PPO needs a finite score for every completion (None is allowed only where "
                "another reward function scores the completion)"
            )
        weights = self.reward_weights.to(local_rewards.device)
        scores = (local_rewards * weights.unsqueeze(0)).nansum(dim=1)
        if self.args.missing_eos_penalty is not None:
            eos = torch.tensor(self.eos_token_ids, device=completion_ids.device)
            has_eos = (torch.isin(completion_ids, eos) & mask.bool()).any(dim=1)
            scores = scores - self.args.missing_eos_penalty * (~has_eos).to(scores.dtype)
        return scores

    def _gathered_masked_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        stats = torch.stack([(x * mask).sum(), mask.sum()]).float().to(self.accelerator.device)
        total, count = self.accelerator.gather(stats.unsqueeze(0)).sum(dim=0).tolist()
        return total / max(count, 1.0)

    # ------------------------------------------------------------------ loss

    def _compute_loss(self, model, inputs):
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        logps, entropies, values = self._logps_and_values(
            model, input_ids, attention_mask, logits_to_keep, compute_entropy=True
        )
        pg_loss, pg_stats = policy_loss(
            logps, inputs["old_per_token_logps"], inputs["advantages"], mask, self.epsilon_low, self.epsilon_high
        )
        vf_loss, vf_stats = value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
        )
        # with no entropy bonus the entropy is only logged: keep it out of the graph (saves LM-head backward work)
        entropy = masked_mean(entropies if self.args.entropy_coef else entropies.detach(), mask)
        loss = pg_loss + self.args.vf_coef * vf_loss - self.args.entropy_coef * entropy
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps

        local = torch.stack(
            [
                pg_loss.detach(),
                vf_loss.detach(),
                torch.as_tensor(pg_stats["clipfrac"], device=pg_loss.device, dtype=torch.float32),
                torch.as_tensor(vf_stats["vf_clipfrac"], device=pg_loss.device, dtype=torch.float32),
                torch.as_tensor(pg_stats["approx_kl"], device=pg_loss.device, dtype=torch.float32),
                entropy.detach().float(),
                torch.as_tensor(pg_stats["ratio_mean"], device=pg_loss.device, dtype=torch.float32),
            ]
        ).float()
        pg, vf, clipfrac, vf_clipfrac, approx_kl, ent, ratio = self.accelerator.gather(local.unsqueeze(0)).mean(0)
        ev = explained_variance(values.detach(), inputs["returns"], mask)
        metrics = metrics_of(self, mode)
        metrics["ppo/loss/policy"].append(pg.item())
        metrics["ppo/loss/value"].append(vf.item())
        metrics["ppo/policy/clipfrac"].append(clipfrac.item())
        metrics["ppo/value/clipfrac"].append(vf_clipfrac.item())
        metrics["ppo/policy/approx_kl"].append(approx_kl.item())
        metrics["ppo/policy/entropy"].append(ent.item())
        metrics["ppo/policy/ratio"].append(ratio.item())
        metrics["ppo/value/explained_variance"].append(float(ev))
        if mode == "train":
            metrics["ppo/early_stopped"].append(0.0)
            if self.args.target_kl is not None and approx_kl.item() > 1.5 * self.args.target_kl:
                self._ppo_stop_rollout = True
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Skip (no forward, backward or gradient) the rest of a rollout once early stopping triggered."""
        if self._ppo_stop_rollout and not starts_rollout(self):
            skip_rollout_step(self)
            metrics_of(self, "train")["ppo/early_stopped"].append(1.0)
            return torch.zeros((), device=self.args.device)
        return super().training_step(model, inputs, num_items_in_batch)

    # ------------------------------------------------------------------ save / load

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the policy as usual (without ``v_head.*``) and the value function beside it."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        value_state = {k[len(VALUE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(VALUE_PREFIX)}
        policy_state = {k: v for k, v in state_dict.items() if not k.startswith(VALUE_PREFIX)}
        super()._save(output_dir, state_dict=policy_state)
        if self.args.should_save:
            save_value_function(self.value_function, output_dir, value_state or None)

    def _save_extension_state(self, folder: Path) -> None:
        """The KL controller's state (the value function is saved by :meth:`_save` with the model)."""
        super()._save_extension_state(folder)
        write_json(folder, PPO_STATE_FILE, {"kl_ctl": self.kl_ctl.state_dict()})

    def _load_extension_state(self, folder: Path) -> None:
        """Restore the value function weights and the KL controller from a checkpoint ``folder``."""
        super()._load_extension_state(folder)
        load_value_function(self.value_function, folder, self._policy_hidden_size())
        state = read_json(folder, PPO_STATE_FILE)
        if state is not None:
            self.kl_ctl.load_state_dict(state["kl_ctl"])

    def _load_best_model(self):
        super()._load_best_model()
        if self.state.best_model_checkpoint is not None:
            load_value_function(self.value_function, self.state.best_model_checkpoint, self._policy_hidden_size())

    def _issue_warnings_after_load(self, load_result):
        # the value function is not part of the policy weights file: its keys are missing on purpose
        load_result.missing_keys[:] = [k for k in load_result.missing_keys if not k.startswith(VALUE_PREFIX)]
        super()._issue_warnings_after_load(load_result)


# ---------------------------------------------------------------------- helpers


def _check_prompt_dataset(name: str, data) -> None:
    """A prompt-only dataset (``prompt`` column), with a hint for TRL <= 1.12's pre-tokenised format."""
    columns = getattr(data, "column_names", None) or []
    hint = (
        "It looks pre-tokenised ('input_ids'), the format of TRL <= 1.12's PPOTrainer: give the prompts as text or "
        "chat messages instead and let the trainer tokenise them"
        if "input_ids" in columns
        else PROMPT_HINT
    )
    check_dataset_columns(data, name, PROMPT_FORMATS, "PPOTrainer", hint)


def load_policy_with_value_head(path: str | os.PathLike, **model_kwargs: Any):
    """Load a PPO output folder for inference or continuation: ``(policy, value_function)``.

    The policy is a plain model (or base + adapter for a PEFT run); the value function is the saved
    :class:`ValueHead` (apply it to ``policy(..., output_hidden_states=True).hidden_states[-1]``) or
    :class:`SeparateValueModel`.
    """
    from trl_ext.models.loading import load_causal_lm

    policy = load_causal_lm(str(path), **model_kwargs)
    if (Path(path) / "value_model").is_dir():
        return policy, SeparateValueModel.from_pretrained(path)
    config = policy.config.get_text_config() if hasattr(policy.config, "get_text_config") else policy.config
    return policy, ValueHead.from_pretrained(path, expected_input_size=config.hidden_size)
