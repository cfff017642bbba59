"""LossLogCallback: CSV rows and columns, resume truncation, the plot, and a real trainer run."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import matplotlib.image as mpimg
import pytest
from transformers import TrainerControl, TrainerState

from trl_ext.common.loss_log import LossLogCallback, is_loss_key, plot_loss_log, read_loss_log


def _state(step: int, epoch: float = 0.0) -> TrainerState:
    state = TrainerState()
    state.global_step, state.epoch = step, epoch
    return state


def test_rows_columns_and_append(tmp_path):
    cb, args, control = LossLogCallback(), SimpleNamespace(output_dir=str(tmp_path)), TrainerControl()
    cb.on_train_begin(args, _state(0), control)
    cb.on_log(args, _state(1, 0.1), control, logs={"loss": 2.0, "learning_rate": 1e-3, "note": "text"})
    cb.on_log(args, _state(2, 0.2), control, logs={"loss": 1.5, "learning_rate": 9e-4})
    cb.on_log(args, _state(2, 0.2), control, logs={"eval_loss": 1.7, "loss/plan_kl": 0.3})
    columns, rows = read_loss_log(tmp_path / "loss_log.csv")
    assert columns == ["step", "epoch", "loss", "learning_rate", "eval_loss", "loss/plan_kl"]
    assert rows == [
        {"step": 1.0, "epoch": 0.1, "loss": 2.0, "learning_rate": 1e-3},
        {"step": 2.0, "epoch": 0.2, "loss": 1.5, "learning_rate": 9e-4},
        {"step": 2.0, "epoch": 0.2, "eval_loss": 1.7, "loss/plan_kl": 0.3},
    ]
    cb.on_train_end(args, _state(2), control)
    image = mpimg.imread(tmp_path / "loss_curve.png")
    assert image.ndim == 3 and image.shape[0] > 100


def test_resume_drops_rows_after_checkpoint(tmp_path):
    path = tmp_path / "loss_log.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "epoch", "loss"])
        w.writerows([[s, s / 10, 10 - s] for s in range(1, 11)])
    cb, args, control = LossLogCallback(), SimpleNamespace(output_dir=str(tmp_path)), TrainerControl()
    cb.on_train_begin(args, _state(5), control)  # resumed from checkpoint-5
    cb.on_log(args, _state(6, 0.6), control, logs={"loss": 3.5})
    _, rows = read_loss_log(path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] == 3.5
    # a fresh run (step 0) starts a new log
    cb.on_train_begin(args, _state(0), control)
    assert not path.exists()


def test_non_main_process_writes_nothing(tmp_path):
    cb, args, control = LossLogCallback(), SimpleNamespace(output_dir=str(tmp_path)), TrainerControl()
    state = _state(1)
    state.is_world_process_zero = False
    cb.on_train_begin(args, state, control)
    cb.on_log(args, state, control, logs={"loss": 1.0})
    cb.on_train_end(args, state, control)
    assert list(tmp_path.iterdir()) == []


def test_plot_selects_loss_terms(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("step,epoch,loss,eval_loss,grad_norm,train_loss\n1,0,2,,0.5,\n2,0,1,1.5,0.4,\n2,0,,,,1.5\n")
    keys = plot_loss_log(path, tmp_path / "curve.png")
    assert keys == ["loss", "eval_loss"]
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert is_loss_key("ppo/vf_loss") and not is_loss_key("train_loss") and not is_loss_key("grad_norm")


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_real_sft_run_logs_every_loss(tmp_path, tiny_model_path, grad_accum):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": f"what is {i} + {i}?"}],
            "completion": [{"role": "assistant", "content": str(2 * i)}],
        }
        for i in range(16)
    ]
    args = SFTConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=grad_accum,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        bf16=False,
        use_cpu=True,
        disable_tqdm=True,
        gradient_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_path),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
        callbacks=[LossLogCallback()],
    )
    trainer.train()
    _, logged = read_loss_log(tmp_path / "out" / "loss_log.csv")
    expected = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    assert len(expected) == 4
    got = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert (tmp_path / "out" / "loss_curve.png").exists()
