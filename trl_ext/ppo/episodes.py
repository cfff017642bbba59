"""Multi-turn PPO on agent environments: a TRL ``rollout_func`` that plays episodes (docs/ppo.md, "Multi-turn
episodes").

TRL's ``GRPOTrainer`` (hence :class:`~trl_ext.PPOTrainer`) takes ``rollout_func(prompts, trainer) -> {prompt_ids,
completion_ids, logprobs, env_mask, ...}`` in place of its own generation; ``env_mask`` (0 on tokens the policy did
not write) becomes the trainer's ``tool_mask``, so the environment's text carries no loss, no KL and no advantage,
and extra keys reach the reward functions as keyword arguments. :class:`EpisodeRollout` is such a function:

* a row whose payload is an episode's (``{"kind": "episode", "env", "seed"}``, written by ``collect_affine.py``)
  is played in its environment from its seed: one generation per turn, all the batch's episodes side by side
  (:func:`trl_ext.tasks.envs.play.play_episodes`), so ``rollout_batch_size`` episodes run in parallel; the
  completion is every turn of the policy with the observations between them;
* any other row (a SAT/ABD/DED prompt) gets one completion, as without the rollout function;
* ``episode_return`` (the sum of the episode's step rewards; ``None`` for task rows) goes to the reward functions:
  :func:`trl_ext.tasks.rewards.make_task_reward` scores an episode row by it. PPO then puts the score on the last
  policy token and runs GAE over the policy's tokens only, across the environment's turns
  (:func:`trl_ext.ppo.losses.gae` with ``bridge_gaps``).

Why TRL's ``environment_factory`` is not used: it exposes an environment's methods as *tools* the model calls in
the chat template's tool-call format, with the tool results as tool messages; the AgentGym environments are text
games whose every turn is an action line answered by an observation, so they fit ``rollout_func``, which leaves
the turn loop to the caller and takes the mask of the environment's tokens as is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trl_ext.common.errors import ConfigError
from trl_ext.common.generation import generate_token_ids, stop_token_ids
from trl_ext.tasks.envs import get_env
from trl_ext.tasks.envs.base import AgentEnv
from trl_ext.tasks.envs.play import check_tokenizer, is_episode_payload, play_episodes

__all__ = ["EpisodeRollout", "check_trainer"]


class EpisodeRollout:
    """A TRL ``rollout_func`` playing the episode rows of each batch (see the module docstring).

    Args:
        env_params: ``{environment name: get_env keyword arguments}`` (e.g. ``{"babyai": {"max_episode_length":
            10}}``); an environment not listed is built with its defaults.
        max_context_tokens: the longest prompt + completion of an episode; the episode stops (truncated) when the
            next observation and a turn of ``max_completion_length`` tokens would not fit in it. ``None``: the
            model's ``max_position_embeddings`` if it has one.

    The trainer must hand over the batch's rows (``trainer._rollout_rows``, set by :class:`~trl_ext.PPOTrainer`)
    since TRL gives a rollout function the prompts only. Generation samples with the trainer's ``temperature``,
    ``top_p`` and ``top_k``, ``max_completion_length`` tokens per turn. Environments are built once per name and
    slot and reused across rollouts (``close()`` releases them).
    """

    def __init__(
        self, env_params: Mapping[str, Mapping[str, Any]] | None = None, max_context_tokens: int | None = None
    ) -> None:
        if max_context_tokens is not None and max_context_tokens < 2:
            raise ConfigError(f"max_context_tokens={max_context_tokens!r} must be >= 2")
        self.env_params = {name: dict(params) for name, params in (env_params or {}).items()}
        self.max_context_tokens = max_context_tokens
        self._pool: dict[str, list[AgentEnv]] = {}
        self.__name__ = type(self).__name__  # TRL logs the rollout function by name

    def _envs(self, names: list[str]) -> list[AgentEnv]:
        used: dict[str, int] = {}
        envs = []
        for name in names:
            if self.env_params and name not in self.env_params:
                raise ConfigError(
                    f"the batch holds an episode of {name!r}, which is not among the rollout's environments "
                    f"{sorted(self.env_params)}"
                )
            pool = self._pool.setdefault(name, [])
            k = used.get(name, 0)
            if k == len(pool):
                pool.append(get_env(name, **self.env_params.get(name, {})))
                pool[-1].expert_enabled = False  # only the policy plays
            envs.append(pool[k])
            used[name] = k + 1
        return envs

    def close(self) -> None:
        """Close every environment built so far."""
        for pool in self._pool.values():
            for env in pool:
                env.close()
        self._pool.clear()

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        rows = getattr(trainer, "_rollout_rows", None)
        if rows is None or len(rows) != len(prompts):
            raise ConfigError(
                "EpisodeRollout needs the batch's rows (task, payload) beside the prompts: use trl_ext.PPOTrainer, "
                "which hands them over, or set trainer._rollout_rows before each rollout"
            )
        check_trainer(trainer)
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)
        args = trainer.args
        limit = self.max_context_tokens
        if limit is None:
            limit = getattr(getattr(trainer.model, "config", None), "max_position_embeddings", None)

        def generate(contexts: list[list[int]]) -> list[list[int]]:
            from trl.models import unwrap_model_for_generation

            with unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation
            ) as model:
                return generate_token_ids(
                    model, tokenizer, contexts, batch_size=max(len(contexts), 1),
                    max_new_tokens=args.max_completion_length, do_sample=True, temperature=args.temperature,
                    top_p=args.top_p, top_k=args.top_k,
                )  # fmt: skip

        episode_rows = [i for i, row in enumerate(rows) if is_episode_payload(row["payload"])]
        task_rows = [i for i in range(len(rows)) if i not in set(episode_rows)]
        prompt_ids: list[list[int] | None] = [None] * len(rows)
        completion_ids: list[list[int] | None] = [None] * len(rows)
        env_mask: list[list[int] | None] = [None] * len(rows)
        returns: list[float | None] = [None] * len(rows)
        successes: list[float | None] = [None] * len(rows)
        if task_rows:
            contexts = [_prompt_ids(tokenizer, prompts[i]) for i in task_rows]
            for i, context, new in zip(task_rows, contexts, generate(contexts)):
                prompt_ids[i], completion_ids[i], env_mask[i] = context, new, [1] * len(new)
        if episode_rows:
            payloads = [json.loads(rows[i]["payload"]) for i in episode_rows]
            for i, payload in zip(episode_rows, payloads):
                for key in ("env", "seed"):
                    if key not in payload:
                        raise ConfigError(f"episode row {i} of the batch: payload has no {key!r}: {payload}")
            envs = self._envs([p["env"] for p in payloads])
            seeds = [int(p["seed"]) for p in payloads]
            played = play_episodes(
                envs, seeds, tokenizer, generate, max_new_tokens=args.max_completion_length, max_context_tokens=limit,
                stop_ids=stop_token_ids(tokenizer, trainer.model),
            )  # fmt: skip
            for i, p in zip(episode_rows, played):
                prompt_ids[i], completion_ids[i], env_mask[i] = p.prompt_ids, p.completion_ids, p.env_mask
                returns[i], successes[i] = p.episode.total_reward, float(p.episode.success)
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion_ids,
            "logprobs": None,
            "env_mask": env_mask,
            "episode_return": returns,
            "episode_success": successes,
        }


def check_trainer(trainer: Any) -> None:
    """Raise :class:`ConfigError` when ``trainer`` cannot play multi-turn episodes: vLLM generation (the rollout
    generates with transformers and has no sampling log-probs for vLLM's importance-sampling correction), DeepSpeed
    ZeRO-3 or FSDP (the processes play different numbers of turns, while their forwards must run in step), or a
    tokenizer that cannot render the conversation turn by turn. The PPO recipe calls it before training."""
    if getattr(trainer.args, "use_vllm", False):
        raise ConfigError(
            "multi-turn episodes are generated with transformers, not vLLM: set use_vllm=False (or train on task "
            "rows only, with --environments and no episodes in the data)"
        )
    state = trainer.accelerator.state
    plugin = getattr(state, "deepspeed_plugin", None)
    if getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3:
        raise ConfigError(
            "multi-turn episodes are not supported under DeepSpeed ZeRO-3: the processes would play different "
            "numbers of turns while ZeRO-3 generation needs every process in every forward; use ZeRO-2 or DDP"
        )
    if getattr(trainer, "is_fsdp_enabled", False):
        raise ConfigError(
            "multi-turn episodes are not supported under FSDP: the processes would play different numbers of turns "
            "while FSDP's forwards must run in step on every process; use DDP or DeepSpeed ZeRO-2"
        )
    check_tokenizer(trainer.processing_class)


def _prompt_ids(tokenizer: Any, prompt: Any) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
