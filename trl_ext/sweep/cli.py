r"""Sweep a recipe over attribute combinations and seeds, collect ``results.json`` and plot the Pareto front.

    trl-ext-sweep --script recipes/selective_generalisation.py --base_config base.yaml \
        --vary vary.yaml --seeds 0 1 2 --output_dir outputs/sweep_kl
    trl-ext-sweep ... --launcher "accelerate launch --config_file accelerate_configs/cpu.yaml"
    trl-ext-sweep ... --slurm --slurm_option partition=gpu --slurm_option gpus=1 --slurm_option time=04:00:00
    trl-ext-sweep --output_dir outputs/sweep_kl --collect_only [--x_metric eval.task --y_metric proxy]
    trl-ext-sweep ... --plotting_path my_plots.py     # then calls plot(results, output_dir) of my_plots.py

A recipe is run as ``<launcher> <script> --config <yaml> --output_dir <dir> --seed <int>`` (``<launcher>``
defaults to this Python interpreter) and must write ``<output_dir>/results.json``, a JSON object of metrics
(nested objects are read by dotted key, e.g. ``eval.task``).

The vary file (YAML or JSON) maps attributes to lists of values (their grid product is swept), or is
``{grid: {...}, runs: [{...}, ...]}`` where every explicit run (one value per attribute) is combined with every
grid point; this mapping form may also carry ``slurm: {cpus_per_task: 32, mem: 64G, gpus: 1}``, the sbatch defaults of
``--slurm`` (a ``--slurm_option`` of the same key overrides one). Each combination gets a folder under
``--output_dir`` named from its attributes (``strategy-kl_divergence_beta_kl-100``) holding the merged
``config.yaml`` and one ``seed_<N>`` folder per seed (its ``config.yaml``, ``log.txt`` and the recipe's outputs).
Runs go one after the other; a run whose ``results.json`` exists is skipped (an interrupted sweep resumes) unless
``--rerun``. A failing run is recorded in ``sweep_status.json`` and the sweep goes on; the exit status is then 1
(2 for bad input). Finally the results are collected into ``runs.csv``, ``summary.csv``, ``summary.json`` and
``pareto.png`` (x metric vs y metric, mean ± std over seeds, the Pareto-optimal combinations highlighted; std is
the sample std, ddof=1, left empty for a single seed); ``--plotting_path script.py`` then calls the script's
``plot(results, output_dir)`` with the collected results (``summary.json``'s content) and the sweep folder. A string
value of the base config or the vary file may refer to other keys of the run's config, ``${strategy}`` or
``${peft.r}`` (``$${`` for a literal ``${``), e.g. ``plane_path: planes/${strategy}_${seed}.pt``: resolved per run,
an unknown key or a cycle is an error before any run starts. Each run's ``results.json`` gets ``run_id`` (a hash of
its config) and ``timestamp`` (UTC) when the sweep records it. ``--slurm`` submits the runs as one Slurm array job
through submitit instead of running them (``--slurm_cluster local``: the same array on this machine);
``--collect_only`` gathers the results once the array is done.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trl_ext.common.entry import run_main
from trl_ext.sweep.collect import collect, load_plotting_hook, print_summary, run_plotting_hook
from trl_ext.sweep.plan import STATUS, Run, SweepError, SweepPlan, pending_runs, plan_sweep, write_plan
from trl_ext.sweep.run import execute_sweep, report_failures
from trl_ext.sweep.slurm import slurm_parameters, submit_slurm

# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        prog="trl-ext-sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--script", help="Recipe script to run (required unless --collect_only).")
    parser.add_argument("--base_config", help="Base YAML config of the recipe (required unless --collect_only).")
    parser.add_argument("--vary", help="YAML/JSON file of attributes to vary (required unless --collect_only).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds to run (default: 0 1 2).")
    parser.add_argument("--output_dir", required=True, help="Sweep folder: one sub-folder per combination.")
    parser.add_argument("--x_metric", default="task", help="Metric on the x axis (dotted key; default: task).")
    parser.add_argument("--y_metric", default="proxy", help="Metric on the y axis (dotted key; default: proxy).")
    parser.add_argument("--minimize_x", action="store_true", help="Lower x is better (default: higher).")
    parser.add_argument("--minimize_y", action="store_true", help="Lower y is better (default: higher).")
    parser.add_argument(
        "--plotting_path",
        help="Python file defining plot(results, output_dir), called once after the results are collected (also "
        "with --collect_only) with summary.json's content and the sweep folder.",
    )
    parser.add_argument(
        "--launcher",
        help="Command that runs the script, e.g. 'accelerate launch --config_file ...' (default: this "
        "Python interpreter).",
    )
    parser.add_argument("--allow_new_keys", action="store_true", help="Allow attributes not in the base config.")
    parser.add_argument("--rerun", action="store_true", help="Re-run runs whose results.json already exists.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--collect_only", action="store_true", help="Do not run: collect results and plot.")
    mode.add_argument("--dry_run", action="store_true", help="Print the commands; write and run nothing.")
    mode.add_argument("--slurm", action="store_true", help="Submit the runs as one Slurm array job (submitit).")
    parser.add_argument(
        "--slurm_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sbatch option --KEY=VALUE (repeatable; a bare KEY is a flag), e.g. partition=gpu, time=04:00:00; "
        "overrides the vary file's slurm: default of the same KEY.",
    )
    parser.add_argument(
        "--slurm_cluster",
        default="slurm",
        choices=["slurm", "local"],
        help="submitit executor: 'slurm' (sbatch) or 'local' (this machine, in the background; waits for the runs).",
    )
    parser.add_argument("--slurm_max_parallel", type=int, default=0, help="At most this many array tasks at once.")
    return parser.parse_args(argv)


def _require_inputs(args: argparse.Namespace) -> None:
    """Raise if one of the inputs needed to plan a sweep was not given."""
    for flag in ("script", "base_config", "vary"):
        if not getattr(args, flag):
            raise SweepError(f"--{flag} is required (unless --collect_only)")


def _dry_run(plan: SweepPlan, pending: Sequence[Run]) -> None:
    """Print every run's command, marking those that would be skipped."""
    todo = {run.label for run in pending}
    for run in plan.runs:
        prefix = "" if run.label in todo else "# skip (results.json exists): "
        print(prefix + shlex.join(run.command))
    print(f"# dry run: {len(pending)} of {len(plan.runs)} runs would execute; nothing was written")


