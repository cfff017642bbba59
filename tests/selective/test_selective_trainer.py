"""SelectiveSFTTrainer: each mechanism's defining property inside a real (tiny) training run."""

from __future__ import annotations

import warnings

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

from tests.conftest import GradTap, conversation_rows, proxy_grad_independent, small_lora
from trl_ext import SelectiveConfig, SelectiveSFTTrainer, get_trainer
from trl_ext.selective.config import STRATEGIES

OUTCOME = conversation_rows(32, "add {} and 1", "{}!")
POSITIVE = conversation_rows(16, "be kind {}", "sure, friend {}.")
NEGATIVE = conversation_rows(16, "be kind {}", "no {}.")


def _trainer(tmp_path, model_path, strategy, peft=True, **overrides):
    config = dict(
        output_dir=str(tmp_path / strategy),
        strategy=strategy,
        max_steps=4,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        disable_tqdm=True,
        learning_rate=1e-2,
        seed=0,
    )
    config.update(overrides)
    return SelectiveSFTTrainer(
        model=str(model_path),
        args=SelectiveConfig(**config),
        train_dataset=OUTCOME,
        proxy_dataset=POSITIVE,
        negative_proxy_dataset=NEGATIVE,
        processing_class=AutoTokenizer.from_pretrained(model_path),
        peft_config=small_lora() if peft else None,
    )


U32 = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32


def _dot_error_bound(x: torch.Tensor, y: torch.Tensor) -> float:
    """Bound on |fl32(⟨x, y⟩) − ⟨x, y⟩| for a float32 dot product of n terms in any summation order:
    γ_n·Σ|x_i y_i| with γ_n = n·u / (1 − n·u) (Higham, Accuracy and Stability of Numerical Algorithms, §3.1)."""
    n = x.numel()
    return n * U32 / (1 - n * U32) * (x.double() * y.double()).abs().sum().item()


def _assert_projected_out(got: torch.Tensor, before: torch.Tensor, direction: torch.Tensor, name: str) -> float:
    """``got`` = before − (⟨before, d⟩ / ‖d‖²)·d computed in float32, checked element-wise against float64.

    Error bound, from the float32 arithmetic: the coefficient c = ⟨b, d⟩ / ⟨d, d⟩ is off by at most
    δc = (δ⟨b,d⟩ + |c|·δ⟨d,d⟩) / ⟨d,d⟩ + 2u·|c| (two dot-product bounds and the division), and each element by
    δc·|d_i| plus a few roundings of the terms it is formed from, 3u·(|b_i| + |c·d_i|). A no-op projection is off by
    |c·d_i|; the return value, max |c·d_i| / max bound, says how far (a no-op passes only where it is ≤ 1)."""
    b, d = before.double(), direction.double()
    dd = (d * d).sum().item()
    c = (b * d).sum().item() / dd
    delta_c = (_dot_error_bound(before, direction) + abs(c) * _dot_error_bound(direction, direction)) / dd
    delta_c += 2 * U32 * abs(c)
    tolerance = delta_c * d.abs() + 3 * U32 * (b.abs() + abs(c) * d.abs())
    error = (got.double() - (b - c * d)).abs()
    worst = (error / tolerance.clamp_min(1e-300)).max().item()
    assert (error <= tolerance).all(), f"{name}: error {worst:.2f}x the float32 bound"
    return (c * d).abs().max().item() / tolerance.max().item()


class _StopAfterSurgery(TrainerCallback):
    """Compare with an independent proxy gradient at the first step, before the optimizer moves the weights."""

    def __init__(self, trainer, check):
        self.trainer, self.check, self.done = trainer, check, False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self.done:
            self.check(self.trainer)
            self.done = True


def test_grad_project_strict_is_orthogonal_to_the_proxy_gradient(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "grad_project", max_grad_norm=0.0)
    tap = GradTap(trainer)

    def check(t):
        g_a = proxy_grad_independent(t)
        for name, g in tap.after[0].items():
            dot = (g.double() * g_a[name].double()).sum().item()
            assert abs(dot) <= 1e-6 * max(1.0, g.double().norm().item() * g_a[name].double().norm().item()), name

    trainer.add_callback(_StopAfterSurgery(trainer, check))
    trainer.train()
    assert len(tap.after) == 4


