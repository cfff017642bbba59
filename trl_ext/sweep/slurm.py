"""Submitting a sweep's runs to Slurm as one array job, through submitit."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from trl_ext.sweep.plan import Run, SweepError, SweepPlan, slurm_option
from trl_ext.sweep.run import RunStatus, execute_run

JOBS_FILE = "sweep_jobs.json"
"""The submitted array job (cluster, ids, the submitit folder, the sbatch options passed), written beside the
sweep's manifest."""


def _slurm_directive(option: str) -> tuple[str, str | bool]:
    """``KEY=VALUE`` (or a bare ``KEY`` flag) -> ``(key, value)``, an ``sbatch`` option passed through submitit's
    ``slurm_additional_parameters`` (``True`` for a flag); the key is normalised by
    :func:`~trl_ext.sweep.plan.slurm_option`, as a vary file's ``slurm:`` keys are."""
    key, sep, value = option.partition("=")
    return slurm_option(key, value if sep else True, f"--slurm_option '{option}'")


def slurm_parameters(defaults: Mapping[str, str | bool], options: Sequence[str] = ()) -> dict[str, str | bool]:
    """The effective sbatch options: the vary file's ``slurm:`` ``defaults`` (:attr:`SweepPlan.slurm_defaults`),
    then every ``--slurm_option KEY=VALUE`` of ``options``, which overrides the default of the same (normalised)
    key or adds a new one; a key given twice on the command line takes its last value.

    Raises:
        SweepError: a malformed option (see :func:`_slurm_directive`).
    """
    return {**defaults, **dict(_slurm_directive(o) for o in options)}


def _run_task(run: Run) -> RunStatus:
    """One array task: run the recipe command of ``run`` (what :func:`~trl_ext.sweep.run.execute_run` does)."""
    return execute_run(run)


def submit_slurm(
    plan: SweepPlan,
    pending: Sequence[Run],
    options: Sequence[str] = (),
    max_parallel: int = 0,
    cluster: str | None = "slurm",
) -> list[Any]:
    """Submit ``pending`` as one Slurm array job (one task per run) with submitit; returns its jobs.

    ``options`` are ``KEY=VALUE`` sbatch options (``partition=gpu``, ``time=04:00:00``, ``gpus=1``, or a bare flag
    such as ``exclusive``) that override the vary file's ``slurm:`` defaults key by key (:func:`slurm_parameters`);
    ``max_parallel > 0`` limits the tasks running at once. ``cluster="local"`` runs the array on this machine with
    submitit's local executor (what the tests use; the sbatch options do not apply there); ``"slurm"`` needs
    ``sbatch``. submitit's logs and pickles go to ``<output_dir>/slurm_logs``; ``sweep_jobs.json`` records the
    cluster, that folder, the job ids and the sbatch options passed (``slurm_options``, empty for the local
    executor). Collect the results with ``--collect_only`` once the array has finished.

    Raises:
        SweepError: a malformed option, or submitit is not installed (``pip install trl-ext[slurm]``).
    """
    parameters = slurm_parameters(plan.slurm_defaults, options)
    try:
        import submitit
    except ImportError as err:
        raise SweepError("--slurm needs submitit: pip install 'trl-ext[slurm]'") from err
    folder = plan.output_dir / "slurm_logs"
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except RuntimeError as err:  # submitit: no srun/sbatch on this machine
        raise SweepError(f"--slurm: {err} (--slurm_cluster local runs the array on this machine)") from err
    update: dict[str, Any] = {"name": f"sweep-{plan.output_dir.name}"}
    applied: dict[str, str | bool] = {}
    if executor.cluster == "slurm":
        applied = parameters
        update["slurm_additional_parameters"] = parameters
        if max_parallel > 0:
            update["slurm_array_parallelism"] = max_parallel
    executor.update_parameters(**update)
    jobs = executor.map_array(_run_task, list(pending))
    (plan.output_dir / JOBS_FILE).write_text(
        json.dumps(
            {
                "cluster": executor.cluster,
                "folder": str(folder),
                "jobs": [str(j.job_id) for j in jobs],
                "slurm_options": applied,
            }
        )
    )
    return jobs
