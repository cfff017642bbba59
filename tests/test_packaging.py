"""Packaging: ``import trl_ext`` stays light and offline, the public API resolves, and the built wheel and sdist
are well-formed and install into a fresh virtual environment."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
VERSION = PROJECT["version"]
DIST_NAME = "trl_ext"  # normalised distribution name used in wheel/sdist file names
CONSOLE_SCRIPT = "trl-ext-tiny-model"
CONSOLE_TARGET = "trl_ext.models.tiny_model:main"

# Top-level packages that ``import trl_ext`` must not load (the first six are the contract; the rest are
# other heavy dependencies that have no business being imported by the package's __init__ either).
HEAVY_MODULES = (
    "torch",
    "transformers",
    "trl",
    "datasets",
    "sentence_transformers",
    "sklearn",
    "peft",
    "accelerate",
    "deepspeed",
    "huggingface_hub",
    "scipy",
    "pandas",
    "matplotlib",
    "wandb",
    "bitsandbytes",
)

# Copied into the build tree: everything of a fresh checkout, none of the local state.
_TOP_LEVEL_IGNORES = {
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "outputs",
    "data",
    "wandb",
    "runs",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
}


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _fail_msg(what: str, proc: subprocess.CompletedProcess) -> str:
    return f"{what} failed (exit {proc.returncode})\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def _repo_env() -> dict[str, str]:
    """Environment for a subprocess that imports the working-tree ``trl_ext``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    return env


def _run_repo_python(code: str, timeout: float = 300) -> dict:
    """Run ``code`` with this interpreter against the working tree; it must print one JSON object last."""
    proc = _run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=_repo_env(), timeout=timeout)
    assert proc.returncode == 0, _fail_msg("subprocess", proc)
    lines = proc.stdout.strip().splitlines()
    assert lines, _fail_msg("subprocess printed nothing;", proc)
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------------------------
# import trl_ext is light and offline
# --------------------------------------------------------------------------------------------------------------

_LIGHT_IMPORT_SCRIPT = """
import json
import sys
import threading

events = []


def _audit(event, args):
    # every socket operation raises an audit event at C level (socket.__new__, socket.connect,
    # socket.getaddrinfo, socket.gethostbyname, ...), so nothing can slip past a Python-level patch
    if event.startswith("socket."):
        events.append(event)
        raise RuntimeError(f"network access during import trl_ext: {event}")


sys.addaudithook(_audit)
before = set(sys.modules)
threads_before = threading.active_count()

import trl_ext

loaded = sorted(set(sys.modules) - before)
socket_events = list(events)
threads_after = threading.active_count()

# self-check: the hook really sees a connection attempt
import socket

try:
    socket.create_connection(("127.0.0.1", 9), timeout=0.1)
except Exception:
    pass
print(
    json.dumps(
        {
            "loaded": loaded,
            "socket_events": socket_events,
            "self_check_events": events[len(socket_events):],
            "threads_before": threads_before,
            "threads_after": threads_after,
            "version": trl_ext.__version__,
            "file": trl_ext.__file__,
        }
    )
)
"""


@pytest.fixture(scope="module")
def light_import() -> dict:
    return _run_repo_python(_LIGHT_IMPORT_SCRIPT, timeout=120)


def test_import_is_from_working_tree(light_import):
    assert Path(light_import["file"]).resolve() == (REPO / "trl_ext" / "__init__.py").resolve()


def test_import_loads_no_heavy_modules(light_import):
    heavy = sorted({m.split(".")[0] for m in light_import["loaded"]} & set(HEAVY_MODULES))
    assert not heavy, f"`import trl_ext` imported heavy packages: {heavy}"


def test_import_opens_no_socket(light_import):
    assert light_import["self_check_events"], "the socket audit hook did not fire on a test connection"
    assert light_import["socket_events"] == [], (
        f"`import trl_ext` touched the network: {light_import['socket_events']}"
    )


def test_import_starts_no_threads(light_import):
    assert light_import["threads_after"] == light_import["threads_before"]


def test_version_matches_pyproject(light_import):
    assert light_import["version"] == VERSION


