"""Best-by-validation in curriculum_ppo (issue 19, seed 003 "Destruct"): eval_loss / eval_perplexity every epoch,
a checkpoint per epoch, best_model/ = the epoch of the lowest logged eval_loss, errors before training, and the
``python -m trl_ext.curriculum`` entry point."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO
from trl_ext.common.loss_log import read_loss_log

TINY = str(REPO / "recipes/configs/curriculum_ppo_tiny.yaml")
# the tiny config cut to 3 epochs of 8 PPO steps after a 40-step warm-up (about 35 s on 2 CPU cores)
FAST = ["--num_train_epochs", "3", "--demo_rows", "32", "--lm_warmup_steps", "40", "--difficulty_sample_size", "8",
        "--logging_steps", "4"]  # fmt: skip
EPOCHS = 3


def _parse(output_dir, *extra: str):
    from trl_ext.curriculum.recipe import make_parser

    return make_parser().parse_args_and_config(["--config", TINY, "--output_dir", str(output_dir), *FAST, *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from trl_ext.curriculum.recipe import main

    out = tmp_path_factory.mktemp("curriculum_validation") / "run"
    script_args, training_args, model_args = _parse(out)
    result = main(script_args, training_args, model_args)
    return out, result, script_args, training_args


def _independent_nll(model, tokenizer, texts, max_length: int) -> float:
    """Σ −log p(x_t | x_<t) over t ≥ 1 of each text alone (no padding, no batching) / number of predicted tokens."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            total -= logps.gather(-1, ids[0, 1:, None]).sum().item()
            count += ids.shape[1] - 1
    return total / count


def _eval_rows(out):
    columns, rows = read_loss_log(out / "loss_log.csv")
    assert "eval_loss" in columns and "eval_perplexity" in columns
    return [r for r in rows if "eval_loss" in r]


def test_validation_loss_logged_once_per_epoch(run):
    out, result, _, _ = run
    evals = _eval_rows(out)
    assert [r["epoch"] for r in evals] == [1.0, 2.0, 3.0]
    assert [r["step"] for r in evals] == [8, 16, 24]
    for r in evals:
        assert r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"]), rel=1e-6)
        assert 0 < r["eval_loss"] < 10
    record = json.loads((out / "best_model.json").read_text())
    assert [h["eval_loss"] for h in record["history"]] == pytest.approx([r["eval_loss"] for r in evals])
    assert result["best_model"] == record


def test_one_checkpoint_per_epoch(run):
    out, *_ = run
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-16", "checkpoint-24", "checkpoint-8"]
    for name in checkpoints:
        assert (out / name / "adapter_model.safetensors").is_file() and (
            out / name / "value_head.safetensors"
        ).is_file()


def test_logged_loss_equals_independent_nll_of_a_reloaded_checkpoint(run):
    from trl_ext.curriculum.demo import make_curriculum_demo
    from trl_ext.models import load_tokenizer
    from trl_ext.ppo.trainer import load_policy_with_value_head

    out, _, script_args, training_args = run
    # the validation texts, rebuilt independently: the demo with seed -(42 + 1), 16 rows per dataset, in order
    parts = make_curriculum_demo(script_args.validation_rows, seed=-(training_args.seed + 1))
    texts = [t for d in parts.values() for t in d["text"]]
    assert len(texts) == 48
    tokenizer = load_tokenizer(str(out / "checkpoint-16"))
    evals = {r["step"]: r["eval_loss"] for r in _eval_rows(out)}
    policy, _ = load_policy_with_value_head(out / "checkpoint-16")
    assert _independent_nll(policy, tokenizer, texts, training_args.difficulty_max_length) == pytest.approx(
        evals[16], rel=1e-4
    )


def test_best_model_is_the_lowest_logged_epoch_and_reloads(run):
    import torch
    from safetensors.torch import load_file

    from trl_ext.ppo.trainer import load_policy_with_value_head
    from trl_ext.ppo.value_head import ValueHead

    out, *_ = run
    evals = _eval_rows(out)
    lowest = min(evals, key=lambda r: r["eval_loss"])
    best = json.loads((out / "best_model.json").read_text())["best"]
    assert (best["epoch"], best["step"]) == (lowest["epoch"], lowest["step"])
    assert best["eval_loss"] == pytest.approx(lowest["eval_loss"])
    assert best["checkpoint"] == f"checkpoint-{int(lowest['step'])}"
    # best_model/ holds exactly that epoch's adapter and value head
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        kept, checkpoint = load_file(out / "best_model" / name), load_file(out / best["checkpoint"] / name)
        assert kept.keys() == checkpoint.keys()
        assert all(torch.equal(kept[k], checkpoint[k]) for k in kept)
    policy, value_head = load_policy_with_value_head(out / "best_model")
    assert isinstance(value_head, ValueHead)
    ids = torch.tensor([[1, 2, 3]])
    assert policy(input_ids=ids).logits.shape[:2] == (1, 3)


def test_validation_errors_name_the_item_before_training(tmp_path):
    from trl_ext.common.errors import MissingPathError
    from trl_ext.curriculum.recipe import main
    from trl_ext.data.loading import DatasetLoadError

    missing = tmp_path / "nope.jsonl"
    args = _parse(tmp_path / "run1", "--validation_dataset", str(missing))
    with pytest.raises(MissingPathError, match=r"validation_dataset: .*nope\.jsonl' does not exist"):
        main(*args)
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"article": f"story number {i}"}) + "\n" for i in range(4)))
    args = _parse(tmp_path / "run2", "--validation_dataset", str(data), "--validation_text_field", "body")
    with pytest.raises(
        DatasetLoadError, match=r"validation_dataset: dataset 'validation': no column 'body'.*'article'"
    ):
        main(*args)
    args = _parse(tmp_path / "run3")
    args[0].validation_dataset = {"name": "val", "source": str(data), "text_field": "article", "colour": "red"}
    with pytest.raises(DatasetLoadError, match=r"validation_dataset: .*unknown key\(s\) \['colour'\]"):
        main(*args)
    assert not any((tmp_path / f"run{i}" / "warmup_model").exists() for i in (1, 2, 3))


def test_held_out_fraction_of_curriculum_datasets(tmp_path):
    from trl_ext.curriculum.demo import demo_prompts
    from trl_ext.curriculum.recipe import CurriculumPPOArguments, build_validation
    from trl_ext.data.multi_dataset import load_text_datasets

    specs = [{"name": n, "source": [{"text": f"{n} row {i}"} for i in range(40)]} for n in ("a", "b")]
    datasets = demo_prompts(load_text_datasets(specs), 4)
    args = CurriculumPPOArguments(curriculum_datasets=specs, validation_fraction=0.1)
    train, validation = build_validation(args, datasets, seed=0)
    assert [len(d) for d in train.values()] == [36, 36] and len(validation) == 8
    held = set(validation["text"])
    assert not held & {t for d in train.values() for t in d["text"]}  # never trained on
    assert {t.split()[0] for t in held} == {"a", "b"} and validation.column_names == ["text", "prompt"]


def test_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "trl_ext.curriculum", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: python -m trl_ext.curriculum" in proc.stdout
    for flag in ("--validation_dataset", "--validation_rows", "--curriculum_eta", "--eval_strategy"):
        assert flag in proc.stdout
    bad = [sys.executable, "-m", "trl_ext.curriculum", "--config", TINY, "--validation_fraction", "2"]
    proc = subprocess.run(bad, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "python -m trl_ext.curriculum: error: validation_fraction must be in (0, 1), got 2.0" in proc.stderr
