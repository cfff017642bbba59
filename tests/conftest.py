"""Test set-up: offline, few threads, one tiny model shared by the session, and the seeds of the empirical tests.

Empirical tests (marker ``empirical``) assert the outcome of training runs. Each takes the fixture argument
``empirical_seed`` and runs once per seed of ``TRL_EXT_EMPIRICAL_SEEDS`` (default ``0``; a list such as ``0,1,2`` or
a range such as ``0-9``), so the robustness of a claim can be checked over many seeds before it is added::

    TRL_EXT_EMPIRICAL_SEEDS=0-9 .venv/bin/python -m pytest -m empirical
"""

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
EMPIRICAL_SEEDS_VAR = "TRL_EXT_EMPIRICAL_SEEDS"


def empirical_seeds(value: str | None = None) -> list[int]:
    """The seeds of ``TRL_EXT_EMPIRICAL_SEEDS``: ``"0"`` (default), ``"0,3,7"``, ``"0-4"`` or a mix (``"0-2,9"``)."""
    text = os.environ.get(EMPIRICAL_SEEDS_VAR, "0") if value is None else value
    seeds: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            seeds.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise pytest.UsageError(
            f"{EMPIRICAL_SEEDS_VAR}={text!r}: expected seeds such as '0', '0,1,2' or '0-4'"
        ) from None
    if not seeds:
        raise pytest.UsageError(f"{EMPIRICAL_SEEDS_VAR}={text!r} names no seed")
    return list(dict.fromkeys(seeds))


def pytest_generate_tests(metafunc):
    if "empirical_seed" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("empirical") is None:
            raise pytest.UsageError(f"{metafunc.definition.nodeid} takes empirical_seed: mark it empirical")
        seeds = empirical_seeds()
        metafunc.parametrize("empirical_seed", seeds, ids=[f"seed{s}" for s in seeds], scope="module")


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


LAUNCH = ["-m", "accelerate.commands.launch"]


def launch_port() -> int | None:
    """The rendezvous port of this pytest-xdist worker's ``accelerate launch`` runs (``gwN``: 29600 + N), so that
    workers running multi-process tests side by side never race for accelerate's default 29500; ``None`` outside
    xdist (the default port)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return 29600 + int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def run_script(args: list[str], cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run a python script or module in a subprocess with the test environment; returns CompletedProcess.

    ``accelerate launch`` commands (``args`` starting with ``-m accelerate.commands.launch``) get this worker's
    ``--main_process_port`` (:func:`launch_port`) unless they name one."""
    port = launch_port()
    if args[:2] == LAUNCH and port is not None and "--main_process_port" not in args:
        args = [*LAUNCH, "--main_process_port", str(port), *args[2:]]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_bench_quick(tmp_path_factory, script: str, *flags: str) -> tuple[dict, str]:
    """Run ``bench/<script>.py --quick --json`` (plus ``flags``) in a subprocess; ``(its JSON, its stdout)``."""
    import json

    out = tmp_path_factory.mktemp(script) / "quick.json"
    proc = run_script([str(REPO / "bench" / f"{script}.py"), "--quick", *flags, "--json", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def finite_positive(value: object) -> bool:
    """A finite number > 0 (the sanity check of a benchmark figure)."""
    import math

    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` as a module (registered in ``sys.modules`` for its dataclasses)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def conversation_rows(n: int, prompt: str, answer: str):
    """``n`` conversational prompt-completion rows; ``{}`` in ``prompt`` and ``answer`` is the row index."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": prompt.format(i)}],
                "completion": [{"role": "assistant", "content": answer.format(i)}],
            }
            for i in range(n)
        ]
    )


def small_lora():
    """The tests' LoRA adapter: r 8, alpha 16, no dropout, on q_proj and v_proj."""
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


class GradTap:
    """Record the gradient right before and right after a selective trainer's gradient surgery."""

    def __init__(self, trainer):
        self.before, self.after = [], []
        original = trainer._apply_surgery

        def tapped():
            fresh = trainer._surgery_step != trainer.state.global_step
            if fresh:
                self.before.append({n: g.clone() for n, g in trainer.current_gradients().items()})
            original()
            if fresh:
                self.after.append({n: g.clone() for n, g in trainer.current_gradients().items()})

        trainer._apply_surgery = tapped


def proxy_grad_independent(trainer, source: str = "positive") -> dict:
    """∇CE on the proxy batch a selective trainer's surgery used, recomputed from scratch with torch.autograd.grad."""
    import torch

    from trl_ext.selective.mechanisms import _ce_from_logits

    batch = trainer._step_batches[source]
    params = trainer.trainable_parameters()
    model = trainer.accelerator.unwrap_model(trainer.model)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    grads = torch.autograd.grad(_ce_from_logits(logits, batch["labels"]), list(params.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for (n, p), g in zip(params.items(), grads)}
