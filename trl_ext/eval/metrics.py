"""Per-environment metrics, Jeffreys Beta intervals and weighted aggregates (docs/eval.md, "Evaluation").

Every score is a number in [0, 1] (1 = solved, fractional values = partial credit). For an environment with
scores ``x_1 .. x_n`` the posterior on its mean score is the Jeffreys-prior Beta posterior

    Beta(0.5 + s, 0.5 + n - s),   s = sum_i x_i   (s may be fractional),

and the reported interval is the equal-tailed one, ``[ppf((1 - level) / 2), ppf((1 + level) / 2)]``, i.e.
``[ppf(0.10), ppf(0.90)]`` for the default 80% level.

Pure Python + numpy + scipy (no torch).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from scipy.stats import beta as _beta_dist

__all__ = [
    "ACCURACY_TOL",
    "DEFAULT_LEVEL",
    "EnvStats",
    "aggregate",
    "beta_interval",
    "env_stats",
]

DEFAULT_LEVEL: float = 0.8
"""Default credible level of every interval (80%, i.e. the 10th and 90th percentiles)."""

ACCURACY_TOL: float = 1e-9
"""A score counts as "correct" for :attr:`EnvStats.accuracy` iff ``score >= 1 - ACCURACY_TOL``."""


def _check_level(level: float) -> float:
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"level must be a number in (0, 1), got {level!r}") from None
    if not (0.0 < level < 1.0):  # also rejects NaN
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return level


def beta_interval(successes: float, trials: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Equal-tailed credible interval of the Jeffreys Beta posterior.

    With ``s = successes`` and ``n = trials`` the posterior is ``Beta(a, b)`` with ``a = 0.5 + s`` and
    ``b = 0.5 + n - s``; the interval is ``(ppf((1 - level) / 2), ppf((1 + level) / 2))`` of that Beta, i.e.
    ``(ppf(0.10), ppf(0.90))`` for ``level = 0.8``. ``s`` may be fractional (the sum of partial-credit
    scores). ``n = 0`` (hence ``s = 0``) gives the interval of the prior, Beta(0.5, 0.5).

    Args:
        successes: ``s``, a finite number with ``0 <= s <= trials``.
        trials: ``n``, an integer ``>= 0``.
        level: credible level, ``0 < level < 1``.

    Returns:
        ``(low, high)`` as Python floats, ``0 <= low <= high <= 1``.

    Raises:
        ValueError: naming ``trials``, ``successes`` or ``level`` when that argument is out of range.
    """
    try:
        n = operator.index(trials)
    except TypeError:
        raise ValueError(f"trials must be an integer >= 0, got {trials!r}") from None
    if n < 0:
        raise ValueError(f"trials must be >= 0, got {n}")
    try:
        s = float(successes)
    except (TypeError, ValueError):
        raise ValueError(f"successes must be a number in [0, trials], got {successes!r}") from None
    if not math.isfinite(s) or s < 0.0 or s > n:
        raise ValueError(f"successes must be in [0, trials={n}], got {successes!r}")
    level = _check_level(level)
    a, b = 0.5 + s, 0.5 + (n - s)
    tail = (1.0 - level) / 2.0
    low, high = _beta_dist.ppf([tail, 1.0 - tail], a, b)
    return float(low), float(high)


