from .comparison import dominance_matrix, dominates, env_winner, env_wins, pareto_frontier
from .likelihood import span_nll
from .metrics import ACCURACY_TOL, DEFAULT_LEVEL, EnvStats, aggregate, beta_interval, env_stats
from .report import (
    REQUIRED_KEYS,
    build_report,
    compare_reports,
    format_report,
    load_report,
    pareto_report,
    report_env_stats,
    save_report,
)
from .tasks import evaluate_heldout, evaluate_model_on_tasks, heldout_instances, score_instances
