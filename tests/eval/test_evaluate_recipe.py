"""recipes/evaluate_affine.py: report with Beta intervals, baseline comparison, and its errors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_recipe, run_script
from trl_ext.eval import beta_interval
from trl_ext.eval.report import build_report, load_report, save_report


def test_cli_writes_report_and_compares_with_baseline(tmp_path, tiny_model_path):
    baseline = build_report("always-right", {"sat": [1.0] * 6})
    save_report(baseline, tmp_path / "baseline.json")
    out = tmp_path / "report.json"
    proc = run_script(
        ["recipes/evaluate_affine.py", "--model", "tiny", "--sat_n", "5", "--sat_k", "3", "--num_samples", "6",
         "--max_new_tokens", "24", "--batch_size", "4", "--baseline", str(tmp_path / "baseline.json"),
         "--output", str(out), "--environments", "webshop", "babyai", "--num_episodes", "3",
         "--max_episode_length", "3", "--max_turn_tokens", "8"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = load_report(out)
    sat = report["environments"]["sat"]
    assert sat["n"] == 6
    assert (sat["ci_low"], sat["ci_high"]) == pytest.approx(beta_interval(sat["total"], 6, 0.8))
    assert [s["task"] for s in report["samples"]] == ["sat"] * 6 + ["abd"] * 6 + ["ded"] * 6  # the default tasks
    sizes = {k: v["n"] for k, v in report["environments"].items()}
    assert sizes == {"sat": 6, "abd": 6, "ded": 6, "webshop": 3, "babyai": 3}
    # the episodes: success as the score, return and length per environment, the AgentGym score
    for env in ("webshop", "babyai"):
        ep = report["episodes"][env]
        assert ep["n"] == 3 and ep["success_rate"] == report["environments"][env]["mean"]
        assert 1 <= ep["mean_length"] <= 3 and 0 <= ep["truncated_rate"] <= 1
    rates = [report["episodes"][e]["success_rate"] for e in ("webshop", "babyai")]
    assert report["agentgym_score"] == pytest.approx(sum(rates) / 2)
    samples = report["episode_samples"]
    assert [s["env"] for s in samples] == ["webshop"] * 3 + ["babyai"] * 3
    assert all(s["seed"] >= 10**9 and len(s["actions"]) == s["length"] <= 3 for s in samples)
    assert "AgentGym score" in proc.stdout
    comparison = report["baseline_comparison"]
    assert comparison["missing"] == {"only_in_model": ["abd", "ded", "webshop", "babyai"], "only_in_baseline": []}
    # an untrained model cannot beat a baseline that solved everything
    assert comparison["environments"]["sat"]["winner"] in {"baseline", "tie"}
    assert comparison["dominates"] is False
    assert "80% CI" in proc.stdout


def test_scores_are_recomputed_from_completions(tmp_path, tiny_model_path, monkeypatch):
    """Patch generation to return the expert answer for half the prompts: the report must score exactly that."""
    import trl_ext.common.generation as generation
    from trl_ext.eval.tasks import heldout_instances
    from trl_ext.tasks import get_task

    recipe = load_recipe("evaluate_affine")
    args = recipe.EvaluateArguments(
        model="tiny",
        tasks=["sat"],
        sat_n=[5],
        sat_k=[3],
        num_samples=8,
        output=str(tmp_path / "r.json"),
        num_episodes=0,
    )
    instances = heldout_instances(args.task_params(), 8, args.seed)
    answers = {inst.prompt: inst.expert_answer for inst in instances}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        return [answers[p] if i % 2 == 0 else "UNSAT" for i, p in enumerate(prompts)]

    monkeypatch.setattr(generation, "generate_completions", fake_generate)
    report = recipe.main(args)
    assert report["scores"]["sat"] == [1.0, 0.0] * 4
    assert report["environments"]["sat"]["mean"] == 0.5
    task = get_task("sat", n=5, k=3)
    assert [task.score(i, answers[i.prompt]) for i in instances] == [1.0] * 8
    assert json.loads((tmp_path / "r.json").read_text())["environments"]["sat"]["accuracy"] == 0.5


def test_errors_name_the_offending_input(tmp_path, tiny_model_path):
    from trl_ext.models import ModelNotFoundError

    recipe = load_recipe("evaluate_affine")
    with pytest.raises(ValueError, match="--model is required"):
        recipe.main(recipe.EvaluateArguments())
    with pytest.raises(FileNotFoundError, match="missing_baseline.json"):
        recipe.main(recipe.EvaluateArguments(model="tiny", baseline=str(tmp_path / "missing_baseline.json")))
    with pytest.raises(ModelNotFoundError, match="./nowhere/model"):
        recipe.main(recipe.EvaluateArguments(model="./nowhere/model"))
    with pytest.raises(ValueError, match="unknown task 'sudoku'"):
        recipe.main(recipe.EvaluateArguments(model="tiny", tasks=["sudoku"]))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "p1", "program": "print(1)", "inputs": "", "output": "1", "prompt": "Print 1."}\n')
    with pytest.raises(ValueError, match=r"row 0 \(id 'p1'\): missing column\(s\) \['test_cases'\]"):
        recipe.main(recipe.EvaluateArguments(model="tiny", tasks=["abd"], program_dataset=str(rows)))
