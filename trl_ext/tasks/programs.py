"""Program rows for the abduction and deduction tasks: loading, validation, answer extraction, output matching and
running test cases in the sandbox (docs/tasks.md, "ABD and DED").

A row has the columns ``program, inputs, output, prompt, test_cases`` (those of ``satpalsr/rl-python``) and
optionally ``id``. ``test_cases`` is a JSON string (or a Python literal, or already a mapping) of
``{"test_cases": [case, ...]}`` where a case is

* ``{"type": "stdin_stdout", "input": ..., "output": ...}``: the program gets ``input`` on stdin and must print
  ``output`` (a list is joined line by line; a number or mapping is written as JSON); or
* ``{"type": "function_call", "fn_name": "f", "input": [arg, ...], "output": [value]}``: the program's module is
  loaded (``__name__ != "__main__"``), ``f(*input)`` is called and must return ``value`` (compared as JSON).

Rows come from ``"builtin"`` (the 64 programs shipped in ``trl_ext/tasks/data/program_set.jsonl``, written for this
project), a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, or a dataset on the Hugging Face Hub (its
``train`` split). A row with a missing column or a malformed test case is an error naming the row.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from trl_ext.common.errors import ConfigError, DataError, MissingPathError
from trl_ext.tasks.sandbox import Execution, Sandbox, SandboxLimits, SandboxResult

__all__ = [
    "BUILTIN_PROGRAMS",
    "Execution",
    "ProgramTask",
    "COLUMNS",
    "ProgramRow",
    "TestCase",
    "extract_input",
    "extract_program",
    "load_program_rows",
    "outputs_match",
    "run_test_cases",
    "shared_sandbox",
    "split_rows",
]

COLUMNS = ("program", "inputs", "output", "prompt", "test_cases")
BUILTIN_PROGRAMS = Path(__file__).with_name("data") / "program_set.jsonl"
CASE_TYPES = ("stdin_stdout", "function_call")


@dataclass(frozen=True)
class TestCase:
    """One test case: ``kind`` ``stdin_stdout`` (``input`` text, expected ``output`` text) or ``function_call``
    (``fn_name``, ``args`` list, expected return ``value``)."""

    __test__ = False  # not a pytest test class
    kind: str
    input: str = ""
    output: str = ""
    fn_name: str = ""
    args: tuple = ()
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "stdin_stdout":
            return {"type": self.kind, "input": self.input, "output": self.output}
        return {"type": self.kind, "fn_name": self.fn_name, "input": list(self.args), "output": [self.value]}


@dataclass(frozen=True)
class ProgramRow:
    """A validated row: ``id``, the problem ``prompt``, the reference ``program``, an example stdin ``inputs``
    with its ``output``, and the parsed ``test_cases``."""

    id: str
    prompt: str
    program: str
    inputs: str
    output: str
    test_cases: tuple[TestCase, ...]


def _text(value: Any) -> str:
    """A case's input or output as text: strings as they are, lists line by line, other values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return value.decode()
    if isinstance(value, list):
        return "\n".join(_text(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def parse_test_cases(raw: Any, where: str) -> tuple[TestCase, ...]:
    """The test cases of a row's ``test_cases`` value; :class:`DataError` naming ``where`` when malformed."""
    data = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            try:
                data = ast.literal_eval(raw)
            except (ValueError, SyntaxError) as err:
                raise DataError(f"{where}: column 'test_cases' is neither JSON nor a Python literal: {err}") from None
    if isinstance(data, Mapping):
        data = data.get("test_cases")
    if not isinstance(data, list) or not data:
        raise DataError(f"{where}: column 'test_cases' must hold a non-empty list under 'test_cases', got {raw!r:.80}")
    cases = []
    for i, case in enumerate(data):
        if not isinstance(case, Mapping) or case.get("type") not in CASE_TYPES:
            raise DataError(f"{where}: test case {i} must be a mapping with 'type' in {CASE_TYPES}, got {case!r:.80}")
        needed = ("input", "output", "fn_name") if case["type"] == "function_call" else ("input", "output")
        missing = [k for k in needed if k not in case]
        if missing:
            raise DataError(f"{where}: test case {i} ({case['type']}) is missing {missing}")
        if case["type"] == "stdin_stdout":
            cases.append(TestCase("stdin_stdout", input=_text(case["input"]), output=_text(case["output"])))
            continue
        fn, args, out = case["fn_name"], case["input"], case["output"]
        if not isinstance(fn, str) or not fn.isidentifier():
            raise DataError(f"{where}: test case {i}: 'fn_name' must be a Python identifier, got {fn!r}")
        if not isinstance(args, list):
            raise DataError(f"{where}: test case {i}: a function_call 'input' must be the list of arguments")
        value = out[0] if isinstance(out, list) and len(out) == 1 else out
        cases.append(TestCase("function_call", fn_name=fn, args=tuple(args), value=value))
    return tuple(cases)


def validate_program_row(row: Any, index: int, source: str) -> ProgramRow:
    """A :class:`ProgramRow` from a raw row (its ``id``, else ``f"{source}:{index}"``); DataError naming it."""
    name = row.get("id") if isinstance(row, Mapping) else None
    where = f"{source}: row {index}" + (f" (id {name!r})" if name is not None else "")
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: must be a mapping of the columns {COLUMNS}, got {type(row).__name__}")
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing} (a program row needs {list(COLUMNS)})")
    for column in ("program", "prompt"):
        if not isinstance(row[column], str) or not row[column].strip():
            raise DataError(f"{where}: column {column!r} must be a non-empty string")
    return ProgramRow(
        id=str(name) if name is not None else f"{Path(source).name}:{index}",
        prompt=row["prompt"],
        program=row["program"],
        inputs=_text(row["inputs"] if row["inputs"] is not None else ""),
        output=_text(row["output"] if row["output"] is not None else ""),
        test_cases=parse_test_cases(row["test_cases"], where),
    )


_ROWS_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _load(source: str) -> tuple[ProgramRow, ...]:
    path = BUILTIN_PROGRAMS if source == "builtin" else Path(source).expanduser()
    if source == "builtin" or path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise MissingPathError(f"program dataset file not found: {path}")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            raw = []
            for lineno, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        raw.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path}, line {lineno}: invalid JSON: {err}") from None
    elif path.suffix in (".parquet", ".csv"):
        if not path.is_file():
            raise MissingPathError(f"program dataset file not found: {path}")
        from datasets import load_dataset

        raw = list(load_dataset(path.suffix[1:], data_files=str(path), split="train"))
    elif path.exists() or "/" not in source or source.startswith((".", "/")):
        raise MissingPathError(
            f"program dataset {source!r}: expected 'builtin', a .jsonl/.json/.parquet/.csv file or a Hub dataset id"
        )
    else:
        from datasets import load_dataset

        raw = list(load_dataset(source, split="train"))
    if not isinstance(raw, list) or not raw:
        raise DataError(f"program dataset {source!r} holds no rows")
    label = "builtin" if source == "builtin" else str(path)
    rows = tuple(validate_program_row(r, i, label) for i, r in enumerate(raw))
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"program dataset {source!r}: id {dup!r} is used by more than one row")
    return rows


