"""Planted k-SAT task (docs/tasks.md): generator invariants, exact prompt, parser, and scorer vs brute force."""

from __future__ import annotations

import functools
import itertools
import json
import random
import re

import pytest

from trl_ext.tasks import available_tasks, get_task
from trl_ext.tasks.sat import (
    SATTask,
    check_assignment,
    format_assignment,
    format_formula,
    parse_assignment,
)

# --- independent reference implementations (do not reuse the module's helpers) -------------------


def formula_to_python(formula: str) -> str:
    """The formula *text* -> a Python expression over ``a`` (dict var -> bool | None).

    ``xi`` is true iff ``a[i] is True``; ``¬xi`` iff ``a[i] is False`` (unassigned satisfies nothing).
    """
    expr = re.sub(r"\u00acx(\d+)", r"(a.get(\1) is False)", formula)
    expr = re.sub(r"x(\d+)", r"(a.get(\1) is True)", expr)
    return expr.replace(" \u2228 ", " or ").replace(" \u2227 ", " and ")


@functools.lru_cache(maxsize=256)
def _compiled(formula: str):
    return compile(formula_to_python(formula), "<formula>", "eval")


def evaluate_text(formula: str, assignment: dict[int, bool | None]) -> bool:
    return bool(eval(_compiled(formula), {}, {"a": assignment}))  # test-only, evaluates our own formula text


def brute_force_models(clauses: list[list[int]], n: int) -> set[tuple[bool, ...]]:
    """All total assignments (x1..xn) satisfying the CNF, by direct enumeration."""
    models = set()
    for bits in itertools.product((False, True), repeat=n):
        if all(any(bits[abs(lit) - 1] == (lit > 0) for lit in clause) for clause in clauses):
            models.add(bits)
    return models


def answer_text(bits: tuple[bool, ...]) -> str:
    return ", ".join(f"x{i + 1}={b}" for i, b in enumerate(bits))


def random_cnf(rng: random.Random, n: int) -> list[list[int]]:
    """Arbitrary CNF (NOT from the generator): repeated variables, x and ¬x together, any clause size."""
    m = rng.randint(1, 12)
    return [[rng.choice((1, -1)) * rng.randint(1, n) for _ in range(rng.randint(1, 4))] for _ in range(m)]


# --- generator ----------------------------------------------------------------------------------

CONFIGS = [
    dict(),  # defaults n=15, k=10
    dict(n=5, k=3),
    dict(n=8, k=8),
    dict(n=1, k=1),
    dict(n=6, k=2, num_clauses=40),
    dict(n=(4, 9), k=(1, 4), clause_ratio=2.5),
    dict(preset="document"),
]


@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_generated_formulas_are_planted_and_well_formed(params):
    task = get_task("sat", **params)
    for seed in range(25):
        for inst in task.generate_many(4, seed=seed):
            p = inst.payload
            n, k, clauses, solution = p["n"], p["k"], p["clauses"], p["solution"]
            assert len(solution) == n
            for clause in clauses:
                variables = [abs(lit) for lit in clause]
                assert len(clause) == k and len(set(variables)) == k
                assert all(1 <= v <= n for v in variables) and 0 not in clause
            planted = {i + 1: v for i, v in enumerate(solution)}
            assert evaluate_text(format_formula(clauses), planted)
            assert task.score(inst, inst.expert_answer) == 1.0
            assert parse_assignment(inst.expert_answer) == planted
            assert json.loads(json.dumps(p)) == p


def test_default_parameters_and_clause_count():
    task = get_task("sat")
    inst = task.generate(random.Random(0))
    assert inst.payload["n"] == 15 and inst.payload["k"] == 10
    assert len(inst.payload["clauses"]) == 63  # floor(4.26 * 15) = floor(63.9)
    for n in range(1, 101):
        t = get_task("sat", n=n, k=1)
        assert len(t.generate(random.Random(n)).payload["clauses"]) == (426 * n) // 100
    assert len(get_task("sat", n=50, k=3).generate(random.Random(1)).payload["clauses"]) == 213
    assert len(get_task("sat", n=7, k=3, num_clauses=5).generate(random.Random(1)).payload["clauses"]) == 5
    assert len(get_task("sat", n=10, k=3, clause_ratio=1.55).generate(random.Random(1)).payload["clauses"]) == 15


