"""Run untrusted Python programs, many at once, each isolated and limited (docs/tasks.md, "Sandbox").

:class:`Sandbox` runs a program (``main.py`` plus optional extra files, with a stdin) and returns a
:class:`~trl_ext.tasks.sandbox.limits.SandboxResult`. :meth:`Sandbox.run_many` runs a batch on a pool of
``workers`` threads, each driving one child process, so a PPO reward over a generation batch is one call that
takes about ``ceil(batch / workers)`` program runs and never more than ``ceil(batch / workers) · wall_s``.

One execution: the program files go to a fresh read-only folder; the child starts in a session of its own with
the command of :class:`~trl_ext.tasks.sandbox.isolation.Isolation`; its stdout and stderr are read as they come
(at most ``output_bytes`` kept); it is killed — its process group, and under bubblewrap its whole PID namespace —
at the wall-clock limit, when its output passes the limit, or when it reports the process limit. The exit status
and CPU time come from ``wait4`` of the child.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from trl_ext.common.errors import ConfigError, InputTypeError
from trl_ext.tasks.sandbox.isolation import MAX_SLOTS, Isolation, detect_isolation, run_folders
from trl_ext.tasks.sandbox.limits import PROCESS_LIMIT, SandboxLimits, SandboxResult, classify_exit, default_workers

__all__ = ["Execution", "Sandbox"]

_POLL_S = 0.05
"""How often a child that has closed no pipe is checked for having exited (its children may hold the pipes)."""


@dataclass(frozen=True)
class Execution:
    """One program run: ``program`` (the text of ``main.py``), its ``stdin``, and extra read-only ``files``
    (name -> text) next to it, which ``main.py`` finds at ``os.path.dirname(__file__)``."""

    program: str
    stdin: str = ""
    files: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.program, str):
            raise InputTypeError(f"Execution.program must be a string, got {type(self.program).__name__}")
        if not isinstance(self.stdin, str):
            raise InputTypeError(f"Execution.stdin must be a string, got {type(self.stdin).__name__}")
        for name, text in self.files.items():
            if not isinstance(name, str) or not name or "/" in name or name in (".", "..", "main.py", "stdin"):
                raise ConfigError(f"Execution.files: invalid file name {name!r} (a plain name other than main.py)")
            if not isinstance(text, str):
                raise InputTypeError(f"Execution.files[{name!r}] must be a string, got {type(text).__name__}")


class Sandbox:
    """Runs untrusted Python programs isolated (bubblewrap) and limited (:class:`SandboxLimits`).

    Args:
        limits: the per-execution limits (default: SPEC §6's).
        workers: executions at once in :meth:`run_many` (default: the cores this process may use; at most 64).
        isolation: ``"auto"`` (bubblewrap when it works, else rlimits with a one-time warning), ``"required"``
            (bubblewrap or :class:`~trl_ext.tasks.sandbox.isolation.SandboxUnavailableError`) or ``"none"``.
        python: the interpreter for the programs (default: this one's, resolved; run with ``-I -S``: the
            standard library only, no site-packages, no environment variables).
        progress: show a progress bar in :meth:`run_many` for batches larger than ``workers``.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        workers: int | None = None,
        isolation: str = "auto",
        python: str | None = None,
        progress: bool = False,
    ) -> None:
        if limits is not None and not isinstance(limits, SandboxLimits):
            raise InputTypeError(f"limits must be a SandboxLimits, got {type(limits).__name__}")
        workers = default_workers() if workers is None else workers
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_SLOTS:
            raise ConfigError(f"workers={workers!r} must be an int in [1, {MAX_SLOTS}]")
        self.limits = limits or SandboxLimits()
        self.workers = workers
        self.progress = progress
        self.isolation: Isolation = detect_isolation(isolation, python)
        self._slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(workers):
            self._slots.put(slot)
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"Sandbox(isolation={self.isolation.kind!r}, workers={self.workers}, limits={self.limits})"

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker threads (a later call starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def run(self, program: str | Execution, stdin: str = "") -> SandboxResult:
        """Run one program (a string: the text of ``main.py``) with ``stdin``."""
        execution = program if isinstance(program, Execution) else Execution(program, stdin)
        return self._run_one(execution)

    def run_many(self, executions: Iterable[Execution | tuple[str, str] | str]) -> list[SandboxResult]:
        """Run every execution (an :class:`Execution`, a ``(program, stdin)`` pair or a program), ``workers`` at
        once; the results in the order given."""
        batch = [_as_execution(i, e) for i, e in enumerate(executions)]
        if len(batch) <= 1 or self.workers == 1:
            return [self._run_one(e) for e in batch]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="trl_ext_sandbox")
        futures = [self._pool.submit(self._run_one, e) for e in batch]
        show = self.progress and len(batch) > self.workers
        return [f.result() for f in tqdm(futures, desc="sandbox", disable=not show, leave=False)]

    def _run_one(self, execution: Execution) -> SandboxResult:
        slot = self._slots.get()
        try:
            return self._execute(execution, slot)
        finally:
            self._slots.put(slot)

    def _execute(self, execution: Execution, slot: int) -> SandboxResult:
        iso, limits = self.isolation, self.limits
        files = {"main.py": execution.program, **execution.files, "stdin": execution.stdin}
        with run_folders(iso, files, slot) as (program_dir, work_dir):
            argv, env, cwd = iso.command(limits, program_dir, work_dir, slot)
            return _supervise(argv, env, cwd, Path(program_dir, "stdin"), limits, iso, iso.uid(slot))


