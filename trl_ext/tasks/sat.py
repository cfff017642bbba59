"""Planted k-SAT (docs/tasks.md): generate a satisfiable formula, prompt for an assignment, score it.

Generation of one instance with ``rng`` (a ``random.Random``), in this exact order of draws:

1. ``n = rng.randint(lo, hi)`` (a fixed ``n`` is the range ``(n, n)``); then ``k`` the same way.
2. ``m = num_clauses`` if given, else ``m = ⌊clause_ratio · n⌋``. The floor is taken on the *decimal*
   value of ``clause_ratio`` (``Fraction(repr(clause_ratio))``) so that float noise never changes ``m``
   (e.g. 4.26 · 50 = 213 exactly).
3. Planted solution: ``solution[i] = rng.random() < 0.5`` for ``i = 1..n``.
4. For each of the ``m`` clauses independently:
   ``vars = rng.sample(range(1, n + 1), k)`` (k **distinct** variables, kept in the random sampled
   order, *not* sorted); ``forced = rng.randrange(k)``; the literal at position ``forced`` takes the
   sign that agrees with the solution, every other literal is positive iff ``rng.random() < 0.5``.
   Clauses may repeat (they are drawn independently).

Every formula is therefore satisfied by the planted solution (it may have other solutions too).

Clauses are stored DIMACS style: ``+i`` is ``xi`` and ``-i`` is ``¬xi``. The formula text is
``(x1 ∨ ¬x3 ∨ x7) ∧ (…)`` (∨ U+2228, ¬ U+00AC, ∧ U+2227).

Scoring: :func:`parse_assignment` reads every match of ``x(\\d+)=(True|False|1|0)`` (the regex of docs/tasks.md,
verbatim: case-sensitive, no spaces around ``=``; a **repeated variable takes its last value**);
the score is 1.0 iff every clause contains a literal made true by the parsed assignment
(:func:`check_assignment`); an unassigned variable never satisfies a literal, so ``UNSAT`` or an
empty answer scores 0.0.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from trl_ext.tasks.base import Task, TaskInstance
from trl_ext.tasks.registry import register_task

__all__ = [
    "ASSIGNMENT_PATTERN",
    "PRESETS",
    "SATTask",
    "check_assignment",
    "format_assignment",
    "format_formula",
    "make_prompt",
    "parse_assignment",
]

ASSIGNMENT_PATTERN = re.compile(r"x(\d+)=(True|False|1|0)")
"""The docs/tasks.md answer regex; group 1 is the variable index, group 2 its value."""

PROMPT_TEMPLATE = (
    "Find a satisfying assignment for the following {k}-SAT formula over variables x1..x{n}:\n"
    "{formula}\n"
    "Provide your answer as comma-separated assignments like `x1=True, x2=False, ...`, "
    "or respond `UNSAT` if it has no solution."
)

PRESETS: dict[str, dict[str, Any]] = {
    # The seed document's ranges: n uniform in 10..20, k uniform in 3..5, ratio 4.2.
    "document": {"n": (10, 20), "k": (3, 5), "clause_ratio": 4.2},
}
"""Named parameter sets; explicitly passed parameters override the preset's values."""

DEFAULTS: dict[str, Any] = {"n": 15, "k": 10, "clause_ratio": 4.26}

IntOrRange = int | Sequence[int]


def format_formula(clauses: Sequence[Sequence[int]]) -> str:
    """``[[1, -3], [2]]`` -> ``"(x1 ∨ ¬x3) ∧ (x2)"``."""
    return " \u2227 ".join(
        "(" + " \u2228 ".join(f"x{lit}" if lit > 0 else f"\u00acx{-lit}" for lit in clause) + ")" for clause in clauses
    )


def make_prompt(formula: str, n: int, k: int) -> str:
    """The exact docs/tasks.md prompt for a formula text over ``x1..x{n}`` with ``k`` literals per clause."""
    return PROMPT_TEMPLATE.format(k=k, n=n, formula=formula)


def format_assignment(solution: Sequence[bool]) -> str:
    """``[True, False]`` -> ``"x1=True, x2=False"`` (``solution[i - 1]`` is the value of ``xi``)."""
    return ", ".join(f"x{i}={bool(v)}" for i, v in enumerate(solution, start=1))


def parse_assignment(text: str) -> dict[int, bool]:
    """Every ``x<i>=<True|False|1|0>`` in ``text`` -> ``{i: value}``; the last occurrence of a variable wins.

    Uses the regex of docs/tasks.md verbatim (no word boundaries): ``"x1 = True"`` and ``"x1=true"`` are not read,
    and ``"x1=10"`` reads as ``x1=1``.
    """
    return {int(var): val in ("True", "1") for var, val in ASSIGNMENT_PATTERN.findall(text or "")}


def check_assignment(clauses: Sequence[Sequence[int]], assignment: Mapping[int, bool]) -> bool:
    """True iff every clause has a literal made true: ``+i`` needs ``assignment[i]`` true, ``-i`` needs it
    false. A missing (or ``None``) variable satisfies nothing; an empty clause is never satisfied."""
    return all(any(_literal_true(lit, assignment) for lit in clause) for clause in clauses)


def _literal_true(lit: int, assignment: Mapping[int, bool]) -> bool:
    value = assignment.get(abs(lit))
    return value is not None and bool(value) == (lit > 0)


