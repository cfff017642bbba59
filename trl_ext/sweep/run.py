"""Running a sweep's runs one after the other, recording each run's status (``sweep_status.json``)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trl_ext.sweep.plan import RESULTS, STATUS, Run, SweepPlan

RUN_KEYS = ("run_id", "timestamp")
"""The keys the sweep adds to every successful run's ``results.json`` (:func:`stamp_results`)."""

# ----------------------------------------------------------------------------------------------------------------
# Local execution


@dataclass
class RunStatus:
    """The outcome of one run: ``status`` is ``ok``, ``failed`` or ``skipped`` (results.json already there)."""

    run: str
    combination: str
    seed: int
    status: str
    returncode: int | None = None
    log: str | None = None
    seconds: float | None = None
    reason: str | None = None
    run_id: str | None = None


def _check_results_file(path: Path) -> str | None:
    """``None`` if ``path`` holds a JSON object, else the reason it does not."""
    if not path.is_file():
        return f"no {RESULTS} written"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"{RESULTS} is not valid JSON: {err}"
    return None if isinstance(data, dict) else f"{RESULTS} is not a JSON object"


def utc_timestamp() -> str:
    """Now, in UTC, as ISO 8601 to the second: ``2025-01-31T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp_results(run: Run, timestamp: str | None = None) -> dict[str, Any]:
    """Add ``run_id`` (:attr:`Run.run_id`) and ``timestamp`` (UTC ISO 8601, default now) to the run's
    ``results.json`` (a JSON object, checked by the caller), replacing keys of those names; returns the new content.
    The other keys keep their order and values."""
    data = json.loads(run.results_path.read_text())
    data.update(run_id=run.run_id, timestamp=timestamp or utc_timestamp())
    run.results_path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def execute_run(run: Run) -> RunStatus:
    """Run one recipe with stdout and stderr in ``<seed_dir>/log.txt``; failed if it exits non-zero or wrote no
    results.json (the log starts with the command line). A successful run's ``results.json`` gets the run's
    ``run_id`` and the ``timestamp`` at which it was recorded (:func:`stamp_results`)."""
    run.seed_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(run.log_path, "w") as log:
        log.write(f"$ {shlex.join(run.command)}\n")
        log.flush()
        try:
            proc = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            returncode, reason = proc.returncode, None
        except OSError as err:
            returncode, reason = None, f"could not start the command: {err}"
            log.write(f"{reason}\n")
    seconds = round(time.monotonic() - start, 3)
    if reason is None and returncode != 0:
        reason = f"exit code {returncode}"
    if reason is None:
        reason = _check_results_file(run.results_path)
    status = "ok" if reason is None else "failed"
    if status == "ok":
        stamp_results(run)
    return RunStatus(
        run.label, run.combination.name, run.seed, status, returncode, str(run.log_path), seconds, reason, run.run_id
    )


def write_status(path: Path, statuses: Sequence[RunStatus]) -> None:
    """Write ``sweep_status.json``: counts per status and one entry per run."""
    counts = {s: sum(st.status == s for st in statuses) for s in ("ok", "failed", "skipped")}
    data = {**counts, "runs": [asdict(s) for s in statuses]}
    path.write_text(json.dumps(data, indent=2) + "\n")


def execute_sweep(plan: SweepPlan, pending: Sequence[Run]) -> list[RunStatus]:
    """Run the pending runs one after the other with a progress bar, keeping ``sweep_status.json`` up to date
    after every run (so an interrupted sweep leaves an accurate record); other runs are recorded as skipped."""
    from tqdm import tqdm

    todo = {run.label for run in pending}
    statuses: list[RunStatus] = []
    status_path = plan.output_dir / STATUS
    with tqdm(total=len(plan.runs), desc="sweep", unit="run", dynamic_ncols=True) as bar:
        for run in plan.runs:
            if run.label not in todo:
                statuses.append(
                    RunStatus(
                        run.label, run.combination.name, run.seed, "skipped", log=str(run.log_path), run_id=run.run_id
                    )
                )
                bar.update()
                continue
            bar.set_postfix_str(run.label)
            status = execute_run(run)
            statuses.append(status)
            if status.status == "failed":
                bar.write(f"FAILED {run.label}: {status.reason} (log: {status.log})")
            write_status(status_path, statuses)
            bar.update()
    write_status(status_path, statuses)
    return statuses


def _log_tail(path: str | None, lines: int = 5) -> list[str]:
    """The last ``lines`` lines of a run's log, without its first line (the command); empty if unreadable."""
    try:
        return Path(path).read_text(errors="replace").splitlines()[1:][-lines:] if path else []
    except OSError:
        return []


def report_failures(statuses: Sequence[RunStatus]) -> list[RunStatus]:
    """Print every failed run (reason, log path and the log's last lines) to stderr; returns the failed runs."""
    failed = [s for s in statuses if s.status == "failed"]
    ran = [s for s in statuses if s.status != "skipped"]
    if not failed:
        print(f"all {len(ran)} runs succeeded ({len(statuses) - len(ran)} skipped: results already there)")
        return failed
    print(f"\n{len(failed)} of {len(ran)} runs FAILED:", file=sys.stderr)
    for s in failed:
        print(f"  {s.run}: {s.reason}; log: {s.log}", file=sys.stderr)
        for line in _log_tail(s.log):
            print(f"      | {line}", file=sys.stderr)
    return failed
