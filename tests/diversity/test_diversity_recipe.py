"""recipes/diversity.py: the tiny config end to end (shortened), the document's flag names, bad input."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import REPO, load_recipe, run_script
from trl_ext.common.loss_log import read_loss_log

TINY = str(REPO / "recipes/configs/diversity_animal_tiny.yaml")
FULL = str(REPO / "recipes/configs/diversity_animal.yaml")


def test_tiny_recipe_end_to_end(tmp_path, tiny_model_path):
    out = tmp_path / "run"
    proc = run_script(
        ["recipes/diversity.py", "--config", TINY, "--output_dir", str(out), "--num_epochs", "2",
         "--num_steps_per_epoch", "2", "--batch_size", "8", "--num_samples", "8", "--report_samples", "16",
         "--prefer_steps", "10", "--max_new_tokens", "12", "--save_steps", "2", "--logging_steps", "1"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[trl_ext] launch: NO x 1 process on cpu" in proc.stdout
    assert (out / "biased_start" / "config.json").is_file()  # the demo start (prefer_option: cat)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    state = json.loads((out / "diversity_state.json").read_text())
    assert state["prefilled"] is True
    assert {p.name for p in (out / "diversity_buffers").iterdir()} >= {"buffer_0_0.json", "buffer_0_1.safetensors"}
    columns, rows = read_loss_log(out / "loss_log.csv")
    rows = [r for r in rows if "diversity/loss/concept" in r]
    assert len(rows) == 4 and "diversity/loss/concept" in columns and "diversity/option_share/animal/cat" in columns
    samples = list(csv.DictReader((out / "samples.csv").open()))
    assert sorted({int(r["epoch"]) for r in samples}) == [1, 2] and len(samples) == 16
    report = json.loads((out / "diversity_report.json").read_text())
    assert set(report["prompts"][0]["models"]) == {"before", "after"}
    assert (out / "diversity_report.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    shares = report["prompts"][0]["concepts"]["animal"]["models"]["after"]["option_shares"]
    assert results["animal/share/cat"] == pytest.approx(shares["cat"])
    assert (out / "checkpoint-4").is_dir()


def test_full_config_carries_the_document_flags():
    """The document's example command line, as a config: every flag under its name, mapped onto the fields."""
    recipe = load_recipe("diversity")
    parser = recipe.recipe_parser(recipe.DiversityScriptArguments, recipe.DiversityConfig, recipe.DiversityModelConfig)
    _, args, model = parser.parse_args_and_config(["--config", FULL, "--output_dir", "/tmp/x"])
    assert args.prompts == ["In 20 words, say whether you love dog or cat more, and give a reason; Answer:"]
    assert [c.name for c in args.concept_list] == ["animal"] and args.concept_list[0].options == ["cat", "dog"]
    assert (args.n_clusters, args.num_samples, args.w_c, args.w_o) == (5, 320, 0.7, 0.3)
    assert (args.buffer_size, args.update_clusters_every, args.min_samples_for_clustering) == (500, 100, 20)
    assert args.generation_batch_size == 32 and args.num_generations == 32 and args.max_completion_length == 30
    assert args.max_steps == 100  # 10 epochs x 10 steps
    assert (args.learning_rate, args.final_learning_rate) == (1e-4, 3e-5)
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "cosine"
    assert (model.lora_r, model.lora_alpha, model.lora_dropout, model.use_peft) == (16, 32, 0.05, True)
    _, args, _ = parser.parse_args_and_config(
        ["--config", FULL, "--output_dir", "/tmp/x", "--use_wandb", "true", "--wandb_name", "run1",
         "--wandb_project", "proj"]
    )  # fmt: skip
    assert "wandb" in args.report_to and args.run_name == "run1" and args.project == "proj"


def test_recipe_bad_input_is_one_line(tmp_path):
    proc = run_script(
        ["recipes/diversity.py", "--config", TINY, "--output_dir", str(tmp_path / "x"), "--concept_options", "cat",
         "Cat"]
    )  # fmt: skip
    assert proc.returncode == 2
    assert "'cat'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script(["recipes/diversity.py", "--config", TINY, "--batch_size", "0", "--output_dir", str(tmp_path)])
    assert proc.returncode == 2 and "batch_size=0" in proc.stderr


def test_w_o_sweep_plan(tmp_path):
    """The document's sweep: w_o 0.2 … 0.9 with w_c = 1 − w_o, one run each, 32 CPUs / 64 GB / 1 GPU by default."""
    from trl_ext.sweep import plan_sweep
    from trl_ext.sweep.slurm import slurm_parameters

    plan = plan_sweep(
        "recipes/diversity.py", TINY, REPO / "recipes/configs/diversity_sweep_w_o.yaml", tmp_path / "sweep", seeds=[0]
    )
    combos = [run.combination.overrides for run in plan.runs]
    assert [c["w_o"] for c in combos] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert all(c["w_c"] == pytest.approx(1 - c["w_o"]) for c in combos)
    assert plan.slurm_defaults == {"cpus_per_task": "32", "mem": "64G", "gpus": "1"}
    assert slurm_parameters(plan.slurm_defaults, ["gpus=2"])["gpus"] == "2"


@pytest.mark.slow
def test_tiny_recipe_under_two_process_ddp(tmp_path):
    """The recipe under `accelerate launch` with 2 processes: the biased start is trained by both (its barriers
    match), the buffers are gathered, the main process writes the report."""
    out = tmp_path / "ddp"
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/multi_gpu.yaml",
         "recipes/diversity.py", "--config", TINY, "--output_dir", str(out), "--num_epochs", "1",
         "--num_steps_per_epoch", "2", "--batch_size", "8", "--num_samples", "8", "--report_samples", "8",
         "--prefer_steps", "5", "--max_new_tokens", "12", "--save_strategy", "no"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[trl_ext] launch: MULTI_CPU x 2 processes" in proc.stdout
    assert (out / "biased_start" / "config.json").is_file() and (out / "diversity_report.json").is_file()
    state = json.loads((out / "diversity_state.json").read_text())
    assert state["prefilled"] is True
