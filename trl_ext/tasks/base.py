"""The task interface shared by every reasoning task and agent environment.

A task is three pure operations:

* ``generate(rng)`` -> :class:`TaskInstance`: draw one instance (seeded by the caller's ``random.Random``);
* ``instance.prompt``: the exact user prompt the model sees;
* ``score(instance, completion)`` -> float in [0, 1]: grade a model's answer.

Each instance also carries an ``expert_answer`` (the SFT target) and a JSON-serialisable ``payload``
holding everything ``score`` needs, so that an instance written to JSONL and read back can be scored
without the generator. New tasks (ABD, DED, agent environments) subclass :class:`Task` and register
themselves in :mod:`trl_ext.tasks.registry`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class TaskInstance:
    """One generated problem.

    Attributes:
        task: registry name of the task that made it (e.g. ``"sat"``).
        id: identifier unique within a generated collection.
        prompt: the user message, exactly as the model sees it.
        expert_answer: a correct answer in the format the prompt asks for (the SFT target).
        payload: JSON-serialisable data that :meth:`Task.score` needs (e.g. the clauses).
    """

    task: str
    id: str
    prompt: str
    expert_answer: str
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> TaskInstance:
        missing = [k for k in ("task", "id", "prompt", "expert_answer", "payload") if k not in row]
        if missing:
            raise ValueError(f"task instance {row.get('id', '<no id>')!r} is missing field(s) {missing}")
        return cls(
            task=row["task"],
            id=str(row["id"]),
            prompt=row["prompt"],
            expert_answer=row["expert_answer"],
            payload=dict(row["payload"]),
        )


def score_by_task(
    instances: Sequence[TaskInstance], completions: Sequence[str], scorer: Callable[[str], Task]
) -> list[float]:
    """The score of every completion, in order, with one :meth:`Task.score_many` batch per task name
    (``scorer(name)`` gives the task that scores it): ABD and DED run a whole batch in one sandbox call."""
    check_batch(instances, completions)
    groups: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        groups.setdefault(inst.task, []).append(i)
    out = [0.0] * len(instances)
    for name, positions in groups.items():
        batch = scorer(name).score_many([instances[i] for i in positions], [completions[i] for i in positions])
        for i, score in zip(positions, batch):
            out[i] = float(score)
    return out


def check_batch(instances: Sequence[TaskInstance], completions: Sequence[str]) -> None:
    """``ValueError`` unless there is one completion per instance."""
    if len(instances) != len(completions):
        raise ValueError(f"{len(instances)} instances but {len(completions)} completions")


class Task(ABC):
    """A task: generate -> prompt -> score.

    Subclasses set ``name`` (the registry key) and implement :meth:`generate` and :meth:`score`.
    Constructor keyword arguments are the task's parameters (e.g. ``n``, ``k`` for SAT); invalid
    values raise ``ValueError`` naming the parameter.
    """

    name: ClassVar[str]

    @abstractmethod
    def generate(self, rng: random.Random, index: int = 0) -> TaskInstance:
        """Draw one instance with ``rng``; ``index`` only feeds the instance id."""

    @abstractmethod
    def score(self, instance: TaskInstance, completion: str) -> float:
        """Grade ``completion`` (the model's answer text) for ``instance``; returns a value in [0, 1]."""

    def score_many(self, instances: Sequence[TaskInstance], completions: Sequence[str]) -> list[float]:
        """Grade a batch (``len(instances) == len(completions)``); tasks that run programs override it to run the
        whole batch in one sandbox call. The default scores one by one."""
        check_batch(instances, completions)
        return [self.score(inst, completion) for inst, completion in zip(instances, completions)]

    def heldout(self) -> Task:
        """The task the held-out evaluations draw from: itself for generated tasks (every draw is fresh); the
        held-out rows for tasks drawn from a dataset (ABD, DED)."""
        return self

    def generate_many(self, num: int, seed: int) -> list[TaskInstance]:
        """``num`` instances from ``random.Random(seed)``; deterministic for a given seed."""
        rng = random.Random(seed)
        return [self.generate(rng, index=i) for i in range(num)]