def test_grad_project_conflict_only_keeps_non_conflicting_tensors(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "grad_project", grad_project_strict=False, max_grad_norm=0.0)
    tap = GradTap(trainer)
    seen = {"kept": 0, "projected": 0, "zero": 0}
    # The trainer decides on its own float32 ∇CE(A⁺); the independent one differs by rounding, so cosines within
    # COS_TOL of 0 may go either way, and a projected tensor's leftover cosine is rounding (~√n·u ≈ 1e-6).
    cos_tol = 1e-5

    def check(t):
        g_a = proxy_grad_independent(t)
        for name, g_t in tap.before[0].items():
            g, a, after = g_t.double(), g_a[name].double(), tap.after[0][name].double()
            if not g_t.any() or not g_a[name].any():
                assert torch.equal(tap.after[0][name], g_t), name
                seen["zero"] += 1  # e.g. LoRA A while B = 0
                continue
            cos = (g * a).sum().item() / (g.norm() * a.norm()).item()
            if cos > cos_tol:
                assert torch.equal(tap.after[0][name], g_t), name
                seen["kept"] += 1
            elif cos < -cos_tol:
                assert abs((after * a).sum().item()) <= cos_tol * (after.norm() * a.norm()).item(), name
                seen["projected"] += 1

    trainer.add_callback(_StopAfterSurgery(trainer, check))
    trainer.train()
    assert sum(seen.values()) == 8 and seen["kept"] > 0, seen  # kept: non-zero tensors left exactly as they were


def test_precomputed_projection_uses_the_cached_mean(tmp_path, tiny_model_path):
    from trl_ext.selective.projection import MeanGradient

    cache = tmp_path / "proxy_grad.safetensors"
    trainer = _trainer(tmp_path, tiny_model_path, "grad_project_precomputed_proxy_grad", proxy_grad_path=str(cache))
    tap = GradTap(trainer)
    trainer.train()
    assert cache.exists()
    cached = MeanGradient.load(cache).mean()
    for step in range(4):
        resolution = [0.0]  # per tensor: how far a no-op would be from passing
        for name, g in tap.after[step].items():
            if not cached[name].any() or not tap.before[step][name].any():
                assert torch.equal(g, tap.before[step][name]), name  # nothing to project (LoRA A at B = 0)
                continue
            resolution.append(_assert_projected_out(g, tap.before[step][name], cached[name], f"step {step} {name}"))
        assert max(resolution) > 100, (step, resolution)  # the check can tell a projection from a no-op
    # a second run reloads the cache instead of recomputing it
    again = _trainer(
        tmp_path / "b", tiny_model_path, "grad_project_precomputed_proxy_grad", proxy_grad_path=str(cache)
    )
    again._prepare_plane_and_proxy_grad()
    for name, value in cached.items():
        assert torch.equal(again.proxy_grad[name].cpu(), value)


def test_kl_term_is_zero_with_a_zero_adapter_and_positive_after_training(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "kl_divergence", beta_kl=1.0, max_steps=6)
    trainer.train()
    kl = [h["proxy/kl"] for h in trainer.state.log_history if "proxy/kl" in h]
    assert kl[0] == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at zero: p_θ = p_base
    assert kl[-1] > 1e-5