def test_document_preset_ranges():
    task = get_task("sat", preset="document")
    ns, ks = set(), set()
    for inst in task.generate_many(400, seed=3):
        n, k = inst.payload["n"], inst.payload["k"]
        ns.add(n)
        ks.add(k)
        assert len(inst.payload["clauses"]) == (42 * n) // 10  # floor(4.2 n)
        assert f"{k}-SAT formula over variables x1..x{n}:" in inst.prompt
    assert ns == set(range(10, 21)) and ks == {3, 4, 5}
    # explicit parameters override the preset
    inst = get_task("sat", preset="document", n=12, k=4).generate(random.Random(0))
    assert (inst.payload["n"], inst.payload["k"], len(inst.payload["clauses"])) == (12, 4, 50)


def test_generation_is_deterministic_and_pinned():
    task = get_task("sat", n=4, k=2, num_clauses=3)
    assert task.generate_many(20, seed=7) == task.generate_many(20, seed=7)
    assert task.generate_many(20, seed=7) != task.generate_many(20, seed=8)
    inst = task.generate(random.Random(0), index=123)
    assert inst.id == "sat-000123" and inst.task == "sat"
    # pins the documented draw order (n, k, solution, then per clause: sample, forced position, signs)
    assert inst.payload == {
        "n": 4,
        "k": 2,
        "clauses": [[-3, -2], [-2, 3], [-1, 3]],
        "solution": [True, False, True, False],
    }


def test_exact_prompt_and_expert_answer():
    inst = SATTask.make_instance([[1, -3], [-2, 3]], [True, False, False], k=2, index=5)
    assert inst.prompt == (
        "Find a satisfying assignment for the following 2-SAT formula over variables x1..x3:\n"
        "(x1 \u2228 \u00acx3) \u2227 (\u00acx2 \u2228 x3)\n"
        "Provide your answer as comma-separated assignments like `x1=True, x2=False, ...`, "
        "or respond `UNSAT` if it has no solution."
    )
    assert "(x1 ∨ ¬x3) ∧ (¬x2 ∨ x3)" in inst.prompt
    assert inst.prompt.count("\n") == 2
    assert inst.expert_answer == "x1=True, x2=False, x3=False"
    assert inst.id == "sat-000005"
    assert inst.payload == {"n": 3, "k": 2, "clauses": [[1, -3], [-2, 3]], "solution": [True, False, False]}


def test_generated_prompt_matches_template():
    for inst in get_task("sat", preset="document").generate_many(10, seed=0):
        p = inst.payload
        formula = " ∧ ".join(
            "(" + " ∨ ".join(("x" if lit > 0 else "¬x") + str(abs(lit)) for lit in c) + ")" for c in p["clauses"]
        )
        expected = (
            f"Find a satisfying assignment for the following {p['k']}-SAT formula over variables x1..x{p['n']}:\n"
            f"{formula}\nProvide your answer as comma-separated assignments like `x1=True, x2=False, ...`, "
            "or respond `UNSAT` if it has no solution."
        )
        assert inst.prompt == expected
        assert inst.expert_answer == format_assignment(p["solution"])


# --- parser -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x1=True, x2=False, x3=True", {1: True, 2: False, 3: True}),
        ("x1=1, x2=0", {1: True, 2: False}),
        ("x1=True,x2=False", {1: True, 2: False}),
        ("  x1=True\n\tx2=0 ;  x3=1\n", {1: True, 2: False, 3: True}),
        ("Answer: x10=False and x2=True.", {10: False, 2: True}),
        ("x1=True, x2=False, x1=False", {1: False, 2: False}),  # repeated variable: last occurrence wins
        ("x1 = True", {}),  # the answer regex (docs/tasks.md) allows no spaces around '='
        ("x1=true, X2=False", {}),  # case-sensitive
        ("UNSAT", {}),
        ("", {}),
    ],
)
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


# --- scorer -------------------------------------------------------------------------------------


