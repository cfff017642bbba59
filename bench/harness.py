"""The benchmark harness: what every ``bench/bench_*.py`` script shares, in one place.

* **Arguments** -- :func:`bench_parser` adds the flags every script has (``--repeats``, ``--threads``, ``--seed``,
  ``--json``, and ``--quick`` where the script has a smoke mode); :func:`require` turns a failed check into the
  parser's usage error.
* **Rounds** -- :func:`arm_order` (fixed, or rotated each round so that no arm always runs first on a warm
  machine) and :func:`run_rounds`, which runs every arm once per round under one progress bar and prints a line
  per run.
* **Measurement** -- peak/current RSS from ``/proc`` with a resettable peak (:func:`reset_peak_rss`), the
  process-CPU/wall step timer for a ``transformers.Trainer`` (:func:`make_step_timer`, :class:`StepTimes`), a
  wrapper timing any method (:func:`instrument`), quantiles and the spread of a sample (:func:`spread_ms`), the
  paired per-round ratio of two arms (:func:`paired_ratios`) and isolated worker processes that report one JSON
  result (:func:`run_worker_process`, :func:`emit_result`).
* **Report** -- :class:`BenchSession` records the wall time and the load average at start and end, prints the
  load line with its warning on a busy machine, and writes the JSON file (``config``, ``environment``,
  ``summary``, ``runs`` and the script's extra keys); :func:`machine_fingerprint` is the ``environment`` entry
  (date, CPU model and cores, Python, platform, package versions, git commit and the SHA-256 of the measured
  source files), so that two JSON files say whether they measured the same code on the same machine.

Imported by scripts run as ``python bench/<script>.py`` (this folder is then on ``sys.path``), also from the
separate TRL 1.12 venv of ``bench_ppo.py``: the module level uses the standard library only; torch, transformers
and tqdm are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")

# ---------------------------------------------------------------------------------------------- arguments


def bench_parser(
    doc: str | None,
    *,
    repeats: int,
    repeats_help: str,
    seed: int = 42,
    seed_help: str | None = None,
    threads_help: str = "torch.set_num_threads.",
    quick_help: str | None = None,
) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the flags every benchmark has; the script adds its own.

    ``--repeats`` (rounds), ``--threads``, ``--seed``, ``--json`` (write every number there) and, when
    ``quick_help`` is given, ``--quick`` (the script's smoke mode, used by the tests).
    """
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=repeats, help=repeats_help)
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    parser.add_argument("--seed", type=int, default=seed, help=seed_help or f"Training seed (default {seed}).")
    if quick_help is not None:
        parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, default=None, help="Also write every number to this JSON file.")
    return parser


def require(parser: argparse.ArgumentParser, ok: bool, message: str) -> None:
    """``parser.error(message)`` (usage line, exit 2) unless ``ok``."""
    if not ok:
        parser.error(message)


