"""Reward functions for online RL (PPO, GRPO, RLOO) built from the task scorers.

A prompt-only dataset made by :func:`prompt_only_rows` keeps the ``task`` and ``payload`` columns; TRL passes
extra columns to reward functions as keyword arguments, so :func:`make_task_reward` scores each completion
with its own task's ``score`` — the same scorer the evaluation uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trl_ext.tasks import Task, TaskInstance, get_task
from trl_ext.tasks.base import score_by_task


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or the content of the last assistant message of a chat completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # content blocks
            return "".join(block.get("text", "") for block in content if isinstance(block, Mapping))
        return str(content)
    raise ValueError(f"cannot read the text of completion {completion!r}: expected a string or chat messages")


def make_task_reward(task_params: Mapping[str, Mapping[str, Any]] | None = None) -> Callable[..., list[float]]:
    """A TRL reward function ``f(prompts, completions, task, payload, **kw) -> list[float]`` in [0, 1].

    ``task`` and ``payload`` are the dataset columns of :func:`prompt_only_rows`. Scorers are built once per task
    name with ``task_params`` (the scorer of every built-in task reads everything it needs from the payload).
    """
    scorers: dict[str, Task] = {}
    params = {k: dict(v) for k, v in (task_params or {}).items()}

    def task_score(prompts, completions, task=None, payload=None, **kwargs) -> list[float]:
        if task is None or payload is None:
            raise ValueError(
                "the task reward needs the dataset columns 'task' and 'payload' (see trl_ext.tasks.rewards."
                "prompt_only_rows); they are missing from the batch"
            )
        if not (len(completions) == len(task) == len(payload)):
            raise ValueError(f"{len(completions)} completions but {len(task)} tasks and {len(payload)} payloads")

        def scorer(name: str) -> Task:
            if name not in scorers:
                scorers[name] = get_task(name, **params.get(name, {}))
            return scorers[name]

        instances = [
            TaskInstance(task=name, id=f"reward-{i}", prompt="", expert_answer="", payload=json.loads(raw))
            for i, (name, raw) in enumerate(zip(task, payload))
        ]
        return score_by_task(instances, [completion_text(c) for c in completions], scorer)

    return task_score


def prompt_only_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion task rows -> prompt-only rows (``prompt``, ``task``, ``payload``) for online RL."""
    return [{"prompt": row["prompt"], "task": row["task"], "payload": row["payload"]} for row in rows]
