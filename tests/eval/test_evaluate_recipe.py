"""recipes/evaluate_affine.py: report with Beta intervals, baseline comparison, and its errors."""

from __future__ import annotations

import json
import os
import re

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
        lengths = [x["length"] for x in report["episode_samples"] if x["env"] == env]
        assert ep["mean_length"] == pytest.approx(sum(lengths) / 3) and max(lengths) <= 3  # max_episode_length 3
        # an episode that ends before its 3 steps is done, not truncated
        assert ep["truncated_rate"] <= sum(length == 3 for length in lengths) / 3
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
    nowhere = {"rl_output": str(tmp_path / "no_rl"), "sft_output": str(tmp_path / "no_sft")}
    with pytest.raises(ValueError, match="--model is required"):
        recipe.main(recipe.EvaluateArguments(**nowhere))
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


# ---- without --model: the newest of the RL and SFT outputs, else the base model (issue 19) -----------


def _saved(folder, mtime: float, adapter: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    names = ("adapter_config.json", "adapter_model.safetensors") if adapter else ("config.json", "model.safetensors")
    for name in names:
        (folder / name).write_text("{}")
        os.utime(folder / name, (mtime, mtime))
    return folder


def test_choose_model_takes_the_newest_trained_output(tmp_path):
    recipe = load_recipe("evaluate_affine")
    rl, sft = tmp_path / "outputs" / "ppo_affine", tmp_path / "outputs" / "sft_affine"
    # only the SFT output holds a model (the RL folder has checkpoints only)
    _saved(sft, 1_000_000)
    (rl / "checkpoint-4").mkdir(parents=True)
    choice = recipe.choose_model(str(rl), str(sft), base_model="tiny")
    assert (choice.path, choice.stage) == (str(sft), "SFT")
    assert f"no saved model in the RL output {rl}" in choice.reason
    # PPO saved after SFT: RL
    _saved(rl, 2_000_000)
    choice = recipe.choose_model(str(rl), str(sft))
    assert (choice.path, choice.stage) == (str(rl), "RL") and f"newer than the SFT output {sft}" in choice.reason
    # SFT retrained after the PPO run: SFT
    _saved(sft, 3_000_000, adapter=False)
    choice = recipe.choose_model(str(rl), str(sft))
    assert (choice.path, choice.stage) == (str(sft), "SFT") and f"newer than the RL output {rl}" in choice.reason
    # the same time: RL first, as in the document's order RL -> SFT -> base
    _saved(rl, 3_000_000)
    assert recipe.choose_model(str(rl), str(sft)).stage == "RL"


def test_choose_model_falls_back_to_the_base_model_or_names_where_it_looked(tmp_path):
    recipe = load_recipe("evaluate_affine")
    rl, sft = str(tmp_path / "rl"), str(tmp_path / "sft")
    choice = recipe.choose_model(rl, sft, base_model="tiny")
    assert (choice.path, choice.stage) == ("tiny", "base") and rl in choice.reason and sft in choice.reason
    with pytest.raises(ValueError, match=re.escape(f"'{rl}' (--rl_output) and the SFT output '{sft}' (--sft_output)")):
        recipe.choose_model(rl, sft)


def test_main_without_model_evaluates_the_chosen_one_and_says_why(tmp_path, monkeypatch, capsys):
    recipe = load_recipe("evaluate_affine")
    sft = _saved(tmp_path / "sft", 1_000_000)
    seen = {}

    def fake_evaluate(model_path, task_params, **kwargs):
        seen["model"] = kwargs["model_name"]
        return build_report(kwargs["model_name"], {"sat": [1.0, 0.0]})

    monkeypatch.setattr(recipe, "evaluate_heldout", fake_evaluate)
    monkeypatch.setattr(recipe, "resolve_model_name_or_path", lambda name: name)
    args = recipe.EvaluateArguments(
        rl_output=str(tmp_path / "rl"), sft_output=str(sft), tasks=["sat"], num_episodes=0, num_samples=2
    )
    report = recipe.main(args)
    assert seen["model"] == str(sft) and report["model"] == str(sft)
    out = capsys.readouterr().out
    assert f"--model not given: evaluating {sft} (the SFT output, saved" in out
    assert (sft / "eval_results.json").exists()
