"""``bench/bench_envs.py --quick``: it runs, writes the documented JSON, and its numbers are sane (every environment
measured with a finite positive rate, rollout shares in [0, 1] summing to 1, each verdict consistent with its share).
Behaviour only: no assertion on the timings nor on the 10 % target itself."""

from __future__ import annotations

import importlib
import math

import pytest

from tests.conftest import finite_positive, run_bench_quick

ALL_ENVS = ("webshop", "alfworld", "babyai", "sciworld", "textcraft")


def _buildable(name: str) -> bool:
    """Whether environment ``name`` can be built here (SciWorld needs a JVM; modules being written may be absent)."""
    try:
        importlib.import_module(f"trl_ext.tasks.envs.{name}")
        from trl_ext.tasks.envs import get_env

        get_env(name).close()
    except Exception:
        return False
    return True


ENVS = [name for name in ALL_ENVS if _buildable(name)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    return run_bench_quick(tmp_path_factory, "bench_envs", "--envs", *ENVS)


def _check_shares(stats: dict) -> None:
    shares = [stats[k] for k in ("env_share", "generation_share", "other_share")]
    assert all(0.0 <= s <= 1.0 for s in shares), stats
    assert math.isclose(sum(shares), 1.0, abs_tol=1e-9), stats
    assert stats["target_met"] is (stats["env_share"] <= 0.10), stats
    assert stats["verdict"] == ("MET" if stats["target_met"] else "NOT MET"), stats
    assert stats["turns"] >= 1 and stats["new_tokens"] >= 1 and stats["env_steps"] >= 1, stats


def test_json_structure(quick_run):
    payload, stdout = quick_run
    for key in ("config", "environment", "summary", "runs"):
        assert key in payload, key
    config = payload["config"]
    assert config["quick"] is True and config["repeats"] == 1 and config["seeds"] == 2
    assert config["rollout_batch"] == 1 and config["max_new_tokens"] == 4
    summary = payload["summary"]
    assert summary["targets"] == {"env_share": 0.1} and summary["envs"] == ENVS
    assert set(summary["expert"]) == set(ENVS)
    for name, stats in summary["expert"].items():
        for key in ("steps_per_s", "step_ms", "reset_ms"):
            assert finite_positive(stats[key]), (name, key, stats)
            low, high = stats[f"{key}_range"]
            assert low <= stats[key] <= high, (name, key, stats)
        assert stats["episodes"] == 2 and stats["failures"] == 0, (name, stats)
        engine = stats["startup"]["engine_start_s_median"]
        assert (engine is not None) is (name == "sciworld"), (name, stats["startup"])
    assert set(summary["rollout"]) == {*ENVS, "mixed"}
    for stats in [*summary["rollout"].values(), summary["overall"]]:
        _check_shares(stats)
    assert summary["rollout"]["mixed"]["rollouts"] == 1 and summary["mixed_batch"] == ENVS
    assert set(summary["verdicts"]) == {*ENVS, "mixed", "overall"}
    assert set(summary["verdicts"].values()) <= {"MET", "NOT MET"}
    parts = sorted((r["part"], r.get("env") or r["arm"]) for r in payload["runs"])
    assert parts == sorted([("expert", n) for n in ENVS] + [("rollout", a) for a in [*ENVS, "mixed"]])
    assert any(line.startswith("TARGET environment share") for line in stdout.splitlines())
    assert payload["environment"]["code_sha256"]["trl_ext/tasks/envs/play.py"] is not None
