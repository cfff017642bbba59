"""``bench/bench_diversity.py --quick``: it runs, writes the documented JSON, and its numbers are sane (both arms at
the settings the issue names, components inside the step, the prefill in step 1 only, memory measured for every
approach on the same batch). Behaviour only: no assertion on any timing or memory target."""

from __future__ import annotations

import math

import pytest

from tests.conftest import finite_positive, run_bench_quick

COMPONENTS = [
    "generation",
    "scoring_forward",
    "embedding",
    "segmentation",
    "clustering",
    "rollout_other",
    "train_forward",
    "backward",
    "rest",
]
VERDICTS = {"MET", "NOT MET"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, tiny_model_path) -> tuple[dict, str]:
    return run_bench_quick(tmp_path_factory, "bench_diversity")


def test_json_structure(quick_run):
    payload, stdout = quick_run
    for key in ("config", "environment", "train_settings", "memory_runs", "summary", "runs"):
        assert key in payload, key
    config = payload["config"]
    assert config["quick"] is True and config["steps"] == 3 and config["repeats"] == 1
    summary = payload["summary"]
    for key in ("targets", "model", "steps", "memory", "verdicts", "wall_s", "loadavg"):
        assert key in summary, key
    assert summary["targets"] == {"step_ratio": 1.25, "memory_ratio": 0.5, "embed_cluster_share": 0.25}
    assert set(summary["verdicts"]) == {"step_ratio", "memory_peak_rss", "memory_saved_tensors", "embed_cluster_share"}
    assert set(summary["verdicts"].values()) <= VERDICTS
    assert summary["loadavg"] is None or len(summary["loadavg"]) == 2
    assert {(r["arm"], r["round"]) for r in payload["runs"]} == {("plain", 0), ("diversity", 0)}
    for label in ("TARGET 1", "TARGET 2", "TARGET 3"):
        line = next(x for x in stdout.splitlines() if x.startswith(label))
        assert "MET" in line, line


def test_arms_run_the_issue_settings(quick_run):
    payload, _ = quick_run
    settings = payload["train_settings"]
    diversity, plain = settings["diversity"], settings["plain"]
    # the DiversityConfig defaults the issue names
    expected = {
        "per_device_train_batch_size": 32,
        "num_generations": 32,
        "max_completion_length": 30,
        "temperature": 1.0,
        "top_p": 0.95,
        "n_clusters": 5,
        "num_samples": 100,
        "buffer_size": 500,
        "update_clusters_every": 20,
        "min_samples_for_clustering": 10,
        "sentence_transformer": "all-MiniLM-L6-v2",
        "concept_options": ["cat", "dog"],
    }
    assert {k: diversity[k] for k in expected} == expected
    # the plain arm mirrors every batch, generation and optimisation value; no reference model, its own loss
    assert plain["beta"] == 0.0 and diversity["loss_type"] == "kl"
    for key, value in plain.items():
        if key in diversity and key != "loss_type":
            assert diversity[key] == value, key
    shared = settings["shared"]
    assert shared["use_cpu"] is True and shared["bf16"] is False and shared["log_completions"] is False
    model = payload["summary"]["model"]
    assert model["hidden_size"] == 64 and model["bias_sft_steps"] == 60 and model["parameters"] > 0


def test_components_are_sane(quick_run):
    payload, _ = quick_run
    skip = payload["config"]["skip_steps"]
    for run in payload["runs"]:
        steps = run["step_s"]
        assert sorted(int(s) for s in steps) == [1, 2, 3], run["arm"]
        comp = run["components"]
        for step, seconds in steps.items():
            assert finite_positive(seconds)
            assert 0 < comp["generation"][step] < comp["rollout"][step] < seconds
            assert 0 < comp["train_forward"][step] and 0 < comp["backward"][step]
            inside = comp["rollout"][step] + comp["train_forward"][step] + comp["backward"][step]
            assert inside <= seconds, (run["arm"], step)
        if run["arm"] == "plain":
            for name in ("scoring_forward", "embedding", "clustering", "refit", "following_items"):
                assert name not in comp, name
            assert run["counts"] == {}
            continue
        counts = run["counts"]
        for step in steps:
            # one process without accumulation: the trainer computes L directly, no no-grad scoring forward
            assert comp.get("scoring_forward", {}).get(step, 0.0) == 0.0 and comp["embedding"][step] > 0
            assert comp["embedding"][step] <= comp["following_items"][step] <= comp["rollout"][step]
            assert comp.get("refit", {}).get(step, 0.0) <= comp["clustering"][step]
            assert counts["embed_calls"][step] == (2 if step == "1" else 1)  # the prefill embeds in step 1 only
        # step 1 prefills the buffers with num_samples completions: more texts embedded than in a timed step
        assert counts["embedded_texts"]["1"] > max(counts["embedded_texts"][s] for s in steps if int(s) > skip)
        assert steps["1"] > max(steps[s] for s in steps if int(s) > skip)
        assert sum(run["buffer_sizes"].values()) > 0
        assert set(run["buffer_sizes"]) == {"animal/cat", "animal/dog"}