def _as_execution(index: int, item: Execution | tuple[str, str] | str) -> Execution:
    if isinstance(item, Execution):
        return item
    if isinstance(item, str):
        return Execution(item)
    if isinstance(item, Sequence) and len(item) == 2:
        return Execution(item[0], item[1])
    raise InputTypeError(
        f"execution {index}: expected an Execution, a (program, stdin) pair or a program string, got {item!r:.80}"
    )


def _supervise(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    stdin_path: Path,
    limits: SandboxLimits,
    iso: Isolation,
    uid: int | None,
) -> SandboxResult:
    """Start the child, read its output under the limits, kill it on one, and collect its status."""
    start = time.monotonic()
    with open(stdin_path, "rb") as stdin:
        proc = subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    streams = {out_fd: bytearray(), err_fd: bytearray()}
    selector = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    leftovers = uid if iso.kind != "bwrap" else None  # under bwrap the PID namespace ends with the child
    deadline = start + limits.wall_s
    total, limit, truncated, killed = 0, None, False, False

    def kill() -> None:
        nonlocal killed
        killed = True
        _kill_tree(proc.pid, leftovers)

    try:
        while selector.get_map() and not killed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                limit = "wall"
                kill()
                break
            events = selector.select(min(remaining, _POLL_S))
            for key, _ in events:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                streams[key.fd] += chunk[: max(0, limits.output_bytes - total)]
                total += len(chunk)
                if total > limits.output_bytes:
                    limit, truncated = "output", True
                    kill()
                    break
                if key.fd == err_fd and PROCESS_LIMIT.search(streams[err_fd][-2000:].decode("utf-8", "replace")):
                    limit = "processes"
                    kill()
                    break
            if not events and _has_exited(proc.pid):
                kill()  # the child is gone but something it started holds the pipes
    finally:
        selector.close()
        proc.stdout.close()
        proc.stderr.close()
        # Wait for the exit without reaping, so that the child's pid (its process group id) cannot be reused
        # before the group is killed; then reap it and read its CPU time.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        _kill_tree(proc.pid, leftovers)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    exit_code = proc.returncode
    if iso.kind == "bwrap" and 128 < exit_code <= 128 + 64:
        exit_code = 128 - exit_code  # bwrap reports a program killed by signal N as status 128 + N
    wall = time.monotonic() - start
    cpu = usage.ru_utime + usage.ru_stime
    stdout = bytes(streams[out_fd]).decode("utf-8", "replace")
    stderr = bytes(streams[err_fd]).decode("utf-8", "replace")
    if limit is None:
        limit = classify_exit(exit_code, cpu, stderr, limits)
    return SandboxResult(stdout, stderr, exit_code, wall, cpu, limit, iso.kind, truncated)


def _has_exited(pid: int) -> bool:
    """Whether the child has exited (without reaping it)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_tree(pid: int, uid: int | None) -> None:
    """SIGKILL the child's process group and, given the execution's own user id ``uid``, every process of it.
    (Under bubblewrap killing the child ends its PID namespace, so nothing it started survives.)"""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    continue
