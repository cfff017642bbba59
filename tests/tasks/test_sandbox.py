"""The sandbox (trl_ext.tasks.sandbox): hostile programs are contained and reported with the limit they hit, the
parent and the machine are unaffected; results, batching and the rlimits fallback."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO
from trl_ext.tasks.sandbox import (
    Execution,
    Sandbox,
    SandboxIsolationWarning,
    SandboxLimits,
    SandboxUnavailableError,
    detect_isolation,
)
from trl_ext.tasks.sandbox import isolation as isolation_module

LIMITS = SandboxLimits(wall_s=6.0, cpu_s=1.0, memory_mb=256, output_bytes=100_000, file_size_bytes=2**20,
                       disk_bytes=4 * 2**20, max_processes=16)  # fmt: skip

bwrap_only = pytest.mark.skipif(
    detect_isolation("auto").kind != "bwrap", reason=f"bubblewrap does not work here: {detect_isolation().reason}"
)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(LIMITS, workers=2, isolation="required" if detect_isolation().kind == "bwrap" else "none") as box:
        yield box


def _digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _processes_with(token: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


# ---------------------------------------------------------------- ordinary runs


def test_a_program_reads_stdin_and_reports_its_run(sandbox):
    program = "import sys\ndata = sys.stdin.read()\nprint(data.upper(), end='')\nprint('e', file=sys.stderr)"
    result = sandbox.run(program, "abc\n")
    assert (result.stdout, result.stderr, result.exit_code, result.limit) == ("ABC\n", "e\n", 0, None)
    assert result.ok and result.isolation == sandbox.isolation.kind
    assert 0 < result.wall_s < LIMITS.wall_s and 0 <= result.cpu_s < result.wall_s + 1


def test_exit_status_and_cpu_time_are_the_programs(sandbox):
    assert sandbox.run("import sys; sys.exit(3)").exit_code == 3
    busy = sandbox.run("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass")
    assert busy.ok and busy.cpu_s >= 0.3  # the program's CPU time, not the launcher's


def test_the_working_folder_starts_empty_and_extra_files_sit_beside_main(sandbox):
    program = "import os\nprint(os.listdir('.'))\nprint(open(os.path.join(os.path.dirname(__file__), 'x.txt')).read())"
    result = sandbox.run(Execution(program, files={"x.txt": "extra"}))
    assert result.stdout == "[]\nextra\n", result


def test_run_many_keeps_the_order_and_runs_in_parallel(sandbox):
    results = sandbox.run_many([(f"import time; time.sleep(0.4); print(input() * {i})", "ab\n") for i in range(4)])
    assert [r.stdout for r in results] == [f"{'ab' * i}\n" for i in range(4)]
    assert all(r.ok for r in results)
    start = time.monotonic()
    sandbox.run_many(["import time; time.sleep(0.5)"] * 4)
    assert time.monotonic() - start < 4 * 0.5  # two at a time: about 1 s, not 2


def test_a_strict_umask_does_not_hide_the_program_from_its_own_user(sandbox):
    old = os.umask(0o077)  # files written 0600: unreadable by the execution's user id unless made readable
    try:
        program = "print(open(__file__.replace('main.py', 'x.txt')).read())"
        result = sandbox.run(Execution(program, files={"x.txt": "ok"}))
    finally:
        os.umask(old)
    assert result.ok and result.stdout == "ok\n", result


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="Execution.program"):
        Execution(b"print(1)")
    with pytest.raises(ValueError, match="invalid file name 'main.py'"):
        Execution("print(1)", files={"main.py": ""})
    with pytest.raises(ValueError, match="SandboxLimits.wall_s"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValueError, match="workers=0"):
        Sandbox(workers=0)
    with pytest.raises(ValueError, match="unknown sandbox isolation 'strict'"):
        Sandbox(isolation="strict")
    with pytest.raises(TypeError, match="execution 1"):
        Sandbox(workers=1, isolation="none").run_many(["print(1)", 5])


# ---------------------------------------------------------------- hostile programs


def test_infinite_loop_hits_the_cpu_limit(sandbox):
    result = sandbox.run("while True:\n    pass")
    assert result.limit == "cpu" and not result.ok, result
    assert LIMITS.cpu_s <= result.cpu_s <= LIMITS.cpu_s + 1.5


def test_sleeping_past_the_wall_limit_is_killed(sandbox):
    result = sandbox.run("import time\nprint('start', flush=True)\ntime.sleep(60)")
    assert result.limit == "wall" and result.stdout == "start\n", result
    assert LIMITS.wall_s <= result.wall_s < LIMITS.wall_s + 2


def test_memory_hog_hits_the_memory_limit(sandbox):
    result = sandbox.run("blocks = []\nwhile True:\n    blocks.append(bytearray(16 * 2**20))")
    assert result.limit == "memory" and "MemoryError" in result.stderr, result


def test_huge_output_is_cut_and_killed(sandbox):
    result = sandbox.run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert result.limit == "output" and result.truncated, result.limit
    assert len(result.stdout) + len(result.stderr) <= LIMITS.output_bytes


@bwrap_only
def test_fork_bomb_hits_the_process_limit(sandbox):
    token = f"forkbomb{os.getpid()}"
    result = sandbox.run(f"import os\n# {token}\nwhile True:\n    os.fork()")
    assert result.limit == "processes", result
    time.sleep(0.2)
    assert not _processes_with(token)


def test_big_files_hit_the_file_size_limit(sandbox):
    result = sandbox.run("with open('big', 'wb') as f:\n    f.write(b'x' * (2 * 2**20))")
    assert result.limit == "file_size", result


@bwrap_only
def test_filling_the_working_folder_hits_the_disk_limit(sandbox):
    program = "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 512 * 1024)\n    i += 1"
    result = sandbox.run(program)
    assert result.limit == "disk", result


@bwrap_only
def test_files_outside_the_working_folder_cannot_be_written(sandbox, tmp_path):
    outside = tmp_path / "escaped.txt"
    program = f"""
