"""Tests for trl_ext.eval: Jeffreys Beta intervals, EnvStats, aggregates, dominance, Pareto frontier, reports."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

import trl_ext.eval as ev
from trl_ext.eval import (
    EnvStats,
    aggregate,
    beta_interval,
    build_report,
    compare_reports,
    dominance_matrix,
    dominates,
    env_stats,
    env_winner,
    env_wins,
    format_report,
    load_report,
    pareto_frontier,
    pareto_report,
    report_env_stats,
    save_report,
)

# (s, n) pairs: s = 0, s = n, n = 0, fractional s, large n.
CASES = [
    (0.0, 0),
    (0.0, 1),
    (1.0, 1),
    (0.0, 5),
    (5.0, 5),
    (2.0, 5),
    (2.5, 5),
    (0.3, 3),
    (2.75, 3),
    (7.0, 10),
    (13.37, 20),
    (0.0, 50),
    (50.0, 50),
    (31.5, 100),
    (99.9, 100),
    (123.456, 400),
]


def _cdf_by_integration(x: float, a: float, b: float, grid: int = 40001) -> float:
    """Beta(a, b) CDF at x by trapezoid integration of the pdf, independent of scipy.

    Substituting t = sin^2(theta) turns pdf(t) dt into 2 sin^(2a-1) cos^(2b-1) dtheta, which is bounded for
    a, b >= 1/2, so a plain trapezoid rule on [0, pi/2] is accurate; normalising by the full integral avoids
    the Beta function.
    """
    theta = np.linspace(0.0, math.pi / 2, grid)
    f = np.sin(theta) ** (2 * a - 1) * np.cos(theta) ** (2 * b - 1)  # numpy: 0.0 ** 0.0 == 1.0
    cum = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(theta))])
    theta_x = math.asin(math.sqrt(x))
    return float(np.interp(theta_x, theta, cum) / cum[-1])


# --------------------------------------------------------------------------------------------- beta_interval


@pytest.mark.parametrize("s,n", CASES)
def test_beta_interval_matches_scipy_ppf(s: float, n: int) -> None:
    low, high = beta_interval(s, n)
    a, b = 0.5 + s, 0.5 + n - s
    assert low == pytest.approx(sps.beta.ppf(0.10, a, b), abs=1e-12)
    assert high == pytest.approx(sps.beta.ppf(0.90, a, b), abs=1e-12)
    # equal-tailed interval == scipy's interval()
    lo2, hi2 = sps.beta.interval(0.8, a, b)
    assert (low, high) == pytest.approx((lo2, hi2), abs=1e-10)
    assert 0.0 <= low < high <= 1.0
    assert isinstance(low, float) and isinstance(high, float)


@pytest.mark.parametrize("s,n", CASES)
def test_beta_interval_numeric_integration(s: float, n: int) -> None:
    a, b = 0.5 + s, 0.5 + n - s
    low, high = beta_interval(s, n)
    assert _cdf_by_integration(low, a, b) == pytest.approx(0.10, abs=1e-4)
    assert _cdf_by_integration(high, a, b) == pytest.approx(0.90, abs=1e-4)


def test_beta_interval_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    for s, n in [(0.0, 0), (0.0, 7), (3.5, 7), (7.0, 7), (41.2, 60)]:
        low, high = beta_interval(s, n)
        draws = rng.beta(0.5 + s, 0.5 + n - s, size=200_000)
        # std of the empirical fraction ~ sqrt(0.09 / 2e5) ~ 7e-4
        assert np.mean(draws < low) == pytest.approx(0.10, abs=4e-3)
        assert np.mean(draws > high) == pytest.approx(0.10, abs=4e-3)


def test_beta_interval_prior_closed_form() -> None:
    # n = 0: Beta(1/2, 1/2) is the arcsine law, CDF = (2/pi) asin(sqrt(x)), so ppf(q) = sin^2(q pi / 2)
    low, high = beta_interval(0, 0)
    assert low == pytest.approx(math.sin(0.1 * math.pi / 2) ** 2, abs=1e-12)
    assert high == pytest.approx(math.sin(0.9 * math.pi / 2) ** 2, abs=1e-12)
    low95, high95 = beta_interval(0, 0, level=0.95)
    assert low95 == pytest.approx(math.sin(0.025 * math.pi / 2) ** 2, abs=1e-12)
    assert high95 == pytest.approx(math.sin(0.975 * math.pi / 2) ** 2, abs=1e-12)


def test_beta_interval_levels_nest_and_s_is_monotone() -> None:
    for s, n in CASES:
        l50, h50 = beta_interval(s, n, level=0.5)
        l80, h80 = beta_interval(s, n)
        l99, h99 = beta_interval(s, n, level=0.99)
        assert l99 < l80 < l50 < h50 < h80 < h99
    lows = [beta_interval(s, 10)[0] for s in np.linspace(0, 10, 21)]
    assert all(x < y for x, y in zip(lows, lows[1:]))
    # symmetric: s <-> n - s mirrors the interval
    low, high = beta_interval(3.25, 10)
    low_m, high_m = beta_interval(6.75, 10)
    assert low == pytest.approx(1 - high_m, abs=1e-12) and high == pytest.approx(1 - low_m, abs=1e-12)


@pytest.mark.parametrize(
    "args,name",
    [
        ((1, -1), "trials"),
        ((1, 2.5), "trials"),
        ((1, "3"), "trials"),
        ((-0.1, 5), "successes"),
        ((5.5, 5), "successes"),
        ((float("nan"), 5), "successes"),
        ((1, 5, 0.0), "level"),
        ((1, 5, 1.0), "level"),
        ((1, 5, -0.2), "level"),
        ((1, 5, float("nan")), "level"),
    ],
)
def test_beta_interval_validation(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        beta_interval(*args)


def test_beta_interval_accepts_numpy_ints() -> None:
    assert beta_interval(np.float64(2.0), np.int64(4)) == beta_interval(2.0, 4)


# ------------------------------------------------------------------------------------------------- env_stats


@pytest.mark.parametrize("seed", range(6))
def test_env_stats_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    kind = seed % 3
    if kind == 0:
        x = rng.integers(0, 2, size=n).astype(float)  # binary
    elif kind == 1:
        x = rng.choice([0.0, 0.25, 0.5, 1.0], size=n)  # partial credit
    else:
        x = rng.uniform(0, 1, size=n)
        x[rng.random(n) < 0.3] = 0.0
        x[rng.random(n) < 0.3] = 1.0
    st = env_stats(list(x))
    assert st.n == n
    assert st.accuracy == pytest.approx(np.mean(x == 1.0))
    assert st.mean == pytest.approx(np.mean(x))
    assert st.std == pytest.approx(np.sqrt(np.mean((x - x.mean()) ** 2)))  # ddof = 0
    assert st.median == pytest.approx(np.percentile(x, 50))
    assert st.success_rate == pytest.approx(np.mean(x > 0))
    assert st.total == pytest.approx(np.sum(x))
    a, b = 0.5 + x.sum(), 0.5 + n - x.sum()
    assert st.ci_low == pytest.approx(sps.beta.ppf(0.1, a, b), abs=1e-10)
    assert st.ci_high == pytest.approx(sps.beta.ppf(0.9, a, b), abs=1e-10)
    # numpy array input works the same
    assert env_stats(x) == st


def test_env_stats_hand_worked() -> None:
    st = env_stats([1, 0, 0.5, 1, 0.25, 0])
    assert st.n == 6
    assert st.accuracy == pytest.approx(2 / 6)
    assert st.mean == pytest.approx(2.75 / 6)
    mean = 2.75 / 6
    var = sum((v - mean) ** 2 for v in [1, 0, 0.5, 1, 0.25, 0]) / 6
    assert st.std == pytest.approx(math.sqrt(var))
    assert st.median == pytest.approx((0.25 + 0.5) / 2)
    assert st.success_rate == pytest.approx(4 / 6)
    assert st.total == pytest.approx(2.75)
    assert (st.ci_low, st.ci_high) == beta_interval(2.75, 6)
    assert env_stats([True, False]).accuracy == 0.5


def test_env_stats_accuracy_tolerance_and_level() -> None:
    almost_one = sum([0.1] * 10)  # 0.9999999999999999
    assert almost_one < 1.0
    assert env_stats([almost_one, 0.999]).accuracy == 0.5
    st = env_stats([1, 0, 1], level=0.95)
    assert (st.ci_low, st.ci_high) == beta_interval(2, 3, 0.95)


@pytest.mark.parametrize(
    "bad,index", [([0.5, float("nan")], 1), ([1.5], 0), ([0, 1, -0.1], 2), ([0, float("inf")], 1)]
)
def test_env_stats_invalid_scores_name_index(bad: list, index: int) -> None:
    with pytest.raises(ValueError, match=rf"index {index}\b") as info:
        env_stats(bad)
    assert repr(bad[index]) in str(info.value) or str(bad[index]) in str(info.value)


def test_env_stats_non_numeric_and_empty() -> None:
    with pytest.raises(ValueError, match="index 1"):
        env_stats([0.0, "x"])
    with pytest.raises(ValueError, match="index 0"):
        env_stats([None])
    with pytest.raises(ValueError, match="empty"):
        env_stats([])
    with pytest.raises(ValueError, match="level"):
        env_stats([1.0], level=1.0)


def test_env_stats_dict_round_trip_and_frozen() -> None:
    st = env_stats([0.2, 1.0, 0.0])
    d = st.to_dict()
    assert list(d) == ["n", "accuracy", "mean", "std", "median", "success_rate", "total", "ci_low", "ci_high"]
    assert json.loads(json.dumps(d)) == d
    assert EnvStats.from_dict(d) == st
    assert EnvStats.from_dict({**d, "extra": 1}) == st
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.mean = 0.0  # type: ignore[misc]
    bad = dict(d)
    del bad["ci_low"]
    with pytest.raises(ValueError, match="ci_low"):
        EnvStats.from_dict(bad)
    with pytest.raises(ValueError, match="mean"):
        EnvStats.from_dict({**d, "mean": "high"})


# ------------------------------------------------------------------------------------------------- aggregate


def _hand_stats() -> dict[str, EnvStats]:
    # a: n=4, accuracy .5, mean .5, success .5;  b: n=2, accuracy .5, mean .75, success 1.0
    return {"a": env_stats([1, 1, 0, 0]), "b": env_stats([1, 0.5])}


def test_aggregate_default_weights_hand_worked() -> None:
    agg = aggregate(_hand_stats())
    assert agg["weighted_accuracy"] == pytest.approx((4 * 0.5 + 2 * 0.5) / 6)
    assert agg["weighted_mean"] == pytest.approx((4 * 0.5 + 2 * 0.75) / 6)  # = 3.5 / 6
    assert agg["success_rate"] == pytest.approx((0.5 + 1.0) / 2)  # unweighted over environments
    assert agg["total_samples"] == 6 and isinstance(agg["total_samples"], int)
    assert agg["num_environments"] == 2
    assert agg["effective_samples"] == pytest.approx(6.0)
    # default weights: exactly the pooled Jeffreys interval of all 6 samples (s = 3.5)
    low, high = beta_interval(3.5, 6)
    assert agg["ci_low"] == pytest.approx(low, abs=1e-12)
    assert agg["ci_high"] == pytest.approx(high, abs=1e-12)
    assert agg["level"] == 0.8
    json.dumps(agg, allow_nan=False)


def test_aggregate_explicit_weights_hand_worked() -> None:
    agg = aggregate(_hand_stats(), {"a": 1.0, "b": 3.0, "unused": 100.0})
    assert agg["weighted_mean"] == pytest.approx((1 * 0.5 + 3 * 0.75) / 4)  # 0.6875
    assert agg["weighted_accuracy"] == pytest.approx(0.5)
    assert agg["success_rate"] == pytest.approx(0.75)  # weights do not matter
    assert agg["total_samples"] == 6
    n_eff = 1.0 / ((1 / 4) ** 2 / 4 + (3 / 4) ** 2 / 2)  # Kish: 1 / sum p_e^2 / n_e = 3.368...
    assert agg["effective_samples"] == pytest.approx(n_eff)
    m = 0.6875
    assert agg["ci_low"] == pytest.approx(sps.beta.ppf(0.1, 0.5 + m * n_eff, 0.5 + (1 - m) * n_eff))
    assert agg["ci_high"] == pytest.approx(sps.beta.ppf(0.9, 0.5 + m * n_eff, 0.5 + (1 - m) * n_eff))
    # weights proportional to n reproduce the default
    assert aggregate(_hand_stats(), {"a": 2.0, "b": 1.0}) == pytest.approx(aggregate(_hand_stats()))
    # a zero weight drops an environment from the weighted figures (not from success_rate / total_samples)
    agg0 = aggregate(_hand_stats(), {"a": 1.0, "b": 0.0})
    assert agg0["weighted_mean"] == pytest.approx(0.5)
    assert (agg0["ci_low"], agg0["ci_high"]) == pytest.approx(beta_interval(2, 4))
    assert agg0["success_rate"] == pytest.approx(0.75)


def test_aggregate_validation() -> None:
    with pytest.raises(ValueError, match="'b'"):
        aggregate(_hand_stats(), {"a": 1.0})
    with pytest.raises(ValueError, match="'a'"):
        aggregate(_hand_stats(), {"a": -1.0, "b": 1.0})
    with pytest.raises(ValueError, match="'a'"):
        aggregate(_hand_stats(), {"a": float("nan"), "b": 1.0})
    with pytest.raises(ValueError, match="zero"):
        aggregate(_hand_stats(), {"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match="empty"):
        aggregate({})
    empty = dataclasses.replace(env_stats([1.0]), n=0)
    with pytest.raises(ValueError, match="'z'"):
        aggregate({"z": empty})


# ------------------------------------------------------------------------------------------ winner / dominance


def S(lo: float, hi: float) -> EnvStats:
    """Hand-made EnvStats with a given interval (only the interval matters for comparisons)."""
    mid = (lo + hi) / 2
    return EnvStats(
        n=10, accuracy=mid, mean=mid, std=0.1, median=mid, success_rate=mid, total=10 * mid, ci_low=lo, ci_high=hi
    )


def test_env_winner_cases() -> None:
    assert env_winner(S(0.6, 0.8), S(0.2, 0.4)) == 1  # separate, a above
    assert env_winner(S(0.2, 0.4), S(0.6, 0.8)) == -1  # separate, b above
    assert env_winner(S(0.3, 0.6), S(0.5, 0.8)) == 0  # overlapping
    assert env_winner(S(0.5, 0.8), S(0.2, 0.5)) == 0  # touching: not a win
    assert env_winner(S(0.2, 0.5), S(0.5, 0.8)) == 0
    assert env_winner(S(0.3, 0.4), S(0.3, 0.4)) == 0  # identical
    assert env_winner(S(0.45, 0.5), S(0.1, 0.9)) == 0  # nested


def test_env_winner_with_real_scores() -> None:
    strong, weak = env_stats([1.0] * 20), env_stats([0.0] * 20)
    assert env_winner(strong, weak) == 1 and env_winner(weak, strong) == -1
    assert env_winner(env_stats([1, 0, 1]), env_stats([0, 1, 0])) == 0


def test_env_wins_strict_and_shared() -> None:
    a = {"x": S(0.6, 0.8), "y": S(0.2, 0.3), "only_a": S(0.1, 0.2)}
    b = {"y": S(0.5, 0.6), "x": S(0.1, 0.2), "only_b": S(0.1, 0.2)}
    with pytest.raises(ValueError, match="only_a") as info:
        env_wins(a, b)
    assert "only_b" in str(info.value)
    assert env_wins(a, b, strict=False) == {"x": 1, "y": -1}
    assert list(env_wins(a, b, strict=False)) == ["x", "y"]  # order of a
    with pytest.raises(ValueError):
        dominates(a, b)


def test_dominates_cases() -> None:
    hi, lo, mid = S(0.7, 0.8), S(0.1, 0.2), S(0.15, 0.75)
    a = {"e1": hi, "e2": mid}
    b = {"e1": lo, "e2": mid}
    assert dominates(a, b) is True  # A wins one, B none
    assert dominates(b, a) is False
    c = {"e1": hi, "e2": lo}
    d = {"e1": lo, "e2": hi}
    assert dominates(c, d) is False and dominates(d, c) is False  # each wins one
    e = {"e1": mid, "e2": mid}
    f = {"e1": S(0.3, 0.6), "e2": S(0.3, 0.6)}
    assert dominates(e, f) is False and dominates(f, e) is False  # no wins
    for m in (a, b, c, d, e, f):
        assert dominates(m, m) is False  # irreflexive


def test_dominates_is_spec_not_classic_pareto() -> None:
    # A is >= B on every mean (classic Pareto: A dominates B) but the 80% intervals overlap: docs/eval.md says no.
    a = {"e1": S(0.5, 0.7), "e2": S(0.5, 0.7)}
    b = {"e1": S(0.45, 0.65), "e2": S(0.45, 0.65)}
    assert all(a[k].mean > b[k].mean for k in a)
    assert not dominates(a, b)
    assert pareto_frontier({"A": a, "B": b}) == ["A", "B"]
    # conversely, A dominates B while B has a higher mean somewhere (inside the noise)
    a2 = {"e1": S(0.7, 0.8), "e2": S(0.3, 0.6)}
    b2 = {"e1": S(0.1, 0.2), "e2": S(0.35, 0.7)}
    assert b2["e2"].mean > a2["e2"].mean and dominates(a2, b2)


def _four_models() -> dict[str, dict[str, EnvStats]]:
    return {
        "A": {"e1": S(0.8, 0.9), "e2": S(0.1, 0.2)},
        "B": {"e1": S(0.1, 0.2), "e2": S(0.8, 0.9)},
        "C": {"e1": S(0.7, 0.85), "e2": S(0.05, 0.15)},  # ties A on both; trades with B
        "D": {"e1": S(0.3, 0.4), "e2": S(0.1, 0.2)},  # dominated by A and by C; trades with B
    }


def test_pareto_frontier_four_models() -> None:
    models = _four_models()
    assert pareto_frontier(models) == ["A", "B", "C"]
    m = dominance_matrix(models)
    expected_true = {("A", "D"), ("C", "D")}
    for x in models:
        for y in models:
            assert m[x][y] is ((x, y) in expected_true), (x, y)
    assert list(m) == ["A", "B", "C", "D"] and all(list(row) == list(models) for row in m.values())
    # input order is preserved
    reordered = {k: models[k] for k in ["D", "C", "B", "A"]}
    assert pareto_frontier(reordered) == ["C", "B", "A"]


def test_pareto_frontier_chain() -> None:
    models = {
        "C": {"e": S(0.2, 0.3)},
        "A": {"e": S(0.8, 0.9)},
        "B": {"e": S(0.5, 0.6)},
    }
    m = dominance_matrix(models)
    assert m["A"]["B"] and m["B"]["C"] and m["A"]["C"]
    assert not (m["B"]["A"] or m["C"]["B"] or m["C"]["A"])
    assert pareto_frontier(models) == ["A"]


def test_pareto_frontier_all_incomparable() -> None:
    models = {
        "A": {"e1": S(0.8, 0.9), "e2": S(0.1, 0.2), "e3": S(0.4, 0.5)},
        "B": {"e1": S(0.1, 0.2), "e2": S(0.8, 0.9), "e3": S(0.4, 0.5)},
        "C": {"e1": S(0.4, 0.5), "e2": S(0.4, 0.5), "e3": S(0.8, 0.9)},
    }
    assert pareto_frontier(models) == ["A", "B", "C"]
    assert not any(v for row in dominance_matrix(models).values() for v in row.values())
    # identical models never dominate each other either
    assert pareto_frontier({"x": models["A"], "y": dict(models["A"])}) == ["x", "y"]
    assert pareto_frontier({"solo": models["A"]}) == ["solo"]
    assert pareto_frontier({}) == []


def test_pareto_frontier_cycle_is_empty() -> None:
    # Dominance (docs/eval.md) is not transitive: A > B (e1), B > C (e2), C > A (e3), everything else ties.
    H, L, W = S(0.7, 0.8), S(0.1, 0.2), S(0.15, 0.75)
    models = {
        "A": {"e1": H, "e2": W, "e3": L},
        "B": {"e1": L, "e2": H, "e3": W},
        "C": {"e1": W, "e2": L, "e3": H},
    }
    m = dominance_matrix(models)
    assert m["A"]["B"] and m["B"]["C"] and m["C"]["A"]
    assert not (m["B"]["A"] or m["C"]["B"] or m["A"]["C"])
    assert pareto_frontier(models) == []


def test_dominance_matrix_strict_names_models() -> None:
    models = {"A": {"e1": S(0.1, 0.2)}, "B": {"e2": S(0.1, 0.2)}}
    with pytest.raises(ValueError, match="'A'.*'B'"):
        dominance_matrix(models)
    assert dominance_matrix(models, strict=False) == {"A": {"A": False, "B": False}, "B": {"A": False, "B": False}}


# ---------------------------------------------------------------------------------------------------- reports


def _scores_model() -> dict[str, list[float]]:
    return {"sat": [1.0] * 18 + [0.0] * 2, "abd": [0.0, 0.5, 1.0, 1.0], "ded": [0.25] * 6}


def _scores_baseline() -> dict[str, list[float]]:
    return {"sat": [0.0] * 18 + [1.0] * 2, "abd": [0.0, 1.0, 1.0, 0.0], "webshop": [0.1, 0.3]}


def test_build_report_layout() -> None:
    scores = _scores_model()
    rep = build_report("rl_final", scores, metadata={"stage": "rl", "seed": 3})
    assert set(rep) == {"model", "level", "environments", "aggregate", "weights", "scores", "metadata"}
    assert rep["model"] == "rl_final" and rep["level"] == 0.8 and rep["weights"] is None
    assert rep["metadata"] == {"stage": "rl", "seed": 3}
    assert rep["scores"] == scores
    for env, xs in scores.items():
        assert rep["environments"][env] == env_stats(xs).to_dict()
    assert rep["aggregate"] == aggregate({e: env_stats(x) for e, x in scores.items()})
    json.dumps(rep, allow_nan=False)
    w = {"sat": 1, "abd": 1, "ded": 2}
    rep_w = build_report("m", scores, weights=w, level=0.9)
    assert rep_w["weights"] == {"sat": 1.0, "abd": 1.0, "ded": 2.0} and rep_w["level"] == 0.9
    assert rep_w["aggregate"] == aggregate({e: env_stats(x, 0.9) for e, x in scores.items()}, w, level=0.9)


def test_build_report_errors() -> None:
    with pytest.raises(ValueError, match=r"'abd'.*index 1"):
        build_report("m", {"sat": [1.0], "abd": [0.0, 1.5]})
    with pytest.raises(ValueError, match=r"index 0"):
        build_report("m", {"sat": [float("nan")]})
    with pytest.raises(ValueError, match=r"'sat'.*empty"):
        build_report("m", {"sat": []})
    with pytest.raises(ValueError, match="empty"):
        build_report("m", {})
    with pytest.raises(ValueError, match="metadata"):
        build_report("m", {"sat": [1.0]}, metadata={"bad": object()})
    with pytest.raises(ValueError, match="metadata"):
        build_report("m", {"sat": [1.0]}, metadata={"bad": float("nan")})


def test_report_round_trip(tmp_path: Path) -> None:
    rep = build_report("rl_final", _scores_model(), metadata={"note": "x"})
    path = tmp_path / "nested" / "dir" / "results.json"
    assert save_report(rep, path) == path
    text = path.read_text()
    assert text.startswith('{\n  "model": "rl_final"')  # indent 2
    loaded = load_report(path)
    assert loaded == rep
    assert load_report(str(path)) == rep
    assert report_env_stats(loaded) == {e: env_stats(x) for e, x in _scores_model().items()}
    assert not [p for p in path.parent.iterdir() if p.name != "results.json"]  # no temp files left
    # overwrite in place
    rep2 = build_report("other", {"sat": [1.0]})
    save_report(rep2, path)
    assert load_report(path)["model"] == "other"


def test_load_report_errors_name_path_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_report(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json") as info:
        load_report(bad)
    assert "invalid JSON" in str(info.value)
    rep = build_report("m", _scores_model())
    for key in ("model", "level", "environments", "aggregate"):
        p = tmp_path / f"no_{key}.json"
        p.write_text(json.dumps({k: v for k, v in rep.items() if k != key}))
        with pytest.raises(ValueError, match=f"no_{key}.json") as info:
            load_report(p)
        assert repr(key) in str(info.value)
    broken = json.loads(json.dumps(rep))
    del broken["environments"]["abd"]["ci_high"]
    p = tmp_path / "no_field.json"
    p.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="no_field.json") as info:
        load_report(p)
    assert "abd" in str(info.value) and "ci_high" in str(info.value)
    p = tmp_path / "list.json"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json"):
        load_report(p)
    # optional keys may be absent
    minimal = {k: rep[k] for k in ("model", "level", "environments", "aggregate")}
    p = tmp_path / "minimal.json"
    p.write_text(json.dumps(minimal))
    assert load_report(p) == minimal


def test_save_report_rejects_malformed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aggregate"):
        save_report({"model": "m", "level": 0.8, "environments": {}}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_compare_reports_hand_worked() -> None:
    rep = build_report("rl", _scores_model())
    base = build_report("base", _scores_baseline())
    cmp = compare_reports(rep, base)
    assert cmp["model"] == "rl" and cmp["baseline"] == "base" and cmp["level"] == 0.8
    assert list(cmp["environments"]) == ["sat", "abd"]
    sat, abd = cmp["environments"]["sat"], cmp["environments"]["abd"]
    # sat: 18/20 vs 2/20 -> intervals separate, model wins
    assert sat["model_mean"] == pytest.approx(0.9) and sat["baseline_mean"] == pytest.approx(0.1)
    assert sat["delta"] == pytest.approx(0.8) and sat["winner"] == "model"
    assert sat["model_ci"] == list(beta_interval(18, 20)) and sat["baseline_ci"] == list(beta_interval(2, 20))
    # abd: 2.5/4 vs 2/4 -> overlapping, tie
    assert abd["delta"] == pytest.approx(0.625 - 0.5) and abd["winner"] == "tie"
    assert (cmp["wins"], cmp["losses"], cmp["ties"]) == (1, 0, 1)
    assert cmp["dominates"] is True and cmp["dominated"] is False
    assert cmp["missing"] == {"only_in_model": ["ded"], "only_in_baseline": ["webshop"]}
    json.dumps(cmp, allow_nan=False)
    back = compare_reports(base, rep)
    assert (
        back["environments"]["sat"]["winner"] == "baseline" and back["environments"]["sat"]["delta"] == -sat["delta"]
    )
    assert back["dominates"] is False and back["dominated"] is True
    assert back["missing"] == {"only_in_model": ["webshop"], "only_in_baseline": ["ded"]}


def test_compare_reports_trade_off_and_self() -> None:
    rep = build_report("a", {"x": [1.0] * 20, "y": [0.0] * 20})
    base = build_report("b", {"x": [0.0] * 20, "y": [1.0] * 20})
    cmp = compare_reports(rep, base)
    assert (cmp["wins"], cmp["losses"], cmp["ties"]) == (1, 1, 0)
    assert not cmp["dominates"] and not cmp["dominated"]
    same = compare_reports(rep, rep)
    assert same["ties"] == 2 and not same["dominates"] and not same["dominated"]
    assert all(row["delta"] == 0.0 for row in same["environments"].values())
    disjoint = compare_reports(rep, build_report("c", {"z": [1.0]}))
    assert disjoint["environments"] == {} and not disjoint["dominates"] and not disjoint["dominated"]
    assert disjoint["missing"] == {"only_in_model": ["x", "y"], "only_in_baseline": ["z"]}
    with pytest.raises(ValueError, match="level"):
        compare_reports(rep, build_report("b", {"x": [1.0]}, level=0.9))


def test_format_report() -> None:
    rep = build_report("rl_final", _scores_model())
    text = format_report(rep)
    assert "rl_final" in text and "80% CI" in text
    lines = text.splitlines()
    for env in ("sat", "abd", "ded", "aggregate"):
        assert any(line.startswith(env) for line in lines)
    sat_line = next(line for line in lines if line.startswith("sat"))
    lo, hi = beta_interval(18, 20)
    assert "0.9000" in sat_line and f"[{lo:.4f}, {hi:.4f}]" in sat_line and " 20 " in sat_line
    cmp = compare_reports(rep, build_report("base", _scores_baseline()))
    text2 = format_report(rep, cmp)
    assert "winner" in text2 and "dominates: yes" in text2 and "dominated: no" in text2
    assert "+0.8000" in text2 and "webshop" in text2
    ded_line = next(line for line in text2.splitlines() if line.startswith("ded"))
    assert ded_line.endswith("missing")
    assert "90% CI" in format_report(build_report("m", {"x": [1.0]}, level=0.9))


def test_pareto_report() -> None:
    reps = [
        build_report("strong", {"x": [1.0] * 20, "y": [0.5] * 20}),
        build_report("weak", {"x": [0.0] * 20, "y": [0.5] * 20}),
        build_report("other", {"x": [0.5] * 20, "y": [1.0] * 20}),
    ]
    pr = pareto_report(reps)
    assert pr["models"] == ["strong", "weak", "other"] and pr["level"] == 0.8
    assert pr["frontier"] == ["strong", "other"]
    assert pr["dominance"]["strong"]["weak"] and pr["dominance"]["other"]["weak"]
    assert not pr["dominance"]["strong"]["other"] and not pr["dominance"]["other"]["strong"]
    json.dumps(pr)
    with pytest.raises(ValueError, match="duplicate"):
        pareto_report([reps[0], reps[0]])
    with pytest.raises(ValueError, match="'strong'.*'odd'"):
        pareto_report([reps[0], build_report("odd", {"x": [1.0]})])
    assert pareto_report([reps[0], build_report("odd", {"x": [0.0] * 20})], strict=False)["frontier"] == ["strong"]
    with pytest.raises(ValueError, match="level"):
        pareto_report([reps[0], build_report("l9", {"x": [1.0], "y": [1.0]}, level=0.9)])
    with pytest.raises(ValueError, match="empty"):
        pareto_report([])


# -------------------------------------------------------------------------------------------------- package


def test_public_api_and_no_torch() -> None:
    for name in ev.__all__:
        assert hasattr(ev, name), name
    pkg = Path(ev.__file__).parent
    for mod in ("__init__.py", "metrics.py", "comparison.py", "report.py"):
        tree = ast.parse((pkg / mod).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "torch" for a in node.names), mod
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "torch", mod
