"""Per-environment winners, dominance and the Pareto frontier of a set of models (docs/eval.md).

A model's results are a mapping ``{environment: EnvStats}``. Two models are compared environment by
environment through their credible intervals:

* **winner** of an environment: A wins iff ``A.ci_low > B.ci_high`` (the intervals separate with A above);
  B wins iff ``B.ci_low > A.ci_high``; otherwise (overlapping or touching intervals) nobody wins.
* **dominance** (docs/eval.md): A dominates B iff A wins at least one environment and B wins none.

**Decision (the specification over the seed document):** the seed document describes the classic Pareto order ("A >= B
on all environments and A > B on at least one"); docs/eval.md defines dominance through interval separation as above,
and that stands. Consequences: ties within noise never decide anything, dominance is irreflexive, and it is *not*
transitive (A dominates B and B dominates C does not imply A dominates C); it can even be cyclic, in which case
the frontier can be empty.

Pure Python (no torch).
"""

from __future__ import annotations

from collections.abc import Mapping

from trl_ext.eval.metrics import EnvStats

__all__ = [
    "dominance_matrix",
    "dominates",
    "env_winner",
    "env_wins",
    "pareto_frontier",
]


def env_winner(a: EnvStats, b: EnvStats) -> int:
    """Winner of one environment: ``1`` iff ``a.ci_low > b.ci_high``, ``-1`` iff ``b.ci_low > a.ci_high``, else ``0``.

    Overlapping or exactly touching intervals (``a.ci_low == b.ci_high``) are not a win. Both intervals should have
    the same level; that is not checked here.
    """
    if a.ci_low > b.ci_high:
        return 1
    if b.ci_low > a.ci_high:
        return -1
    return 0


def _env_sets_differ(a: Mapping[str, EnvStats], b: Mapping[str, EnvStats]) -> tuple[list[str], list[str]]:
    only_a = [env for env in a if env not in b]
    only_b = [env for env in b if env not in a]
    return only_a, only_b


def env_wins(a: Mapping[str, EnvStats], b: Mapping[str, EnvStats], *, strict: bool = True) -> dict[str, int]:
    """:func:`env_winner` of every environment that both ``a`` and ``b`` have, in the order of ``a``.

    Args:
        a, b: per-environment statistics of two models.
        strict: if True (default), both must cover the same environments.

    Raises:
        ValueError: with ``strict=True``, naming the environments present in only one of ``a`` and ``b``.
    """
    only_a, only_b = _env_sets_differ(a, b)
    if strict and (only_a or only_b):
        raise ValueError(f"environment sets differ: only in first {only_a}, only in second {only_b}")
    return {env: env_winner(a[env], b[env]) for env in a if env in b}


def dominates(a: Mapping[str, EnvStats], b: Mapping[str, EnvStats], *, strict: bool = True) -> bool:
    """True iff model ``a`` dominates model ``b`` (docs/eval.md).

    ``a`` dominates ``b`` iff, over the shared environments (see :func:`env_wins`), ``a`` wins at least one
    environment and ``b`` wins none. This is docs/eval.md's definition; it differs on purpose from the seed document's
    classic Pareto order ("``a >= b`` on all environments and ``a > b`` on one"): only separated 80% intervals
    count as a difference. Irreflexive (``dominates(a, a)`` is False) but not transitive.

    Raises:
        ValueError: with ``strict=True`` if the environment sets differ (see :func:`env_wins`).
    """
    wins = env_wins(a, b, strict=strict).values()
    return any(w == 1 for w in wins) and not any(w == -1 for w in wins)


def dominance_matrix(
    models: Mapping[str, Mapping[str, EnvStats]], *, strict: bool = True
) -> dict[str, dict[str, bool]]:
    """``matrix[x][y] = dominates(models[x], models[y])`` for every ordered pair (diagonal False).

    Raises:
        ValueError: with ``strict=True``, naming the two models and the environments present in only one of them.
    """
    matrix: dict[str, dict[str, bool]] = {}
    for x, mx in models.items():
        row: dict[str, bool] = {}
        for y, my in models.items():
            if x == y:
                row[y] = False
                continue
            try:
                row[y] = dominates(mx, my, strict=strict)
            except ValueError as exc:
                raise ValueError(f"models {x!r} and {y!r}: {exc}") from None
        matrix[x] = row
    return matrix


def pareto_frontier(models: Mapping[str, Mapping[str, EnvStats]], *, strict: bool = True) -> list[str]:
    """Names of the models not dominated by any other model, in input order.

    ``frontier = [y for y in models if not any(dominates(models[x], models[y]) for x != y)]``. Because docs/eval.md
    dominance is not transitive (it can be cyclic), the frontier may be empty.

    Raises:
        ValueError: with ``strict=True`` if two models cover different environments (see :func:`dominance_matrix`).
    """
    matrix = dominance_matrix(models, strict=strict)
    return [y for y in models if not any(matrix[x][y] for x in models if x != y)]
