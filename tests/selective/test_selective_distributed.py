"""grad_project under 2-process DDP with gradient accumulation, on the SFT and the DPO host.

Projecting after the all-reduce keeps the replicas equal.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("host, steps", [("sft", 4), ("dpo", 2)])
def test_grad_project_two_process_ddp(tmp_path, tiny_model_path, host, steps):
    """SFT (full fine-tune) and DPO (full fine-tune with DPO's reference model), GA 2: the projection sees the
    all-reduced gradient, so the replicas stay equal and the applied gradient is orthogonal to the proxy one."""
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/multi_gpu.yaml",
         "tests/scripts/selective_ddp.py", str(tiny_model_path), str(tmp_path), host]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a["world"] == 2 and a["type"] == "MULTI_CPU"
    assert a["after"] != a["before"]
    # the outcome gradient is all-reduced by DDP and the proxy gradient explicitly, so both ranks project the same
    # gradient the same way: a per-rank proxy gradient would make the replicas drift apart
    assert a["after"] == pytest.approx(b["after"], rel=1e-9)
    assert len(a["cosine_after"]) == steps and all(abs(c) < 1e-4 for c in a["cosine_after"])
