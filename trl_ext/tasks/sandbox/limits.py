"""What a sandboxed execution may use and what it reports (docs/tasks.md, "Sandbox").

:class:`SandboxLimits` holds the limits of SPEC §6 (wall 30 s, CPU 10 s, memory 512 MiB, output 1 MB) plus the
file size, working-folder size, process count and open files. :class:`SandboxResult` is one execution's outcome;
``limit`` names the limit that ended or broke it (one of :data:`LIMITS`), ``None`` when none was hit.
"""

from __future__ import annotations

import math
import os
import re
import signal
from dataclasses import dataclass, fields

from trl_ext.common.errors import ConfigError

__all__ = ["LIMITS", "SandboxLimits", "SandboxResult", "classify_exit", "default_workers"]

LIMITS = ("wall", "cpu", "memory", "output", "file_size", "disk", "processes", "open_files")
"""The names a result's ``limit`` takes: the parent killed the program at the wall-clock limit (``wall``) or when
its output passed ``output_bytes`` (``output``) or when it reported the process limit (``processes``); the kernel
stopped it at the CPU limit (``cpu``); or a system call failed on a limit and the program died of it (``memory``,
``file_size``, ``disk``, ``processes``, ``open_files``)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-execution limits; the defaults are SPEC §6's.

    Attributes:
        wall_s: wall-clock seconds before the parent kills the program (its whole process tree).
        cpu_s: CPU seconds (``RLIMIT_CPU``; the kernel sends SIGXCPU, then SIGKILL one second later).
        memory_mb: address space in MiB (``RLIMIT_AS``; Python raises ``MemoryError``).
        output_bytes: stdout + stderr bytes kept; the program is killed when it writes more.
        file_size_bytes: the largest file the program may write (``RLIMIT_FSIZE``).
        disk_bytes: size of the working folder and ``/tmp`` (tmpfs, under bubblewrap).
        max_processes: processes and threads the program may have at once (``RLIMIT_NPROC`` of its own user).
        max_open_files: file descriptors (``RLIMIT_NOFILE``).
    """

    wall_s: float = 30.0
    cpu_s: float = 10.0
    memory_mb: int = 512
    output_bytes: int = 1_000_000
    file_size_bytes: int = 16 * 2**20
    disk_bytes: int = 64 * 2**20
    max_processes: int = 32
    max_open_files: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"SandboxLimits.{f.name}={value!r} must be a finite number")
            if value <= 0:
                raise ConfigError(f"SandboxLimits.{f.name}={value!r} must be > 0")
        if self.cpu_s < 1:
            raise ConfigError(f"SandboxLimits.cpu_s={self.cpu_s!r} must be >= 1 (RLIMIT_CPU counts whole seconds)")
        if self.memory_mb < 64:
            raise ConfigError(f"SandboxLimits.memory_mb={self.memory_mb!r} must be >= 64 (Python needs ~30 MiB)")
        if self.max_open_files < 8:
            raise ConfigError(f"SandboxLimits.max_open_files={self.max_open_files!r} must be >= 8")


@dataclass(frozen=True)
class SandboxResult:
    """One execution.

    Attributes:
        stdout, stderr: the program's output (UTF-8, undecodable bytes replaced), at most ``output_bytes`` together.
        exit_code: the exit status; negative for a signal (``-9`` killed); ``None`` when the program never ran.
        wall_s: wall-clock seconds from start to the end of the program's output.
        cpu_s: user + system CPU seconds of the program and the children it waited for.
        limit: the limit hit (one of :data:`LIMITS`) or ``None``.
        isolation: ``"bwrap"`` (namespaces) or ``"rlimits"`` (the fallback, see docs/tasks.md).
        truncated: the output was cut at ``output_bytes``.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    wall_s: float
    cpu_s: float
    limit: str | None
    isolation: str
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """The program exited with status 0 and hit no limit."""
        return self.exit_code == 0 and self.limit is None


# Python's last traceback line (or the C library's message) for a failed system call on each limit.
_STDERR_LIMITS = (
    ("memory", re.compile(r"^MemoryError\b|\[Errno 12\]|Cannot allocate memory", re.MULTILINE)),
    ("file_size", re.compile(r"\[Errno 27\]|File too large")),
    ("disk", re.compile(r"\[Errno 28\]|No space left on device")),
    ("processes", re.compile(r"\[Errno 11\] Resource temporarily unavailable|can't start new thread")),
    ("open_files", re.compile(r"\[Errno 24\]|Too many open files")),
)
PROCESS_LIMIT = _STDERR_LIMITS[3][1]
"""stderr text of a failed fork/spawn/thread start on ``RLIMIT_NPROC`` (the parent kills the program on it)."""


def classify_exit(exit_code: int, cpu_s: float, stderr: str, limits: SandboxLimits) -> str | None:
    """The limit a program that ended on its own hit: SIGXCPU (or SIGKILL after its CPU time reached
    ``cpu_s``) is ``cpu``, SIGXFSZ ``file_size``; a non-zero exit whose stderr shows the failed system call of a
    limit (``MemoryError``, errno 27/28/11/24) is that limit; otherwise ``None``."""
    if exit_code == -signal.SIGXCPU or (exit_code == -signal.SIGKILL and cpu_s >= limits.cpu_s - 0.05):
        return "cpu"
    if exit_code == -signal.SIGXFSZ:
        return "file_size"
    if exit_code != 0:
        tail = stderr[-4000:]
        for name, pattern in _STDERR_LIMITS:
            if pattern.search(tail):
                return name
    return None


def default_workers() -> int:
    """Parallel executions by default: the CPU cores this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