def test_public_api_resolves():
    result = _run_repo_python(
        """
        import json
        import trl_ext

        names = list(trl_ext.__all__)
        resolved, modules = {}, {}
        for name in names:
            obj = getattr(trl_ext, name)
            resolved[name] = obj is not None
            modules[name] = getattr(obj, "__module__", None)
        star = {}
        exec("from trl_ext import *", star)
        try:
            trl_ext.no_such_name_for_sure
            unknown = "no error"
        except AttributeError:
            unknown = "AttributeError"
        print(json.dumps({
            "names": names,
            "resolved": resolved,
            "modules": modules,
            "star": sorted(k for k in star if k != "__builtins__"),
            "dir": sorted(dir(trl_ext)),
            "unknown": unknown,
        }))
        """
    )
    names = result["names"]
    assert names, "trl_ext.__all__ is empty"
    assert len(names) == len(set(names)), f"duplicates in __all__: {names}"
    assert "__version__" in names
    unresolved = [n for n, ok in result["resolved"].items() if not ok]
    assert not unresolved, f"names in __all__ resolve to None: {unresolved}"
    for name, module in result["modules"].items():
        if name != "__version__":
            assert module and module.startswith("trl_ext."), f"trl_ext.{name} comes from {module!r}"
    assert result["star"] == sorted(names)
    assert set(names) <= set(result["dir"])
    assert result["unknown"] == "AttributeError"


# --------------------------------------------------------------------------------------------------------------
# wheel + sdist build, metadata, install into a fresh venv
# --------------------------------------------------------------------------------------------------------------


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n == "__pycache__" or n.endswith((".egg-info", ".pyc"))}
    if Path(directory).resolve() == REPO:
        ignored |= {n for n in names if n in _TOP_LEVEL_IGNORES}
    return ignored


def _source_package_files() -> set[str]:
    """Every module and marker file of the package in the working tree, as archive-relative paths."""
    files = {p.relative_to(REPO).as_posix() for p in (REPO / "trl_ext").rglob("*.py") if "__pycache__" not in p.parts}
    files.add("trl_ext/py.typed")
    files |= {p.relative_to(REPO).as_posix() for p in (REPO / "trl_ext").rglob("*.jsonl")}  # package data
    return files


def _build_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return env