def _as_range(name: str, value: Any) -> tuple[int, int]:
    """``5`` -> ``(5, 5)``; ``(lo, hi)`` / ``[lo, hi]`` -> ``(lo, hi)`` inclusive; anything else -> ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        lo, hi = value
        if lo > hi:
            raise ValueError(f"SAT parameter {name!r}={value!r}: range lower bound exceeds upper bound")
        return lo, hi
    raise ValueError(f"SAT parameter {name!r}={value!r} must be an int or an inclusive (lo, hi) pair of ints")


def _num_clauses_for(clause_ratio: float, n: int) -> int:
    """``⌊clause_ratio · n⌋`` computed on the decimal value of ``clause_ratio``."""
    return math.floor(Fraction(repr(float(clause_ratio))) * n)


@register_task
class SATTask(Task):
    """Planted k-SAT (see the module docstring for the exact algorithm).

    Args:
        n: number of variables, or an inclusive ``(lo, hi)`` range drawn per instance. Default 15.
        k: literals (distinct variables) per clause, int or ``(lo, hi)``. Default 10. Must satisfy
            ``k <= n`` for every possible draw, i.e. ``max k <= min n``.
        clause_ratio: clauses per variable; ``m = ⌊clause_ratio · n⌋``. Default 4.26.
        num_clauses: fixed ``m``; overrides ``clause_ratio`` when given.
        preset: ``None`` or ``"document"`` (n 10..20, k 3..5, ratio 4.2). Parameters passed explicitly
            override the preset.

    Raises:
        ValueError: naming the offending parameter and value.
    """

    name = "sat"

    def __init__(
        self,
        n: IntOrRange | None = None,
        k: IntOrRange | None = None,
        clause_ratio: float | None = None,
        num_clauses: int | None = None,
        preset: str | None = None,
    ) -> None:
        params = dict(DEFAULTS)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"SAT parameter 'preset'={preset!r} is unknown; known presets: {sorted(PRESETS)}")
            params.update(PRESETS[preset])
        for key, value in (("n", n), ("k", k), ("clause_ratio", clause_ratio)):
            if value is not None:
                params[key] = value
        self.preset = preset
        self.n_range = _as_range("n", params["n"])
        self.k_range = _as_range("k", params["k"])
        if self.n_range[0] < 1:
            raise ValueError(f"SAT parameter 'n'={params['n']!r} must be >= 1")
        if self.k_range[0] < 1:
            raise ValueError(f"SAT parameter 'k'={params['k']!r} must be >= 1")
        if self.k_range[1] > self.n_range[0]:
            raise ValueError(
                f"SAT parameter 'k'={params['k']!r} must be <= n={params['n']!r} (max k {self.k_range[1]} > "
                f"min n {self.n_range[0]})"
            )
        ratio = params["clause_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"SAT parameter 'clause_ratio'={ratio!r} must be a finite number > 0")
        self.clause_ratio = float(ratio)
        if num_clauses is not None:
            if isinstance(num_clauses, bool) or not isinstance(num_clauses, int) or num_clauses < 1:
                raise ValueError(f"SAT parameter 'num_clauses'={num_clauses!r} must be an int >= 1")
        elif _num_clauses_for(self.clause_ratio, self.n_range[0]) < 1:
            raise ValueError(
                f"SAT parameter 'clause_ratio'={ratio!r} gives m = floor({ratio} * {self.n_range[0]}) < 1 clauses"
            )
        self.num_clauses = num_clauses

    def __repr__(self) -> str:
        return (
            f"SATTask(n={self.n_range}, k={self.k_range}, clause_ratio={self.clause_ratio}, "
            f"num_clauses={self.num_clauses}, preset={self.preset!r})"
        )

    def generate(self, rng: random.Random, index: int = 0) -> TaskInstance:
        """One planted instance; id ``f"sat-{index:06d}"``. Draw order is documented in the module docstring."""
        n = rng.randint(*self.n_range)
        k = rng.randint(*self.k_range)
        m = self.num_clauses if self.num_clauses is not None else _num_clauses_for(self.clause_ratio, n)
        solution = [rng.random() < 0.5 for _ in range(n)]
        clauses: list[list[int]] = []
        for _ in range(m):
            variables = rng.sample(range(1, n + 1), k)
            forced = rng.randrange(k)
            clause = []
            for j, var in enumerate(variables):
                positive = solution[var - 1] if j == forced else rng.random() < 0.5
                clause.append(var if positive else -var)
            clauses.append(clause)
        return self.make_instance(clauses, solution, k=k, index=index)

    @classmethod
    def make_instance(
        cls, clauses: Sequence[Sequence[int]], solution: Sequence[bool], k: int, index: int = 0
    ) -> TaskInstance:
        """Build the instance for given clauses and planted ``solution`` (``n = len(solution)``).

        Payload: ``{"n": int, "k": int, "clauses": [[signed int, ...], ...], "solution": [bool, ...]}``
        with ``solution[i - 1]`` the value of ``xi``. The expert answer is ``format_assignment(solution)``.
        """
        n = len(solution)
        clause_lists = [[int(lit) for lit in clause] for clause in clauses]
        return TaskInstance(
            task=cls.name,
            id=f"{cls.name}-{index:06d}",
            prompt=make_prompt(format_formula(clause_lists), n=n, k=k),
            expert_answer=format_assignment(solution),
            payload={"n": n, "k": k, "clauses": clause_lists, "solution": [bool(v) for v in solution]},
        )

    def score(self, instance: TaskInstance, completion: str) -> float:
        """1.0 iff the assignment parsed from ``completion`` satisfies every clause of ``instance``, else 0.0."""
        if "clauses" not in instance.payload:
            raise ValueError(f"SAT instance {instance.id!r}: payload has no 'clauses'")
        return 1.0 if check_assignment(instance.payload["clauses"], parse_assignment(completion)) else 0.0