@dataclass(frozen=True)
class EnvStats:
    """Summary of one environment's per-sample scores (all values are Python scalars).

    Attributes:
        n: number of samples.
        accuracy: fraction of scores equal to 1, ``#{i : x_i >= 1 - ACCURACY_TOL} / n`` (tolerance 1e-9 so that
            a score computed as e.g. ``0.1 * 10`` still counts).
        mean: ``total / n``.
        std: population standard deviation, ``sqrt(sum_i (x_i - mean)^2 / n)`` (ddof = 0).
        median: 50th percentile (mean of the two middle values when ``n`` is even, as ``numpy.median``).
        success_rate: fraction of scores strictly greater than 0, ``#{i : x_i > 0} / n``.
        total: ``s = sum_i x_i``, the Beta posterior's success count.
        ci_low, ci_high: :func:`beta_interval` of ``(total, n, level)``.
    """

    n: int
    accuracy: float
    mean: float
    std: float
    median: float
    success_rate: float
    total: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict with exactly the field names as keys."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> EnvStats:
        """Inverse of :meth:`to_dict`; extra keys are ignored.

        Raises:
            ValueError: naming the missing key(s), or a key whose value is not a number.
        """
        if not isinstance(row, Mapping):
            raise ValueError(f"EnvStats.from_dict expects a mapping, got {type(row).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in row]
        if missing:
            raise ValueError(f"EnvStats is missing key(s) {missing}")
        values: dict[str, Any] = {}
        for k in names:
            try:
                values[k] = operator.index(row[k]) if k == "n" else float(row[k])
            except (TypeError, ValueError):
                raise ValueError(f"EnvStats key {k!r} has invalid value {row[k]!r}") from None
        return cls(**values)


def _validate_scores(scores: Sequence[float]) -> np.ndarray:
    values = []
    for i, x in enumerate(scores):
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise ValueError(f"score at index {i} is not a number: {x!r}") from None
        if not math.isfinite(v) or v < 0.0 or v > 1.0:
            raise ValueError(f"score at index {i} must be finite and in [0, 1], got {x!r}")
        values.append(v)
    return np.asarray(values, dtype=np.float64)


def env_stats(scores: Sequence[float], level: float = DEFAULT_LEVEL) -> EnvStats:
    """Compute :class:`EnvStats` of one environment's per-sample scores.

    Args:
        scores: per-sample scores, each finite and in [0, 1] (bools count as 0/1).
        level: credible level of ``ci_low``/``ci_high``.

    Raises:
        ValueError: if ``scores`` is empty (mean, std and median are undefined and NaN is not valid JSON), or
            naming the index and value of the first score that is not a finite number in [0, 1].
    """
    level = _check_level(level)
    x = _validate_scores(scores)
    n = int(x.size)
    if n == 0:
        raise ValueError("scores is empty: an environment needs at least one sample")
    total = float(x.sum())
    total = min(total, float(n))  # guard against round-off; a sum of values <= 1 cannot exceed n
    low, high = beta_interval(total, n, level)
    return EnvStats(
        n=n,
        accuracy=float(np.count_nonzero(x >= 1.0 - ACCURACY_TOL)) / n,
        mean=total / n,
        std=float(x.std(ddof=0)),
        median=float(np.median(x)),
        success_rate=float(np.count_nonzero(x > 0.0)) / n,
        total=total,
        ci_low=low,
        ci_high=high,
    )


def aggregate(
    stats: Mapping[str, EnvStats],
    weights: Mapping[str, float] | None = None,
    *,
    level: float = DEFAULT_LEVEL,
) -> dict[str, float]:
    """Weighted aggregates over environments.

    With environment weights ``w_e`` (default ``w_e = n_e``, the samples per environment), ``W = sum_e w_e``
    and normalised weights ``p_e = w_e / W``:

    * ``weighted_accuracy = sum_e p_e * accuracy_e``
    * ``weighted_mean = sum_e p_e * mean_e``
    * ``success_rate = (1 / E) * sum_e success_rate_e`` -- the *unweighted* mean over the ``E`` environments
      ("average success rate across environments"); it ignores ``weights``.
    * ``total_samples = sum_e n_e`` and ``num_environments = E`` (all environments, including zero-weight ones).
    * pooled interval: ``effective_samples = 1 / sum_e (p_e^2 / n_e)`` (Kish effective sample size of the
      weighted mean) and ``(ci_low, ci_high) = beta_interval(weighted_mean * n_eff, n_eff, level)`` generalised
      to real ``n_eff``, i.e. the quantiles of ``Beta(0.5 + m * n_eff, 0.5 + (1 - m) * n_eff)`` with
      ``m = weighted_mean``. With the default weights ``n_eff = total_samples`` and ``m * n_eff = sum_e total_e``,
      so this is exactly the Jeffreys interval of all samples pooled; with other weights it is the Beta
      with the same mean whose variance matches that of the weighted mean of binomial proportions.

    Args:
        stats: per-environment statistics (at least one environment, each with ``n >= 1``).
        weights: optional per-environment weights, finite and ``>= 0`` with a positive sum. Every environment of
            ``stats`` needs a weight; keys of ``weights`` that are not in ``stats`` are ignored (so one weight table
            can serve runs on a subset of environments).
        level: credible level of the pooled interval.

    Returns:
        A dict with keys ``weighted_accuracy``, ``weighted_mean``, ``success_rate``, ``total_samples`` (int),
        ``num_environments`` (int), ``effective_samples``, ``ci_low``, ``ci_high``, ``level``.

    Raises:
        ValueError: empty ``stats``; an environment with ``n < 1``; a missing, negative or non-finite weight
            (naming the environment); all weights zero; ``level`` out of range.
    """
    level = _check_level(level)
    if not stats:
        raise ValueError("stats is empty: nothing to aggregate")
    for env, st in stats.items():
        if st.n < 1:
            raise ValueError(f"environment {env!r} has n={st.n}; aggregate needs at least one sample per environment")
    if weights is None:
        w = {env: float(st.n) for env, st in stats.items()}
    else:
        w = {}
        for env in stats:
            if env not in weights:
                raise ValueError(f"weights has no entry for environment {env!r}")
            try:
                we = float(weights[env])
            except (TypeError, ValueError):
                raise ValueError(f"weight of environment {env!r} is not a number: {weights[env]!r}") from None
            if not math.isfinite(we) or we < 0.0:
                raise ValueError(f"weight of environment {env!r} must be finite and >= 0, got {weights[env]!r}")
            w[env] = we
    total_weight = sum(w.values())
    if not total_weight > 0.0:
        raise ValueError("weights sum to zero")
    p = {env: w[env] / total_weight for env in stats}
    weighted_accuracy = sum(p[env] * st.accuracy for env, st in stats.items() if p[env] > 0.0)
    weighted_mean = sum(p[env] * st.mean for env, st in stats.items() if p[env] > 0.0)
    weighted_mean = min(max(weighted_mean, 0.0), 1.0)
    success_rate = sum(st.success_rate for st in stats.values()) / len(stats)
    n_eff = 1.0 / sum(p[env] ** 2 / st.n for env, st in stats.items() if p[env] > 0.0)
    a = 0.5 + weighted_mean * n_eff
    b = 0.5 + (1.0 - weighted_mean) * n_eff
    tail = (1.0 - level) / 2.0
    low, high = _beta_dist.ppf([tail, 1.0 - tail], a, b)
    return {
        "weighted_accuracy": float(weighted_accuracy),
        "weighted_mean": float(weighted_mean),
        "success_rate": float(success_rate),
        "total_samples": int(sum(st.n for st in stats.values())),
        "num_environments": len(stats),
        "effective_samples": float(n_eff),
        "ci_low": float(low),
        "ci_high": float(high),
        "level": level,
    }
