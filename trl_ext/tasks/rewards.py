"""Reward functions for online RL (PPO, GRPO, RLOO) built from the task scorers.

A prompt-only dataset made by :func:`prompt_only_rows` keeps the ``task`` and ``payload`` columns; TRL passes
extra columns to reward functions as keyword arguments, so :func:`make_task_reward` scores each completion
with its own task's ``score`` — the same scorer the evaluation uses.

A *malformed* answer (:func:`is_malformed`) is one from which the task's scorer extracts no answer at all: a SAT
answer without any ``x<i>=<value>`` (:func:`trl_ext.tasks.sat.parse_assignment` reads nothing), an ABD answer
without an ``<INPUT>...</INPUT>`` block (:func:`trl_ext.tasks.programs.extract_input` is ``None``), a DED answer
without a fenced code block (:func:`trl_ext.tasks.programs.extract_program` is ``None``). Such an answer scores 0
anyway; ``make_task_reward(malformed_penalty=X)`` makes it −X, below a well-formed wrong answer.
"""

from __future__ import annotations

import json
import math
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


def _sat_malformed(text: str) -> bool:
    from trl_ext.tasks.sat import parse_assignment

    return not parse_assignment(text)


def _abd_malformed(text: str) -> bool:
    from trl_ext.tasks.programs import extract_input

    return extract_input(text) is None


def _ded_malformed(text: str) -> bool:
    from trl_ext.tasks.programs import extract_program

    return extract_program(text) is None


MALFORMED_CHECKS: dict[str, Callable[[str], bool]] = {
    "sat": _sat_malformed,
    "abd": _abd_malformed,
    "ded": _ded_malformed,
}
"""``{task name: answer text -> whether the task's scorer extracts no answer from it}`` (see the module docstring)."""


def is_malformed(task: str, completion: Any) -> bool:
    """Whether ``completion`` (a string or chat messages) is a malformed answer of ``task``: one the scorer cannot
    read any answer from. ``ValueError`` for a task without a check in :data:`MALFORMED_CHECKS`."""
    check = MALFORMED_CHECKS.get(task)
    if check is None:
        raise ValueError(
            f"malformed_penalty: task {task!r} has no malformed-answer check (known: {', '.join(MALFORMED_CHECKS)})"
        )
    return check(completion_text(completion))


def make_task_reward(
    task_params: Mapping[str, Mapping[str, Any]] | None = None, malformed_penalty: float = 0.0
) -> Callable[..., list[float]]:
    """A TRL reward function ``f(prompts, completions, task, payload, **kw) -> list[float]``: in [0, 1] for a task
    row; for an agent-episode row, the episode's return (``episode_return``, from the multi-turn rollout).

    ``task`` and ``payload`` are the dataset columns of :func:`prompt_only_rows`. Scorers are built once per task
    name with ``task_params`` (the scorer of every built-in task reads everything it needs from the payload).

    ``malformed_penalty`` X > 0: a task row whose answer is malformed (:func:`is_malformed`) gets −X instead of its
    score (0). Episode rows are not penalised here: an episode's turn without a readable action is already an
    invalid action of the environment (no step reward, counted in its ``invalid_actions``). A task of
    ``task_params`` without a malformed-answer check is a ``ValueError`` here, before training.
    """
    scorers: dict[str, Task] = {}
    params = {k: dict(v) for k, v in (task_params or {}).items()}
    penalty = float(malformed_penalty or 0.0)
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"malformed_penalty must be a finite number >= 0, got {malformed_penalty!r}")
    if penalty:
        unchecked = [name for name in params if name not in MALFORMED_CHECKS]
        if unchecked:
            raise ValueError(
                f"malformed_penalty={penalty:g}: the task(s) {unchecked} have no malformed-answer check "
                f"(known: {', '.join(MALFORMED_CHECKS)})"
            )

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
        texts = [completion_text(completions[i]) for i in rest]
        for i, text, score in zip(rest, texts, score_by_task(instances, texts, scorer)):
            scores[i] = -penalty if penalty and is_malformed(task[i], text) else score
        return scores

    return task_score


def prompt_only_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Prompt-completion task rows -> prompt-only rows (``prompt``, ``task``, ``payload``) for online RL."""
    return [{"prompt": row["prompt"], "task": row["task"], "payload": row["payload"]} for row in rows]
