"""The InfoNCE probe: how much the receiver's answers depend on *which* latent message it reads (docs/latent.md).

For K evaluation samples (their conversations, answers and hidden states) and shifts ``o = 0 … K−1``,

    s[j, o] = −CE(answer_j | the conversation of j with the latents of sample (j + o) mod K)

(pure latents, no mixing; CE the mean over answer j's supervised tokens), then
:func:`~trl_ext.latent.losses.infonce`: ``L = mean_j −(s[j,0]/τ − logsumexp_o s[j,o]/τ)`` and the mutual-information
lower bound ``log K − L``. Column 0 is the true pairing. The receiver runs in evaluation mode without gradient and
gets its training mode back. One batched forward per shift: K forwards of K rows.
"""

from __future__ import annotations

from typing import Any

import torch

from trl_ext.latent.losses import infonce

__all__ = ["infonce_probe", "infonce_scores", "per_row_ce"]


def per_row_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` mean cross-entropy over each row's supervised tokens (label ≠ −100)."""
    losses = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    mask = (labels != -100).float()
    return (losses * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def infonce_scores(receiver: Any, batch: dict[str, Any], k: int | None = None) -> torch.Tensor:
    """``(K, K)`` scores ``s[j, o]`` for the first ``K = min(k, B)`` rows of ``batch`` (a
    :class:`~trl_ext.latent.collator.LatentCollator` batch)."""
    n = batch["input_ids"].shape[0] if k is None else min(k, batch["input_ids"].shape[0])
    if n < 2:
        raise ValueError(f"the InfoNCE probe needs at least 2 samples, got {n}")
    rows = {key: value[:n] for key, value in batch.items() if isinstance(value, torch.Tensor)}
    scores = torch.zeros((n, n), dtype=torch.float32)
    for o in range(n):
        other = (torch.arange(n) + o) % n
        logits, labels, _ = receiver(
            input_ids=rows["input_ids"], attention_mask=rows["attention_mask"], labels=rows["labels"],
            hidden_states=rows["hidden_states"][other], latent_padding=rows["latent_padding"][other],
            source="latent",
        )  # fmt: skip
        scores[:, o] = -per_row_ce(logits, labels).float().cpu()
    return scores


def infonce_probe(receiver: Any, batch: dict[str, Any], k: int = 8, temperature: float = 1.0) -> dict[str, float]:
    """``{"loss", "mi_lower_bound", "k"}`` of the probe on ``batch`` (see the module docstring)."""
    was_training = receiver.training
    receiver.eval()
    try:
        with torch.no_grad():
            scores = infonce_scores(receiver, batch, k)
    finally:
        receiver.train(was_training)
    loss, bound = infonce(scores.double(), temperature)
    return {"loss": float(loss), "mi_lower_bound": float(bound), "k": int(scores.shape[0])}
