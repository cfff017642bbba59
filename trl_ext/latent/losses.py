"""Latent-communication losses as pure torch functions (docs/latent.md).

Notation: ``logits`` ``(B, T, V)`` over the receiver's vocabulary at the positions that predict the supervised
(label ≠ −100) tokens, ``mask`` ``(B, T)`` 1 on those tokens; ``p = softmax(logits)``. Every mean over tokens is a
masked mean; a row without a supervised token contributes nothing (and a batch without any gives an exact 0 in the
graph). Computed in float32 (float64 stays float64).

* Plan similarity (:func:`plan_similarity_loss`): with the teacher ``p_plan`` (the receiver reading the plan text,
  no gradient) and the student ``p_lat`` (reading the latent message) aligned token by token,
  ``L_plan = 0.7 · mean_t KL(p_plan,t ‖ p_lat,t) + 0.3 · mean_b (1 − cos(vec p_lat,b, vec p_plan,b))``, where
  ``vec p_b`` is the ``(T_b · V)`` vector of sample b's distributions over its supervised tokens.
* Jensen–Shannon divergence (:func:`js_divergence`): ``JS(p ‖ q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = ½(p + q)``, in
  nats, per token (at most ``ln 2``).
* Random contrast (:func:`random_contrast_loss`): ``L_rc = mean_b max(0, margin − JS_b)`` with ``JS_b`` the mean JS
  of sample b's supervised tokens between its positive and its negative (another sample's latents) predictions,
  margin 0.69 ≈ ln 2.
* InfoNCE (:func:`infonce`): scores ``s[j, o]`` of answer j under the latents of sample ``(j + o) mod K``;
  ``L = mean_j −(s[j,0]/τ − logsumexp_o s[j,o]/τ)`` and the mutual-information lower bound ``log K − L``.
* Dynamic weights (:func:`dynamic_weights`): upstream's schedule ``w_plan = 0.01 + 0.04 · clip(L_plan / 4, 0, 1)``,
  ``w_rc = 0.01 + 0.49 · clip(L_rc / 0.69, 0, 1)`` from detached losses.
"""

from __future__ import annotations

import math

import torch

from trl_ext.common.errors import ConfigError

__all__ = [
    "DEFAULT_MARGIN",
    "KL_WEIGHT",
    "COSINE_WEIGHT",
    "align_supervised",
    "delta_nll_bits",
    "dynamic_weights",
    "infonce",
    "js_divergence",
    "masked_token_mean",
    "plan_similarity_loss",
    "plan_similarity_sums",
    "random_contrast_loss",
    "random_contrast_sums",
]

DEFAULT_MARGIN = 0.69
KL_WEIGHT, COSINE_WEIGHT = 0.7, 0.3


