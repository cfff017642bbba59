"""Evaluate a model on generated task instances: generate, score per task, build the JSON report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from trl_ext.tasks import TaskInstance, get_task
from trl_ext.tasks.base import score_by_task


def heldout_instances(
    task_params: Mapping[str, Mapping[str, Any]], num_per_task: int, seed: int
) -> list[TaskInstance]:
    """``num_per_task`` fresh instances of every task, drawn with ``seed`` (use a seed unused in training)."""
    instances: list[TaskInstance] = []
    for offset, (name, params) in enumerate(task_params.items()):
        task = get_task(name, **params).heldout()  # ABD/DED: the held-out rows; generated tasks: fresh draws
        instances.extend(task.generate_many(num_per_task, seed + 1_000_003 * offset))
    return instances


def score_instances(
    instances: Sequence[TaskInstance], completions: Sequence[str], task_params: Mapping[str, Mapping] | None = None
) -> dict[str, list[float]]:
    """Per-task lists of scores, in instance order. ``task_params`` builds each scorer (defaults otherwise)."""
    params = task_params or {}
    flat = score_by_task(instances, completions, lambda name: get_task(name, **dict(params.get(name, {}))))
    scores: dict[str, list[float]] = defaultdict(list)
    for inst, score in zip(instances, flat):
        scores[inst.task].append(score)
    return dict(scores)


def evaluate_model_on_tasks(
    model,
    tokenizer,
    instances: Sequence[TaskInstance],
    *,
    model_name: str,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    level: float = 0.8,
    metadata: dict[str, Any] | None = None,
    keep_completions: bool = True,
    show_progress: bool = True,
    env_params: Mapping[str, Mapping[str, Any]] | None = None,
    num_episodes: int = 0,
    episode_seed: int = 0,
    max_turn_tokens: int = 64,
) -> dict[str, Any]:
    """Greedy-generate an answer for every instance, score it and return the evaluation report.

    The report is :func:`trl_ext.eval.report.build_report`'s, with per-environment statistics and Beta
    intervals; when ``keep_completions`` it also holds every (id, task, completion, score) under
    ``"samples"`` for inspection. With ``env_params`` and ``num_episodes``, every agent environment also plays
    ``num_episodes`` held-out episodes (:func:`trl_ext.eval.episodes.play_heldout_episodes`, ``max_turn_tokens``
    per turn, seeds from ``episode_seed``): their successes join the report's environments beside the tasks, and
    the report gains ``"episodes"`` (return, length, ... per environment) and ``"agentgym_score"``.
    """
    from trl_ext.common.generation import generate_completions
    from trl_ext.eval.report import build_report

    completions = generate_completions(
        model,
        tokenizer,
        [inst.prompt for inst in instances],
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        show_progress=show_progress,
        desc="evaluating",
    )
    scores = score_instances(instances, completions)
    episodes = None
    if env_params and num_episodes > 0:
        from trl_ext.eval.episodes import play_heldout_episodes

        env_scores, episodes, episode_samples = play_heldout_episodes(
            model, tokenizer, env_params, num_episodes=num_episodes, seed=episode_seed, batch_size=batch_size,
            max_new_tokens=max_turn_tokens, show_progress=show_progress,
        )  # fmt: skip
        scores.update(env_scores)
    report = build_report(model_name, scores, level=level, metadata=dict(metadata or {}))
    if episodes is not None:
        from trl_ext.eval.episodes import agentgym_score

        report["episodes"] = episodes
        report["agentgym_score"] = agentgym_score(episodes)
        if keep_completions:
            report["episode_samples"] = episode_samples
    if keep_completions:
        position: dict[str, int] = defaultdict(int)
        samples = []
        for inst, completion in zip(instances, completions):
            samples.append(
                {
                    "id": inst.id,
                    "task": inst.task,
                    "completion": completion,
                    "score": scores[inst.task][position[inst.task]],
                }
            )
            position[inst.task] += 1
        report["samples"] = samples
    return report


def evaluate_heldout(
    model_path: str,
    task_params: Mapping[str, Mapping[str, Any]],
    *,
    num_per_task: int,
    seed: int,
    model_name: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    level: float = 0.8,
    dtype: str | None = None,
    load_in_4bit: bool = False,
    env_params: Mapping[str, Mapping[str, Any]] | None = None,
    num_episodes: int = 0,
    max_turn_tokens: int = 64,
) -> dict[str, Any]:
    """Load ``model_path`` (model or adapter folder, hub id) for inference and evaluate it on
    ``num_per_task`` fresh instances per task drawn with ``seed`` and on ``num_episodes`` held-out episodes per
    environment of ``env_params`` (seeds from ``seed`` too); returns the report (not saved)."""
    from trl_ext.models import load_for_inference, load_tokenizer

    model = load_for_inference(model_path, dtype=dtype, load_in_4bit=load_in_4bit)
    tokenizer = load_tokenizer(model_path, padding_side="left")
    instances = heldout_instances(task_params, num_per_task, seed)
    return evaluate_model_on_tasks(
        model,
        tokenizer,
        instances,
        model_name=model_name or str(model_path),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        level=level,
        metadata={"task_params": {k: dict(v) for k, v in task_params.items()}, "seed": seed,
                  "env_params": {k: dict(v) for k, v in (env_params or {}).items()}, "num_episodes": num_episodes},
        env_params=env_params,
        num_episodes=num_episodes,
        episode_seed=seed,
        max_turn_tokens=max_turn_tokens,
    )  # fmt: skip
