"""``bench/bench_latent.py --quick``: it runs, writes the documented JSON, and its numbers are sane (every component
replayed on every training step and fitting inside it, memory measured for both arms in their own processes, the
sender's throughput at each batch size). Behaviour only: no assertion on the timing target."""

from __future__ import annotations

import math
import statistics

import pytest

from tests.conftest import finite_positive, run_bench_quick

PARTS = ["plan_forward", "negative_forward", "latent_fwd_bwd", "optimizer", "latent_fwd_bwd_ce"]
REQUIRED = PARTS[:4]
VERDICTS = {"MET", "NOT MET"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, tiny_model_path) -> tuple[dict, str]:
    return run_bench_quick(tmp_path_factory, "bench_latent")


def test_json_structure(quick_run):
    payload, stdout = quick_run
    for key in ("config", "environment", "train_settings", "memory_runs", "sender_runs", "summary", "runs"):
        assert key in payload, key
    config = payload["config"]
    assert config["quick"] is True and config["steps"] == 3 and config["repeats"] == 1 and config["rows"] == 16
    summary = payload["summary"]
    for key in ("targets", "model", "steps", "memory", "sender", "verdicts", "wall_s", "loadavg"):
        assert key in summary, key
    assert summary["targets"] == {"step_over_passes": 1.10}
    assert set(summary["verdicts"]) == {"step_over_passes", "step_over_passes_cpu"}
    assert set(summary["verdicts"].values()) <= VERDICTS
    assert summary["loadavg"] is None or len(summary["loadavg"]) == 2
    assert [(r["arm"], r["round"]) for r in payload["runs"]] == [("latent", 0)]
    assert summary["model"]["hidden_size"] == 64 and summary["model"]["parameters"] > 0
    assert payload["environment"]["code_sha256"]["trl_ext/latent/trainer.py"] is not None
    line = next(x for x in stdout.splitlines() if x.startswith("TARGET"))
    assert "MET" in line, line


def test_the_trainer_runs_its_defaults(quick_run):
    payload, _ = quick_run
    latent = payload["train_settings"]["latent"]
    assert latent["plan_similarity_weight"] == 1.0 and latent["random_contrast_weight"] == 2.0
    assert latent["negative_noise_std"] == 0.01 and latent["mix_schedule"] == "random"
    assert latent["dynamic_weights"] is False and latent["max_grad_norm"] == 1.0
    assert payload["train_settings"]["shared"]["use_cpu"] is True


def test_components_fit_inside_the_step(quick_run):
    payload, _ = quick_run
    run, skip = payload["runs"][0], payload["config"]["skip_steps"]
    assert sorted(int(s) for s in run["step_s"]) == [1, 2, 3]
    assert math.isfinite(run["step1_loss"]) and run["step1_loss"] > 0
    comp = run["components"]
    assert sorted(comp) == sorted(PARTS)
    for name in PARTS:
        assert sorted(int(s) for s in comp[name]) == [1, 2, 3], name  # every step replayed (the first: warm-up)
    for step, seconds in run["step_s"].items():
        assert finite_positive(seconds) and finite_positive(run["step_cpu_s"][step])
        rows, width, k, plan = run["batch_shapes"][step]
        assert rows == payload["config"]["batch_size"] and width > 0 and k > 0 and plan > 0
        for name in PARTS:
            wall, cpu = comp[name][step]
            assert finite_positive(wall) and finite_positive(cpu), (name, step)
            if int(step) > skip:  # CPU time: robust to other processes on the machine
                assert cpu < run["step_cpu_s"][step], (name, step)
        # the latent forward with its gradient costs more than a no-grad forward of the same batch
        assert comp["latent_fwd_bwd"][step][1] > comp["negative_forward"][step][1]
    timed = [s for s in run["step_s"] if int(s) > skip]
    step = statistics.median(run["step_cpu_s"][s] for s in timed)
    passes = statistics.median(sum(comp[n][s][1] for n in REQUIRED) for s in timed)
    assert passes < 1.5 * step  # the replayed passes are what the step does, not more (loose: the machine is shared)


def test_summary_is_sane(quick_run):
    payload, _ = quick_run
    st = payload["summary"]["steps"]
    table = st["components"]
    assert list(table) == ["step", *PARTS, "sum", "sum_ce"]
    assert table["step"]["n"] == payload["config"]["steps"] - payload["config"]["skip_steps"]
    for name, c in table.items():
        for key in ("median_ms", "p10_ms", "p90_ms", "cpu_median_ms", "share_of_step"):
            assert finite_positive(c[key]), (name, key)
        assert c["p10_ms"] <= c["median_ms"] <= c["p90_ms"]
    for name in PARTS:
        assert table[name]["median_ms"] < table["step"]["median_ms"] * 1.5, name
    assert table["sum"]["median_ms"] > table["latent_fwd_bwd"]["median_ms"]
    for key in ("ratio", "cpu_ratio", "ratio_ce", "cpu_ratio_ce"):
        assert finite_positive(st[key]["median_of_rounds"]) and finite_positive(st[key]["of_medians"]), key
        assert len(st[key]["per_round"]) == payload["config"]["repeats"]
    assert isinstance(st["meets_target"], bool) and isinstance(st["meets_target_cpu"], bool)
    assert st["meets_target"] == (st["ratio"]["median_of_rounds"] <= 1.10)
    shape = st["batch_shape_mean"]
    assert shape["rows"] == payload["config"]["batch_size"] and shape["T"] > 0 and shape["K"] > 0


def test_memory_compares_both_arms(quick_run):
    payload, _ = quick_run
    runs = payload["memory_runs"]
    assert sorted(r["arm"] for r in runs) == ["latent", "plain"]
    for r in runs:
        assert finite_positive(r["peak_rss_mib"]) and finite_positive(r["rss_before_mib"])
        assert r["peak_above_mib"] is None or r["peak_above_mib"] >= 0
        assert finite_positive(r["worker_wall_s"])
    arms = payload["summary"]["memory"]["arms"]
    # the same causal LM in both; the latent arm also trains the adapter
    assert arms["latent"]["trainable"] > arms["plain"]["trainable"] > 0
    mem = payload["summary"]["memory"]
    assert finite_positive(mem["ratio_peak_rss"])
    assert mem["ratio_peak_above"] is None or finite_positive(mem["ratio_peak_above"])


def test_sender_throughput(quick_run):
    payload, _ = quick_run
    sender = payload["summary"]["sender"]
    assert sender["rows"] == payload["config"]["rows"] and sender["tokens"] > sender["rows"]
    assert sorted(sender["batch_sizes"]) == ["1", "8"]
    for r in sender["batch_sizes"].values():
        for key in ("rows_per_s", "tokens_per_s", "wall_s", "cpu_s"):
            assert finite_positive(r[key]), key
        assert r["tokens_per_s"] == pytest.approx(r["rows_per_s"] * sender["tokens"] / sender["rows"])
    assert sorted(r["batch_size"] for r in payload["sender_runs"]) == [1, 8]
