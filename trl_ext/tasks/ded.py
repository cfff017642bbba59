"""Deduction (DED, docs/tasks.md): write a complete Python 3 program that passes the test cases of a problem.

One instance: a row of the task's split (``rng.randrange``). The prompt is the row's problem statement followed by
the instructions below; the expert answer is the row's reference program in a ```python fence.

Score: 1.0 iff every test case passes in the sandbox (stdin/stdout cases compare the output with
:func:`~trl_ext.tasks.programs.outputs_match`; function-call cases load the program as a module, call the function
and compare the result as JSON), 0.0 otherwise, and 0.0 without running anything when the answer has no fenced
block (:func:`~trl_ext.tasks.programs.extract_program`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from trl_ext.common.errors import DataError
from trl_ext.tasks.base import Task, TaskInstance, check_batch
from trl_ext.tasks.programs import ProgramTask, TestCase, extract_program, parse_test_cases, run_test_cases
from trl_ext.tasks.registry import register_task

__all__ = ["DEDTask", "INSTRUCTIONS"]

INSTRUCTIONS = (
    "\n\n---\n"
    "Instructions:\n"
    "Write a complete Python 3 program that\n"
    "- reads all input from STDIN (using `input()` / `sys.stdin`),\n"
    "- writes only the required answer(s) to STDOUT using `print`,\n"
    "- contains no additional prompts or debug text, and\n"
    "- is returned as a single ```python ... ``` fenced block.\n"
)


@register_task
class DEDTask(ProgramTask, Task):
    """Deduction over program rows (see the module docstring; parameters: :class:`ProgramTask`)."""

    name = "ded"

    def generate(self, rng: random.Random, index: int = 0) -> TaskInstance:
        """One instance; id ``f"ded-{index:06d}"``; payload ``{row_id, test_cases}`` (the cases as dicts)."""
        row = self.rows[rng.randrange(len(self.rows))]
        return TaskInstance(
            task=self.name,
            id=f"{self.name}-{index:06d}",
            prompt=row.prompt.rstrip() + INSTRUCTIONS,
            expert_answer=f"```python\n{row.program.rstrip(chr(10))}\n```",
            payload={"row_id": row.id, "test_cases": [case.to_dict() for case in row.test_cases]},
        )

    def score_many(self, instances: Sequence[TaskInstance], completions: Sequence[str]) -> list[float]:
        """Every test case of every answer with a fenced block run in one sandbox batch."""
        check_batch(instances, completions)
        jobs: list[tuple[int, str, tuple[TestCase, ...]]] = []
        for i, (inst, completion) in enumerate(zip(instances, completions)):
            if "test_cases" not in inst.payload:
                raise DataError(f"DED instance {inst.id!r}: payload has no 'test_cases'")
            cases = parse_test_cases({"test_cases": inst.payload["test_cases"]}, f"DED instance {inst.id!r}")
            program = extract_program(completion)
            if program is not None:
                jobs.append((i, program, cases))
        scores = [0.0] * len(instances)
        passed = run_test_cases(self.sandbox, [(program, cases) for _, program, cases in jobs]) if jobs else []
        for (i, _, _), ok in zip(jobs, passed):
            scores[i] = 1.0 if all(ok) else 0.0
        return scores