def _dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_pair(logits: torch.Tensor, mask: torch.Tensor, name: str) -> None:
    if logits.dim() != 3:
        raise ValueError(f"{name} must be (B, T, V), got shape {tuple(logits.shape)}")
    if mask.shape != logits.shape[:2]:
        raise ValueError(f"{name} mask has shape {tuple(mask.shape)}, expected {tuple(logits.shape[:2])}")


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Σ values·mask / Σ mask`` (an exact 0 in the graph when the mask is empty)."""
    mask = mask.to(values.dtype)
    total = mask.sum()
    return (values * mask).sum() / total if total > 0 else (values * mask).sum() * 0.0


def align_supervised(
    a_logits: torch.Tensor, a_mask: torch.Tensor, b_logits: torch.Tensor, b_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align two predictions of the same answers token by token: per row, both sequences start at their first
    supervised position and the first ``n = min(n_a, n_b)`` supervised positions of each are paired (the answer
    tokens are the same; the prefixes before them differ in length). Returns ``(a, b, mask)`` of shape
    ``(B, N, V)``, ``(B, N, V)`` and ``(B, N)`` with ``N`` the longest overlap (rows padded, mask 0)."""
    _check_pair(a_logits, a_mask, "a_logits")
    _check_pair(b_logits, b_mask, "b_logits")
    if a_logits.shape[0] != b_logits.shape[0] or a_logits.shape[2] != b_logits.shape[2]:
        raise ValueError(f"batch/vocabulary differ: {tuple(a_logits.shape)} vs {tuple(b_logits.shape)}")
    rows_a, rows_b, counts = [], [], []
    for i in range(a_logits.shape[0]):
        ia = a_mask[i].bool().nonzero().flatten()
        ib = b_mask[i].bool().nonzero().flatten()
        n = min(ia.numel(), ib.numel())
        rows_a.append(a_logits[i, ia[:n]])
        rows_b.append(b_logits[i, ib[:n]])
        counts.append(n)
    width = max(counts + [0])
    vocab = a_logits.shape[2]
    out_a = a_logits.new_zeros((len(counts), width, vocab))
    out_b = b_logits.new_zeros((len(counts), width, vocab))
    mask = torch.zeros((len(counts), width), dtype=torch.bool, device=a_logits.device)
    for i, n in enumerate(counts):
        if n:
            out_a[i, :n], out_b[i, :n], mask[i, :n] = rows_a[i], rows_b[i], True
    return out_a, out_b, mask


