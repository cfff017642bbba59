"""The code base is ruff clean (lint and format), so CI catches style drift like any other failure."""

from __future__ import annotations

import shutil
import subprocess
import sys

from tests.conftest import REPO


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(REPO / ".venv" / "bin")) or shutil.which("ruff")
    return [exe] if exe else [sys.executable, "-m", "ruff"]


def test_ruff_check():
    proc = subprocess.run([*_ruff(), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = subprocess.run([*_ruff(), "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
