"""The sft_affine recipe end to end on the tiny model, resume, and its errors on bad input."""

from __future__ import annotations

import json
import math
import os

import pytest
import yaml
from safetensors.torch import load_file

from tests.conftest import REPO, load_recipe, run_script
from trl_ext.common.loss_log import read_loss_log
from trl_ext.eval.report import load_report

TINY = str(REPO / "recipes/configs/sft_affine_tiny.yaml")
ENVS = ("webshop", "alfworld", "babyai", "sciworld", "textcraft")


def _sft(tmp_path, *extra: str):
    args = ["recipes/sft_affine.py", "--config", TINY, "--data_dir", str(tmp_path / "data"), *extra]
    proc = run_script(args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_path):
    tmp = tmp_path_factory.mktemp("sft")
    out = tmp / "model"
    proc = _sft(
        tmp,
        "--output_dir", str(out), "--num_samples", "120", "--max_steps", "12", "--logging_steps", "2",
        "--eval_steps", "6", "--save_steps", "6", "--save_total_limit", "1", "--heldout_samples", "4",
        "--num_episodes", "10", "--heldout_episodes", "2",
    )  # fmt: skip
    return tmp, out, proc


def test_recipe_writes_adapter_logs_plot_and_report(tiny_run, tiny_model_path):
    tmp, out, proc = tiny_run
    assert (tmp / "data" / "train.jsonl").exists() and (tmp / "data" / "validation.jsonl").exists()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16 and adapter_cfg["lora_alpha"] == 32
    assert set(adapter_cfg["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert adapter_cfg["base_model_name_or_path"] == str(tiny_model_path)
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and any(w.abs().max() > 0 for w in lora_b)  # B starts at zero: training moved it
    assert (out / "tokenizer.json").exists() and (out / "chat_template.jinja").exists()
    # checkpoints: save_total_limit=1 with the best model kept
    assert len(list(out.glob("checkpoint-*"))) <= 2
    columns, rows = read_loss_log(out / "loss_log.csv")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert [r["step"] for r in rows if "eval_loss" in r] == [6.0, 12.0]
    assert (out / "loss_curve.png").stat().st_size > 1000
    report = load_report(out / "eval_results.json")
    # the tiny config's three tasks and five agent environments, each reported
    sizes = {k: v["n"] for k, v in report["environments"].items()}
    assert sizes == {"sat": 4, "abd": 4, "ded": 4, **dict.fromkeys(ENVS, 2)}
    for env in report["environments"].values():
        assert 0.0 <= env["ci_low"] < env["ci_high"] <= 1.0
    assert len(report["samples"]) == 12 and report["aggregate"]["total_samples"] == 22
    assert set(report["episodes"]) == set(ENVS) and 0.0 <= report["agentgym_score"] <= 1.0
    assert all(1 <= ep["mean_length"] <= 4 for ep in report["episodes"].values())  # heldout_max_episode_length 4
    splits = {f: [json.loads(x)["task"] for x in (tmp / "data" / f).read_text().splitlines()]
              for f in ("train.jsonl", "validation.jsonl")}  # fmt: skip
    assert (len(splits["train.jsonl"]), len(splits["validation.jsonl"])) == (117, 13)  # 130 rows, 90/10
    tasks = splits["train.jsonl"] + splits["validation.jsonl"]
    # num_samples // 3 per task, num_episodes // 5 expert episodes per environment
    assert {t: tasks.count(t) for t in set(tasks)} == {"sat": 40, "abd": 40, "ded": 40, **dict.fromkeys(ENVS, 2)}
    assert "assistant_only_loss=True" in proc.stderr  # the episodes' observations carry no loss


def test_the_two_stage_pipeline_continues_with_ppo_over_the_tasks_and_environments(tiny_run, tmp_path):
    """Stage 2 from this SFT run: PPO on the SFT data's prompts of SAT, ABD and DED, rewarded by their scorers
    (ABD/DED run every completion in the sandbox), and on its episode rows, played turn by turn in their
    environments; evaluated before and after on every task and environment."""
    tmp, sft_out, _ = tiny_run
    out = tmp_path / "ppo"
    proc = run_script(
        ["recipes/ppo_affine.py", "--config", str(REPO / "recipes/configs/ppo_affine_tiny.yaml"),
         "--model_name_or_path", str(sft_out), "--data_dir", str(tmp / "data"), "--output_dir", str(out),
         "--max_steps", "8", "--logging_steps", "1", "--save_strategy", "no", "--heldout_samples", "3",
         "--heldout_episodes", "1", "--seed", "3"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    prompts = {json.loads(x)["task"] for x in (tmp / "data" / "train.jsonl").read_text().splitlines()}
    assert prompts == {"sat", "abd", "ded", *ENVS}
    assert "PPO prompts per task / environment" in proc.stderr
    _, rows = read_loss_log(out / "loss_log.csv")
    rewards = [r["reward"] for r in rows if "reward" in r]
    assert rewards and all(0.0 <= x <= 2.6 for x in rewards)  # one rollout: 8 steps = 4 epochs x 2 mini-batches
    expected = {"sat": 3, "abd": 3, "ded": 3, **dict.fromkeys(ENVS, 1)}
    for name in ("eval_before.json", "eval_results.json"):
        report = load_report(out / name)
        assert {k: v["n"] for k, v in report["environments"].items()} == expected
        assert report["aggregate"]["total_samples"] == 14 and set(report["episodes"]) == set(ENVS)
    assert set(load_report(out / "eval_results.json")["baseline_comparison"]["environments"]) == set(expected)


def test_learning_rate_follows_cosine_with_floor(tiny_run):
    _, out, _ = tiny_run
    _, rows = read_loss_log(out / "loss_log.csv")
    logged = [r["learning_rate"] for r in rows if "learning_rate" in r]
    # independent schedule: linear warm-up over 5 steps, then cosine from 2e-3 down to the floor 0.1 * 2e-3
    config = yaml.safe_load(open(TINY))
    lr_max, warmup, total = config["learning_rate"], config["warmup_steps"], 12
    lr_min = config["min_lr_ratio"] * lr_max
    schedule = [
        lr_max * t / warmup
        if t < warmup
        else lr_min + (lr_max - lr_min) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))
        for t in range(total + 1)
    ]
    for lr in logged:
        assert min(abs(lr - s) for s in schedule) < 1e-9, lr
    after_warmup = [lr for lr in logged if lr < lr_max * (warmup - 1) / warmup or lr == logged[-1]][1:]
    assert after_warmup == sorted(after_warmup, reverse=True)
    assert min(logged) >= lr_min - 1e-12


def test_resume_reproduces_losses(tmp_path, tiny_model_path):
    common = ("--num_samples", "80", "--max_steps", "8", "--logging_steps", "1", "--eval_strategy", "no",
              "--save_steps", "4", "--save_total_limit", "3", "--load_best_model_at_end", "false",
              "--heldout_samples", "0", "--num_episodes", "0")  # fmt: skip
    full = tmp_path / "full"
    _sft(tmp_path, "--output_dir", str(full), *common)
    resumed = tmp_path / "resumed"
    _sft(tmp_path, "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoint-4"), *common)
    _, a = read_loss_log(full / "loss_log.csv")
    _, b = read_loss_log(resumed / "loss_log.csv")
    loss_a = {r["step"]: r["loss"] for r in a if "loss" in r}
    loss_b = {r["step"]: r["loss"] for r in b if "loss" in r}
    assert sorted(loss_b) == [5.0, 6.0, 7.0, 8.0]
    for step, value in loss_b.items():
        assert value == pytest.approx(loss_a[step], rel=1e-5), step
    wa, wb = load_file(full / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() < 1e-5, key


# ---- bad input: each error names the offending item -------------------------------------------------


def _parse(recipe, argv):
    from trl import SFTConfig, TrlParser

    from trl_ext.common.recipes import LoRAModelConfig

    return TrlParser((recipe.SFTAffineArguments, SFTConfig, LoRAModelConfig)).parse_args_and_config(argv)


def test_unknown_config_field_is_named(tmp_path):
    recipe = load_recipe("sft_affine")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text((REPO / "recipes/configs/sft_affine_tiny.yaml").read_text() + "\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        _parse(recipe, ["--config", str(cfg)])
    with pytest.raises(ValueError, match="--num_sampels"):
        _parse(recipe, ["--config", TINY, "--num_sampels", "3"])


def _main_with(recipe, tmp_path, *extra):
    script_args, training_args, model_args = _parse(
        recipe, ["--config", TINY, "--output_dir", str(tmp_path / "o"), "--data_dir", str(tmp_path / "d"), *extra]
    )
    return recipe.main(script_args, training_args, model_args)


def test_unknown_task_is_named(tmp_path, tiny_model_path):
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match="unknown task 'sudoku'; known tasks: abd, ded, sat"):
        _main_with(recipe, tmp_path, "--tasks", "sudoku")


def test_missing_model_path_is_named(tmp_path, tiny_model_path):
    from trl_ext.models import ModelNotFoundError

    recipe = load_recipe("sft_affine")
    with pytest.raises(ModelNotFoundError, match="model path './no/such/model' does not exist"):
        _main_with(recipe, tmp_path, "--model_name_or_path", "./no/such/model")


def test_malformed_data_row_is_named(tmp_path, tiny_model_path):
    from trl_ext.data.affine import collect_affine, write_affine_dataset

    train, val = collect_affine({"sat": {"n": 5, "k": 3}}, 20, 0, 0.1, progress=False)
    write_affine_dataset(tmp_path / "d", train, val)
    lines = (tmp_path / "d" / "train.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    del row["completion"]
    lines[2] = json.dumps(row)
    (tmp_path / "d" / "train.jsonl").write_text("\n".join(lines) + "\n")
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match=r"train.jsonl, line 3 \(id '.*'\): field 'completion'"):
        _main_with(recipe, tmp_path)


def test_data_without_the_selected_environments_is_named(tmp_path, tiny_model_path):
    """A data_dir collected before (SAT only) while the config asks for episodes: an error naming what is missing and
    what the data holds, before training."""
    from trl_ext.data.affine import collect_affine, write_affine_dataset

    train, val = collect_affine({"sat": {"n": 5, "k": 3}}, 20, 0, 0.1, progress=False)
    write_affine_dataset(tmp_path / "d", train, val)
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match=r"holds no rows of \['webshop', 'alfworld', .*\(it holds: sat 18\)"):
        _main_with(recipe, tmp_path, "--tasks", "sat")


def test_qlora_4bit_loads_quantised_and_trains(tmp_path, tiny_model_path):
    import bitsandbytes as bnb

    from trl_ext.models import load_causal_lm

    model = load_causal_lm(str(tiny_model_path), load_in_4bit=True)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 14  # 7 projections x 2 layers, all in nf4
    assert linear4[0].weight.quant_type == "nf4"
    out = tmp_path / "qlora"
    _sft(
        tmp_path, "--output_dir", str(out), "--num_samples", "40", "--load_in_4bit", "true", "--max_steps", "3",
        "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false", "--logging_steps", "1",
        "--heldout_samples", "2", "--num_episodes", "0", "--heldout_episodes", "0",
    )  # fmt: skip
    weights = load_file(out / "adapter_model.safetensors")
    assert any(w.abs().max() > 0 for k, w in weights.items() if "lora_B" in k)
    assert load_report(out / "eval_results.json")["environments"]["sat"]["n"] == 2


# ---- perplexity, early stopping, W&B (issue 19) ------------------------------------------------------


def test_every_evaluation_logs_perplexity_and_the_report_has_the_validation_section(tiny_run):
    _, out, proc = tiny_run
    columns, rows = read_loss_log(out / "loss_log.csv")
    assert "eval_perplexity" in columns
    evals = [r for r in rows if "eval_loss" in r]
    assert len(evals) == 2
    for row in evals:
        assert row["eval_perplexity"] == pytest.approx(math.exp(row["eval_loss"]), rel=1e-9)
    # the trainer state's log history has it too (the checkpoint's, written at step 12)
    state_file = out / "checkpoint-12" / "trainer_state.json"
    history = [e for e in json.loads(state_file.read_text())["log_history"] if "eval_loss" in e]
    assert all(e["eval_perplexity"] == pytest.approx(math.exp(e["eval_loss"])) for e in history)
    validation = load_report(out / "eval_results.json")["validation"]
    best = min(evals, key=lambda r: r["eval_loss"])  # load_best_model_at_end: the saved model is the best one
    assert validation["selected"] == "best" and validation["step"] == best["step"]
    assert validation["eval_loss"] == pytest.approx(best["eval_loss"])
    assert validation["eval_perplexity"] == pytest.approx(math.exp(best["eval_loss"]))
    assert validation["evaluations"] == 2 and "validation: loss" in proc.stdout


def test_early_stopping_stops_before_max_steps(tmp_path, tiny_model_path):
    """Patience 1 with a threshold no change can pass: the second evaluation counts as no improvement, so training
    stops there (step 4 of 12)."""
    out = tmp_path / "es"
    proc = _sft(
        tmp_path, "--output_dir", str(out), "--num_samples", "40", "--max_steps", "12", "--logging_steps", "1",
        "--eval_steps", "2", "--save_steps", "2", "--save_total_limit", "1", "--early_stopping_patience", "1",
        "--early_stopping_threshold", "1e9", "--heldout_samples", "0", "--num_episodes", "0",
    )  # fmt: skip
    _, rows = read_loss_log(out / "loss_log.csv")
    assert max(r["step"] for r in rows) == 4.0
    assert [r["step"] for r in rows if "eval_loss" in r] == [2.0, 4.0]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert (state["global_step"], state["max_steps"]) == (4, 12)
    assert "early stopping at step 4 of 12" in proc.stderr


def test_early_stopping_without_evaluation_is_an_error_before_training(tmp_path):
    recipe = load_recipe("sft_affine")
    with pytest.raises(ValueError, match=r"early_stopping_patience=2 needs an eval_strategy .*load_best_model_at_end"):
        _main_with(recipe, tmp_path, "--early_stopping_patience", "2", "--eval_strategy", "no",
                   "--load_best_model_at_end", "false")  # fmt: skip
    with pytest.raises(ValueError, match="early_stopping_patience must be an int >= 1, got 0"):
        _main_with(recipe, tmp_path, "--early_stopping_patience", "0")
    assert not (tmp_path / "o").exists()  # nothing trained


def test_wandb_project_sets_the_env_and_report_to(monkeypatch):
    from types import SimpleNamespace

    from trl_ext.data.affine_args import AffineRecipeArguments, apply_wandb_project

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    args = SimpleNamespace(report_to=[])
    apply_wandb_project(None, args)
    assert args.report_to == [] and "WANDB_PROJECT" not in os.environ
    apply_wandb_project("affine-training", args)
    assert args.report_to == ["wandb"] and os.environ["WANDB_PROJECT"] == "affine-training"
    args = SimpleNamespace(report_to=["tensorboard"])
    AffineRecipeArguments(wandb_project="p2").apply_wandb(args)
    assert args.report_to == ["tensorboard", "wandb"] and os.environ["WANDB_PROJECT"] == "p2"
    for given, expected in (("none", ["wandb"]), (["wandb"], ["wandb"]), (["all"], ["all"])):
        args = SimpleNamespace(report_to=given)
        apply_wandb_project("p3", args)
        assert args.report_to == expected


def test_wandb_project_reaches_the_trainer_of_the_recipe(tmp_path, monkeypatch):
    """The recipe applies --wandb_project before the trainer is built: its reporters include W&B."""
    from transformers.integrations import WandbCallback

    monkeypatch.setenv("WANDB_MODE", "disabled")
    recipe = load_recipe("sft_affine")
    built = {}

    class Stop(Exception):
        pass

    def fake_describe(trainer):
        built["callbacks"] = [type(c) for c in trainer.callback_handler.callbacks]
        raise Stop

    monkeypatch.setattr(recipe, "describe_launch", fake_describe)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    with pytest.raises(Stop):
        _main_with(recipe, tmp_path, "--wandb_project", "affine-test", "--num_samples", "20", "--num_episodes", "0",
                   "--tasks", "sat")  # fmt: skip
    assert WandbCallback in built["callbacks"] and os.environ["WANDB_PROJECT"] == "affine-test"
    assert built["callbacks"][0] is recipe.PerplexityCallback  # first: every reporter sees the perplexity
