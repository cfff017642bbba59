from .cli import main, parse_args, run_sweep
from .collect import collect, flatten_metrics, pareto_figure, pareto_front, plot_pareto, summarise
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
    slurm_defaults,
    write_plan,
)
from .run import RunStatus, execute_run, execute_sweep
from .slurm import JOBS_FILE, slurm_parameters, submit_slurm
