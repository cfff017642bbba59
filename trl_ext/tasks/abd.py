"""Abduction (ABD, docs/tasks.md): given a program and its output, find an stdin that makes it print that output.

One instance, drawn with the caller's ``random.Random``: a row of the task's split (``rng.randrange``), then one of
its stdin/stdout test cases with a non-empty output (``rng.randrange``; the row's own ``inputs``/``output`` pair
counts as one). An empty output is never asked for: almost any input produces it. The prompt shows the program and
the output and asks for the input inside ``<INPUT>...</INPUT>``; the expert answer is the case's input in that
block.

Score: 1.0 iff the program, run in the sandbox on the answer's last ``<INPUT>`` block (``<think>`` sections
dropped; :func:`~trl_ext.tasks.programs.extract_input`), ends normally and prints the expected output
(:func:`~trl_ext.tasks.programs.outputs_match`); 0.0 otherwise, and without running anything when the answer has
no block.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from trl_ext.common.errors import DataError
from trl_ext.tasks.base import Task, TaskInstance, check_batch
from trl_ext.tasks.programs import Execution, ProgramTask, extract_input, outputs_match
from trl_ext.tasks.registry import register_task

__all__ = ["ABDTask", "PROMPT_TEMPLATE"]

PROMPT_TEMPLATE = """You are a programming expert. Given a Python program and its expected output, you need to \
determine the exact input that would produce this output.

Program:
```python
{program}
```

Expected Output:
```
{output}
```

Task: Analyze the program to understand what input format it expects from stdin, then provide the input data that \
would produce the expected output.

You can provide any explanations, analysis, or reasoning you want. However, you MUST include the input data within \
<INPUT> </INPUT> tags.

Format the input data like this:
<INPUT>
[input data here - each line on a separate line as the program expects]
</INPUT>"""


def _pairs(row) -> list[tuple[str, str]]:
    pairs = [(row.inputs, row.output)] if row.output.strip() else []
    for case in row.test_cases:
        if case.kind == "stdin_stdout" and case.output.strip() and (case.input, case.output) not in pairs:
            pairs.append((case.input, case.output))
    return pairs


@register_task
class ABDTask(ProgramTask, Task):
    """Abduction over program rows (see the module docstring; parameters: :class:`ProgramTask`)."""

    name = "abd"

    def generate(self, rng: random.Random, index: int = 0) -> TaskInstance:
        """One instance; id ``f"abd-{index:06d}"``; payload ``{row_id, program, expected_output}``."""
        row = self.rows[rng.randrange(len(self.rows))]
        pairs = _pairs(row)
        if not pairs:
            raise DataError(f"abd task: row {row.id!r} has no stdin/stdout example with a non-empty output")
        stdin, output = pairs[rng.randrange(len(pairs))]
        return TaskInstance(
            task=self.name,
            id=f"{self.name}-{index:06d}",
            prompt=PROMPT_TEMPLATE.format(program=row.program.rstrip("\n"), output=output.rstrip("\n")),
            expert_answer=f"<INPUT>\n{stdin.rstrip(chr(10))}\n</INPUT>",
            payload={"row_id": row.id, "program": row.program, "expected_output": output},
        )

    def score_many(self, instances: Sequence[TaskInstance], completions: Sequence[str]) -> list[float]:
        """Every answer with an ``<INPUT>`` block run in one sandbox batch."""
        check_batch(instances, completions)
        scores = [0.0] * len(instances)
        runs = []
        for i, (inst, completion) in enumerate(zip(instances, completions)):
            for key in ("program", "expected_output"):
                if key not in inst.payload:
                    raise DataError(f"ABD instance {inst.id!r}: payload has no {key!r}")
            stdin = extract_input(completion)
            if stdin is not None:
                runs.append((i, Execution(inst.payload["program"], stdin)))
        results = self.sandbox.run_many([execution for _, execution in runs]) if runs else []
        for (i, _), result in zip(runs, results):
            ok = result.ok and outputs_match(instances[i].payload["expected_output"], result.stdout)
            scores[i] = 1.0 if ok else 0.0
        return scores