@pytest.fixture(scope="module")
def built_dists(tmp_path_factory) -> tuple[Path, Path]:
    """Build sdist + wheel (the wheel from the sdist, as ``python -m build`` does) from a clean copy of the repo."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_copy_ignore, symlinks=True)
    out = root / "dist"
    cmd = [sys.executable, "-m", "build", "--outdir", str(out)]
    if shutil.which("uv"):
        cmd += ["--installer", "uv"]  # same isolated build, ~4x faster than pip
    cmd.append(str(src))
    proc = _run(cmd, cwd=root, env=_build_env(), timeout=300)
    assert proc.returncode == 0, _fail_msg("python -m build", proc)
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"{DIST_NAME}-{VERSION}-py3-none-any.whl"], proc.stdout[-2000:]
    assert [s.name for s in sdists] == [f"{DIST_NAME}-{VERSION}.tar.gz"], proc.stdout[-2000:]
    return wheels[0], sdists[0]


@pytest.mark.slow
def test_twine_check(built_dists):
    wheel, sdist = built_dists
    proc = _run([sys.executable, "-m", "twine", "check", str(wheel), str(sdist)], cwd=wheel.parent)
    assert proc.returncode == 0, _fail_msg("twine check", proc)
    assert proc.stdout.count("PASSED") == 2, _fail_msg("twine check", proc)


@pytest.mark.slow
def test_wheel_contents_and_metadata(built_dists):
    wheel, _ = built_dists
    dist_info = f"{DIST_NAME}-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
        ep_name = f"{dist_info}/entry_points.txt"
        entry_points = zf.read(ep_name).decode() if ep_name in names else ""
        top_level = zf.read(f"{dist_info}/top_level.txt").decode().split()

    for required in (
        "trl_ext/py.typed",
        "trl_ext/tasks/sat.py",
        "trl_ext/models/tiny_model.py",
        "trl_ext/tasks/data/program_set.jsonl",
    ):
        assert required in names, f"{required} missing from the wheel"
    missing = sorted(_source_package_files() - names)
    assert not missing, f"package files missing from the wheel: {missing}"
    stray = sorted(n for n in names if not (n.startswith("trl_ext/") or n.startswith(f"{dist_info}/")))
    assert not stray, f"files outside the package in the wheel (tests, recipes, ...): {stray}"
    junk = sorted(n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo")))
    assert not junk, f"bytecode in the wheel: {junk}"
    assert top_level == ["trl_ext"]

    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # keep script names as written
    parser.read_string(entry_points)
    assert parser.get("console_scripts", CONSOLE_SCRIPT, fallback=None) == CONSOLE_TARGET, entry_points

    assert canonicalize_name(metadata["Name"]) == canonicalize_name(PROJECT["name"])
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == PROJECT["requires-python"]
    requires = [r.strip() for r in metadata.get_all("Requires-Dist") or []]
    trl = [Requirement(r) for r in requires if Requirement(r).name == "trl" and Requirement(r).marker is None]
    assert len(trl) == 1 and not trl[0].specifier.contains("1.15.99"), f"trl floor must be >= 1.16: {requires}"
    assert trl[0].specifier.contains("1.16.0") and not trl[0].specifier.contains("2.0.0"), requires
    core = {str(Requirement(r)) for r in requires if "extra" not in str(Requirement(r).marker or "")}
    missing_deps = sorted({str(Requirement(d)) for d in PROJECT["dependencies"]} - core)
    assert not missing_deps, f"dependencies from pyproject.toml missing in METADATA: {missing_deps}"
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert set(PROJECT.get("optional-dependencies", {})) <= extras, extras


@pytest.mark.slow
def test_sdist_contents(built_dists):
    _, sdist = built_dists
    prefix = f"{DIST_NAME}-{VERSION}/"
    with tarfile.open(sdist) as tf:
        names = {m.name for m in tf.getmembers() if m.isfile()}
    rel = {n[len(prefix) :] for n in names if n.startswith(prefix)}
    assert rel and len(rel) == len(names), (
        f"sdist members outside {prefix}: {sorted(names - {prefix + r for r in rel})}"
    )
    for required in ("pyproject.toml", "PKG-INFO"):
        assert required in rel, f"{required} missing from the sdist"
    missing = sorted(_source_package_files() - rel)
    assert not missing, f"package files missing from the sdist: {missing}"
    readme = PROJECT.get("readme")
    readme = readme.get("file") if isinstance(readme, dict) else readme
    if readme and (REPO / readme).is_file():  # declared and present in the tree -> must ship
        assert readme in rel, f"{readme} missing from the sdist"


def _copy_distribution(name: str, python: Path) -> None:
    """Copy an installed distribution (its files and dist-info) of this interpreter into ``python``'s venv."""
    from importlib.metadata import distribution

    proc = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=REPO)
    assert proc.returncode == 0, _fail_msg("locating the venv's site-packages", proc)
    target = Path(proc.stdout.strip())
    dist = distribution(name)
    for file in dist.files or []:
        source = Path(dist.locate_file(file))
        if source.is_file() and not str(file).startswith(".."):
            (target / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / file)


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(built_dists, tmp_path):
    wheel, _ = built_dists
    venv = tmp_path / "venv"
    env = _build_env()
    uv = shutil.which("uv")
    if uv:
        proc = _run([uv, "venv", "--python", sys.executable, str(venv)], cwd=tmp_path, env=env)
        assert proc.returncode == 0, _fail_msg("uv venv", proc)
        python = venv / "bin" / "python"
        install = [uv, "pip", "install", "--python", str(python), "--no-deps", "--offline", str(wheel)]
    else:  # ensurepip is offline; --no-index keeps pip from looking anything up
        proc = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=env)
        assert proc.returncode == 0, _fail_msg("python -m venv", proc)
        python = venv / "bin" / "python"
        install = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)]
    proc = _run(install, cwd=tmp_path, env=env)
    assert proc.returncode == 0, _fail_msg("installing the wheel", proc)
    _copy_distribution("lazy_loader", python)  # the one dependency `import trl_ext` needs

    # -I: ignore PYTHON* variables and the user site, so only the venv's site-packages can provide trl_ext
    proc = _run(
        [str(python), "-I", "-c", "import trl_ext, sys; print(trl_ext.__version__); print(trl_ext.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, _fail_msg("import trl_ext in the fresh venv", proc)
    version, location = proc.stdout.split()
    assert version == VERSION
    assert Path(location).resolve().is_relative_to(venv.resolve()), f"trl_ext imported from {location}"
    assert (Path(location).parent / "py.typed").is_file()

    script = venv / "bin" / CONSOLE_SCRIPT
    assert script.is_file(), f"console script {CONSOLE_SCRIPT} not installed"
    assert "trl_ext.models.tiny_model" in script.read_text(encoding="utf-8")
