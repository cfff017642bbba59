"""The locked development environment: the lock covers what pyproject.toml asks for, within its ranges, with hashes,
and scripts/setup.sh and scripts/lock.sh agree on what it holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "dev-lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _pins() -> dict[str, tuple[Version, list[str]]]:
    """``{name: (version, hashes)}`` of the lock (entries are ``name==version \\`` followed by hash lines)."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current = None
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{current} pinned twice"
            pins[current] = (Version(match.group(2)), [])
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current][1].append(line.strip().rstrip("\\").strip())
    return pins


def _setup_extras() -> list[str]:
    text = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    return re.search(r'^EXTRAS="([^"]+)"', text, re.M).group(1).split(",")


def test_every_pin_has_a_sha256_hash():
    pins = _pins()
    assert len(pins) > 50
    for name, (_, hashes) in pins.items():
        assert hashes and all(re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", h) for h in hashes), name


def test_lock_satisfies_every_requirement_of_pyproject():
    """Every dependency, and every requirement of the extras setup.sh installs, is pinned inside its range: a lock
    that pyproject.toml has moved away from fails here (refresh it with scripts/lock.sh)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = _setup_extras()
    assert set(extras) <= set(project["optional-dependencies"]), extras
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins = _pins()
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({text}) is not in {LOCK.name}: run scripts/lock.sh"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{LOCK.name} pins {name}=={pins[name][0]}"


def test_lock_script_resolves_what_setup_installs():
    lock_sh = (REPO / "scripts" / "lock.sh").read_text(encoding="utf-8")
    assert sorted(re.findall(r"--extra (\w+)", lock_sh)) == sorted(_setup_extras())
    torch_pin = (REPO / "requirements" / "torch-cpu.txt").read_text(encoding="utf-8").split()[-1]
    version = Version(torch_pin.split("==")[1])
    assert _pins()["torch"][0] == version
    assert f"torch-{version}-" in (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")


def test_setup_rejects_unknown_arguments():
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), "--lastest"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "unknown argument '--lastest'" in result.stderr


def test_setup_prints_its_usage():
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--latest" in result.stdout and "dev-lock.txt" in result.stdout