def plan_similarity_loss(
    latent_logits: torch.Tensor,
    plan_logits: torch.Tensor,
    mask: torch.Tensor,
    kl_weight: float = KL_WEIGHT,
    cosine_weight: float = COSINE_WEIGHT,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``kl_weight · mean_t KL(p_plan ‖ p_lat) + cosine_weight · mean_b (1 − cos(vec p_lat,b, vec p_plan,b))``.

    Inputs are aligned (:func:`align_supervised`): ``latent_logits`` and ``plan_logits`` ``(B, N, V)``, ``mask``
    ``(B, N)``. The teacher ``plan_logits`` is detached. Rows without a token are left out of the cosine mean.

    Returns:
        ``(loss, {"kl": ..., "cosine": mean (1 − cos)})``, scalars.
    """
    sums = plan_similarity_sums(latent_logits, plan_logits, mask)
    kl = sums["kl_sum"] / sums["tokens"].clamp(min=1.0)  # an exact 0 in the graph without a token
    cosine = sums["cosine_sum"] / sums["rows"].clamp(min=1.0)
    return kl_weight * kl + cosine_weight * cosine, {"kl": kl, "cosine": cosine}


def plan_similarity_sums(
    latent_logits: torch.Tensor, plan_logits: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The sums behind :func:`plan_similarity_loss`, for a loss normalised over a larger batch (gradient
    accumulation, several processes): ``{"kl_sum": Σ_t KL(p_plan,t ‖ p_lat,t), "cosine_sum": Σ_b (1 − cos_b),
    "tokens": Σ mask, "rows": rows with a token}``; ``plan_similarity_loss`` is
    ``0.7 · kl_sum / tokens + 0.3 · cosine_sum / rows``. The teacher is detached."""
    _check_pair(latent_logits, mask, "latent_logits")
    _check_pair(plan_logits, mask, "plan_logits")
    dtype = _dtype(latent_logits)
    log_lat = torch.log_softmax(latent_logits.to(dtype), dim=-1)
    log_plan = torch.log_softmax(plan_logits.detach().to(dtype), dim=-1)
    p_plan = log_plan.exp()
    m = mask.to(dtype)
    kl_sum = ((p_plan * (log_plan - log_lat)).sum(-1) * m).sum()
    lat_vec = (log_lat.exp() * m.unsqueeze(-1)).flatten(1)
    plan_vec = (p_plan * m.unsqueeze(-1)).flatten(1)
    rows = mask.bool().any(dim=1)
    cos = torch.nn.functional.cosine_similarity(lat_vec, plan_vec, dim=1, eps=1e-12)
    cosine_sum = ((1.0 - cos) * rows.to(dtype)).sum()
    return {"kl_sum": kl_sum, "cosine_sum": cosine_sum, "tokens": m.sum(), "rows": rows.to(dtype).sum()}


def random_contrast_sums(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    mask: torch.Tensor,
    margin: float = DEFAULT_MARGIN,
) -> dict[str, torch.Tensor]:
    """The sums behind :func:`random_contrast_loss`: ``{"hinge_sum": Σ_b max(0, margin − JS_b), "js": JS_b (B,),
    "rows": rows with a token}`` (rows without a token add nothing); the loss is ``hinge_sum / rows``."""
    _, per_row = random_contrast_loss(positive_logits, negative_logits, mask, margin)
    rows = mask.bool().any(dim=1)
    hinge = torch.relu(margin - per_row) * rows.to(per_row.dtype)
    return {"hinge_sum": hinge.sum(), "js": per_row, "rows": rows.to(per_row.dtype).sum()}


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-position ``JS(p ‖ q)`` in nats, ``(…)`` from ``(…, V)`` logits (computed stably in log space)."""
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"p_logits {tuple(p_logits.shape)} and q_logits {tuple(q_logits.shape)} differ")
    dtype = _dtype(p_logits)
    log_p = torch.log_softmax(p_logits.to(dtype), dim=-1)
    log_q = torch.log_softmax(q_logits.to(dtype), dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).clamp(min=0.0)


def random_contrast_loss(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    mask: torch.Tensor,
    margin: float = DEFAULT_MARGIN,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean_b max(0, margin − JS_b)``, ``JS_b`` the masked mean over sample b's tokens of ``JS(p_pos ‖ p_neg)``.

    ``negative_logits`` (the answer under another sample's latents, computed without gradient) is detached.
    Rows without a token are left out. Returns ``(loss, JS_b)`` with ``JS_b`` ``(B,)`` (0 for empty rows).
    """
    _check_pair(positive_logits, mask, "positive_logits")
    if margin <= 0:
        raise ConfigError(f"margin must be > 0, got {margin}")
    js = js_divergence(positive_logits, negative_logits.detach())
    m = mask.to(js.dtype)
    counts = m.sum(dim=1)
    per_row = (js * m).sum(dim=1) / counts.clamp(min=1.0)
    rows = counts > 0
    if not rows.any():
        return js.sum() * 0.0, per_row
    return torch.relu(margin - per_row[rows]).mean(), per_row


def infonce(scores: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, log K − L)`` for ``scores`` ``(K, K)``: ``s[j, o]`` scores answer j under the latents of sample
    ``(j + o) mod K`` (column 0 is the true pairing); ``L = mean_j −(s[j,0]/τ − logsumexp_o s[j,o]/τ)``."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"scores must be (K, K) with K >= 2, got shape {tuple(scores.shape)}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    s = scores.to(_dtype(scores)) / temperature
    loss = -(s[:, 0] - torch.logsumexp(s, dim=1)).mean()
    return loss, math.log(scores.shape[0]) - loss


def dynamic_weights(plan_loss: float, contrast_loss: float) -> tuple[float, float]:
    """Upstream's schedule: ``(0.01 + 0.04 · clip(L_plan / 4), 0.01 + 0.49 · clip(L_rc / 0.69))``, clip to [0, 1]."""

    def clip(x: float) -> float:
        return min(1.0, max(0.0, float(x)))

    return 0.01 + 0.04 * clip(plan_loss / 4.0), 0.01 + 0.49 * clip(contrast_loss / DEFAULT_MARGIN)


def delta_nll_bits(ce_negative: torch.Tensor | float, ce_positive: torch.Tensor | float) -> float:
    """``(CE_neg − CE_pos) / ln 2``: how many bits per token the true latents save over another sample's."""
    return float((float(ce_negative) - float(ce_positive)) / math.log(2.0))
