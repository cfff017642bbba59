"""JSON evaluation reports: build, save/load, compare against a baseline, format, Pareto over models (docs/eval.md).

Report layout (a plain JSON-serialisable dict; :func:`save_report` writes it with ``indent=2``)::

    {
      "model": "rl_final",                      # model name
      "level": 0.8,                             # credible level of every interval in the report
      "environments": {                         # EnvStats.to_dict() per environment
        "sat": {"n": 100, "accuracy": 0.62, "mean": 0.62, "std": 0.485, "median": 1.0,
                "success_rate": 0.62, "total": 62.0, "ci_low": 0.556, "ci_high": 0.681},
        ...
      },
      "aggregate": {...},                       # trl_ext.eval.metrics.aggregate(...) over all environments
      "weights": null,                          # or {env: weight} when explicit aggregate weights were given
      "scores": {"sat": [1.0, 0.0, ...], ...},  # per-sample scores, for re-analysis
      "metadata": {...},                        # free-form, caller supplied (JSON-serialisable)
      "episodes": {"webshop": {...}, ...},      # optional: agent episodes' return, length, ... (eval/episodes.py)
      "agentgym_score": 0.4                     # optional: mean success rate over the agent environments
    }

Required on load: ``model``, ``level``, ``environments`` (each entry with every EnvStats field) and
``aggregate``; ``weights``, ``scores`` and ``metadata`` are optional (absent means ``None``/``{}``/``{}``).

Pure Python + numpy + scipy (no torch).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_ext.common.errors import MissingPathError
from trl_ext.eval.comparison import dominance_matrix, dominates, env_winner, pareto_frontier
from trl_ext.eval.metrics import DEFAULT_LEVEL, EnvStats, aggregate, env_stats

__all__ = [
    "REQUIRED_KEYS",
    "build_report",
    "compare_reports",
    "format_report",
    "load_report",
    "pareto_report",
    "report_env_stats",
    "save_report",
]

REQUIRED_KEYS: tuple[str, ...] = ("model", "level", "environments", "aggregate")
"""Top-level keys every report must have."""

_WINNER = {1: "model", -1: "baseline", 0: "tie"}


def build_report(
    model: str,
    scores: Mapping[str, Sequence[float]],
    *,
    level: float = DEFAULT_LEVEL,
    weights: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a JSON-serialisable report from per-environment per-sample scores (layout in the module docstring).

    ``environments[env] = env_stats(scores[env], level).to_dict()``; ``aggregate = aggregate(stats, weights,
    level=level)`` (see :func:`trl_ext.eval.metrics.aggregate` for the formulas); ``scores`` keeps the
    per-sample scores as floats.

    Raises:
        ValueError: empty ``scores``; a non-string environment name; an invalid score (naming the environment,
            index and value); invalid weights or level; ``metadata`` that is not JSON-serialisable.
    """
    if not isinstance(model, str):
        raise ValueError(f"model must be a string, got {model!r}")
    if not scores:
        raise ValueError("scores is empty: a report needs at least one environment")
    stats: dict[str, EnvStats] = {}
    samples: dict[str, list[float]] = {}
    for env, env_scores in scores.items():
        if not isinstance(env, str):
            raise ValueError(f"environment names must be strings, got {env!r}")
        try:
            stats[env] = env_stats(env_scores, level)
        except ValueError as exc:
            raise ValueError(f"environment {env!r}: {exc}") from None
        samples[env] = [float(x) for x in env_scores]
    meta = dict(metadata) if metadata is not None else {}
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not JSON-serialisable: {exc}") from None
    return {
        "model": model,
        "level": float(level),
        "environments": {env: st.to_dict() for env, st in stats.items()},
        "aggregate": aggregate(stats, weights, level=level),
        "weights": None if weights is None else {env: float(weights[env]) for env in stats},
        "scores": samples,
        "metadata": meta,
    }


