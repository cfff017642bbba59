"""Evaluate a model on agent-environment episodes (docs/eval.md, "Agent environments").

Each environment plays ``num_episodes`` held-out episodes with greedy decoding, all of a batch side by side
(:func:`trl_ext.tasks.envs.play.play_episodes`). An episode's score in the report is its success (1 or 0), so the
environment gets the report's statistics and the Jeffreys interval of its success rate like any task; the
``"episodes"`` section adds per environment the mean and std of the return (the documented shaped rewards, which
can pass 1), the mean length, the invalid actions per episode and the truncated share; ``"agentgym_score"`` is the
unweighted mean over the environments of their success rates.

Held-out seeds lie in ``[10**9, 2·10**9)``, training seeds (:func:`trl_ext.data.affine.episode_seeds`) below
``10**9``; environments whose episodes come from a finite set rather than from the seed alone are built with their
``heldout_params`` (SciWorld: the engine's test variations; TextCraft: the held-out fifth of its goals), so an
evaluation plays no training episode.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping
from typing import Any

from tqdm.auto import tqdm

__all__ = ["HELDOUT_SEED_OFFSET", "agentgym_score", "heldout_seeds", "play_heldout_episodes"]

HELDOUT_SEED_OFFSET = 10**9


def heldout_seeds(name: str, count: int, seed: int) -> list[int]:
    """``count`` distinct held-out seeds of environment ``name`` (all >= :data:`HELDOUT_SEED_OFFSET`)."""
    draws = random.Random(f"{seed}:heldout:{name}").sample(range(HELDOUT_SEED_OFFSET), count)
    return [HELDOUT_SEED_OFFSET + d for d in draws]


def play_heldout_episodes(
    model: Any,
    tokenizer: Any,
    env_params: Mapping[str, Mapping[str, Any]],
    *,
    num_episodes: int,
    seed: int,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    max_context_tokens: int | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, list[float]], dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Play ``num_episodes`` held-out episodes per environment greedily, ``batch_size`` at a time.

    Returns ``(scores, episodes, samples)``: per environment the successes (1.0/0.0, in seed order), the
    ``"episodes"`` statistics of the module docstring, and one sample per episode (env, seed, actions, rewards,
    return, success, length).
    """
    from trl_ext.common.generation import generate_token_ids, stop_token_ids
    from trl_ext.tasks.envs import env_class, get_env
    from trl_ext.tasks.envs.play import check_tokenizer, play_episodes

    if max_context_tokens is None:
        max_context_tokens = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    check_tokenizer(tokenizer)
    stop_ids = stop_token_ids(tokenizer, model)

    def generate(contexts: list[list[int]]) -> list[list[int]]:
        return generate_token_ids(model, tokenizer, contexts, batch_size=len(contexts), max_new_tokens=max_new_tokens)

    scores: dict[str, list[float]] = {}
    stats: dict[str, dict[str, float]] = {}
    samples: list[dict[str, Any]] = []
    for name, params in env_params.items():
        seeds = heldout_seeds(name, num_episodes, seed)
        heldout = {} if "server_url" in params else dict(env_class(name).heldout_params)
        envs = [get_env(name, **{**heldout, **dict(params)}) for _ in range(min(batch_size, num_episodes))]
        for env in envs:
            env.expert_enabled = False  # only the model plays
        played = []
        try:
            for start in tqdm(range(0, num_episodes, batch_size), desc=f"{name} episodes", disable=not show_progress):
                chunk = seeds[start : start + batch_size]
                played += play_episodes(envs[: len(chunk)], chunk, tokenizer, generate, max_new_tokens=max_new_tokens,
                                        max_context_tokens=max_context_tokens, stop_ids=stop_ids)  # fmt: skip
        finally:
            for env in envs:
                env.close()
        episodes = [p.episode for p in played]
        returns = [e.total_reward for e in episodes]
        scores[name] = [float(e.success) for e in episodes]
        stats[name] = {
            "n": len(episodes),
            "success_rate": statistics.fmean(scores[name]),
            "mean_return": statistics.fmean(returns),
            "std_return": statistics.pstdev(returns),
            "mean_length": statistics.fmean(e.length for e in episodes),
            "invalid_actions_per_episode": statistics.fmean(e.invalid_actions for e in episodes),
            "truncated_rate": statistics.fmean(float(e.truncated) for e in episodes),
        }
        samples += [
            {
                "env": name,
                "seed": e.seed,
                "actions": e.actions,
                "rewards": e.rewards,
                "return": e.total_reward,
                "success": e.success,
                "length": e.length,
            }  # fmt: skip
            for e in episodes
        ]
    return scores, stats, samples


def agentgym_score(episodes: Mapping[str, Mapping[str, float]]) -> float:
    """The unweighted mean of the environments' success rates (AgentGym reports one score per task and their
    average)."""
    if not episodes:
        raise ValueError("agentgym_score needs at least one environment")
    return statistics.fmean(float(s["success_rate"]) for s in episodes.values())