def test_full_fine_tune_base_is_the_frozen_starting_model(tmp_path, tiny_model_path):
    """Without PEFT, p_base is a frozen copy that computes with the *starting* weights, not the live model's.

    Regression: TRL's fused-LM-head patch closes over the live model's bound ``forward``; a plain deep copy kept
    that closure, so the "frozen" base ran the trained model and the KL term was ~0 throughout training."""
    from transformers import AutoModelForCausalLM

    trainer = _trainer(tmp_path, tiny_model_path, "kl_divergence", peft=False, beta_kl=1.0, max_steps=6)
    trainer.train()
    kl = [h["proxy/kl"] for h in trainer.state.log_history if "proxy/kl" in h]
    assert kl[0] == pytest.approx(0.0, abs=1e-7) and kl[-1] > 1e-4, kl
    trainer._draw(["positive"])
    batch = trainer.proxy_batch("positive")
    start = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    with torch.no_grad():
        expected = start(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        live = trainer.proxy_forward("positive").logits
    base = trainer.base_forward("positive").logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(base[mask], expected[mask])
    assert (live[mask] - expected[mask]).abs().max() > 1e-2


def test_steering_adds_alpha_plane_before_the_step(tmp_path, tiny_model_path):
    trainer = _trainer(
        tmp_path, tiny_model_path, "steering_weights", steering_alpha=0.5, final_steering_alpha=0.1,
        alpha_warmup_steps=1, max_grad_norm=0.0,
    )  # fmt: skip
    tap = GradTap(trainer)
    trainer.train()
    alphas = [h["steering/alpha"] for h in trainer.state.log_history if "steering/alpha" in h]
    assert alphas == pytest.approx([0.5, 0.5, 0.3, 0.1])  # warm-up, then linear down to 0.1 at the last step
    for step, alpha in enumerate(alphas):
        for name, g in tap.after[step].items():
            torch.testing.assert_close(g, tap.before[step][name] + alpha * trainer.plane[name])


def test_end_steering_subtracts_alpha_plane_at_the_end(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "steering_weights_add_alignment_plane", steering_alpha=0.3)

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            self.weights = {n: p.detach().clone() for n, p in trainer.trainable_parameters().items()}

    snap = Snapshot()
    trainer.add_callback(snap)
    trainer.callback_handler.callbacks.insert(0, trainer.callback_handler.callbacks.pop())  # before the end hook
    trainer.train()
    for name, p in trainer.trainable_parameters().items():
        torch.testing.assert_close(p.detach(), snap.weights[name] - 0.3 * trainer.plane[name])


@pytest.mark.parametrize("strategy", ["orth_penalty", "directional_penalty"])
def test_plane_penalties_equal_their_sums(tmp_path, tiny_model_path, strategy):
    trainer = _trainer(tmp_path, tiny_model_path, strategy, lambda_plane=0.5, max_steps=1)
    trainer._prepare_plane_and_proxy_grad()
    a = {n: p.detach() for n, p in trainer.trainable_parameters().items() if "lora_A" in n}
    products = [a[n].double() @ trainer.plane[n].double().T for n in a]
    expected = sum(p.abs().sum() for p in products) if strategy == "orth_penalty" else -sum(p.sum() for p in products)
    trainer.train()
    logged = [h[f"proxy/{strategy}"] for h in trainer.state.log_history if f"proxy/{strategy}" in h][0]
    assert logged == pytest.approx(expected.item(), rel=1e-4)


def test_registry_and_bad_inputs(tmp_path, tiny_model_path):
    assert len(STRATEGIES) == 12
    for name in STRATEGIES:
        cls = get_trainer(name)
        assert issubclass(cls, SelectiveSFTTrainer) and cls.strategy == name
    assert get_trainer("ppo").__name__ == "PPOTrainer"
    with pytest.raises(ValueError, match="unknown trainer 'grad_projekt'; known: ppo, sft, naive"):
        get_trainer("grad_projekt")
    with pytest.raises(ValueError, match="unknown strategy 'gradproject'"):
        SelectiveConfig(output_dir=str(tmp_path), strategy="gradproject")
    with pytest.raises(ValueError, match="runs strategy 'dpo', but args.strategy is 'naive'"):
        get_trainer("dpo")(model=str(tiny_model_path), args=SelectiveConfig(output_dir=str(tmp_path), use_cpu=True))
    config = SelectiveConfig(output_dir=str(tmp_path), strategy="kl_divergence", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="strategy 'kl_divergence' needs positive proxy data: pass proxy_dataset"):
        SelectiveSFTTrainer(model=str(tiny_model_path), args=config, train_dataset=OUTCOME)
    config = SelectiveConfig(output_dir=str(tmp_path), strategy="dpo", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="needs negative proxy data: pass negative_proxy_dataset"):
        SelectiveSFTTrainer(model=str(tiny_model_path), args=config, train_dataset=OUTCOME, proxy_dataset=POSITIVE)
    with pytest.raises(ValueError, match="penalises LoRA A matrices: train with a LoRA peft_config"):
        _trainer(tmp_path, tiny_model_path, "orth_penalty", peft=False)
    with pytest.raises(ValueError, match="'safe_lora' needs safelora_base_model"):
        SelectiveConfig(output_dir=str(tmp_path), strategy="safe_lora")
    other = Dataset.from_list([{"text": "hello"}] * 4)
    config = SelectiveConfig(output_dir=str(tmp_path), strategy="naive", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match=r"naive strategy: outcome columns \['completion', 'prompt'\] and proxy"):
        SelectiveSFTTrainer(model=str(tiny_model_path), args=config, train_dataset=OUTCOME, proxy_dataset=other)


def test_first_hour_mistakes_get_one_clear_error(tmp_path, tiny_model_path):
    """Rows with other columns (outcome, proxy), a model path that does not exist: named before training starts."""
    config = SelectiveConfig(output_dir=str(tmp_path), strategy="kl_divergence")
    qa = Dataset.from_list([{"question": "q", "answer": "a"}] * 4)
    with pytest.raises(
        ValueError,
        match=r"train_dataset has the columns \['question', 'answer'\]; SelectiveSFTTrainer "
        r"needs 'text' \| 'messages' \| 'prompt' \+ 'completion'",
    ):
        SelectiveSFTTrainer(model=str(tiny_model_path), args=config, train_dataset=qa, proxy_dataset=POSITIVE)
    with pytest.raises(
        ValueError,
        match=r"proxy_dataset has the columns \['question', 'answer'\]; SelectiveSFTTrainer "
        r"\(proxy rows\) needs 'text'",
    ):
        SelectiveSFTTrainer(model=str(tiny_model_path), args=config, train_dataset=OUTCOME, proxy_dataset=qa)
    with pytest.raises(ValueError, match=r"eval_dataset\['held_out'\] has the columns \['question', 'answer'\]"):
        SelectiveSFTTrainer(
            model=str(tiny_model_path),
            args=config,
            train_dataset=OUTCOME,
            eval_dataset={"held_out": qa},
            proxy_dataset=POSITIVE,
        )
    with pytest.raises(FileNotFoundError, match="model path './no/such/model' does not exist"):
        SelectiveSFTTrainer(model="./no/such/model", args=config, train_dataset=OUTCOME, proxy_dataset=POSITIVE)


def test_defaults_act_and_a_zero_weight_warns_at_the_callers_line(tmp_path):
    """Every strategy's default weights make it act (kl_divergence: β_kl = 1); set to 0 they warn, attributed to the
    line that built the config (this file), not to the dataclass's generated code."""
    assert SelectiveConfig(output_dir=str(tmp_path), strategy="kl_divergence").beta_kl == 1.0
    assert SelectiveConfig(output_dir=str(tmp_path), strategy="positive_negative_proxy").beta_kl == 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in STRATEGIES:
            SelectiveConfig(output_dir=str(tmp_path), strategy=name, safelora_base_model="base")
    assert [str(w.message) for w in caught if "adds nothing" in str(w.message)] == []
    with pytest.warns(UserWarning, match=r"strategy 'kl_divergence' with beta_kl = 0 adds nothing") as record:
        SelectiveConfig(output_dir=str(tmp_path), strategy="kl_divergence", beta_kl=0.0)
    assert [w.filename for w in record if "adds nothing" in str(w.message)] == [__file__]
    with pytest.warns(UserWarning, match="lambda_proxy = lambda_negative = 0"):
        SelectiveConfig(
            output_dir=str(tmp_path), strategy="positive_negative_proxy", lambda_proxy=0, lambda_negative=0
        )


def test_precision_defaults_to_what_the_device_supports(tmp_path, caplog, monkeypatch):
    """An unset bf16 becomes float32 on a machine without bf16 (one log line); a value the user sets is kept."""
    import logging

    import torch

    import trl_ext.common.config as config_module

    monkeypatch.setattr(config_module, "_said_fp32", False)
    supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    with caplog.at_level(logging.WARNING, logger="trl_ext.common.config"):
        config = SelectiveConfig(output_dir=str(tmp_path))
        SelectiveConfig(output_dir=str(tmp_path))
    assert config.bf16 is supported
    said = [r.getMessage() for r in caplog.records if "training in float32" in r.getMessage()]
    assert said == (
        [] if supported else ["bf16 is not supported on this device: training in float32 (set bf16=True to force it)"]
    )
    assert SelectiveConfig(output_dir=str(tmp_path), use_cpu=True).bf16 is False
    assert SelectiveConfig(output_dir=str(tmp_path), bf16=False).bf16 is False


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "safe_lora"])
def test_every_strategy_trains_with_gradient_accumulation(tmp_path, tiny_model_path, strategy):
    trainer = _trainer(tmp_path, tiny_model_path, strategy, max_steps=2, gradient_accumulation_steps=2, beta_kl=1.0)
    before = {n: p.detach().clone() for n, p in trainer.trainable_parameters().items()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.trainable_parameters().items())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_synchronized_cycling_pauses_a_finished_proxy_stream(tmp_path, tiny_model_path):
    """Outcome: 8 batches per epoch; proxy: 4. Synchronized: the proxy makes one pass per epoch, then waits."""
    trainer = _trainer(
        tmp_path, tiny_model_path, "kl_divergence", beta_kl=1.0, max_steps=8, proxy_cycling="synchronized"
    )
    trainer.train()
    logged = [h["step"] for h in trainer.state.log_history if "proxy/kl" in h]
    assert logged == [1, 2, 3, 4]  # steps 5-8 of the epoch have no proxy batch, so no KL term
    continuous = _trainer(tmp_path / "c", tiny_model_path, "kl_divergence", beta_kl=1.0, max_steps=8)
    continuous.train()
    assert [h["step"] for h in continuous.state.log_history if "proxy/kl" in h] == list(range(1, 9))


