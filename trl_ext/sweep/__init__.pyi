from .cli import main, parse_args, run_sweep
from .collect import (
    PLOT_FUNCTION,
    collect,
    flatten_metrics,
    load_plotting_hook,
    pareto_figure,
    pareto_front,
    plot_pareto,
    run_plotting_hook,
    summarise,
)
from .plan import (
    MANIFEST,
    Combination,
    Run,
    SweepError,
    SweepPlan,
    combination_name,
    expand_vary,
    load_yaml,
    make_combinations,
    pending_runs,
    plan_sweep,
    run_id,
    slurm_defaults,
    write_plan,
)
from .references import resolve_references
from .run import RunStatus, execute_run, execute_sweep, stamp_results
from .slurm import JOBS_FILE, slurm_parameters, submit_slurm
