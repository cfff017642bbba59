"""The README's Python examples run as written: each ```python block is extracted from README.md and executed in a
fresh namespace and an empty folder, on the CPU and offline (the embedded tiny model; issue 14). All blocks run in
one child interpreter (one set of imports), each reported on its own: a block that stops working fails here with
its line number in README.md and its traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

RUNNER = r"""
import json, os, runpy, sys, traceback
blocks, root, out = json.loads(open(sys.argv[1]).read()), sys.argv[2], {}
for line, code in blocks:
    folder = os.path.join(root, f"block_{line}")
    os.makedirs(folder)
    os.chdir(folder)
    path = os.path.join(folder, "example.py")
    open(path, "w").write(code)
    try:
        runpy.run_path(path, run_name="__main__")
        out[str(line)] = None
    except BaseException:
        out[str(line)] = traceback.format_exc()
open(os.path.join(root, "results.json"), "w").write(json.dumps(out))
"""


def _blocks() -> list[tuple[int, str]]:
    text = (REPO / "README.md").read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, trl_ext_cache, tiny_model_path) -> dict[str, str | None]:
    root = tmp_path_factory.mktemp("readme_examples")
    (root / "blocks.json").write_text(json.dumps(_blocks()))
    (root / "runner.py").write_text(RUNNER)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TRL_EXT_CACHE": str(trl_ext_cache),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "WANDB_MODE": "offline",
    }
    proc = subprocess.run(
        [sys.executable, str(root / "runner.py"), str(root / "blocks.json"), str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads((root / "results.json").read_text())


def test_the_readme_has_python_examples():
    assert len(_blocks()) >= 9


@pytest.mark.parametrize("line", [line for line, _ in _blocks()], ids=[f"README.md:{n}" for n, _ in _blocks()])
def test_readme_example_runs_as_written(line, outcomes):
    assert str(line) in outcomes, f"README.md:{line} was not run"
    assert outcomes[str(line)] is None, f"README.md:{line} failed:\n{outcomes[str(line)]}"