import os
for path in ({str(outside)!r}, '/usr/escaped.txt', '/program/main.py', '/escaped.txt'):
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as err:
        print('refused', path, type(err).__name__)
open('/tmp/inside.txt', 'w').write('x')  # its own tmpfs, gone afterwards
"""
    result = sandbox.run(program)
    assert result.ok and "WROTE" not in result.stdout and result.stdout.count("refused") == 4, result
    assert not outside.exists() and not Path("/usr/escaped.txt").exists() and not Path("/escaped.txt").exists()
    assert not Path("/tmp/inside.txt").exists()


@bwrap_only
def test_the_parents_environment_and_the_users_home_are_not_visible(sandbox, monkeypatch):
    monkeypatch.setenv("TRL_EXT_TEST_SECRET", "s3cr3t-value")
    home = Path.home()
    secret = home / f".trl_ext_sandbox_probe_{os.getpid()}"
    secret.write_text("home-secret")
    try:
        program = f"""
import os
print(sorted(os.environ))
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            print(pid, open(f'/proc/{{pid}}/environ', 'rb').read())
        except OSError as err:
            print(pid, type(err).__name__)
try:
    print(open({str(secret)!r}).read())
except OSError as err:
    print('secret refused', type(err).__name__)
for path in ({str(home)!r}, {str(REPO)!r}, '/etc'):
    try:
        print(path, os.listdir(path))
    except OSError as err:
        print(path, 'refused', type(err).__name__)
"""
        result = sandbox.run(program)
    finally:
        secret.unlink()
    assert result.ok, result
    assert "s3cr3t-value" not in result.stdout and "TRL_EXT_TEST_SECRET" not in result.stdout
    assert "home-secret" not in result.stdout and "secret refused FileNotFoundError" in result.stdout
    assert result.stdout.splitlines()[0] == str(["HOME", "LANG", "PATH", "PWD", "TMPDIR"])  # PWD: set by bwrap
    for path in (REPO, "/etc"):
        assert f"{path} refused FileNotFoundError" in result.stdout, result.stdout
    # the home folder holds at most the way to the Python installation (when it lives there, as under pyenv)
    prefix = Path(sys.base_prefix).resolve()
    allowed = [prefix.relative_to(home).parts[0]] if prefix.is_relative_to(home) else []
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"{home} "))
    assert line in (f"{home} refused FileNotFoundError", f"{home} {allowed!r}"), line


@bwrap_only
def test_no_connection_reaches_a_listener_on_localhost(sandbox):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(_accept(server)))
    thread.start()
    program = f"""
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')
    print('CONNECTED')
except OSError as err:
    print('refused', type(err).__name__)
"""
    result = sandbox.run(program)
    thread.join()
    server.close()
    assert result.ok and result.stdout.startswith("refused"), result
    assert accepted == [None]


def _accept(server: socket.socket):
    try:
        return server.accept()
    except TimeoutError:
        return None


@bwrap_only
def test_a_child_left_running_dies_with_the_program(sandbox):
    token = f"orphan{os.getpid()}x{time.monotonic_ns()}"
    program = f"""
import subprocess, sys
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', {token!r}], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print('left it running')
"""
    result = sandbox.run(program)
    assert result.ok and result.stdout == "left it running\n", result
    assert result.wall_s < 3
    time.sleep(0.2)
    assert not _processes_with(token)


@bwrap_only
def test_killing_the_parents_process_group_reaches_nothing(sandbox):
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # in this process's group
    try:
        targets = (os.getpgrp(), os.getpid(), sentinel.pid)
        program = f"""
