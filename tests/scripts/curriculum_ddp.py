"""Worker for tests/curriculum/test_curriculum_trainer.py: curriculum SFT on the demo, one process or two (DDP).

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml tests/scripts/curriculum_ddp.py MODEL OUT BATCH

Each process writes ``rank<i>.json``: the curriculum history (weights, difficulties) and the logged losses.
Two processes with per-device batch ``BATCH`` see the same global batches as one process with ``2 * BATCH``.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from transformers import AutoTokenizer

from trl_ext import CurriculumSFTConfig, CurriculumSFTTrainer
from trl_ext.common.recipes import cpu_distributed_defaults, teardown_distributed
from trl_ext.curriculum.demo import make_curriculum_demo


def main(model_path: str, output_dir: str, batch: str) -> None:
    torch.set_num_threads(1)
    args = CurriculumSFTConfig(
        output_dir=output_dir, per_device_train_batch_size=int(batch), max_steps=9, learning_rate=2e-3,
        logging_steps=1, report_to="none", save_strategy="no", bf16=False, disable_tqdm=True, seed=0, max_length=64,
        curriculum_interval_unit="steps", curriculum_interval=3, freeze_interval=6, difficulty_sample_size=20,
        difficulty_batch_size=4, curriculum_eta=0.5, **cpu_distributed_defaults(),
    )  # fmt: skip
    trainer = CurriculumSFTTrainer(
        model=model_path, args=args, train_dataset=make_curriculum_demo(48, seed=0),
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )  # fmt: skip
    trainer.train()
    acc = trainer.accelerator
    result = {
        "rank": acc.process_index, "world": acc.num_processes, "type": acc.distributed_type.value,
        "history": [{k: h[k] for k in ("step", "weights", "difficulty")} for h in trainer.curriculum.history],
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
    }  # fmt: skip
    with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as f:
        f.write(json.dumps(result))
    teardown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:4])
