"""Sequence log-probabilities from per-token log-probs: shared by the selective strategies and evaluation."""

from __future__ import annotations

import torch

from trl_ext.common.tensor_checks import _as_bool, _check_same_shape, _check_tensors, _compute_dtype, _fill, _shape

__all__ = ["sequence_logps"]


def sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor, average: bool = True) -> torch.Tensor:
    """Per-sequence log-probability ``(B,)`` from per-token log-probs ``(B, T)`` of the response tokens.

    ``average=True`` (ℓ = mean log-prob per response token, as the DPO regulariser of ``docs/selective.md`` reads
    it): ``ℓ_b = Σ_t m·logp / Σ_t m``; ``average=False``: ``ℓ_b = Σ_t m·logp``. ``mask`` is the ``(B, T)``
    response (label) mask; masked-out positions never leak. With ``average=True`` a row with an empty mask raises
    ``ValueError`` naming the rows. Not detached.
    """
    _check_tensors(per_token_logps=per_token_logps, mask=mask)
    if per_token_logps.dim() != 2:
        raise ValueError(f"per_token_logps must be 2-D (B, T), got shape {_shape(per_token_logps)}")
    _check_same_shape(per_token_logps=per_token_logps, mask=mask)
    m = _as_bool(mask)
    dtype = _compute_dtype(per_token_logps)
    total = _fill(per_token_logps, m, dtype).sum(dim=1)
    if not average:
        return total
    counts = m.sum(dim=1)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"sequence_logps: rows {empty} of mask have no response token; their mean is undefined")
    return total / counts.to(dtype)
