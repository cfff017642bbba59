"""Measurement helpers shared by the benchmark scripts: peak/current RSS from /proc, quantiles, load average.

Imported by scripts run as ``python bench/<script>.py`` (this folder is then on ``sys.path``), also from the
separate TRL 1.12 venv of ``bench_ppo.py``; it uses the standard library only.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import sys
from pathlib import Path


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


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (``q`` in [0, 1]) of a non-empty list."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def loadavg() -> float | None:
    """1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def quiet_offline_torch(threads: int) -> None:
    """Offline hub defaults, transformers/datasets logging and progress bars off, ``threads`` torch threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    torch.set_num_threads(threads)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON to ``path`` (parents created) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
