"""``bench/bench_sandbox.py --quick``: it runs, writes the documented JSON, and its numbers are sane (both arms at
each parallelism, every reward of the expert answers 1). Behaviour only: no assertion on the throughput target."""

from __future__ import annotations

import pytest

from tests.conftest import finite_positive, run_bench_quick
from trl_ext.tasks.sandbox import detect_isolation

ISOLATION = "required" if detect_isolation().kind == "bwrap" else "none"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    return run_bench_quick(tmp_path_factory, "bench_sandbox", "--isolation", ISOLATION)


def test_json_structure(quick_run):
    payload, stdout = quick_run
    for key in ("config", "environment", "summary", "runs"):
        assert key in payload, key
    assert payload["config"]["quick"] is True and payload["config"]["executions"] == 20
    summary = payload["summary"]
    assert summary["targets"] == {"throughput_ratio": 0.7}
    assert set(summary["workers"]) == {"1", "2"} and set(summary["verdicts"].values()) <= {"MET", "NOT MET"}
    for stats in summary["workers"].values():
        for key in ("sandbox_exec_per_s", "bare_exec_per_s", "throughput_ratio"):
            assert finite_positive(stats[key]), (key, stats)
        assert stats["isolation"] == ("bwrap" if ISOLATION == "required" else "rlimits")
    assert sorted((r["workers"], r["arm"]) for r in payload["runs"]) == [
        (1, "bare"), (1, "same_python"), (1, "sandbox"), (2, "bare"), (2, "same_python"), (2, "sandbox")
    ]  # fmt: skip
    reward = summary["reward"]
    assert reward["rollout_size"] == 8 and finite_positive(reward["ms_per_rollout"])
    assert set(reward["tasks"]) == {"sat", "abd", "ded"}
    assert any(line.startswith("TARGET sandbox/bare throughput") for line in stdout.splitlines())
    assert payload["environment"]["code_sha256"]["trl_ext/tasks/sandbox/runner.py"] is not None
