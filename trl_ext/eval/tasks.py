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
) -> dict[str, Any]:
    """Greedy-generate an answer for every instance, score it and return the evaluation report.

    The report is :func:`trl_ext.eval.report.build_report`'s, with per-environment statistics and Beta
    intervals; when ``keep_completions`` it also holds every (id, task, completion, score) under
    ``"samples"`` for inspection.
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
    report = build_report(model_name, scores, level=level, metadata=dict(metadata or {}))
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
) -> dict[str, Any]:
    """Load ``model_path`` (model or adapter folder, hub id) for inference and evaluate it on
    ``num_per_task`` fresh instances per task drawn with ``seed``; returns the report (not saved)."""
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
        metadata={"task_params": {k: dict(v) for k, v in task_params.items()}, "seed": seed},
    )
