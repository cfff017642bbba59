"""``bench/bench_selective.py --quick``: it runs, writes the documented JSON, and the passes it counts in the trainer
are those of its pass table. Behaviour only: no assertion on any timing."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import run_bench_quick

STRATEGIES = ["kl_divergence", "grad_project", "steering_weights"]
"""A base forward (kl), a surgery with its own proxy pass (grad_project), a one-off alignment plane (steering)."""
COUNT_KEYS = ["fwd_grad", "bwd", "fwd_nograd", "fwd_base", "fwd_hidden"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, tiny_model_path) -> tuple[dict, str]:
    return run_bench_quick(tmp_path_factory, "bench_selective", "--strategies", *STRATEGIES)


def _expected(pass_table: dict[str, int]) -> dict[str, int]:
    """The outcome forward + backward plus the table's passes, counted the way the hooks count them."""
    fb = sum(n for c, n in pass_table.items() if c.startswith("fb_"))
    f = sum(n for c, n in pass_table.items() if c.startswith("f_base_"))
    hidden = sum(n for c, n in pass_table.items() if c.endswith("_hidden"))
    return {"fwd_grad": 1 + fb, "bwd": 1 + fb, "fwd_nograd": f, "fwd_base": f, "fwd_hidden": hidden}


def test_json_structure(quick_run):
    payload, _ = quick_run
    for key in ("config", "train_settings", "lora", "pass_table", "ops_table", "environment", "summary", "runs"):
        assert key in payload, key
    assert payload["config"]["quick"] is True
    summary = payload["summary"]
    assert list(summary["arms"]) == ["plain", *STRATEGIES]
    for name, arm in summary["arms"].items():
        for key in (
            "step_ms_median",
            "cpu_step_ms_median",
            "ratio_median_of_rounds",
            "cpu_ratio_median_of_rounds",
            "implied_ratio",
            "implied_ratio_passes_only",
            "measured_over_implied",
            "cpu_measured_over_implied",
        ):
            assert isinstance(arm[key], float) and math.isfinite(arm[key]), (name, key)
        assert isinstance(arm["within_target"], bool) and isinstance(arm["within_target_cpu"], bool)
        assert arm["timed_steps"] == payload["config"]["steps"] - payload["config"]["skip_steps"]
        assert arm["step1_loss_identical"] is True  # one round: trivially; the key must be there
    assert summary["arms"]["plain"]["implied_ratio"] == 1.0
    assert set(summary["components"]) >= {"fb_outcome", "optimizer", "draw", "fb_pos", "f_base_pos", "project"}
    assert {(r["arm"], r["round"]) for r in payload["runs"]} == {(a, 0) for a in ["plain", *STRATEGIES]}
    assert summary["loadavg"] is None or len(summary["loadavg"]) == 2


def test_counted_passes_equal_the_pass_table(quick_run):
    payload, stdout = quick_run
    arms = payload["summary"]["arms"]
    for run in payload["runs"]:
        expected = _expected(payload["pass_table"][run["arm"]])
        steps = run["pass_counts"]
        assert len(steps) == payload["config"]["steps"], run["arm"]
        for step, counts in steps.items():
            assert counts == expected, (run["arm"], step, counts, expected)
        assert arms[run["arm"]]["passes_match"] is True
        assert arms[run["arm"]]["counted_passes_per_step"] == expected
    # grad_project's surgery runs its own proxy forward + backward; kl_divergence adds one no-grad base forward
    assert arms["grad_project"]["counted_passes_per_step"]["bwd"] == 2
    assert arms["kl_divergence"]["counted_passes_per_step"]["fwd_base"] == 1
    # the alignment plane is computed before the first step: passes over A+ and A- (32 rows each, batch 16)
    plane = {"fwd_grad": 4, "bwd": 4, "fwd_nograd": 0, "fwd_base": 0, "fwd_hidden": 0}
    assert arms["steering_weights"]["counted_outside_steps"] == [plane]
    assert arms["steering_weights"]["outside_passes_match"] is True
    assert arms["kl_divergence"]["counted_outside_steps"] == [dict.fromkeys(COUNT_KEYS, 0)]
    assert "PASS COUNT MISMATCH" not in stdout
    assert "within 10%?" in stdout


def test_safelora_timings_cover_all_projections(quick_run, tiny_model_path):
    payload, _ = quick_run
    rows = payload["summary"]["safelora"]
    tiny_layers = json.loads((tiny_model_path / "config.json").read_text())["num_hidden_layers"]
    quick_layers = payload["config"]["safelora_layers"]
    assert [(r["model"] == "training model", r["projection"]) for r in rows] == [
        (True, "approx"),
        (True, "exact"),
        (False, "approx"),
        (False, "exact"),
    ]
    for row in rows:
        layers = tiny_layers if row["model"] == "training model" else quick_layers
        assert row["num_modules"] == 7 * layers, row
        assert 0 <= row["num_projected"] <= row["num_modules"]
        assert len(row["seconds"]) == payload["config"]["safelora_repeats"]