def load_program_rows(source: str = "builtin") -> tuple[ProgramRow, ...]:
    """Every row of ``source`` validated (cached per source): ``"builtin"``, a local file or a Hub dataset id."""
    with _ROWS_LOCK:
        return _load(str(source))


def split_rows(rows: Sequence[ProgramRow], split: str, heldout_fraction: float) -> list[ProgramRow]:
    """The rows of ``split``: ``heldout`` are those whose ``sha256(id)`` falls in the first ``heldout_fraction``
    of the hash range, ``train`` the others, ``all`` every row. The split depends on the ids only, so adding rows
    never moves a row between splits."""
    if split not in ("train", "heldout", "all"):
        raise ConfigError(f"split={split!r} must be 'train', 'heldout' or 'all'")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(f"heldout_fraction={heldout_fraction!r} must be in [0, 1)")
    if split == "all":
        return list(rows)

    def is_heldout(row: ProgramRow) -> bool:
        return int(hashlib.sha256(row.id.encode()).hexdigest()[:8], 16) < heldout_fraction * 16**8

    return [r for r in rows if is_heldout(r) == (split == "heldout")]


_THINK = re.compile(r"<think>.*?</think>|<thinking>.*?</thinking>", re.DOTALL | re.IGNORECASE)
_INPUT = re.compile(r"<INPUT>(.*?)</INPUT>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_input(completion: str) -> str | None:
    """The stdin an ABD answer proposes: the last ``<INPUT>...</INPUT>`` block after dropping ``<think>`` sections,
    each line right-stripped, surrounding blank lines dropped, ending in one newline (``""`` for an empty block);
    ``None`` when there is no block."""
    blocks = _INPUT.findall(_THINK.sub("", completion or ""))
    if not blocks:
        return None
    lines = [line.rstrip() for line in blocks[-1].strip("\n").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines) + "\n" if lines else ""


def extract_program(completion: str) -> str | None:
    """The program a DED answer gives: the last fenced block (```python, ```py or a bare fence) after dropping
    ``<think>`` sections; ``None`` when there is none."""
    blocks = _FENCE.findall(_THINK.sub("", completion or ""))
    return blocks[-1] if blocks else None


def outputs_match(expected: str, actual: str) -> bool:
    """The output comparison of both tasks: equal as they are, or after ``strip()`` and CRLF -> LF, or line by line
    after ``rstrip()`` of each line."""
    if expected == actual:
        return True
    exp, act = expected.strip().replace("\r\n", "\n"), actual.strip().replace("\r\n", "\n")
    return exp == act or [x.rstrip() for x in exp.splitlines()] == [x.rstrip() for x in act.splitlines()]


FUNCTION_HARNESS = """\
import json, os, runpy, sys
call = json.loads(sys.stdin.read())
ns = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "solution.py"), run_name="__solution__")
print("\\n" + json.dumps(ns[call["fn"]](*call["args"])))
"""
"""``main.py`` of a function-call case: load ``solution.py`` as a module, call the function, print its result as
JSON on the last line."""


def case_execution(program: str, case: TestCase) -> Execution:
    """The sandbox run of ``program`` on ``case``."""
    if case.kind == "stdin_stdout":
        return Execution(program, case.input)
    stdin = json.dumps({"fn": case.fn_name, "args": list(case.args)})
    return Execution(FUNCTION_HARNESS, stdin, files={"solution.py": program})


def case_passed(case: TestCase, result: SandboxResult) -> bool:
    """Whether a run passed: it ended normally (exit 0, no limit) and printed the expected output (stdin cases)
    or returned the expected value (function calls, compared as JSON)."""
    if not result.ok:
        return False
    if case.kind == "stdin_stdout":
        return outputs_match(case.output, result.stdout)
    lines = result.stdout.rstrip("\n").splitlines()
    try:
        return bool(lines) and json.loads(lines[-1]) == json.loads(json.dumps(case.value))
    except (json.JSONDecodeError, TypeError):
        return False


def run_test_cases(sandbox: Sandbox, jobs: Sequence[tuple[str, Sequence[TestCase]]]) -> list[list[bool]]:
    """For each ``(program, cases)``, whether each case passed; every run of every job in one sandbox batch."""
    flat = [(j, case) for j, (_, cases) in enumerate(jobs) for case in cases]
    results = sandbox.run_many([case_execution(jobs[j][0], case) for j, case in flat])
    passed: list[list[bool]] = [[] for _ in jobs]
    for (j, case), result in zip(flat, results):
        passed[j].append(case_passed(case, result))
    return passed


_SANDBOXES: dict[tuple, Sandbox] = {}
_SANDBOX_LOCK = threading.Lock()


def shared_sandbox(
    limits: SandboxLimits | None = None, isolation: str = "auto", workers: int | None = None
) -> Sandbox:
    """One :class:`Sandbox` per (limits, isolation, workers) in this process, shared by the tasks' scorers."""
    key = (limits or SandboxLimits(), isolation, workers)
    with _SANDBOX_LOCK:
        if key not in _SANDBOXES:
            _SANDBOXES[key] = Sandbox(key[0], workers=workers, isolation=isolation)
        return _SANDBOXES[key]


class ProgramTask:
    """What ABD and DED share: the rows of ``dataset`` in ``split``, and the sandbox their scorers use.

    Args:
        dataset: ``"builtin"`` (default), a local file or a Hub dataset id (see :func:`load_program_rows`).
        split: ``"train"`` (default: the rows for SFT and PPO), ``"heldout"`` (the evaluation's) or ``"all"``.
        heldout_fraction: share of the rows (by id hash) held out from ``train``; default 0.2.
        isolation: the sandbox isolation, ``"auto"``, ``"required"`` or ``"none"``.
        workers: parallel sandbox runs (default: the cores available).
        wall_s, cpu_s, memory_mb: the per-run limits (defaults SPEC §6: 30 s, 10 s, 512 MiB).
    """

    name: str

    def __init__(
        self,
        dataset: str = "builtin",
        split: str = "train",
        heldout_fraction: float = 0.2,
        isolation: str = "auto",
        workers: int | None = None,
        wall_s: float = 30.0,
        cpu_s: float = 10.0,
        memory_mb: int = 512,
    ) -> None:
        self.dataset, self.split, self.heldout_fraction = dataset, split, heldout_fraction
        self.isolation, self.workers = isolation, workers
        self.limits = SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb)
        self._params = {"dataset": dataset, "heldout_fraction": heldout_fraction, "isolation": isolation,
                        "workers": workers, "wall_s": wall_s, "cpu_s": cpu_s, "memory_mb": memory_mb}  # fmt: skip
        split_rows((), split, heldout_fraction)  # validate before any loading
        self._rows: list[ProgramRow] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dataset={self.dataset!r}, split={self.split!r})"

    @property
    def rows(self) -> list[ProgramRow]:
        """The rows of this task's split (loaded on first use)."""
        if self._rows is None:
            rows = split_rows(load_program_rows(self.dataset), self.split, self.heldout_fraction)
            if not rows:
                raise DataError(f"{self.name} task: dataset {self.dataset!r} has no row in split {self.split!r}")
            self._rows = rows
        return self._rows

    @property
    def sandbox(self) -> Sandbox:
        return shared_sandbox(self.limits, self.isolation, self.workers)

    def score(self, instance, completion: str) -> float:
        """One answer: :meth:`score_many` of a batch of one (a single sandbox run)."""
        return self.score_many([instance], [completion])[0]

    def check(self) -> None:
        """Fail now, before any training, on a bad row, an empty train or held-out split, or a refused sandbox."""
        for task in (self, self.heldout()):
            task.rows  # noqa: B018 - loads and validates
        self.sandbox  # noqa: B018 - detects the isolation (isolation="required" raises here)

    def heldout(self):
        """The same task on the held-out rows (what the evaluations draw from)."""
        return type(self)(split="heldout", **self._params)