def test_summary_is_sane(quick_run):
    payload, _ = quick_run
    st = payload["summary"]["steps"]
    timed = payload["config"]["steps"] - payload["config"]["skip_steps"]
    for arm in ("plain", "diversity"):
        a = st["arms"][arm]
        assert a["timed_steps"] == timed
        for key in ("step_ms_median", "cpu_step_ms_median", "completion_mean_length"):
            assert finite_positive(a[key]), (arm, key)
        assert list(a["components"]) == [*COMPONENTS, "refit"]
        for name, c in a["components"].items():
            assert 0 <= c["share_of_step"] <= 1.0 + 1e-9 or name in ("rest", "rollout_other"), (arm, name, c)
            assert math.isfinite(c["median_ms"]) and math.isfinite(c["mean_ms"])
    for key in ("scoring_forward", "embedding", "clustering"):
        assert st["arms"]["plain"]["components"][key]["median_ms"] == 0.0
    assert st["arms"]["diversity"]["components"]["scoring_forward"]["median_ms"] == 0.0  # the direct path
    for key in ("embedding", "clustering"):
        assert st["arms"]["diversity"]["components"][key]["median_ms"] > 0
    for key in ("median_of_rounds", "of_medians"):
        assert finite_positive(st["ratio"][key]) and finite_positive(st["cpu_ratio"][key])
    assert len(st["ratio"]["per_round"]) == payload["config"]["repeats"]
    assert 0 < st["embed_cluster_share"] < 1
    assert 0 <= st["concept_match_share"] <= 1
    assert sum(st["option_share"].values()) == pytest.approx(st["concept_match_share"])
    assert st["embedded_texts_per_step"] > 0 and st["refits_per_step"] >= 0
    for key in ("meets_target_ratio", "meets_target_ratio_cpu", "meets_target_share"):
        assert isinstance(st[key], bool), key


def test_memory_compares_the_same_batch(quick_run):
    payload, _ = quick_run
    mem = payload["summary"]["memory"]
    approaches = mem["approaches"]
    assert list(approaches) == ["rescore", "rescore_logits", "upstream"]
    runs = payload["memory_runs"]
    assert sorted(r["approach"] for r in runs) == ["rescore", "rescore_logits", "upstream"]
    shapes = {tuple(r["shape"]) for r in runs}
    assert len(shapes) == 1
    batch, length = shapes.pop()
    assert batch == 32 and length > 30  # the prompt + exactly 30 sampled tokens
    for r in runs:
        assert finite_positive(r["saved_mib"]) and finite_positive(r["seconds"])
        assert r["peak_above_mib"] is None or r["peak_above_mib"] >= 0
        assert math.isfinite(r["loss"]) and r["loss"] < 0 and finite_positive(r["grad_norm"])
    # the graph kept through 30 KV-cache steps holds many more saved tensors than one teacher-forced forward
    assert approaches["upstream"]["saved_storages"] > 10 * approaches["rescore_logits"]["saved_storages"]
    for approach in ("rescore", "rescore_logits"):
        ratios = mem[f"{approach}_over_upstream"]
        assert 0 < ratios["saved"] < 1
        assert ratios["peak_rss"] is None or finite_positive(ratios["peak_rss"])
    for key in ("meets_target_peak_rss", "meets_target_saved"):
        assert isinstance(mem[key], bool), key
