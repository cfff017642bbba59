"""PPO under 2-process DDP on CPU: both ranks train and stay identical (policy and value head gradients synced)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


def test_ppo_two_process_ddp(tmp_path, tiny_model_path):
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/multi_gpu.yaml",
         "tests/scripts/ppo_ddp.py", str(tiny_model_path), str(tmp_path / "out")]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]
    rows = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in rows) == [0, 1]
    a, b = rows
    assert a["world"] == b["world"] == 2 and a["type"] == "MULTI_CPU" and a["wrapper"] == "DistributedDataParallel"
    assert a["head0"] == b["head0"] and a["policy0"] == b["policy0"]
    assert a["head"] != a["head0"] and a["policy"] != a["policy0"]  # both parts trained
    # gradients are all-reduced: the replicas end identical although each rank saw different completions
    assert a["head"] == pytest.approx(b["head"], rel=1e-6) and a["policy"] == pytest.approx(b["policy"], rel=1e-6)
    assert a["vf_loss"] == b["vf_loss"]  # logged metrics are gathered across ranks