def check_common(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """The checks of the common flags: ``--repeats`` and ``--threads`` at least 1."""
    require(parser, opts.repeats >= 1 and opts.threads >= 1, "--repeats and --threads must be >= 1")


# ---------------------------------------------------------------------------------------------- rounds


def arm_order(arms: Sequence[Any], rnd: int, rotate: bool = True) -> list[Any]:
    """The arms of round ``rnd``: as given, or rotated by ``rnd`` (with two arms: alternating)."""
    arms = list(arms)
    if not rotate or not arms:
        return arms
    k = rnd % len(arms)
    return arms[k:] + arms[:k]


def run_rounds(
    arms: Sequence[Any],
    repeats: int,
    run: Callable[[Any, int], Any],
    *,
    rotate: bool = True,
    describe: Callable[[Any], str] | None = None,
    per_round: Callable[[int], Any] | None = None,
    warmup: Sequence[Any] = (),
    run_warmup: Callable[[Any], Any] | None = None,
    label: Callable[[Any], str] = str,
    desc: str = "runs",
) -> tuple[list[Any], list[Any]]:
    """Run ``run(arm, rnd)`` for every arm of every round (see :func:`arm_order`) under one tqdm bar.

    ``warmup`` arms first go through ``run_warmup(arm)`` (process warm-up: lazy imports, the allocator; not
    returned). ``describe(result)`` is printed after each run (``"round r/R <arm> <describe>"``);
    ``per_round(rnd)``, when given, runs after the arms of each round (a component timing, say). Returns the
    results of ``run`` and those of ``per_round``, in execution order.
    """
    from tqdm import tqdm

    results: list[Any] = []
    extras: list[Any] = []
    width = max((len(label(a)) for a in arms), default=0)
    total = repeats * (len(arms) + (per_round is not None)) + len(warmup)
    with tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True, file=sys.stderr) as bar:
        for arm in warmup:
            bar.set_postfix_str(f"warm-up {label(arm)}")
            (run_warmup or (lambda a: run(a, -1)))(arm)
            bar.update()
        for rnd in range(repeats):
            for arm in arm_order(arms, rnd, rotate):
                bar.set_postfix_str(f"round {rnd + 1} {label(arm)}")
                result = run(arm, rnd)
                results.append(result)
                if describe is not None:
                    bar.write(f"round {rnd + 1}/{repeats} {label(arm):<{width}} {describe(result)}")
                bar.update()
            if per_round is not None:
                bar.set_postfix_str(f"round {rnd + 1} components")
                extras.append(per_round(rnd))
                bar.update()
    return results, extras


# ---------------------------------------------------------------------------------------------- memory


def status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmHWM``, ``VmRSS``), or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def current_rss_mib() -> float | None:
    """Current resident set size (``VmRSS``) in MiB, or None off Linux."""
    kib = status_kib("VmRSS")
    return kib / 1024 if kib is not None else None


def peak_rss_mib() -> float | None:
    """``VmHWM`` (peak RSS since the process start or the last :func:`reset_peak_rss`) in MiB."""
    kib = status_kib("VmHWM")
    return kib / 1024 if kib is not None else None


_PEAK_BEFORE_RESETS_MIB = 0.0
"""Largest ``VmHWM`` seen just before a reset: the process peak that the resets would otherwise hide."""


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) to the current RSS; False when not allowed."""
    global _PEAK_BEFORE_RESETS_MIB
    _PEAK_BEFORE_RESETS_MIB = max(_PEAK_BEFORE_RESETS_MIB, peak_rss_mib() or 0.0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return status_kib("VmHWM") is not None


def ru_maxrss_mib() -> float:
    """``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (on Linux it follows ``VmHWM`` down on a reset)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def process_peak_rss_mib() -> float:
    """Peak RSS of the whole process: ``ru_maxrss`` combined with the ``VmHWM`` values read before each reset."""
    return max(ru_maxrss_mib(), _PEAK_BEFORE_RESETS_MIB, peak_rss_mib() or 0.0)


# ---------------------------------------------------------------------------------------------- timing


@dataclass
class StepTimes:
    """Measurements of one training run (one arm in one round), filled by :func:`make_step_timer`."""

    arm: str
    round: int
    step_s: dict[int, float] = field(default_factory=dict)
    """Step number -> wall seconds (``perf_counter``) from ``on_step_begin`` to the end of that step's ``on_log``."""
    step_cpu_s: dict[int, float] = field(default_factory=dict)
    """The same interval in CPU seconds of the process (``time.process_time``, all threads)."""
    step1_loss: float | None = None
    build_s: float = 0.0
    train_s: float = 0.0
    start_rss_mib: float | None = None
    peak_rss_mib: float | None = None
    peak_rss_source: str = ""

    def timed_steps(self, skip: int, cpu: bool = False) -> list[float]:
        """Step times (wall, or CPU with ``cpu``) of the steps after the first ``skip``."""
        times = self.step_cpu_s if cpu else self.step_s
        return [t for step, t in sorted(times.items()) if step > skip]

    def median_step_ms(self, skip: int, cpu: bool = False) -> float:
        """Median of :meth:`timed_steps` in milliseconds."""
        return 1e3 * statistics.median(self.timed_steps(skip, cpu))

    def as_json(self) -> dict[str, Any]:
        """Every field, with the step dictionaries keyed by strings (JSON)."""
        out = {k: v for k, v in vars(self).items()}
        for key, value in out.items():
            if isinstance(value, dict) and all(isinstance(k, int) for k in value):
                out[key] = {str(k): v for k, v in sorted(value.items())}
        return out


