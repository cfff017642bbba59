"""LatentCommTrainer under 2-process DDP (gloo on CPU): negatives come from the other process, and the training
equals one process with the global batch (the counts are gathered, the negatives drawn from the gathered batch with
noise seeded per global row)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_script

pytestmark = pytest.mark.slow


def test_ddp_negatives_from_the_other_process_and_training_equals_one_process(tmp_path, tiny_model_path):
    one = tmp_path / "one"
    proc = run_script(["tests/scripts/latent_ddp.py", str(tiny_model_path), str(one), "4"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = tmp_path / "two"
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/multi_gpu.yaml",
         "tests/scripts/latent_ddp.py", str(tiny_model_path), str(two), "2"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    single = json.loads((one / "rank0.json").read_text())
    r0, r1 = (json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["type"] == "MULTI_CPU"
    # one process with a batch of one has no negative; under DDP each rank's comes from the other rank
    assert single["sources"] == [None] * 4
    assert r0["sources"] == [1] * 4 and r1["sources"] == [0] * 4
    # the same losses and the same adapter as one process with the global batch
    assert len(single["logs"]) == len(r0["logs"]) == 3
    # (the per-term metrics are per-process means averaged over the processes; the loss is the global one)
    assert [b["loss"] for b in r0["logs"]] == pytest.approx([a["loss"] for a in single["logs"]], rel=1e-5)
    assert all(b["loss/random_contrast"] > 0 and b["loss/plan_similarity"] > 0 for b in r0["logs"])
    assert r0["adapter"] == r1["adapter"]
    for key, values in single["adapter"].items():
        assert r0["adapter"][key] == pytest.approx(values, rel=1e-4, abs=1e-6), key
