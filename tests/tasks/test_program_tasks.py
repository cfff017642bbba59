"""ABD and DED (trl_ext.tasks.abd / ded / programs): extraction, output matching, scoring of hand-written correct,
wrong and malformed answers through the sandbox, row validation, splits, and the shipped program set."""

from __future__ import annotations

import json
import random

import pytest

from trl_ext.tasks import get_task
from trl_ext.tasks.programs import (
    BUILTIN_PROGRAMS,
    TestCase,
    extract_input,
    extract_program,
    load_program_rows,
    outputs_match,
    run_test_cases,
    shared_sandbox,
    split_rows,
)
from trl_ext.tasks.sandbox import Execution

ADD = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    print(add(*map(int, input().split())))\n"
ROWS = [
    {
        "id": "double",
        "prompt": "Read an integer n and print 2n.",
        "program": "x = int(input())\nprint(x * 2)\n",
        "inputs": "5\n",
        "output": "10\n",
        "test_cases": json.dumps({"test_cases": [{"type": "stdin_stdout", "input": "5\n", "output": "10\n"},
                                                 {"type": "stdin_stdout", "input": "-3\n", "output": "-6\n"}]}),
    },
    {
        "id": "add",
        "prompt": "Read a and b; print a + b. Also define add(a, b).",
        "program": ADD,
        "inputs": "1 2\n",
        "output": "3\n",
        # a Python literal (the original reader accepts it too) with a function-call case
        "test_cases": str({"test_cases": [
            {"type": "stdin_stdout", "input": "1 2\n", "output": "3\n"},
            {"type": "function_call", "fn_name": "add", "input": [4, 5], "output": [9]},
        ]}),
    },
]  # fmt: skip


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return str(path)


def _tasks(dataset):
    limits = {"wall_s": 5.0, "cpu_s": 1.0}  # the looping answer stops after 1-2 s, not SPEC's 10
    return tuple(get_task(name, dataset=dataset, split="all", **limits) for name in ("abd", "ded"))


# ---------------------------------------------------------------- extraction and matching


def test_extract_input_takes_the_last_block_outside_think():
    text = "<think><INPUT>\n1\n</INPUT></think>first <INPUT>\n2\n</INPUT> then <input>\n 3  \n4\n\n</input>"
    assert extract_input(text) == " 3\n4\n"
    assert extract_input("<thinking><INPUT>9</INPUT></thinking>") is None
    assert extract_input("no block") is None
    assert extract_input("<INPUT>\n</INPUT>") == ""


def test_extract_program_takes_the_last_fence():
    text = "<think>```python\nbad()\n```</think>```python\nprint(1)\n```\nand\n```py\nprint(2)\n```"
    assert extract_program(text) == "print(2)\n"
    assert extract_program("```\nprint(3)\n```") == "print(3)\n"
    assert extract_program("print(4)") is None


@pytest.mark.parametrize(
    ("expected", "actual", "match"),
    [
        ("1\n2\n", "1\n2\n", True),
        ("1\n2", "  1\r\n2\r\n\n", True),  # strip, CRLF -> LF
        ("a  \nb", "a\nb   \n", True),  # line by line after rstrip
        ("a\nb", "a\n b", False),
        ("10", "1", False),
        ("", "x", False),
    ],
)
def test_outputs_match(expected, actual, match):
    assert outputs_match(expected, actual) is match


# ---------------------------------------------------------------- scoring


