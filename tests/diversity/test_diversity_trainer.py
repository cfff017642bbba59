"""DiversityTrainer: the update is the gradient of the whole-batch objective, GA and DDP give the same update,
resume restores the buffers and reproduces the losses, the metrics and the samples table, bad input."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import diversity_fixed as fixed  # noqa: E402

from trl_ext.common.errors import ConfigError, DataError, InputTypeError, MissingPathError  # noqa: E402
from trl_ext.diversity import DiversityConfig, DiversityTrainer, diversity_objective  # noqa: E402


def _trainer(tmp_path, model_path, **overrides):
    return fixed.FixedDiversityTrainer(
        str(model_path), args=fixed.config(str(tmp_path / "out"), **overrides), embedder=fixed.embed
    )


# ---------------------------------------------------------------------------------------- the update
@pytest.mark.parametrize("renormalize_top_p", [False, True])
def test_surrogate_gradient_is_the_gradient_of_the_whole_batch_objective(tmp_path, tiny_model_path, renormalize_top_p):
    """The micro-batch loss ``P · Σ W log p`` has the gradient of ``L`` computed by autograd through the model (two
    accumulation steps: the trainer takes the W path; one process without accumulation computes L directly)."""
    trainer = _trainer(
        tmp_path, tiny_model_path, renormalize_top_p=renormalize_top_p, per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
    )  # fmt: skip
    trainer._prefill()
    trainer.model.train()
    assert not trainer._direct()
    out = trainer._generate_and_score_completions([{"prompt": fixed.PROMPT}] * 8)
    rollout = trainer.last_rollout
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    loss = trainer._compute_loss(trainer.model, out)
    got = torch.autograd.grad(loss, params)
    logps, _ = trainer._token_logps(trainer.model, out, grad=True)
    direct = diversity_objective(
        logps, rollout["mask"], rollout["table"], rollout["groups"], [2], n_clusters=2, w_c=0.5, w_o=0.5
    )
    want = torch.autograd.grad(direct.loss, params)
    result = rollout["result"]
    assert float(direct.loss.detach()) == pytest.approx(float(result.loss.detach()), rel=1e-5)
    assert float(result.concept.detach()) > 0 and float(result.open_block.detach()) > 0
    scale = max(float(w.abs().max()) for w in want)
    assert scale > 0
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6 * scale, rtol=1e-4)
    # the returned value is the loss split evenly over the two micro-batches
    assert float(loss.detach()) == pytest.approx(float(direct.loss.detach()) / 2, rel=1e-5)


def test_gradient_accumulation_gives_the_single_batch_update(tmp_path, tiny_model_path):
    """One process without accumulation computes L directly; with two accumulation steps the trainer back-propagates
    W = ∂L/∂log p of the whole batch: the same update."""
    one = fixed.main(str(tiny_model_path), str(tmp_path / "one"), {})
    two = fixed.main(
        str(tiny_model_path),
        str(tmp_path / "two"),
        {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2},
    )
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-6)
    scale = float(one["delta"].abs().max())
    assert scale > 1e-3  # the step moved the weights
    assert float((one["delta"] - two["delta"]).abs().max()) < 1e-5 * scale


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launch_config", "overrides", "kind"),
    [
        ("multi_gpu.yaml", {}, "MULTI_CPU"),
        ("deepspeed_zero2.yaml", {"use_cpu": False, "ddp_backend": "gloo"}, "DEEPSPEED"),
    ],
)
def test_two_processes_give_the_single_batch_update(tmp_path, tiny_model_path, launch_config, overrides, kind):
    """DDP and DeepSpeed ZeRO-2 on 2 processes, each with half the batch: the buffers see the gathered batch and the
    update equals one process with the whole batch."""
    one = fixed.main(str(tiny_model_path), str(tmp_path / "one"), {})
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{launch_config}",
         "tests/scripts/diversity_fixed.py", str(tiny_model_path), str(tmp_path / "multi"),
         json.dumps({"per_device_train_batch_size": 4, **overrides})]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    from safetensors.torch import load_file

    ranks = [json.loads((tmp_path / "multi" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and {r["type"] for r in ranks} == {kind}
    deltas = [load_file(tmp_path / "multi" / f"delta_rank{r}.safetensors")["delta"] for r in (0, 1)]
    scale = float(one["delta"].abs().max())
    for delta in deltas:
        assert float((delta - one["delta"]).abs().max()) < 1e-5 * scale
    assert ranks[0]["losses"] == pytest.approx(one["losses"], rel=1e-6) == ranks[1]["losses"]


# ---------------------------------------------------------------------------------------- state
@pytest.mark.parametrize("loss_type", ["tb", "kl"])
def test_resume_restores_buffers_and_log_z_and_reproduces_the_losses(tmp_path, tiny_model_path, loss_type):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, loss_type=loss_type, optim="adamw_torch",
                  learning_rate=1e-3, num_steps_per_epoch=2)  # fmt: skip
    full = _trainer(tmp_path, tiny_model_path, **common)
    full.train()
    losses = [h["diversity/loss/total"] for h in full.state.log_history if "diversity/loss/total" in h]
    log_z = [h["diversity/log_z"] for h in full.state.log_history if "diversity/log_z" in h]
    assert len(losses) == 4
    assert (log_z[0] != log_z[-1]) if loss_type == "tb" else not log_z  # log Z is learned (tb only)
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert (checkpoint / "diversity_state.json").is_file()
    assert sorted(p.name for p in (checkpoint / "diversity_buffers").iterdir()) == [
        "buffer_0_0.json", "buffer_0_0.safetensors", "buffer_0_1.json", "buffer_0_1.safetensors",
    ]  # fmt: skip
    samples = list(csv.DictReader((tmp_path / "out" / "samples.csv").open()))
    assert [int(r["step"]) for r in samples] == [2] * 8 + [4] * 8  # one table per epoch of 2 steps
    assert {r["animal"] for r in samples} == {"cat", "dog", ""}

    resumed = _trainer(tmp_path, tiny_model_path, **common)
    resumed._load_extension_state(checkpoint)
    saved = json.loads((checkpoint / "diversity_state.json").read_text())
    assert resumed.log_z.values == saved["log_z"]["values"]  # kl: the prompt's entry is never initialised (None)
    assert resumed.buffers[(0, 0)].texts and resumed._prefilled
    resumed = _trainer(tmp_path, tiny_model_path, **common)
    if loss_type == "kl":  # resume with the command line's "true": the last checkpoint, once checkpoint-4 is gone
        import shutil

        shutil.rmtree(tmp_path / "out" / "checkpoint-4")
    resumed.train(resume_from_checkpoint=str(checkpoint) if loss_type == "tb" else "true")
    again = [h["diversity/loss/total"] for h in resumed.state.log_history if "diversity/loss/total" in h][2:]
    assert again == pytest.approx(losses[2:], rel=1e-5)
    samples = list(csv.DictReader((tmp_path / "out" / "samples.csv").open()))
    assert [int(r["step"]) for r in samples] == [2] * 8 + [4] * 8  # rows after the checkpoint were replaced


def test_unclustered_buffers_give_zero_open_block_loss_and_a_metric(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, num_samples=0, min_samples_for_clustering=40, buffer_size=40)
    trainer.train()
    row = next(h for h in trainer.state.log_history if "diversity/loss/open_block" in h)
    assert row["diversity/loss/open_block"] == 0.0
    assert row["diversity/unclustered/animal/cat"] == 1.0 and row["diversity/unclustered/animal/dog"] == 1.0
    assert row["diversity/loss/concept"] > 0
    assert row["diversity/option_share/animal/cat"] == pytest.approx(4 / 8)
    assert row["diversity/option_share/animal/dog"] == pytest.approx(3 / 8)
    assert row["diversity/no_match/animal"] == pytest.approx(1 / 8)
    assert row["rewards/named_option/mean"] == pytest.approx(7 / 8)


def test_schedule_decays_to_final_learning_rate(tmp_path, tiny_model_path):
    trainer = _trainer(
        tmp_path, tiny_model_path, max_steps=4, lr_scheduler_type="linear", learning_rate=1e-3,
        final_learning_rate=1e-4, warmup_steps=1, optim="adamw_torch",
    )  # fmt: skip
    trainer.train()
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    # the rate each step trained with: warm-up from 0 over one step, then linear from 1e-3 to 1e-4 at step 4
    assert lrs == pytest.approx([0.0, 1e-3, 1e-3 - 0.9e-3 / 3, 1e-3 - 1.8e-3 / 3], abs=1e-12)
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-4, rel=1e-9)


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_errors(tmp_path, tiny_model_path):
    out = str(tmp_path / "out")
    with pytest.raises(ConfigError, match="no concept"):
        DiversityTrainer(str(tiny_model_path), args=DiversityConfig(output_dir=out, prompts=["x"], use_cpu=True))
    with pytest.raises(ConfigError, match="options"):
        DiversityConfig(output_dir=out, concepts=[{"name": "animal", "options": []}])
    with pytest.raises(ConfigError, match="'cat'.*'Cat'|'Cat'.*'cat'"):
        DiversityConfig(output_dir=out, concept_name="animal", concept_options=["cat", "Cat"])
    with pytest.raises(InputTypeError, match="DiversityConfig"):
        from trl import GRPOConfig

        DiversityTrainer(str(tiny_model_path), args=GRPOConfig(output_dir=out, use_cpu=True, bf16=False))
    with pytest.raises(ConfigError, match="w_kl"):
        fixed.config(out, beta=0.1)
    with pytest.raises(ConfigError, match="steps_per_generation"):
        fixed.config(out, per_device_train_batch_size=4, steps_per_generation=2)
    with pytest.raises(DataError, match="does not fit the model's context"):
        _trainer(tmp_path, tiny_model_path, prompts=["word " * 5000])
    with pytest.raises(MissingPathError, match="no/such/embedder"):
        DiversityTrainer(
            str(tiny_model_path),
            args=fixed.config(out, sentence_transformer=str(tmp_path / "no/such/embedder")),
        )
    from datasets import Dataset

    with pytest.raises(DataError, match="'prompt'"):
        _trainer(tmp_path, tiny_model_path).__class__(
            str(tiny_model_path), args=fixed.config(out), train_dataset=Dataset.from_dict({"text": ["a"]}),
            embedder=fixed.embed,
        )  # fmt: skip


def test_several_prompts_and_concepts(tmp_path, tiny_model_path):
    """Two prompts (one group each) and two concepts: the table has both concepts, log Z one entry per prompt."""
    concepts = [{"name": "animal", "options": ["cat", "dog"]}, {"name": "place", "options": ["park", "sun"]}]
    trainer = _trainer(
        tmp_path, tiny_model_path, prompts=[fixed.PROMPT, "Pets:"], concept_name=None, concept_options=None,
        concepts=json.dumps(concepts), num_generations=4, loss_type="tb",
    )  # fmt: skip
    trainer.train()
    rollout = trainer.last_rollout
    assert set(rollout["groups"].tolist()) == {0, 1}
    table = rollout["table"]
    assert {int(c) for c in table[:, :, 2][table[:, :, 4] == 0]} == {0, 1}  # both concepts matched somewhere
    assert len(trainer.log_z.keys) == 2
    row = next(h for h in trainer.state.log_history if "diversity/loss/tb" in h)
    assert math.isfinite(row["diversity/loss/tb"]) and "diversity/option_share/place/park" in row
    assert np.isfinite(row["diversity/log_reward"])


def test_samples_table_goes_to_wandb(tmp_path, tiny_model_path, monkeypatch):
    """With report_to=wandb (offline) each epoch's samples are logged as a wandb.Table named ``samples``."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    from wandb.sdk.wandb_run import Run

    logged = []
    original = Run.log

    def spy(run, data, *args, **kwargs):  # wandb.log is the active run's log (wandb.init rebinds it)
        logged.append(data)
        return original(run, data, *args, **kwargs)

    monkeypatch.setattr(Run, "log", spy)
    trainer = _trainer(tmp_path, tiny_model_path, max_steps=2, num_steps_per_epoch=1, report_to=["wandb"])
    try:
        trainer.train()
    finally:
        wandb.finish()
    tables = [d["samples"] for d in logged if "samples" in d]
    assert len(tables) == 2 and all(isinstance(t, wandb.Table) for t in tables)
    assert tables[0].columns == ["epoch", "step", "prompt", "completion", "animal", "animal_cluster"]
    assert len(tables[0].data) == 8
    assert any(k.endswith("diversity/loss/total") for d in logged for k in d)  # the metrics reach wandb too


def test_evaluation_leaves_the_buffers_and_log_z_alone(tmp_path, tiny_model_path):
    from datasets import Dataset

    trainer = fixed.FixedDiversityTrainer(
        str(tiny_model_path), args=fixed.config(str(tmp_path / "out"), loss_type="tb", per_device_eval_batch_size=8,
                                                num_generations_eval=8),
        embedder=fixed.embed, eval_dataset=Dataset.from_dict({"prompt": [fixed.PROMPT] * 8}),
    )  # fmt: skip
    trainer.train()
    sizes = {k: len(b) for k, b in trainer.buffers.items()}
    state = trainer.log_z.state_dict()
    metrics = trainer.evaluate()
    assert {k: len(b) for k, b in trainer.buffers.items()} == sizes and trainer.log_z.state_dict() == state
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] == pytest.approx(
        metrics["eval_diversity/loss/tb"], rel=1e-5
    )
    assert metrics["eval_diversity/option_share/animal/cat"] == pytest.approx(4 / 8)
