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
from trl_ext.tasks.envs.play import is_episode_payload


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
    """A TRL reward function ``f(prompts, completions, task, payload, **kw) -> list[float]``: in [0, 1] for a task
    row; for an agent-episode row, the episode's return (``episode_return``, from the multi-turn rollout).

    ``task`` and ``payload`` are the dataset columns of :func:`prompt_only_rows`. Scorers are built once per task
    name with ``task_params`` (the scorer of every built-in task reads everything it needs from the payload).
    """
    scorers: dict[str, Task] = {}
    params = {k: dict(v) for k, v in (task_params or {}).items()}

    def task_score(prompts, completions, task=None, payload=None, episode_return=None, **kwargs) -> list[float]:
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

        episodes = [i for i, raw in enumerate(payload) if is_episode_payload(raw)]
        rest = [i for i in range(len(payload)) if i not in set(episodes)]
        scores = [0.0] * len(payload)
        for i in episodes:  # an agent episode: scored by its return, which the multi-turn rollout reports
            if episode_return is None or episode_return[i] is None:
                raise ValueError(
                    f"row {i} of the batch is an episode of {task[i]!r}, which is scored by its return: roll it out "
                    "with trl_ext.ppo.EpisodeRollout (the PPO recipe does when the data holds episodes)"
                )
            scores[i] = float(episode_return[i])
        instances = [
            TaskInstance(task=task[i], id=f"reward-{i}", prompt="", expert_answer="", payload=json.loads(payload[i]))
            for i in rest
        ]
        for i, score in zip(rest, score_by_task(instances, [completion_text(completions[i]) for i in rest], scorer)):
            scores[i] = score
        return scores

    return task_score


def prompt_only_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion task rows -> prompt-only rows (``prompt``, ``task``, ``payload``) for online RL."""
    return [{"prompt": row["prompt"], "task": row["task"], "payload": row["payload"]} for row in rows]
