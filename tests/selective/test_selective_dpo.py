"""SelectiveDPOTrainer (and SelectivePPOTrainer): each mechanism's defining property inside a tiny training run.

Outcome data: the demo's reversal task as preference pairs (chosen = the correct reversal, rejected = the letters
copied); proxy data: the demo's A⁺ / A⁻ prompt-completion rows.
"""

from __future__ import annotations

from itertools import permutations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

from tests.conftest import GradTap, proxy_grad_independent, small_lora
from trl_ext import (
    SelectiveConfig,
    SelectiveDPOConfig,
    SelectiveDPOTrainer,
    SelectivePPOConfig,
    SelectivePPOTrainer,
    SelectiveSFTTrainer,
    get_trainer,
)
from trl_ext.selective.config import STRATEGIES
from trl_ext.selective.demo import make_demo, proxy_row
from trl_ext.selective.mechanisms import Mechanism

DEMO = make_demo(num_outcome=16, num_proxy=8, num_negative=8, num_eval=0)
POSITIVE, NEGATIVE = DEMO["proxy_positive"], DEMO["proxy_negative"]


def _preference(row):
    """chosen: the correct reversal; rejected: the letters copied in prompt order (wrong)."""
    letters = row["prompt"][0]["content"].split()[1:]
    return {
        "prompt": row["prompt"],
        "chosen": row["completion"],
        "rejected": [{"role": "assistant", "content": " ".join(letters)}],
    }


OUTCOME = DEMO["outcome_train"].map(_preference, remove_columns=["completion"])


COMMON = dict(
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


def _trainer(tmp_path, model_path, strategy, peft=True, train_dataset=OUTCOME, proxies=(POSITIVE, NEGATIVE), **kw):
    config = {**COMMON, "output_dir": str(tmp_path / strategy), "strategy": strategy, "max_steps": 4, **kw}
    return SelectiveDPOTrainer(
        model=str(model_path),
        args=SelectiveDPOConfig(**config),
        train_dataset=train_dataset,
        proxy_dataset=proxies[0],
        negative_proxy_dataset=proxies[1],
        processing_class=AutoTokenizer.from_pretrained(model_path),
        peft_config=small_lora() if peft else None,
    )


class _AtFirstOptimizerStep(TrainerCallback):
    """Run ``check(trainer)`` once, after the first surgery and before the optimizer moves the weights."""

    def __init__(self, trainer, check):
        self.trainer, self.check, self.done = trainer, check, False

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self.done:
            self.check(self.trainer)
            self.done = True


def _grads(loss, params):
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}