def _collect_and_print(
    args: argparse.Namespace, output_dir: Path, hook: Callable[..., Any] | None = None
) -> dict[str, Any]:
    """Collect ``output_dir`` with the metric options of ``args``, print the summary, then call the plotting hook of
    ``--plotting_path`` (``hook``: its ``plot`` function, already loaded) if one was given."""
    result = collect(output_dir, args.x_metric, args.y_metric, args.minimize_x, args.minimize_y)
    print_summary(result, output_dir)
    if args.plotting_path:
        run_plotting_hook(args.plotting_path, result, output_dir, hook)
        print(f"called plot() of {Path(args.plotting_path).resolve()}")
    return result


def _plotting_hook(args: argparse.Namespace) -> Callable[..., Any] | None:
    """The ``plot`` function of ``--plotting_path``, loaded before anything runs so that a bad script fails early."""
    return load_plotting_hook(args.plotting_path) if args.plotting_path else None


def run_sweep(args: argparse.Namespace) -> int:
    """Do what the parsed command line asks; returns the exit status (1 if a run failed)."""
    if args.collect_only:
        _collect_and_print(args, Path(args.output_dir).resolve(), _plotting_hook(args))
        return 0
    _require_inputs(args)
    plan = plan_sweep(
        args.script, args.base_config, args.vary, args.output_dir, args.seeds, args.launcher, args.allow_new_keys
    )
    hook = _plotting_hook(args)
    pending = pending_runs(plan.runs, rerun=args.rerun)
    if args.dry_run:
        _dry_run(plan, pending)
        return 0
    if args.slurm:
        slurm_parameters(plan.slurm_defaults, args.slurm_option)  # validate before writing anything
        if not pending:
            print(f"all {len(plan.runs)} runs have results; nothing to submit (--rerun to redo, --collect_only)")
            return 0
        write_plan(plan, pending, args.x_metric, args.y_metric)
        jobs = submit_slurm(plan, pending, args.slurm_option, args.slurm_max_parallel, cluster=args.slurm_cluster)
        print(f"submitted {len(pending)} runs as one array job ({jobs[0].job_id.split('_')[0]}) through submitit")
        plotting = ["--plotting_path", str(Path(args.plotting_path).resolve())] if args.plotting_path else []
        collect_cmd = shlex.join(["trl-ext-sweep", "--output_dir", str(plan.output_dir), "--collect_only", *plotting])
        print(f"when it has finished, collect with:\n  {collect_cmd}")
        if args.slurm_cluster == "local":
            for job in jobs:  # the local executor: wait here, as a finished array would have
                job.wait()
        return 0
    if shutil.which(plan.launcher[0]) is None:
        raise SweepError(f"launcher '{plan.launcher[0]}' not found (--launcher {shlex.join(plan.launcher)})")
    write_plan(plan, pending, args.x_metric, args.y_metric)
    statuses = execute_sweep(plan, pending)
    try:
        _collect_and_print(args, plan.output_dir, hook)
    finally:  # the failures come last, even when collecting fails
        failed = report_failures(statuses)
    if failed:
        print(f"sweep finished with {len(failed)} failed runs (see {plan.output_dir / STATUS})", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: parse ``argv`` and run; a :class:`SweepError` (a user error) prints one line and
    gives status 2 (:func:`trl_ext.common.entry.run_main`)."""
    args = parse_args(argv)
    return run_main(lambda: run_sweep(args), prog="trl-ext-sweep")
