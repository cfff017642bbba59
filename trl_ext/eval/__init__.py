"""Evaluation: scoring, Beta intervals, dominance, Pareto frontier, reports."""

from trl_ext.eval.comparison import dominance_matrix, dominates, env_winner, env_wins, pareto_frontier
from trl_ext.eval.metrics import ACCURACY_TOL, DEFAULT_LEVEL, EnvStats, aggregate, beta_interval, env_stats
from trl_ext.eval.report import (
    REQUIRED_KEYS,
    build_report,
    compare_reports,
    format_report,
    load_report,
    pareto_report,
    report_env_stats,
    save_report,
)

__all__ = [
    "ACCURACY_TOL",
    "DEFAULT_LEVEL",
    "REQUIRED_KEYS",
    "EnvStats",
    "aggregate",
    "beta_interval",
    "build_report",
    "compare_reports",
    "dominance_matrix",
    "dominates",
    "env_stats",
    "env_winner",
    "env_wins",
    "format_report",
    "load_report",
    "pareto_frontier",
    "pareto_report",
    "report_env_stats",
    "save_report",
]
