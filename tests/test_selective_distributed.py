"""grad_project under 2-process DDP with gradient accumulation.

Projecting after the all-reduce keeps the replicas equal.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


def test_grad_project_two_process_ddp(tmp_path, tiny_model_path):
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/multi_gpu.yaml",
         "tests/scripts/selective_ddp.py", str(tiny_model_path), str(tmp_path)]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == 2 and a["type"] == "MULTI_CPU"
    assert a["after"] != a["before"]
    # the outcome gradient is all-reduced by DDP and the proxy gradient explicitly, so both ranks project the same
    # gradient the same way: a per-rank proxy gradient would make the replicas drift apart
    assert a["after"] == pytest.approx(b["after"], rel=1e-9)
    assert len(a["cosine_after"]) == 4 and all(abs(c) < 1e-4 for c in a["cosine_after"])
