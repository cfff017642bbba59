"""Submitting a sweep's runs to Slurm as one array job, through submitit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from trl_ext.sweep.plan import Run, SweepError, SweepPlan
from trl_ext.sweep.run import RunStatus, execute_run

JOBS_FILE = "sweep_jobs.json"
"""The submitted array job (ids and the submitit folder), written beside the sweep's manifest."""


def _slurm_directive(option: str) -> tuple[str, str]:
    """``KEY=VALUE`` (or a bare ``KEY`` flag) -> ``(key, value)``, an ``sbatch`` option passed through submitit's
    ``slurm_additional_parameters`` (``True`` for a flag)."""
    key, sep, value = option.partition("=")
    key = key.strip().lstrip("-")
    if not key:
        raise SweepError(f"--slurm_option '{option}' has no key; use KEY=VALUE, e.g. partition=gpu")
    if key == "array":
        raise SweepError("--slurm_option array=... is not allowed: the sweep submits one array job itself")
    return key.replace("-", "_"), (value if sep else True)


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
    such as ``exclusive``); ``max_parallel > 0`` limits the tasks running at once. ``cluster="local"`` runs the
    array on this machine with submitit's local executor (what the tests use); ``"slurm"`` needs ``sbatch``.
    submitit's logs and pickles go to ``<output_dir>/slurm_logs``; collect the results with ``--collect_only`` once
    the array has finished.

    Raises:
        SweepError: a malformed option, or submitit is not installed (``pip install trl-ext[slurm]``).
    """
    parameters = dict(_slurm_directive(o) for o in options)
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
    if executor.cluster == "slurm":
        update["slurm_additional_parameters"] = parameters
        if max_parallel > 0:
            update["slurm_array_parallelism"] = max_parallel
    executor.update_parameters(**update)
    jobs = executor.map_array(_run_task, list(pending))
    (plan.output_dir / JOBS_FILE).write_text(
        json.dumps({"cluster": executor.cluster, "folder": str(folder), "jobs": [str(j.job_id) for j in jobs]})
    )
    return jobs
