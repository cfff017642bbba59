"""Multi-process runs of the SFT recipe on CPU: DDP (gloo) and DeepSpeed ZeRO-2 match one process.

Two processes with per-device batch 2 see the same global batch of 4 as one process with batch 4 (the
seeded sampler gives the same order and accelerate hands batch i to process i mod 2), and TRL's SFT loss
is normalised by the token count gathered across processes, so the logged losses and the trained adapter
must agree up to float summation order. LoRA dropout is off so that no per-rank randomness enters.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from tests.conftest import REPO, run_script
from trl_ext.common.loss_log import read_loss_log

TINY = str(REPO / "recipes/configs/sft_affine_tiny.yaml")
COMMON = ("--config", TINY, "--num_samples", "120", "--max_steps", "6", "--logging_steps", "1",
          "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
          "--heldout_samples", "0", "--lora_dropout", "0.0", "--warmup_steps", "0")  # fmt: skip

pytestmark = pytest.mark.slow


def _losses(out):
    _, rows = read_loss_log(out / "loss_log.csv")
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, tiny_model_path):
    tmp = tmp_path_factory.mktemp("dist")
    out = tmp / "single"
    proc = run_script(
        ["recipes/sft_affine.py", *COMMON, "--data_dir", str(tmp / "data"), "--output_dir", str(out),
         "--per_device_train_batch_size", "4"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[trl_ext] launch: NO x 1 process on cpu" in proc.stdout
    return tmp, out


def _launch(tmp, config: str, name: str):
    out = tmp / name
    proc = run_script(
        ["-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}",
         "recipes/sft_affine.py", *COMMON, "--data_dir", str(tmp / "data"), "--output_dir", str(out),
         "--per_device_train_batch_size", "2"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out, proc


def _assert_same_training(a, b, rel):
    la, lb = _losses(a), _losses(b)
    assert len(la) == len(lb) == 6
    assert lb == pytest.approx(la, rel=rel)
    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max().item() <= rel * max(1.0, wa[key].abs().max().item()), key


def test_ddp_two_processes_match_one(single_process):
    tmp, single = single_process
    out, proc = _launch(tmp, "multi_gpu.yaml", "ddp")
    assert "[trl_ext] launch: MULTI_CPU x 2 processes" in proc.stdout
    _assert_same_training(single, out, rel=1e-4)


def test_deepspeed_zero2_two_processes_match_one(single_process):
    tmp, single = single_process
    out, proc = _launch(tmp, "deepspeed_zero2.yaml", "zero2")
    assert "[trl_ext] launch: DEEPSPEED (ZeRO-2) x 2 processes" in proc.stdout
    _assert_same_training(single, out, rel=1e-3)