def test_scorer_matches_brute_force_on_generated_formulas():
    rng = random.Random(0)
    for n in range(1, 7):
        for k in range(1, min(n, 3) + 1):
            for inst in get_task("sat", n=n, k=k).generate_many(3, seed=rng.randrange(10**6)):
                clauses = inst.payload["clauses"]
                models = brute_force_models(clauses, n)
                assert tuple(inst.payload["solution"]) in models
                for bits in itertools.product((False, True), repeat=n):
                    assert SATTask().score(inst, answer_text(bits)) == float(bits in models)


def test_scorer_matches_brute_force_on_arbitrary_formulas():
    rng = random.Random(1)
    task = get_task("sat")
    saw_unsat = saw_sat = 0
    for _ in range(120):
        n = rng.randint(1, 8)
        clauses = random_cnf(rng, n)
        inst = SATTask.make_instance(clauses, [False] * n, k=3)  # payload solution is irrelevant to scoring
        models = brute_force_models(clauses, n)
        saw_unsat += not models
        saw_sat += bool(models)
        for bits in itertools.product((False, True), repeat=n):
            text = answer_text(bits)
            assert task.score(inst, text) == float(bits in models)
            assert evaluate_text(format_formula(clauses), dict(enumerate(bits, start=1))) == (bits in models)
        # partial / noisy answers: unassigned variables satisfy nothing
        for _ in range(10):
            partial = {v: rng.random() < 0.5 for v in range(1, n + 1) if rng.random() < 0.6}
            text = " ".join(
                f"x{v}={rng.choice(['True', '1']) if b else rng.choice(['False', '0'])}" for v, b in partial.items()
            )
            expected = evaluate_text(format_formula(clauses), partial)
            assert task.score(inst, text) == float(expected)
            assert check_assignment(clauses, partial) is expected
        assert task.score(inst, "UNSAT") == 0.0
    assert saw_unsat > 5 and saw_sat > 5


def test_unsatisfiable_formula_scores_zero_everywhere():
    clauses = [[s1 * 1, s2 * 2, s3 * 3] for s1 in (1, -1) for s2 in (1, -1) for s3 in (1, -1)]
    inst = SATTask.make_instance(clauses, [True, True, True], k=3)
    assert brute_force_models(clauses, 3) == set()
    task = SATTask()
    assert all(task.score(inst, answer_text(b)) == 0.0 for b in itertools.product((False, True), repeat=3))
    assert task.score(inst, "UNSAT") == 0.0


def test_unassigned_variables_never_satisfy():
    assert check_assignment([[1]], {}) is False
    assert check_assignment([[-1]], {}) is False  # unassigned is not False
    assert check_assignment([[1, -2]], {3: True}) is False
    assert check_assignment([[1, -2]], {2: False}) is True
    assert check_assignment([], {}) is True
    assert check_assignment([[]], {1: True}) is False
    inst = SATTask.make_instance([[1, -2], [3]], [True, True, True], k=2)
    assert SATTask().score(inst, "x1=True") == 0.0
    assert SATTask().score(inst, "x1=True, x3=True") == 1.0
    assert SATTask().score(inst, "x1=True, x3=True, x3=False") == 0.0  # last occurrence wins


# --- validation and registry --------------------------------------------------------------------


@pytest.mark.parametrize(
    "params, pattern",
    [
        (dict(n=5, k=6), r"'k'=6 must be <= n=5"),
        (dict(n=0, k=1), r"'n'=0"),
        (dict(n=5, k=0), r"'k'=0"),
        (dict(n=(3, 20), k=(3, 5)), r"'k'"),
        (dict(n=(9, 4)), r"'n'=\(9, 4\)"),
        (dict(n="15"), r"'n'='15'"),
        (dict(n=True), r"'n'=True"),
        (dict(num_clauses=0), r"'num_clauses'=0"),
        (dict(clause_ratio=0.01), r"'clause_ratio'=0.01"),
        (dict(clause_ratio=-1.0), r"'clause_ratio'=-1.0"),
        (dict(clause_ratio=float("nan")), r"'clause_ratio'=nan"),
        (dict(preset="nope"), r"'preset'='nope'"),
        (dict(bogus=1), r"bogus"),
    ],
)
def test_invalid_parameters_raise_value_error_naming_them(params, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_task("sat", **params)


def test_registry():
    assert "sat" in available_tasks()
    assert isinstance(get_task("sat"), SATTask)
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
