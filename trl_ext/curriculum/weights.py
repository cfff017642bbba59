"""Auto-curriculum arithmetic (docs/curriculum.md): per-dataset difficulty statistics and the sampling-weight update.

Pure functions on numbers, no model and no trainer:

* :func:`difficulty_statistics`: from the per-batch losses ``ℓ_i1 … ℓ_iB`` of dataset ``i`` under the frozen
  model, ``μ_i = mean_b ℓ_ib``, ``σ²_i = mean_b (ℓ_ib − μ_i)²`` (population variance) and ``m_i = μ_i + σ²_i``.
* :func:`update_weights`: ``w ← clip(w + η·g, ≥ min_weight)``, ``w ← w / Σw`` with

  - ``update="centered"`` (default): ``g = m − mean(m)`` — weight moves to harder (and noisier) datasets, and
    the update is invariant to the order of the datasets;
  - ``update="index_gradient"`` (the upstream rule of seed 003): ``g = np.gradient(m)``, the finite differences of
    ``m`` along the dataset index (central in the interior, one-sided at the ends). It depends on the order in which
    the datasets are listed; it is kept to reproduce the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["UPDATE_RULES", "check_weights", "difficulty_statistics", "update_weights"]

UPDATE_RULES = ("centered", "index_gradient")
"""Names accepted by :func:`update_weights`."""


def _names(names: Sequence[str] | None, k: int) -> list[str]:
    return list(names) if names is not None else [f"dataset {i}" for i in range(k)]


def check_weights(weights: Sequence[float], names: Sequence[str] | None = None) -> np.ndarray:
    """``weights`` as a float64 probability vector (normalised), or a ``ValueError`` naming the offending dataset:
    a negative or non-finite weight, a wrong length, or all weights zero."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"curriculum weights must be a non-empty 1-D list, got shape {tuple(w.shape)}")
    labels = _names(names, w.size)
    if len(labels) != w.size:
        raise ValueError(f"{w.size} curriculum weights for {len(labels)} datasets ({', '.join(labels)})")
    for label, value in zip(labels, w):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"curriculum weight of {label!r} is {value}: weights must be finite and >= 0")
    total = w.sum()
    if total <= 0:
        raise ValueError(f"all curriculum weights are zero ({', '.join(labels)}): at least one must be positive")
    return w / total


def difficulty_statistics(batch_losses: Sequence[float]) -> tuple[float, float, float]:
    """(μ, σ², m) of one dataset's per-batch losses: mean, population variance, and ``m = μ + σ²``."""
    losses = np.asarray(batch_losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError("difficulty_statistics needs at least one batch loss")
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"non-finite batch loss in the difficulty estimate: {losses.tolist()}")
    mu = float(losses.mean())
    var = float(((losses - mu) ** 2).mean())
    return mu, var, mu + var


def update_weights(
    weights: Sequence[float],
    metric: Sequence[float],
    *,
    eta: float = 0.1,
    min_weight: float = 0.0,
    update: str = "centered",
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """One curriculum step: ``w ← clip(w + η·g, ≥ min_weight)``, ``w ← w / Σw`` (``g`` per ``update``, see the module
    docstring). Returns the new weights (float64).

    Raises ``ValueError`` for an unknown ``update``, mismatched lengths, a non-finite metric, a negative ``eta`` or
    ``min_weight``, and when every weight would be clipped to zero (naming the datasets and the unclipped values).
    """
    if update not in UPDATE_RULES:
        raise ValueError(f"unknown curriculum update {update!r}; known: {', '.join(UPDATE_RULES)}")
    if eta < 0 or min_weight < 0:
        raise ValueError(f"curriculum eta ({eta}) and min_weight ({min_weight}) must be >= 0")
    w = np.asarray(weights, dtype=np.float64)
    m = np.asarray(metric, dtype=np.float64)
    if w.shape != m.shape or w.ndim != 1:
        raise ValueError(f"{w.size} curriculum weights but {m.size} difficulty values")
    labels = _names(names, w.size)
    if not np.all(np.isfinite(m)):
        bad = [label for label, v in zip(labels, m) if not np.isfinite(v)]
        raise ValueError(f"non-finite difficulty for {', '.join(bad)}")
    if w.size == 1:
        return np.ones(1)
    g = m - m.mean() if update == "centered" else np.gradient(m)
    raw = w + eta * g
    new = np.maximum(raw, min_weight)
    total = new.sum()
    if total <= 0:
        values = ", ".join(f"{label}: {v:.4g}" for label, v in zip(labels, raw))
        raise ValueError(
            f"every curriculum weight would be clipped to zero (w + eta*g = {values}); lower eta ({eta}) or set "
            "min_weight > 0"
        )
    return new / total