def _validate_report(report: Any, where: str) -> dict[str, Any]:
    """Check the structure of ``report``; errors start with ``where`` (a path or "report")."""
    if not isinstance(report, dict):
        raise ValueError(f"{where}: a report must be a JSON object, got {type(report).__name__}")
    for key in REQUIRED_KEYS:
        if key not in report:
            raise ValueError(f"{where}: missing key {key!r}")
    if not isinstance(report["model"], str):
        raise ValueError(f"{where}: key 'model' must be a string, got {report['model']!r}")
    level = report["level"]
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not (0.0 < level < 1.0):
        raise ValueError(f"{where}: key 'level' must be a number in (0, 1), got {level!r}")
    envs = report["environments"]
    if not isinstance(envs, dict):
        raise ValueError(f"{where}: key 'environments' must be an object, got {type(envs).__name__}")
    for env, row in envs.items():
        try:
            EnvStats.from_dict(row)
        except ValueError as exc:
            raise ValueError(f"{where}: environments[{env!r}]: {exc}") from None
    for key in ("aggregate",):
        if not isinstance(report[key], dict):
            raise ValueError(f"{where}: key {key!r} must be an object, got {type(report[key]).__name__}")
    for key in ("scores", "metadata"):
        if key in report and not isinstance(report[key], dict):
            raise ValueError(f"{where}: key {key!r} must be an object, got {type(report[key]).__name__}")
    return report


