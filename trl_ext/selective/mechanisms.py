"""The selective-generalisation mechanisms as composable pieces (docs/selective.md).

A mechanism is a small object that hooks into a host trainer at up to four points:

* ``loss(host, model, inputs) -> dict[str, Tensor]``: extra loss terms (already weighted) for one micro-batch;
* ``surgery(host, grads) -> None``: edit the accumulated (and all-reduced) gradients before the optimizer step;
* ``after_step(host) -> None``: edit the weights after the optimizer step;
* ``at_train_end(host) -> None``: a last edit of the weights.

A strategy is a list of mechanisms (built by its entry in :mod:`trl_ext.selective.registry`), so
``positive_negative_proxy`` is "proxy CE + proxy KL + negative proxy CE", and every piece is tested on its own.
The host (``SelectiveMixin``) provides proxy batches, the base model context (adapter disabled, or a frozen copy),
the trainable parameters by name, the alignment plane and the precomputed proxy gradient.
"""

from __future__ import annotations

import torch

from trl_ext.selective.losses import directional_penalty, dpo_regulariser, orth_penalty, representation_mse, token_kl
from trl_ext.selective.projection import project_gradients, project_out


class Mechanism:
    """Base class: every hook does nothing."""

    name = "mechanism"
    needs: tuple[str, ...] = ()  # proxy datasets it reads: "positive", "negative"
    needs_plane = False
    needs_proxy_grad = False
    needs_base = False

    def loss(self, host, model, inputs) -> dict[str, torch.Tensor]:
        return {}

    def surgery(self, host, grads: dict[str, torch.Tensor]) -> None:
        return None

    def after_step(self, host) -> None:
        return None

    def at_train_end(self, host) -> None:
        return None


def _ce_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose (shifted) label is not −100."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100
    )


class ProxyCE(Mechanism):
    """``sign · weight · CE(proxy)`` on the named proxy batch (A⁺: +λ_p, A⁻: −λ_n)."""

    def __init__(self, dataset: str, weight: float, sign: float = 1.0) -> None:
        self.needs = (dataset,)
        self.dataset, self.weight, self.sign = dataset, weight, sign
        self.name = f"ce_{dataset}"

    def loss(self, host, model, inputs):
        out = host.proxy_forward(self.dataset)
        ce = _ce_from_logits(out.logits, host.proxy_batch(self.dataset)["labels"])
        host.log_metric(f"proxy/{self.name}", ce)
        return {self.name: self.sign * self.weight * ce}


class ProxyKL(Mechanism):
    """``weight · KL(p_θ‖p_base)`` on A⁺, masked by the attention mask (a decision of docs/selective.md)."""

    name = "kl"
    needs = ("positive",)
    needs_base = True

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def loss(self, host, model, inputs):
        batch = host.proxy_batch("positive")
        kl = token_kl(
            host.proxy_forward("positive").logits, host.base_forward("positive").logits, batch["attention_mask"]
        )
        host.log_metric("proxy/kl", kl)
        return {"kl": self.weight * kl}


class RepresentationConstraint(Mechanism):
    """``β · Σ_{l≥1} MSE(h_θ^l, h_base^l)`` on A⁺ (embedding output excluded), masked."""

    name = "representation"
    needs = ("positive",)
    needs_base = True

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def loss(self, host, model, inputs):
        batch = host.proxy_batch("positive")
        out, ref = host.proxy_forward("positive"), host.base_forward("positive").hidden_states
        mse = representation_mse(out.hidden_states, ref, batch["attention_mask"])
        host.log_metric("proxy/representation_mse", mse)
        return {"representation": self.weight * mse}


class ProxyDPO(Mechanism):
    """``λ_dpo · DPO(A⁺[i] ≻ A⁻[i])`` with ℓ = mean log-prob per response token, reference = p_base."""

    name = "dpo"
    needs = ("positive", "negative")
    needs_base = True

    def __init__(self, weight: float, beta: float) -> None:
        self.weight, self.beta = weight, beta

    def loss(self, host, model, inputs):
        pos, neg = host.proxy_batch("positive"), host.proxy_batch("negative")
        ell_c = host.sequence_mean_logps(host.proxy_forward("positive").logits, pos["labels"])
        ell_r = host.sequence_mean_logps(host.proxy_forward("negative").logits, neg["labels"])
        ref_c = host.sequence_mean_logps(host.base_forward("positive").logits, pos["labels"])
        ref_r = host.sequence_mean_logps(host.base_forward("negative").logits, neg["labels"])
        loss, stats = dpo_regulariser(ell_c, ell_r, ref_c, ref_r, self.beta)
        host.log_metric("proxy/dpo", loss)
        return {"dpo": self.weight * loss}