def test_abd_scores_correct_wrong_and_malformed_answers(dataset):
    abd, _ = _tasks(dataset)
    inst = next(i for i in abd.generate_many(20, seed=0) if i.payload["row_id"] == "double")
    half = str(int(inst.payload["expected_output"]) // 2)
    answers = {
        "expert": inst.expert_answer,
        "another input with the same output": f"<INPUT>\n  {half}\n\n</INPUT>",
        "reasoning around it": f"<think>maybe <INPUT>1</INPUT></think>So:\n<INPUT>\n{half}   \n</INPUT>",
        "wrong": "<INPUT>\n7777\n</INPUT>",
        "crashes the program": "<INPUT>\nnot a number\n</INPUT>",
        "no block": half,
        "unclosed": "<INPUT>\n5\n",
    }
    scores = dict(zip(answers, abd.score_many([inst] * len(answers), list(answers.values()))))
    assert scores == {
        "expert": 1.0,
        "another input with the same output": 1.0,
        "reasoning around it": 1.0,
        "wrong": 0.0,
        "crashes the program": 0.0,
        "no block": 0.0,
        "unclosed": 0.0,
    }


def test_ded_scores_correct_wrong_and_malformed_answers(dataset):
    _, ded = _tasks(dataset)
    inst = next(i for i in ded.generate_many(20, seed=0) if i.payload["row_id"] == "add")
    answers = {
        "expert": inst.expert_answer,
        "another correct program": "```python\nimport sys\ndef add(x, y):\n    return y + x\n"
        "if __name__ == '__main__':\n    print(sum(map(int, sys.stdin.read().split())))\n```",
        "passes stdin, wrong function": "```python\ndef add(a, b):\n    return a - b\n"
        "if __name__ == '__main__':\n    print(sum(map(int, input().split())))\n```",
        "no function": "```python\nprint(sum(map(int, input().split())))\n```",
        "wrong output": "```python\nprint(0)\n```",
        "syntax error": "```python\ndef add(:\n```",
        "no fence": "print(3)",
        "runs forever": "```python\nwhile True: pass\n```",
    }
    scores = dict(zip(answers, ded.score_many([inst] * len(answers), list(answers.values()))))
    assert scores == {
        "expert": 1.0,
        "another correct program": 1.0,
        "passes stdin, wrong function": 0.0,
        "no function": 0.0,
        "wrong output": 0.0,
        "syntax error": 0.0,
        "no fence": 0.0,
        "runs forever": 0.0,
    }


def test_score_and_score_many_agree(dataset):
    abd, ded = _tasks(dataset)
    for task in (abd, ded):
        instances = task.generate_many(4, seed=3)
        answers = [i.expert_answer if k % 2 else "nothing" for k, i in enumerate(instances)]
        assert task.score_many(instances, answers) == [task.score(i, a) for i, a in zip(instances, answers)]
        assert task.score_many(instances, answers) == [0.0, 1.0, 0.0, 1.0]


def test_instances_round_trip_through_json_and_are_deterministic(dataset):
    abd, ded = _tasks(dataset)
    for task in (abd, ded):
        a, b = task.generate_many(6, seed=11), task.generate_many(6, seed=11)
        assert a == b
        back = [type(i).from_dict(json.loads(json.dumps(i.to_dict()))) for i in a]
        assert task.score_many(back, [i.expert_answer for i in back]) == [1.0] * 6


def test_run_test_cases_reports_each_case(dataset):
    cases = (TestCase("stdin_stdout", "2\n", "4\n"), TestCase("stdin_stdout", "3\n", "7\n"),
             TestCase("function_call", fn_name="f", args=(2,), value=[4]))  # fmt: skip
    program = "def f(x):\n    return [x * 2]\nif __name__ == '__main__':\n    print(int(input()) * 2)\n"
    sandbox = shared_sandbox(isolation="auto")
    assert run_test_cases(sandbox, [(program, cases), ("print(4)", cases[:1])]) == [[True, False, True], [True]]


# ---------------------------------------------------------------- rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("test_cases"), r"row 1 \(id 'add'\): missing column\(s\) \['test_cases'\]"),
        (lambda r: r.pop("program"), r"missing column\(s\) \['program'\]"),
        (lambda r: r.update(test_cases="{not json"), "neither JSON nor a Python literal"),
        (lambda r: r.update(test_cases=json.dumps({"test_cases": []})), "non-empty list"),
        (lambda r: r.update(test_cases=json.dumps({"test_cases": [{"type": "exec", "input": "", "output": ""}]})),
         r"test case 0 must be a mapping with 'type'"),
        (lambda r: r.update(test_cases=json.dumps({"test_cases": [{"type": "stdin_stdout", "input": "1"}]})),
         r"test case 0 \(stdin_stdout\) is missing \['output'\]"),
        (lambda r: r.update(test_cases=json.dumps(
            {"test_cases": [{"type": "function_call", "fn_name": "1f", "input": [], "output": [1]}]})),
         "'fn_name' must be a Python identifier"),
        (lambda r: r.update(id="double"), "id 'double' is used by more than one row"),
    ],
)  # fmt: skip
def test_a_malformed_row_is_an_error_naming_it(tmp_path, change, message):
    rows = [dict(r) for r in ROWS]
    change(rows[1])
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=message):
        get_task("ded", dataset=str(path), split="all").generate_many(1, seed=0)


def test_missing_files_and_bad_parameters_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="program dataset file not found"):
        get_task("abd", dataset=str(tmp_path / "none.jsonl")).generate_many(1, seed=0)
    with pytest.raises(ValueError, match="split='test'"):
        get_task("abd", split="test")
    with pytest.raises(ValueError, match="heldout_fraction=1.5"):
        get_task("ded", heldout_fraction=1.5)
    with pytest.raises(ValueError, match="invalid parameters"):
        get_task("ded", n=3)


def test_splits_partition_the_rows_by_id():
    rows = load_program_rows("builtin")
    train, heldout = split_rows(rows, "train", 0.2), split_rows(rows, "heldout", 0.2)
    assert {r.id for r in train} | {r.id for r in heldout} == {r.id for r in rows}
    assert not {r.id for r in train} & {r.id for r in heldout}
    assert 0.05 * len(rows) <= len(heldout) <= 0.4 * len(rows)
    abd = get_task("abd")
    assert {i.payload["row_id"] for i in abd.generate_many(200, seed=1)} <= {r.id for r in train}
    assert {i.payload["row_id"] for i in abd.heldout().generate_many(100, seed=1)} <= {r.id for r in heldout}


# ---------------------------------------------------------------- the shipped set


def test_the_shipped_set_has_64_valid_programs_with_both_case_kinds():
    rows = load_program_rows("builtin")
    assert BUILTIN_PROGRAMS.is_file() and len(rows) >= 64
    kinds = {case.kind for row in rows for case in row.test_cases}
    assert kinds == {"stdin_stdout", "function_call"}
    assert sum(any(c.kind == "function_call" for c in r.test_cases) for r in rows) >= 10


def test_every_shipped_output_reproduces_in_the_sandbox():
    """Each row's ``output`` on its ``inputs`` and every test case of its reference program, in the sandbox."""
    rows = load_program_rows("builtin")
    sandbox = shared_sandbox(isolation="auto")
    examples = sandbox.run_many([Execution(r.program, r.inputs) for r in rows])
    bad = [r.id for r, res in zip(rows, examples) if not (res.ok and res.stdout == r.output)]
    assert not bad, bad
    passed = run_test_cases(sandbox, [(r.program, r.test_cases) for r in rows])
    assert all(all(p) for p in passed), [r.id for r, p in zip(rows, passed) if not all(p)]


def test_expert_answers_score_one_on_the_shipped_set():
    for name in ("abd", "ded"):
        task = get_task(name, split="all")
        instances = task.generate_many(48, seed=5)
        assert task.score_many(instances, [i.expert_answer for i in instances]) == [1.0] * 48, name


def test_the_sampler_is_seeded_by_the_callers_rng():
    task = get_task("abd")
    assert task.generate(random.Random(4)) == task.generate(random.Random(4))