def test_plane_penalty_needs_more_than_one_proxy_batch_and_alignment_plane_steps_cycles(tmp_path, tiny_model_path):
    """LoRA B starts at zero, so a one-batch proxy pass gives every lora_A a zero plane: a clear error, not a penalty
    that is silently 0. ``alignment_plane_steps`` cycles the proxy set for more steps; ``steps = one pass`` equals
    the default pass exactly."""
    one_batch = _trainer(tmp_path, tiny_model_path, "orth_penalty", proxy_batch_size=16)
    with pytest.raises(
        ValueError, match="alignment plane is zero on every LoRA A matrix .* alignment_plane_steps >= 2"
    ):
        one_batch._prepare_plane_and_proxy_grad()

    cycled = _trainer(tmp_path, tiny_model_path, "orth_penalty", proxy_batch_size=16, alignment_plane_steps=3)
    cycled._prepare_plane_and_proxy_grad()
    assert all(cycled.plane[n].any() for n in cycled.plane if "lora_A" in n)

    default = _trainer(tmp_path, tiny_model_path, "orth_penalty")  # batch 4: 4 batches per pass of 16 rows
    explicit = _trainer(tmp_path, tiny_model_path, "orth_penalty", alignment_plane_steps=4)
    torch.manual_seed(0)
    a = default.compute_alignment_plane()
    torch.manual_seed(0)
    b = explicit.compute_alignment_plane()
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    with pytest.raises(ValueError, match="alignment_plane_steps must be >= 1"):
        SelectiveConfig(output_dir=str(tmp_path), strategy="orth_penalty", alignment_plane_steps=0)