class PlanePenalty(Mechanism):
    """``+λ₁ Σ|A S_Aᵀ|`` (orth) or ``−λ₁ Σ A S_Aᵀ`` (directional) over the LoRA A matrices."""

    needs_plane = True

    def __init__(self, weight: float, mode: str) -> None:
        if mode not in ("orth", "directional"):
            raise ValueError(f"plane penalty mode must be 'orth' or 'directional', got {mode!r}")
        self.weight, self.mode = weight, mode
        self.name = f"{mode}_penalty"

    def loss(self, host, model, inputs):
        params = {n: p for n, p in host.trainable_parameters().items() if "lora_A" in n}
        if not params:
            raise ValueError(f"{self.name} needs LoRA A matrices: train with a PEFT LoRA adapter")
        plane = {n: host.plane[n] for n in params}
        fn = orth_penalty if self.mode == "orth" else directional_penalty
        term = fn(params, plane)
        host.log_metric(f"proxy/{self.name}", term)
        return {self.name: self.weight * term}


class GradientProjection(Mechanism):
    """Per tensor g_T ← g_T − λ g_A, λ = ⟨g_T,g_A⟩/(‖g_A‖²+1e-16); conflict-only: λ ← min(λ, 0).

    g_A = ∇CE(A⁺) (or −∇CE(A⁻)) on one proxy batch, computed at the optimizer step, all-reduced under DDP,
    after the outcome gradient has been accumulated over the gradient-accumulation window and all-reduced.
    """

    name = "grad_project"

    def __init__(self, strict: bool, source: str) -> None:
        self.strict, self.source = strict, source
        self.needs = (source,)

    def surgery(self, host, grads):
        sign = 1.0 if self.source == "positive" else -1.0
        g_a = host.proxy_gradient(self.source, sign)
        if g_a is None:
            return
        projected, stats = project_gradients(grads, g_a, strict=self.strict)
        host.set_gradients(projected)
        for key, value in stats.items():
            host.log_metric(f"grad_project/{key}", value)


class PrecomputedProjection(Mechanism):
    """g ← g − (⟨g,ḡ_A⟩/‖ḡ_A‖²) ḡ_A with ḡ_A the cached mean proxy gradient."""

    name = "grad_project_precomputed"
    needs = ("positive",)
    needs_proxy_grad = True

    def surgery(self, host, grads):
        host.set_gradients(project_out(grads, host.proxy_grad))


class GradientSteering(Mechanism):
    """g ← g + α_t S before each step, or (``direct``) θ ← θ − lr_t α_t S after it.

    α_t = α₀ for t ≤ warm-up, then linear, reaching α_final at the last step: with w warm-up steps and N steps,
    α_t = α₀ + (α_final − α₀)·(t − w)/(N − 1 − w).
    """

    name = "steering"
    needs_plane = True

    def __init__(self, alpha: float, final_alpha: float, warmup_steps: int, direct: bool) -> None:
        self.alpha, self.final_alpha, self.warmup, self.direct = alpha, final_alpha, warmup_steps, direct

    def alpha_at(self, step: int, total: int) -> float:
        if step <= self.warmup or total - 1 <= self.warmup:
            return self.alpha
        frac = min(1.0, (step - self.warmup) / (total - 1 - self.warmup))
        return self.alpha + (self.final_alpha - self.alpha) * frac

    def surgery(self, host, grads):
        if self.direct:
            return
        alpha = self.alpha_at(host.state.global_step, host.state.max_steps)
        host.set_gradients({n: g + alpha * host.plane[n].to(g) for n, g in grads.items()})
        host.log_metric("steering/alpha", alpha)

    def after_step(self, host):
        if not self.direct:
            return
        alpha = self.alpha_at(host.state.global_step, host.state.max_steps)
        lr = host.current_learning_rate()
        with torch.no_grad():
            for n, p in host.trainable_parameters().items():
                p.sub_(lr * alpha * host.plane[n].to(p))
        host.log_metric("steering/alpha", alpha)


class EndSteering(Mechanism):
    """Plain outcome training, then θ ← θ − α S once at the end of training."""

    name = "end_steering"
    needs_plane = True

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def at_train_end(self, host):
        with torch.no_grad():
            for n, p in host.trainable_parameters().items():
                p.sub_(self.alpha * host.plane[n].to(p))
