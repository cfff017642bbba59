"""Validation and masking helpers shared by the loss modules (shape errors that name their arguments)."""

from __future__ import annotations

import torch


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_tensors(**named: object) -> None:
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def _check_same_shape(**named: torch.Tensor) -> None:
    """All tensors must have exactly the shape of the first one; the message names both offenders."""
    _check_tensors(**named)
    items = list(named.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.shape != first.shape:
            raise ValueError(f"{first_name} has shape {_shape(first)} but {name} has shape {_shape(t)}")


def _compute_dtype(*xs: torch.Tensor) -> torch.dtype:
    """float32, promoted to any wider floating dtype among ``xs`` (float64 stays float64)."""
    dtype = torch.float32
    for x in xs:
        if x.is_floating_point():
            dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def _fill(x: torch.Tensor, m: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` cast to ``dtype`` with masked-out entries replaced by 0 (``m`` is a bool mask broadcastable to x)."""
    x = x.to(dtype)
    return torch.where(m, x, torch.zeros((), dtype=dtype, device=x.device))
