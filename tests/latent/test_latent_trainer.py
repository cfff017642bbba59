"""LatentCommTrainer on the tiny model: the loss against the pure functions, negatives never self, gradient
accumulation equal to the larger batch, resume reproducing the next losses, the outputs (model, tokenizer, adapter,
loss log and curve, checkpoints, best model, save_total_limit), save → load giving the same outputs, the probe
callback and the configuration's errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.common.loss_log import read_loss_log
from trl_ext.latent import (
    ADAPTER_WEIGHTS,
    LatentCommConfig,
    LatentCommTrainer,
    LatentDataset,
    align_supervised,
    length_matched,
    load_latent_receiver,
    plan_similarity_loss,
    random_contrast_loss,
    read_latent_file,
    write_sender_states,
)


def _rows(n):
    return [
        {"id": f"s{i}", "plan": f"Answer {i % 5}." if i % 3 else None,
         "conversations": [{"from": "human", "value": "Q " + "x" * i + "?"},
                           {"from": "gpt", "value": f"A{i % 5}."}]}
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def latent_rows(tmp_path_factory, tiny_model_path):
    from trl_ext.models import load_causal_lm, load_tokenizer

    folder = tmp_path_factory.mktemp("latent_data")
    model, tok = load_causal_lm(str(tiny_model_path)), load_tokenizer(str(tiny_model_path))
    return read_latent_file(write_sender_states(model, tok, _rows(10), folder, show_progress=False))


def _trainer(tiny_model_path, rows, out, eval_rows=None, **overrides):
    from trl_ext.models import load_causal_lm, load_tokenizer

    torch.manual_seed(0)
    kwargs = dict(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=2, logging_steps=1, report_to=[],
        use_cpu=True, num_heads=4, disable_tqdm=True, save_strategy="no", learning_rate=1e-3, seed=0,
        prepended_length=12,
    )  # fmt: skip
    kwargs.update(overrides)
    args = LatentCommConfig(**kwargs)
    return LatentCommTrainer(
        load_causal_lm(str(tiny_model_path)), args, train_dataset=LatentDataset(rows, args.prepended_length),
        eval_dataset=None if eval_rows is None else LatentDataset(eval_rows, args.prepended_length),
        processing_class=load_tokenizer(str(tiny_model_path)),
    )  # fmt: skip


def _batch(trainer, rows_slice):
    return trainer.data_collator([trainer.train_dataset[i] for i in rows_slice])


def test_loss_equals_the_pure_functions(tmp_path, tiny_model_path, latent_rows):
    """A batch of 2 in evaluation mode (pure latents, no noise): the negative of each row is the other row, and the
    loss is CE + 1.0 · L_plan (over the row with a plan) + 2.0 · L_rc, each from the tested pure functions."""
    trainer = _trainer(tiny_model_path, latent_rows, tmp_path, negative_noise_std=0.0)
    receiver = trainer.receiver.eval()
    batch = _batch(trainer, [1, 3])  # s1 has a plan, s3 has none
    plain = {k: v for k, v in batch.items() if k != "ids"}
    with torch.no_grad():
        loss = trainer.compute_loss(receiver, dict(batch))
        logits, labels, _ = receiver(**plain)
        mask = labels.ne(-100)
        ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        plan_logits, plan_labels, _ = receiver(**plain, source="plan")
        a, b, m = align_supervised(logits[:1], mask[:1], plan_logits[:1], plan_labels[:1].ne(-100))
        l_plan, _ = plan_similarity_loss(a, b, m)
        h, pad = batch["hidden_states"], batch["latent_padding"]
        neg = torch.zeros_like(h)
        for i, j in ((0, 1), (1, 0)):
            n = int((~pad[i]).sum())
            neg[i, :n] = length_matched(h[j][~pad[j]], n)
        neg_logits, _, _ = receiver(**{**plain, "hidden_states": neg})
        l_rc, _ = random_contrast_loss(logits, neg_logits, mask)
    want = ce + 1.0 * l_plan + 2.0 * l_rc
    assert float(loss) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
    metrics = trainer._metrics["eval"]
    assert metrics["negatives_missing"] == [0.0]
    assert metrics["loss/plan_similarity"][0] == pytest.approx(float(l_plan), rel=1e-5, abs=1e-7)


def test_length_matching_cuts_and_tiles():
    h = torch.arange(6.0).view(3, 2)
    assert torch.equal(length_matched(h, 2), h[:2])
    assert torch.equal(length_matched(h, 7), torch.cat([h, h, h[:1]]))


def test_negatives_are_never_self_and_a_batch_of_one_has_none(tmp_path, tiny_model_path, latent_rows):
    trainer = _trainer(tiny_model_path, latent_rows, tmp_path, negative_noise_std=0.0)
    batch = _batch(trainer, range(5))
    h, pad = batch["hidden_states"], batch["latent_padding"]
    for step in range(20):
        neg = trainer._negatives(f"k{step}", h, pad)
        for i in range(5):
            n = int((~pad[i]).sum())
            sources = [j for j in range(5) if torch.equal(neg[i, :n], length_matched(h[j][~pad[j]], n))]
            assert sources and i not in sources
            assert not neg[i, n:].any()
    assert trainer._negatives("k", h[:1], pad[:1]) is None
    trainer.receiver.eval()
    with torch.no_grad():
        trainer.compute_loss(trainer.receiver, _batch(trainer, [0]))
    assert trainer._metrics["eval"]["negatives_missing"] == [1.0]
    assert trainer._metrics["eval"]["loss/random_contrast"] == [0.0]


def test_negative_noise_has_the_configured_scale(tmp_path, tiny_model_path, latent_rows):
    trainer = _trainer(tiny_model_path, latent_rows, tmp_path, negative_noise_std=0.5)
    batch = _batch(trainer, range(2))
    h, pad = batch["hidden_states"], batch["latent_padding"]
    n = int((~pad[0]).sum())
    noise = trainer._negatives("k", h, pad)[0, :n] - length_matched(h[1][~pad[1]], n)
    assert 0.4 < float(noise.std()) < 0.6  # (n · d ≥ 64 draws of N(0, 0.25))


def _params(trainer):
    return {k: v.detach().clone() for k, v in trainer.receiver.named_parameters()}


def test_gradient_accumulation_equals_the_larger_batch(tmp_path, tiny_model_path, latent_rows):
    """CE and L_plan are normalised by the counts of the whole accumulated batch, so 2 × 2 rows give the update of
    4 rows (the contrast term's negatives are drawn per micro-batch, so it is off here; ratios follow the linear
    schedule, the same for both)."""
    common = dict(max_steps=1, random_contrast_weight=0.0, mix_schedule="linear", adapter_dropout=0.0,
                  lr_scheduler_type="constant", optim="sgd", learning_rate=0.5)  # fmt: skip
    big = _trainer(tiny_model_path, latent_rows[:8], tmp_path / "big", per_device_train_batch_size=4, **common)
    small = _trainer(
        tiny_model_path, latent_rows[:8], tmp_path / "ga", per_device_train_batch_size=2,
        gradient_accumulation_steps=2, **common,
    )  # fmt: skip
    before = _params(big)
    big.train()
    small.train()
    after_big, after_small = _params(big), _params(small)
    moved = max(float((after_big[k] - before[k]).abs().max()) for k in before)
    assert moved > 1e-3
    for k in before:
        torch.testing.assert_close(after_small[k], after_big[k], rtol=1e-5, atol=1e-6)


def test_resume_reproduces_the_next_losses(tmp_path, tiny_model_path, latent_rows):
    """Random mixing ratios, dropout and negatives with noise: a run resumed from checkpoint-2 logs the same losses
    at steps 3 and 4 as the uninterrupted run."""
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=2)
    full = _trainer(tiny_model_path, latent_rows, tmp_path / "full", **common)
    full.train()
    resumed = _trainer(tiny_model_path, latent_rows, tmp_path / "full", **common)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    keys = ("loss", "loss/ce", "loss/plan_similarity", "loss/random_contrast", "js_bits")

    def logged(trainer):
        return [
            {k: h.get(k) for k in keys} for h in trainer.state.log_history if h.get("step") in (3, 4) and "loss" in h
        ]

    want, got = logged(full), logged(resumed)
    assert len(want) == 2 and len(got) == 2
    for w, g in zip(want, got):
        assert w["loss/random_contrast"] is not None
        for k in keys:
            assert (g[k] is None) == (w[k] is None) and (w[k] is None or g[k] == pytest.approx(w[k], rel=1e-5)), k


def test_outputs_best_model_and_save_total_limit(tmp_path, tiny_model_path, latent_rows):
    out = tmp_path / "run"
    trainer = _trainer(
        tiny_model_path, latent_rows[:8], out, eval_rows=latent_rows[8:], max_steps=6, save_strategy="steps",
        save_steps=2, eval_strategy="steps", eval_steps=2, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", per_device_train_batch_size=2,
    )  # fmt: skip
    trainer.train()
    trainer.save_model(str(out))
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert len(checkpoints) <= 2 and trainer.state.best_model_checkpoint is not None
    for folder in [out, *out.glob("checkpoint-*")]:
        for name in ("config.json", "model.safetensors", ADAPTER_WEIGHTS, "latent_comm_head.json", "tokenizer.json"):
            assert (folder / name).is_file(), (folder, name)
    # the final model is the best checkpoint's
    best = load_file(str(tmp_path / "run" / trainer.state.best_model_checkpoint.split("/")[-1] / ADAPTER_WEIGHTS))
    final = load_file(str(out / ADAPTER_WEIGHTS))
    assert best.keys() == final.keys() and all(torch.equal(best[k], final[k]) for k in best)
    columns, rows = read_loss_log(out / "loss_log.csv")
    for key in ("loss", "loss/ce", "loss/plan_similarity", "loss/random_contrast", "eval_loss", "delta_nll_bits"):
        assert key in columns, key
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    assert (out / "loss_curve.png").stat().st_size > 1000


def test_save_then_load_gives_the_same_outputs(tmp_path, tiny_model_path, latent_rows):
    trainer = _trainer(tiny_model_path, latent_rows, tmp_path / "run")
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    receiver, tokenizer = load_latent_receiver(tmp_path / "saved")
    assert len(tokenizer) == len(trainer.processing_class)
    batch = {k: v for k, v in _batch(trainer, range(4)).items() if k != "ids"}
    receiver.eval(), trainer.receiver.eval()
    with torch.no_grad():
        want, got = trainer.receiver(**batch)[0], receiver(**batch)[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_probe_callback_logs_the_bound(tmp_path, tiny_model_path, latent_rows):
    trainer = _trainer(
        tiny_model_path, latent_rows[:8], tmp_path, eval_rows=latent_rows[6:], max_steps=4, enable_infoNCE_probe=True,
        infoNCE_probe_interval=2, infoNCE_probe_k=4,
    )  # fmt: skip
    trainer.train()
    (probe,) = [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "InfoNCEProbeCallback"]
    assert [h[0] for h in probe.history] == [0, 2, 4]
    for _, loss, bound in probe.history:
        assert bound == pytest.approx(math.log(4) - loss)
    logged = [h for h in trainer.state.log_history if "infonce/mi_lower_bound" in h]
    assert len(logged) >= 2


def test_dynamic_weights_are_logged(tmp_path, tiny_model_path, latent_rows):
    trainer = _trainer(tiny_model_path, latent_rows, tmp_path, dynamic_weights=True, max_steps=1)
    trainer.train()
    (h,) = [h for h in trainer.state.log_history if "w_rc" in h]
    assert 0.01 <= h["w_plan"] <= 0.05 and 0.01 <= h["w_rc"] <= 0.5
    assert h["w_rc"] == pytest.approx(0.01 + 0.49 * min(1.0, h["loss/random_contrast"] / 0.69), rel=1e-6)


@pytest.mark.parametrize(
    "field, value, error",
    [("num_heads", 0, ConfigError), ("contrast_margin", 0.0, ConfigError), ("mix_ratios", [1.5], ConfigError),
     ("mix_schedule", "cosine", UnknownNameError), ("infoNCE_probe_k", 1, ConfigError),
     ("negative_noise_std", -1.0, ConfigError), ("model_max_length", 1, ConfigError)],
)  # fmt: skip
def test_config_errors_name_the_field(tmp_path, field, value, error):
    with pytest.raises(error, match=field):
        LatentCommConfig(output_dir=str(tmp_path), use_cpu=True, **{field: value})


def test_config_accepts_the_documents_names(tmp_path):
    args = LatentCommConfig(
        output_dir=str(tmp_path), use_cpu=True, evaluation_strategy="steps", eval_steps=5, warmup_ratio=0.1
    )
    assert args.eval_strategy == "steps" and args.remove_unused_columns is False and args.label_names == ["labels"]
    assert args.get_warmup_steps(100) == 10
    with pytest.raises(ConfigError, match="warmup_ratio"):
        LatentCommConfig(output_dir=str(tmp_path), use_cpu=True, warmup_ratio=1.5)


def test_trainer_errors_before_training(tmp_path, tiny_model_path, latent_rows):
    from transformers import TrainingArguments

    from trl_ext.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(str(tiny_model_path)), load_tokenizer(str(tiny_model_path))
    with pytest.raises(ConfigError, match="LatentCommConfig"):
        LatentCommTrainer(model, TrainingArguments(output_dir=str(tmp_path)), processing_class=tok)
    args = LatentCommConfig(output_dir=str(tmp_path), use_cpu=True)
    with pytest.raises(ConfigError, match="processing_class"):
        LatentCommTrainer(model, args)
    with pytest.raises(ConfigError, match="train_dataset"):
        LatentCommTrainer(model, args, train_dataset=[{"id": "x"}], processing_class=tok)


def test_activation_checkpointing_gives_the_same_loss(tmp_path, tiny_model_path, latent_rows):
    """``--gradient_checkpointing`` reaches the causal LM inside the receiver and changes nothing in the loss."""
    kw = dict(adapter_dropout=0.0, max_steps=2, mix_schedule="linear")
    plain = _trainer(tiny_model_path, latent_rows, tmp_path / "a", **kw)
    plain.train()
    checkpointed = _trainer(tiny_model_path, latent_rows, tmp_path / "b", gradient_checkpointing=True, **kw)
    checkpointed.train()
    assert checkpointed.receiver.model.is_gradient_checkpointing
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (plain, checkpointed)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_a_sender_of_another_width_gets_an_input_projection(tmp_path, tiny_model_path, latent_rows):
    """Hidden states of width 40 (≠ the receiver's 64): the adapter gets a 40 → 64 projection, which trains and is
    saved and reloaded with it."""
    from dataclasses import replace

    g = torch.Generator().manual_seed(0)
    rows = [replace(r, hidden_state=torch.randn(5 + i % 3, 40, generator=g)) for i, r in enumerate(latent_rows)]
    trainer = _trainer(tiny_model_path, rows, tmp_path / "run")
    projection = trainer.receiver.latent_adapter.input_projection
    assert projection is not None and tuple(projection.weight.shape) == (64, 40)
    before = projection.weight.detach().clone()
    trainer.train()
    assert float((projection.weight - before).abs().max()) > 0
    trainer.save_model(str(tmp_path / "saved"))
    receiver, _ = load_latent_receiver(tmp_path / "saved")
    torch.testing.assert_close(receiver.latent_adapter.input_projection.weight, projection.weight)