import os, signal
for target in {targets!r}:
    for kill in (os.killpg, os.kill):
        try:
            kill(target, signal.SIGKILL)
        except OSError as err:
            print(kill.__name__, target, type(err).__name__)
try:
    os.kill(-1, signal.SIGKILL)  # every process it may signal
except OSError as err:
    print('all', type(err).__name__)
os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)
print('still here')
"""
        result = sandbox.run(program)
        assert sentinel.poll() is None  # the sentinel in this process's group lives (and so does this process)
        assert result.limit is None, result
    finally:
        sentinel.kill()
        sentinel.wait()


@bwrap_only
def test_the_projects_files_cannot_be_deleted_or_edited(sandbox):
    files = [REPO / "pyproject.toml", REPO / "README.md", REPO / "trl_ext" / "__init__.py"]
    before = _digest(files)
    program = f"""
import os, shutil
for path in {[str(f) for f in files]!r}:
    for action in (lambda p: open(p, 'a').write('x'), os.remove, lambda p: os.rename(p, p + '.moved')):
        try:
            action(path)
            print('DONE', path)
        except OSError as err:
            print('refused', type(err).__name__)
try:
    shutil.rmtree({str(REPO)!r})
except OSError as err:
    print('refused', type(err).__name__)
"""
    result = sandbox.run(program)
    assert result.ok and "DONE" not in result.stdout, result
    assert _digest(files) == before


def test_the_machine_is_unaffected_after_the_hostile_programs(sandbox):
    """After everything above: this process works, and a plain program still runs normally."""
    assert sandbox.run("print(sum(range(10)))").stdout == "45\n"
    assert os.getpgrp() > 0


# ---------------------------------------------------------------- isolation modes


def test_required_isolation_without_bwrap_is_an_error(monkeypatch):
    monkeypatch.setenv(isolation_module.BWRAP_ENV, "/nonexistent/bwrap")
    monkeypatch.setattr(isolation_module, "_CACHE", {})
    with pytest.raises(SandboxUnavailableError, match="bubblewrap cannot isolate programs"):
        Sandbox(isolation="required")


def test_the_fallback_warns_once_naming_what_is_not_isolated(monkeypatch):
    monkeypatch.setenv(isolation_module.BWRAP_ENV, "/nonexistent/bwrap")
    monkeypatch.setattr(isolation_module, "_CACHE", {})
    monkeypatch.setattr(isolation_module, "_WARNED", set())
    with pytest.warns(SandboxIsolationWarning, match="NOT isolated from the network, the filesystem"):
        box = Sandbox(LIMITS, workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sandbox(LIMITS, workers=1)  # once per process
    assert box.isolation.kind == "rlimits"
    result = box.run("import os\nprint(len(os.environ), os.listdir('.'))")
    assert (result.stdout, result.isolation) == ("4 []\n", "rlimits")


def test_the_fallback_still_enforces_the_limits(monkeypatch):
    monkeypatch.setattr(isolation_module, "_CACHE", {})
    box = Sandbox(LIMITS, workers=2, isolation="none")
    results = box.run_many(["while True: pass", "import time; time.sleep(60)", "x = bytearray(2**30)",
                            "import sys\nwhile True: sys.stdout.write('y' * 65536)"])  # fmt: skip
    assert [r.limit for r in results] == ["cpu", "wall", "memory", "output"], results
    token = f"fallbackorphan{os.getpid()}"
    # the process group is killed after the program ends (a child that started a session of its own may not be,
    # unless the execution has a user id of its own: the warning says so)
    sleeper = f"[sys.executable, '-c', 'import time; time.sleep(300)', {token!r}]"
    box.run(f"import subprocess, sys\nsubprocess.Popen({sleeper})")
    time.sleep(0.2)
    assert not _processes_with(token)
    box.close()


def test_signal_deaths_are_negative_exit_codes(sandbox):
    # SIGKILL from the CPU hard limit (a pid-1 program ignores the SIGXCPU warning under bwrap)
    assert sandbox.run("while True: pass").exit_code in (-signal.SIGKILL, -signal.SIGXCPU)


def test_without_prlimit_and_setpriv_a_python_launcher_sets_the_same_limits():
    """Machines without util-linux's prlimit/setpriv: the launcher sets the rlimits (and the user id) itself."""
    import dataclasses

    box = Sandbox(LIMITS, workers=1, isolation="auto")
    expected_uid = box.isolation.uid(0)
    box.isolation = dataclasses.replace(box.isolation, prlimit=None, setpriv=None)
    program = "import os, resource\nprint(os.getuid(), resource.getrlimit(resource.RLIMIT_CPU)[1])"
    result = box.run(program)
    assert result.ok, result
    uid, cpu_hard = result.stdout.split()
    assert int(cpu_hard) == int(LIMITS.cpu_s) + 1
    assert expected_uid is None or int(uid) == expected_uid
    assert box.run("while True:\n    pass").limit == "cpu"