def make_step_timer(result: StepTimes) -> Any:
    """A ``TrainerCallback`` that fills ``result.step_s`` (register it last, so its ``on_log`` runs last).

    A step is ``on_step_begin`` to the end of the per-step ``on_log`` (forward, backward, clipping, optimizer and
    scheduler step, ``on_step_end``, the log's ``.item()`` syncs and every other callback's ``on_log``); fetching
    the next batch comes before ``on_step_begin`` and is not counted. The RSS at each step end is sampled, for
    machines where the peak cannot be reset.
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self._t0: float | None = None
            self._c0 = 0.0
            self.rss_samples: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self._c0 = time.process_time()
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            rss = current_rss_mib()
            if rss is not None:
                self.rss_samples.append(rss)

        def on_log(self, args, state, control, logs=None, **kwargs):
            # per-step logs carry "loss"; the end-of-training summary carries "train_loss" instead
            if self._t0 is None or not logs or "loss" not in logs:
                return
            t1, c1 = time.perf_counter(), time.process_time()
            result.step_s[state.global_step] = t1 - self._t0
            result.step_cpu_s[state.global_step] = c1 - self._c0
            self._t0 = None
            if state.global_step == 1:
                result.step1_loss = float(logs["loss"])

    return StepTimer()


def record_peak(result: StepTimes, can_reset: bool, timer: Any) -> None:
    """The run's peak RSS: ``VmHWM`` after a successful reset, else the largest RSS the step timer sampled."""
    if can_reset:
        result.peak_rss_mib, result.peak_rss_source = peak_rss_mib(), "VmHWM"
    elif timer.rss_samples:
        result.peak_rss_mib, result.peak_rss_source = max(timer.rss_samples), "statm-sampled"


def instrument(obj: Any, name: str, sink: Callable[[float, dict[str, Any]], None]) -> None:
    """Wrap ``obj.<name>`` so that each call reports its duration in seconds (and its kwargs) to ``sink``."""
    original = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink(time.perf_counter() - t0, kwargs)

    setattr(obj, name, timed)


# ---------------------------------------------------------------------------------------------- statistics


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (``q`` in [0, 1]) of a non-empty list."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread_ms(seconds: list[float]) -> dict[str, float | int]:
    """Median, 10th and 90th percentile (milliseconds) and count of a sample of durations in seconds."""
    return {
        "median_ms": 1e3 * statistics.median(seconds),
        "p10_ms": 1e3 * quantile(seconds, 0.1),
        "p90_ms": 1e3 * quantile(seconds, 0.9),
        "n": len(seconds),
    }


def median_or_none(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """Per-round ratios of two arms measured in the same rounds, their median, and the ratio of the medians.

    The median of the per-round ratios is robust to slow drifts of the machine (both arms of a round see the same
    load); the ratio of medians pools the rounds.
    """
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(
            f"paired_ratios needs two equally long non-empty sequences ({len(numerator)}, {len(denominator)})"
        )
    per_round = [a / b for a, b in zip(numerator, denominator)]
    return {
        "per_round": per_round,
        "median_of_rounds": statistics.median(per_round),
        "of_medians": statistics.median(numerator) / statistics.median(denominator),
    }


# ---------------------------------------------------------------------------------------------- workers


def emit_result(marker: str, result: dict[str, Any]) -> None:
    """Print ``result`` as one JSON line after ``marker`` (the worker side of :func:`run_worker_process`)."""
    sys.stdout.write(marker + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_worker_process(
    cmd: Sequence[str],
    marker: str,
    *,
    threads: int,
    timeout: float,
    what: str,
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> tuple[dict[str, Any], float]:
    """Run a worker in its own process (fresh allocator and peak RSS) and return its result and wall seconds.

    The worker prints its result with :func:`emit_result`. It gets ``env`` (default: this process's environment)
    with offline hub, ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``threads`` and ignored warnings. ``log`` keeps
    its stdout and stderr. A failure raises a ``RuntimeError`` naming ``what`` with the output's last 40 lines.
    """
    full_env = dict(os.environ if env is None else env)
    full_env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONWARNINGS="ignore",
    )
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), env=full_env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if log is not None:
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(marker)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"{what} failed with exit code {proc.returncode}:\n{tail}")
    return json.loads(lines[-1][len(marker) :]), wall


