"""``bench/bench_curriculum.py --quick``: it runs, writes the documented JSON, and its numbers are sane (shares in
(0, 1), positive ratios, one update per epoch, the update time the callback records). Behaviour only: no assertion
on any timing target."""

from __future__ import annotations

import math

import pytest

from tests.conftest import finite_positive, run_bench_quick


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, tiny_model_path) -> tuple[dict, str]:
    return run_bench_quick(tmp_path_factory, "bench_curriculum")


def test_json_structure(quick_run):
    payload, _ = quick_run
    for key in ("config", "train_settings", "environment", "summary", "runs"):
        assert key in payload, key
    assert payload["config"]["quick"] is True
    summary = payload["summary"]
    for key in ("targets", "difficulty_share", "sampler_micro", "sampler_overhead", "wall_s", "loadavg"):
        assert key in summary, key
    assert summary["targets"] == {"difficulty_share": 0.10, "sampler_ratio": 1.02}
    assert summary["loadavg"] is None or len(summary["loadavg"]) == 2
    phases = {(r["arm"], r["phase"]) for r in payload["runs"]}
    assert phases == {("curriculum", "share"), ("curriculum", "overhead"), ("plain", "overhead")}


def test_difficulty_share_is_sane(quick_run):
    payload, _ = quick_run
    share = payload["summary"]["difficulty_share"]
    rows = payload["config"]["rows"]
    assert share["headline"]["rows_per_dataset"] == rows
    assert [s["rows_per_dataset"] for s in share["sizes"]] == sorted(payload["config"]["sizes"])
    for row in share["sizes"]:
        for key in ("share", "implied_share", "share_of_train_runtime"):
            assert 0 < row[key] < 1, (key, row[key])
        for key in ("epoch_s", "update_s", "scoring_s", "step_ms", "difficulty_forward_ms", "forward_over_step"):
            assert finite_positive(row[key]), (key, row[key])
        assert 0 <= row["refresh_s"] < row["update_s"]
        assert row["scoring_s"] <= row["update_s"]
        assert isinstance(row["meets_target"], bool)
        # default knobs: min(rows, 100) rows of each of the 3 datasets, in batches of 8; one epoch of batch-8 steps
        per_dataset = min(row["rows_per_dataset"], 100)
        assert row["difficulty_rows"] == 3 * per_dataset
        assert row["difficulty_batches"] == 3 * math.ceil(per_dataset / 8)
        assert row["steps"] == math.ceil(3 * row["rows_per_dataset"] / payload["config"]["batch_size"])
        d, s = row["difficulty_batches"], row["steps"]
        assert row["implied_share"] == pytest.approx((d / 3) / (s + d / 3))


def test_updates_match_the_callback_history(quick_run):
    payload, _ = quick_run
    for run in payload["runs"]:
        if run["arm"] != "curriculum":
            assert run["update_s"] == [] and run["history_s"] == []
            continue
        assert len(run["update_s"]) == len(run["history_s"]) == 1  # one update per epoch, one epoch
        # the wrapper around CurriculumCallback.update times the same work as the callback's own "seconds"
        assert run["update_s"][0] >= run["history_s"][0] > 0
        assert run["update_s"][0] - run["history_s"][0] < 0.05
        assert run["update_s"][0] < run["epoch_s"]
        assert len(run["refresh_s"]) == len(run["scoring_s"]) == 1
        assert sum(run["weights"]) == pytest.approx(1.0)


def test_sampler_numbers_are_sane(quick_run):
    payload, stdout = quick_run
    micro = payload["summary"]["sampler_micro"]
    assert set(micro["us_per_index"]) == {"curriculum", "random", "seedable_random"}
    assert all(finite_positive(v) for v in micro["us_per_index"].values())
    assert sum(micro["sizes"]) == micro["indices"] == payload["config"]["micro_indices"]
    overhead = payload["summary"]["sampler_overhead"]
    for key in (
        "ratio_median_of_rounds",
        "ratio_of_medians",
        "cpu_ratio_median_of_rounds",
        "per_token_ratio_median_of_rounds",
        "implied_ratio_from_micro",
        "interval_ratio_median_of_rounds",
        "interval_cpu_ratio_median_of_rounds",
        "interval_ratio_pooled",
        "attributed_ratio_median_of_rounds",
        "step_only_ratio_median_of_rounds",
        "curriculum_sampler_ms",
        "plain_sampler_ms",
        "plain_epoch_s",
        "curriculum_net_epoch_s",
    ):
        assert finite_positive(overhead[key]), (key, overhead[key])
    assert overhead["implied_ratio_from_micro"] >= 1.0 or micro["slowdown_vs_seedable"] < 1
    for key in ("meets_target", "meets_target_cpu", "meets_target_attributed"):
        assert isinstance(overhead[key], bool), key
    assert overhead["curriculum_hooks_ms"] >= 0
    assert set(overhead["noise"]) == {"curriculum", "plain"}
    for noise in overhead["noise"].values():
        assert len(noise["sys_s"]) == len(noise["minor_faults"]) == payload["config"]["repeats"]
    # every index of the epoch went through the timed sampler, in both arms
    for run in payload["runs"]:
        assert run["sampler_indices"] == 3 * run["rows"], run["arm"]
    assert len(overhead["per_round"]) == payload["config"]["repeats"]
    # both arms train the same number of steps on the same rows
    steps = {r["arm"]: r["steps"] for r in payload["runs"] if r["phase"] == "overhead"}
    assert steps["curriculum"] == steps["plain"] == overhead["steps"]
    for label in ("TARGET 1", "TARGET 2"):
        line = next(x for x in stdout.splitlines() if x.startswith(label))
        assert "MET" in line, line