def save_report(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as strict JSON (``indent=2``, no NaN) to ``path``; parent directories are created.

    The file is written to a temporary sibling and renamed into place, so a reader never sees a partial file.
    Returns the path written.

    Raises:
        ValueError: if the report is malformed or holds NaN/inf.
    """
    out = Path(path)
    report = _validate_report(dict(report), "report")
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a report written by :func:`save_report`.

    Raises:
        FileNotFoundError: naming ``path`` if it does not exist.
        ValueError: naming ``path`` for invalid JSON, and naming ``path`` and the key for a missing or malformed
            key (including a missing EnvStats field of an environment).
    """
    p = Path(path)
    if not p.is_file():
        raise MissingPathError(f"report file not found: {str(p)!r}")
    text = p.read_text(encoding="utf-8")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON: {exc}") from None
    return _validate_report(report, str(p))


def report_env_stats(report: Mapping[str, Any]) -> dict[str, EnvStats]:
    """``{env: EnvStats}`` of a report (validated; errors name the key)."""
    report = _validate_report(dict(report), "report")
    return {env: EnvStats.from_dict(row) for env, row in report["environments"].items()}


def _check_same_level(levels: Mapping[str, Any]) -> float:
    values = {float(v) for v in levels.values()}
    if len(values) > 1:
        raise ValueError(f"reports use different interval levels {dict(levels)}; intervals are not comparable")
    return values.pop()


def compare_reports(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """Compare a model's report with a saved baseline report, environment by environment.

    Over the environments both reports have (in the order of ``report``), with ``winner`` from
    :func:`trl_ext.eval.comparison.env_winner` on the stored intervals::

        {
          "model": str, "baseline": str, "level": float,
          "environments": {env: {"model_mean", "baseline_mean", "delta" (= model_mean - baseline_mean),
                                 "model_ci": [lo, hi], "baseline_ci": [lo, hi],
                                 "winner": "model" | "baseline" | "tie"}},
          "wins": int, "losses": int, "ties": int,  # counts of winner == model / baseline / tie
          "dominates": bool,   # model dominates baseline (docs/eval.md: wins >= 1 and losses == 0)
          "dominated": bool,   # baseline dominates model (losses >= 1 and wins == 0)
          "missing": {"only_in_model": [env, ...], "only_in_baseline": [env, ...]}
        }

    Environments present in only one report are listed under ``"missing"`` and otherwise ignored (not an error).

    Raises:
        ValueError: malformed reports, or reports with different ``level`` (intervals would not be comparable).
    """
    a = report_env_stats(report)
    b = report_env_stats(baseline)
    level = _check_same_level({"report": report["level"], "baseline": baseline["level"]})
    envs: dict[str, dict[str, Any]] = {}
    for env in a:
        if env not in b:
            continue
        w = env_winner(a[env], b[env])
        envs[env] = {
            "model_mean": a[env].mean,
            "baseline_mean": b[env].mean,
            "delta": a[env].mean - b[env].mean,
            "model_ci": [a[env].ci_low, a[env].ci_high],
            "baseline_ci": [b[env].ci_low, b[env].ci_high],
            "winner": _WINNER[w],
        }
    winners = [row["winner"] for row in envs.values()]
    return {
        "model": report["model"],
        "baseline": baseline["model"],
        "level": level,
        "environments": envs,
        "wins": winners.count("model"),
        "losses": winners.count("baseline"),
        "ties": winners.count("tie"),
        "dominates": dominates(a, b, strict=False),
        "dominated": dominates(b, a, strict=False),
        "missing": {
            "only_in_model": [env for env in a if env not in b],
            "only_in_baseline": [env for env in b if env not in a],
        },
    }


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, (int, float)) and math.isfinite(x):
        return f"{x:.{digits}f}"
    return "-"


def format_report(report: Mapping[str, Any], baseline_comparison: Mapping[str, Any] | None = None) -> str:
    """A plain-text table of a report for the console.

    Columns: environment, n, mean, accuracy, the ``level`` credible interval, success rate; with
    ``baseline_comparison`` (a :func:`compare_reports` result) also the baseline mean, delta and winner, plus
    a summary line (wins/losses/ties, dominance, missing environments). The last table row is the aggregate
    (weighted mean and accuracy, pooled interval, unweighted success rate).
    """
    stats = report_env_stats(report)
    agg = report["aggregate"]
    pct = f"{100 * float(report['level']):g}% CI"
    header = ["environment", "n", "mean", "accuracy", pct, "success"]
    cmp_envs: Mapping[str, Any] = {}
    if baseline_comparison is not None:
        header += ["baseline", "delta", "winner"]
        cmp_envs = baseline_comparison.get("environments", {})
    rows: list[list[str]] = []
    for env, st in stats.items():
        row = [env, str(st.n), _fmt(st.mean), _fmt(st.accuracy), f"[{_fmt(st.ci_low)}, {_fmt(st.ci_high)}]"]
        row.append(_fmt(st.success_rate))
        if baseline_comparison is not None:
            c = cmp_envs.get(env)
            if c is None:
                row += ["-", "-", "missing"]
            else:
                row += [_fmt(c["baseline_mean"]), f"{c['delta']:+.4f}", str(c["winner"])]
        rows.append(row)
    agg_row = [
        "aggregate",
        str(agg.get("total_samples", "-")),
        _fmt(agg.get("weighted_mean")),
        _fmt(agg.get("weighted_accuracy")),
        f"[{_fmt(agg.get('ci_low'))}, {_fmt(agg.get('ci_high'))}]",
        _fmt(agg.get("success_rate")),
    ]
    if baseline_comparison is not None:
        agg_row += ["", "", ""]
    widths = [max(len(r[i]) for r in [header, *rows, agg_row]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(header))
    out = [f"model: {report['model']}", line(header), rule, *(line(r) for r in rows), rule, line(agg_row)]
    if report.get("episodes"):
        out.append(f"agent episodes (AgentGym score {_fmt(report.get('agentgym_score'))}):")
        for env, ep in report["episodes"].items():
            out.append(
                f"  {env}: success {_fmt(ep['success_rate'])}, return {_fmt(ep['mean_return'])} "
                f"(std {_fmt(ep['std_return'])}), length {_fmt(ep['mean_length'], 2)}, invalid actions "
                f"{_fmt(ep['invalid_actions_per_episode'], 2)}/episode, truncated {_fmt(ep['truncated_rate'])}"
            )
    if baseline_comparison is not None:
        bc = baseline_comparison
        out.append(
            f"vs baseline {bc.get('baseline')!s}: wins {bc.get('wins')}, losses {bc.get('losses')}, "
            f"ties {bc.get('ties')}; dominates: {'yes' if bc.get('dominates') else 'no'}; "
            f"dominated: {'yes' if bc.get('dominated') else 'no'}"
        )
        missing = bc.get("missing") or {}
        if missing.get("only_in_model") or missing.get("only_in_baseline"):
            out.append(
                f"missing: only in model {list(missing.get('only_in_model', []))}, "
                f"only in baseline {list(missing.get('only_in_baseline', []))}"
            )
    return "\n".join(out)


def pareto_report(reports: Sequence[Mapping[str, Any]], *, strict: bool = True) -> dict[str, Any]:
    """Pareto analysis of several models' reports (docs/eval.md dominance).

    Returns ``{"models": [names in input order], "level": float, "frontier": [names not dominated by any
    other], "dominance": {x: {y: x dominates y}}}``.

    Raises:
        ValueError: duplicate model names; different ``level``; with ``strict=True`` (default), two reports
            covering different environments (naming the models and environments).
    """
    models: dict[str, dict[str, EnvStats]] = {}
    levels: dict[str, Any] = {}
    for i, rep in enumerate(reports):
        try:
            stats = report_env_stats(rep)
        except ValueError as exc:
            raise ValueError(f"reports[{i}]: {exc}") from None
        name = rep["model"]
        if name in models:
            raise ValueError(f"duplicate model name {name!r} in reports")
        models[name] = stats
        levels[name] = rep["level"]
    if not models:
        raise ValueError("reports is empty")
    level = _check_same_level(levels)
    matrix = dominance_matrix(models, strict=strict)
    return {
        "models": list(models),
        "level": level,
        "frontier": pareto_frontier(models, strict=strict),
        "dominance": matrix,
    }