def _sequence_logps(model, batch):
    """Σ over completion tokens of log p(token), from full logits (no fused head)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    target, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:].float()
    return (torch.log_softmax(logits, -1).gather(2, target.unsqueeze(-1)).squeeze(-1) * mask).sum(1)


def _dpo_loss_independent(model, batch, beta):
    """Sigmoid DPO loss of one collated [chosen; rejected] batch; reference = LoRA adapter disabled."""
    logps = _sequence_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        ref = _sequence_logps(model, batch)
    (c, r), (c_ref, r_ref) = logps.chunk(2), ref.chunk(2)
    return -F.logsigmoid(beta * ((c - c_ref) - (r - r_ref))).mean()


# ------------------------------------------------------------------------------------------------ data


def test_proxy_batches_are_tokenized_like_the_sft_trainer(tmp_path, tiny_model_path):
    dpo = _trainer(tmp_path, tiny_model_path, "dpo")
    sft = SelectiveSFTTrainer(
        model=str(tiny_model_path),
        args=SelectiveConfig(**{**COMMON, "output_dir": str(tmp_path / "sft"), "strategy": "dpo"}),
        train_dataset=DEMO["outcome_train"],
        proxy_dataset=POSITIVE,
        negative_proxy_dataset=NEGATIVE,
        processing_class=AutoTokenizer.from_pretrained(tiny_model_path),
    )
    for name in ("positive", "negative"):
        ours, theirs = dpo.proxy_datasets[name], sft.proxy_datasets[name]
        assert ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]
        assert any(label == -100 for label in ours["labels"][0])  # prompt masked: completion-only loss
    batch = dpo.proxy_collator([dpo.proxy_datasets["positive"][i] for i in range(3)])
    expected = sft.data_collator([sft.proxy_datasets["positive"][i] for i in range(3)])
    assert all(torch.equal(batch[k], expected[k]) for k in ("input_ids", "attention_mask", "labels"))


# ------------------------------------------------------------------------------------------------ p_base


def test_kl_is_zero_at_the_zero_adapter_and_positive_after_training(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "kl_divergence", beta_kl=1.0, max_steps=5)
    assert trainer.ref_model is None and trainer._frozen_base is None  # p_base = DPO's reference: adapter off
    trainer.train()
    kl = [h["proxy/kl"] for h in trainer.state.log_history if "proxy/kl" in h]
    assert kl[0] == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at zero: p_θ = p_base
    assert kl[-1] > 1e-5


def test_full_fine_tuning_reuses_dpo_reference_model_as_base(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "kl_divergence", peft=False, beta_kl=1.0, max_steps=2)
    assert trainer.ref_model is not None and trainer._frozen_base is None  # no second frozen copy
    with trainer.base_context() as base:
        assert base is trainer.accelerator.unwrap_model(trainer.ref_model)
    trainer.train()  # the reference (fused LM head added by DPO) still gives full logits to the KL term
    kl = [h["proxy/kl"] for h in trainer.state.log_history if "proxy/kl" in h]
    assert kl[0] == pytest.approx(0.0, abs=1e-7) and kl[-1] > 0
    # with precomputed reference log-probs DPO keeps no reference model: p_base is a frozen copy
    pre = _trainer(tmp_path / "p", tiny_model_path, "kl_divergence", peft=False, precompute_ref_log_probs=True)
    assert pre.ref_model is None and pre._frozen_base is not None
    assert not any(p.requires_grad for p in pre._frozen_base.parameters())


# ------------------------------------------------------------------------------------------------ surgery


def test_grad_project_projects_the_accumulated_dpo_gradient(tmp_path, tiny_model_path):
    """GA 2: the applied gradient is the per-tensor projection of the accumulated DPO gradient (recomputed from the
    two micro-batches with an independent sigmoid-DPO loss) off an independently recomputed proxy gradient."""
    trainer = _trainer(
        tmp_path, tiny_model_path, "grad_project", max_steps=1, per_device_train_batch_size=2,
        gradient_accumulation_steps=2, max_grad_norm=0.0,
    )  # fmt: skip
    tap, micro_batches = GradTap(trainer), []
    original_loss = trainer.compute_loss

    def recording_loss(model, inputs, *args, **kwargs):
        micro_batches.append({k: v.clone() for k, v in inputs.items()})
        return original_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording_loss

    def check(t):
        assert len(micro_batches) == 2
        model, params = t.accelerator.unwrap_model(t.model), t.trainable_parameters()
        loss = sum(_dpo_loss_independent(model, b, t.args.beta) for b in micro_batches) / 2
        g_t, g_a = _grads(loss, params), proxy_grad_independent(t)
        for name, before in tap.before[0].items():
            torch.testing.assert_close(before, g_t[name], rtol=1e-4, atol=1e-7)  # the accumulated DPO gradient
            gt, ga = g_t[name].double(), g_a[name].double()
            expected = gt - (gt * ga).sum() / ((ga * ga).sum() + 1e-16) * ga
            after = tap.after[0][name].double()
            torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-7)
            assert abs((after * ga).sum().item()) <= 1e-5 * max(1.0, after.norm().item() * ga.norm().item()), name

    trainer.add_callback(_AtFirstOptimizerStep(trainer, check))
    trainer.train()
    assert len(tap.after) == 1 and len(tap.before[0]) == 8  # every LoRA tensor projected
    assert any((tap.after[0][n] - g).norm() > 1e-3 * g.norm() for n, g in tap.before[0].items())  # not vacuous


# ------------------------------------------------------------------------------------------------ loss terms


def _equal_length_proxies(n=8):
    """A⁺/A⁻ rows of one instruction, so every proxy sequence has the same number of tokens (no padding)."""
    triples = list(permutations("abcdfgil", 3))[:n]
    pos = Dataset.from_list([proxy_row(t, "Last:", aligned=True) for t in triples])
    neg = Dataset.from_list([proxy_row(t, "Last:", aligned=False) for t in triples])
    return pos, neg


def test_extra_terms_enter_unscaled_so_accumulation_matches_a_large_batch(tmp_path, tiny_model_path):
    """DPO's loss is divided by the Trainer, so the proxy terms are added unscaled: 2 micro-batches of 2 pairs (with
    proxy batches of 2) give the same loss and gradient as 1 batch of 4 pairs (with a proxy batch of 4)."""
    proxies, outcome = _equal_length_proxies(), OUTCOME.select(range(4))
    runs = {}
    for bs, ga in ((2, 2), (4, 1)):
        trainer = _trainer(
            tmp_path / f"bs{bs}", tiny_model_path, "positive_negative_proxy", train_dataset=outcome,
            proxies=proxies, max_steps=1, per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
            lambda_proxy=1.0, lambda_negative=0.5, max_grad_norm=0.0,
        )  # fmt: skip
        tap = GradTap(trainer)
        trainer.train()
        runs[ga] = (tap.before[0], trainer.state.log_history[0])
    (grads_ga, log_ga), (grads_big, log_big) = runs[2], runs[1]
    # the proxy terms (λ_p·CE(A⁺) − λ_n·CE(A⁻) ≈ 3) dwarf DPO's log 2 at the zero adapter: scaling them by ½ would show
    assert log_big["loss/ce_positive"] + log_big["loss/ce_negative"] > 2.0
    assert log_ga["loss"] == pytest.approx(log_big["loss"], rel=1e-5)
    assert log_ga["loss/ce_positive"] == pytest.approx(log_big["loss/ce_positive"], rel=1e-5)
    for name, g in grads_big.items():
        torch.testing.assert_close(grads_ga[name], g, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s not in ("safe_lora", "naive")])
def test_every_strategy_trains_with_gradient_accumulation(tmp_path, tiny_model_path, strategy):
    trainer = _trainer(tmp_path, tiny_model_path, strategy, max_steps=2, gradient_accumulation_steps=2, beta_kl=1.0)
    before = {n: p.detach().clone() for n, p in trainer.trainable_parameters().items()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.trainable_parameters().items())
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
    logged = {k for h in trainer.state.log_history for k in h}
    loss_terms = [m.name for m in trainer.mechanisms if type(m).loss is not Mechanism.loss]
    assert all(f"loss/{name}" in logged for name in loss_terms)


# ------------------------------------------------------------------------------------------------ naive


def test_naive_is_dpo_on_the_union_with_proxy_pairs(tmp_path, tiny_model_path):
    trainer = _trainer(tmp_path, tiny_model_path, "naive", max_steps=1)
    data = trainer.train_dataset
    assert len(data) == len(OUTCOME) + len(POSITIVE)
    pairs = {(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in data}
    for pos, neg in zip(POSITIVE, NEGATIVE):
        assert (pos["prompt"][0]["content"], pos["completion"][0]["content"], neg["completion"][0]["content"]) in pairs
    trainer.train()
    config = SelectiveDPOConfig(**{**COMMON, "output_dir": str(tmp_path), "strategy": "naive"})
    with pytest.raises(ValueError, match="strategy 'naive' needs negative proxy data: pass negative_proxy_dataset"):
        SelectiveDPOTrainer(str(tiny_model_path), args=config, train_dataset=OUTCOME, proxy_dataset=POSITIVE)
    with pytest.raises(ValueError, match=r"outcome columns \['chosen', 'extra', 'prompt', 'rejected'\] differ"):
        _trainer(tmp_path, tiny_model_path, "naive", train_dataset=OUTCOME.add_column("extra", [0] * len(OUTCOME)))
    with pytest.raises(ValueError, match="pair 0: the prompts differ"):
        _trainer(
            tmp_path, tiny_model_path, "naive", proxies=(POSITIVE, NEGATIVE.select(range(1, 8)).add_item(NEGATIVE[0]))
        )


# ------------------------------------------------------------------------------------------------ registry, errors


def test_registry_and_bad_inputs(tmp_path, tiny_model_path):
    for name in STRATEGIES:
        cls = get_trainer(name, base="dpo")
        assert issubclass(cls, SelectiveDPOTrainer) and cls.strategy == name
        assert get_trainer(name, base="dpo") is cls and get_trainer(name) is get_trainer(name, base="sft")
    assert issubclass(get_trainer("grad_project", base="ppo"), SelectivePPOTrainer)
    with pytest.raises(ValueError, match="unknown base trainer 'kto'; known: sft, dpo, ppo"):
        get_trainer("dpo", base="kto")
    with pytest.raises(ValueError, match="unknown trainer 'grad_projekt'; known: ppo, sft, naive"):
        get_trainer("grad_projekt", base="dpo")
    with pytest.raises(ValueError, match="'sft' is a plain trainer"):
        get_trainer("sft", base="dpo")
    with pytest.raises(ValueError, match="strategy 'naive' is not available on base 'ppo'"):
        get_trainer("naive", base="ppo")
    config = SelectiveDPOConfig(**{**COMMON, "output_dir": str(tmp_path)})  # strategy naive
    with pytest.raises(ValueError, match="runs strategy 'dpo', but args.strategy is 'naive'"):
        get_trainer("dpo", base="dpo")(str(tiny_model_path), None, config, train_dataset=OUTCOME)  # positional args
    with pytest.raises(TypeError, match="SelectiveDPOTrainer needs a SelectiveDPOConfig, got SelectiveConfig"):
        SelectiveDPOTrainer(str(tiny_model_path), args=SelectiveConfig(output_dir=str(tmp_path), use_cpu=True))
    config = SelectiveDPOConfig(**{**COMMON, "output_dir": str(tmp_path), "strategy": "kl_divergence"})
    with pytest.raises(ValueError, match="strategy 'kl_divergence' needs positive proxy data: pass proxy_dataset"):
        SelectiveDPOTrainer(str(tiny_model_path), args=config, train_dataset=OUTCOME)
    with pytest.raises(
        ValueError,
        match=r"proxy_dataset has the columns \['prompt', 'chosen', 'rejected'\]; "
        r"SelectiveDPOTrainer \(proxy rows\) needs 'text' \| 'messages'",
    ):
        _trainer(tmp_path, tiny_model_path, "kl_divergence", proxies=(OUTCOME, None))
    with pytest.raises(ValueError, match="penalises LoRA A matrices: train with a LoRA peft_config"):
        _trainer(tmp_path, tiny_model_path, "orth_penalty", peft=False)
    with pytest.raises(ValueError, match="strategy 'naive' is not available with SelectivePPOConfig"):
        SelectivePPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)


# ------------------------------------------------------------------------------------------------ PPO variant


def _ppo(tmp_path, model_path, strategy, **kw):
    def length_reward(completions, **kwargs):
        return [len(c[0]["content"]) / 10 for c in completions]

    config = {
        **COMMON, "output_dir": str(tmp_path / strategy), "strategy": strategy, "max_steps": 1,
        "gradient_accumulation_steps": 2, "num_mini_batches": 2, "num_ppo_epochs": 1, "num_generations": 1,
        "max_completion_length": 6, "log_completions": False, "kl_coef": 0.05, "max_grad_norm": 0.0, **kw,
    }  # fmt: skip
    return SelectivePPOTrainer(
        model=str(model_path),
        reward_funcs=length_reward,
        args=SelectivePPOConfig(**config),
        train_dataset=DEMO["outcome_train"].remove_columns(["completion"]),
        proxy_dataset=POSITIVE,
        negative_proxy_dataset=NEGATIVE,
        processing_class=AutoTokenizer.from_pretrained(model_path),
        peft_config=small_lora(),
    )


def test_ppo_grad_project_leaves_the_value_head_alone(tmp_path, tiny_model_path):
    trainer = _ppo(tmp_path, tiny_model_path, "grad_project")
    tap, value_grads = GradTap(trainer), {}
    assert not any(n.startswith("v_head.") for n in trainer.trainable_parameters())
    head = trainer.value_function
    original = trainer._apply_surgery

    def surgery():
        value_grads["before"] = [p.grad.clone() for p in head.parameters()]
        original()
        value_grads["after"] = [p.grad.clone() for p in head.parameters()]

    trainer._apply_surgery = surgery

    def check(t):
        g_a = proxy_grad_independent(t)
        for name, g in tap.after[0].items():
            dot = (g.double() * g_a[name].double()).sum().item()
            assert abs(dot) <= 1e-6 * max(1.0, g.double().norm().item() * g_a[name].double().norm().item()), name

    trainer.add_callback(_AtFirstOptimizerStep(trainer, check))
    trainer.train()
    assert len(tap.after) == 1 and len(tap.after[0]) == 8
    assert all(torch.equal(a, b) for a, b in zip(value_grads["before"], value_grads["after"]))
    assert any(g.abs().sum() > 0 for g in value_grads["after"])
    # a step whose micro-batches were all skipped (PPO's KL early stopping) has no gradient: nothing to project
    trainer.model.zero_grad(set_to_none=True)
    trainer._surgery_step = -1
    original()
    assert trainer.current_gradients() == {}


def test_ppo_extra_terms_are_divided_by_the_accumulation_steps(tmp_path, tiny_model_path):
    """PPO (GRPO) returns a loss already divided by GA, so the proxy terms are divided by GA too."""
    trainer = _ppo(tmp_path, tiny_model_path, "positive_negative_proxy", beta_kl=1.0)
    records = []
    host_loss, total_loss = trainer._compute_loss, trainer.compute_loss

    def host(model, inputs):
        loss = host_loss(model, inputs)
        records.append({"host": loss.item()})
        return loss

    trainer._compute_loss = host

    def total(model, inputs, *args, **kwargs):
        loss = total_loss(model, inputs, *args, **kwargs)
        metrics = trainer._metrics["train"]
        records[-1]["total"] = loss.item()
        records[-1]["terms"] = sum(metrics[f"loss/{k}"][-1] for k in ("ce_positive", "kl", "ce_negative"))
        return loss

    trainer.compute_loss = total
    trainer.train()
    assert len(records) == 2
    for r in records:
        assert r["total"] - r["host"] == pytest.approx(r["terms"] / 2, rel=1e-4, abs=1e-6)