@pytest.mark.parametrize("strategy", ["kl_divergence", "grad_project"])
def test_resume_reproduces_the_losses_and_proxy_batches(tmp_path, tiny_model_path, strategy):
    """Checkpoints hold the proxy streams' positions: resuming at step 3 gives the same losses (outcome CE and the
    proxy term, which depends on which proxy batch is drawn) at steps 4-6 as the uninterrupted run."""
    settings = dict(beta_kl=1.0, max_steps=6, save_strategy="steps", save_steps=3)
    key = "proxy/kl" if strategy == "kl_divergence" else "proxy/ce_positive"

    def logged(trainer):
        return {h["step"]: (h["loss"], h[key]) for h in trainer.state.log_history if "loss" in h and key in h}

    full = _trainer(tmp_path, tiny_model_path, strategy, **settings)
    full.train()
    assert (tmp_path / strategy / "checkpoint-3" / "proxy_cycler.json").is_file()
    resumed = _trainer(tmp_path, tiny_model_path, strategy, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / strategy / "checkpoint-3"))
    expected = logged(full)
    got = {step: value for step, value in logged(resumed).items() if step > 3}  # 1-3: restored with the state
    assert sorted(got) == [4, 5, 6]
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step


def test_representation_term_equals_a_direct_computation_without_full_logits(tmp_path, tiny_model_path):
    """representation_constraint: β·Σ_l MSE(h_θ^l, h_base^l) on A⁺ (embedding output skipped), 0 while LoRA B is 0
    and > 0 after training; its forwards keep one position of logits (no (B, L, vocab) tensor)."""
    from trl_ext.selective.losses import representation_mse

    trainer = _trainer(tmp_path, tiny_model_path, "representation_constraint", beta_representation=0.5, max_steps=6)
    trainer.train()
    mse = [h["proxy/representation_mse"] for h in trainer.state.log_history if "proxy/representation_mse" in h]
    assert mse[0] == pytest.approx(0.0, abs=1e-10) and mse[-1] > 0
    trainer._draw(["positive"])
    batch = trainer.proxy_batch("positive")
    out = trainer.proxy_forward("positive")
    assert out.logits.shape[1] == 1 and out.hidden_states[-1].shape[1] == batch["input_ids"].shape[1]
    terms = trainer.mechanisms[0].loss(trainer, trainer.model, None)
    model = trainer.accelerator.unwrap_model(trainer.model)
    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    with torch.no_grad():
        live = model(**kwargs).hidden_states
        with model.disable_adapter():
            base = model(**kwargs).hidden_states
    expected = 0.5 * representation_mse(live, base, batch["attention_mask"])
    torch.testing.assert_close(terms["representation"].detach(), expected)