# ---------------------------------------------------------------------------------------------- environment


def quiet_offline_torch(threads: int) -> None:
    """Offline hub defaults, the dependency-noise filters of the entry points (``trl_ext.common.noise``),
    transformers/datasets logging and progress bars off, ``threads`` torch threads."""
    from trl_ext.common.noise import quiet_dependency_noise

    quiet_dependency_noise()  # before torch, transformers and datasets are imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    torch.set_num_threads(threads)


def loadavg() -> float | None:
    """1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or None)


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_fingerprint(paths: Iterable[str]) -> dict[str, str | None]:
    """SHA-256 (first 12 hex digits) of each repository-relative file (None when missing)."""
    out: dict[str, str | None] = {}
    for rel in paths:
        path = REPO_ROOT / rel
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else None
    return out


def machine_fingerprint(packages: Iterable[str] = DEFAULT_PACKAGES, code_files: Iterable[str] = ()) -> dict[str, Any]:
    """What a JSON result needs to be compared with another: machine, versions, code.

    Date (UTC), CPU model, logical cores and the cores this process may use, torch threads (when torch is
    loaded), Python and platform, the installed versions of ``packages`` (from the distribution metadata: no
    import), the git commit of the repository and whether the work tree differed from it, and the SHA-256 of
    ``code_files`` (the code whose cost is measured).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    torch = sys.modules.get("torch")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "code_sha256": code_fingerprint(code_files),
    }


# ---------------------------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    """``format(value, spec)``, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def verdict(ok: bool) -> str:
    """``MET`` / ``NOT MET``."""
    return "MET" if ok else "NOT MET"


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` (parents created) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


class BenchSession:
    """One benchmark invocation: start time and load, the end-of-run lines, the JSON file.

    ``fingerprint`` is taken at the start (the measured files may be edited while the benchmark runs).
    """

    def __init__(
        self,
        opts: argparse.Namespace,
        packages: Iterable[str] = DEFAULT_PACKAGES,
        code_files: Iterable[str] = (),
    ) -> None:
        self.opts = opts
        self.t_start = time.perf_counter()
        self.load_start = loadavg()
        self.environment = machine_fingerprint(packages, code_files)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Add ``wall_s`` and ``loadavg`` (start, end) to ``summary`` and return it."""
        summary["wall_s"] = time.perf_counter() - self.t_start
        load_end = loadavg()
        ok = self.load_start is not None and load_end is not None
        summary["loadavg"] = [self.load_start, load_end] if ok else None
        return summary

    @staticmethod
    def print_load(summary: dict[str, Any], hint: str = "see the cpu columns") -> None:
        """The load-average line, with a warning when the load exceeded the number of cores."""
        load = summary.get("loadavg")
        if load is not None:
            cores = os.cpu_count() or 1
            note = f"  <- the machine is busy: wall-time ratios are noisy, {hint}" if max(load) > cores else ""
            print(f"1-min load average at start / end: {load[0]:.2f} / {load[1]:.2f} on {cores} cores{note}")

    def print_footer(self, summary: dict[str, Any], hint: str = "see the cpu columns") -> None:
        """The load line and the total wall time."""
        self.print_load(summary, hint)
        print(f"total wall time {summary['wall_s']:.1f} s")

    def write(self, summary: dict[str, Any], runs: list[Any], **extra: Any) -> None:
        """Write ``config``, ``environment``, the ``extra`` keys, ``summary`` and ``runs`` to ``--json``."""
        if self.opts.json is None:
            return
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.opts).items()},
            "environment": self.environment,
            **extra,
            "summary": summary,
            "runs": runs,
        }
        write_json(self.opts.json, payload)
