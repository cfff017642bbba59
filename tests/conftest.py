"""Test set-up: offline, few threads, and one tiny model shared by the session."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:  # pure-python test modules still run
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trl_ext_cache(tmp_path_factory) -> Path:
    """A cache folder for the embedded tiny model, private to this test session (also for subprocesses)."""
    path = tmp_path_factory.mktemp("trl_ext_cache")
    os.environ["TRL_EXT_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(trl_ext_cache) -> Path:
    from trl_ext.models import get_tiny_model_path

    return get_tiny_model_path()


def run_script(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run a python script or module in a subprocess with the test environment; returns CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` as a module (registered in ``sys.modules`` for its dataclasses)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
