"""Worker for tests/test_selective_distributed.py: grad_project under DDP; each process writes ``rank<i>.json``."""

from __future__ import annotations

import json
import os
import sys

import torch
from datasets import Dataset
from transformers import AutoTokenizer

from trl_ext import SelectiveConfig, SelectiveSFTTrainer
from trl_ext.recipe_utils import cpu_distributed_defaults, teardown_distributed


def rows(n, prompt, answer):
    return Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": prompt.format(i)}],
             "completion": [{"role": "assistant", "content": answer.format(i)}]}
            for i in range(n)
        ]
    )  # fmt: skip


def main(model_path: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    args = SelectiveConfig(
        output_dir=output_dir, strategy="grad_project", max_steps=4, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none", save_strategy="no",
        bf16=False, gradient_checkpointing=False, disable_tqdm=True, seed=0, **cpu_distributed_defaults(),
    )  # fmt: skip
    trainer = SelectiveSFTTrainer(
        model=model_path, args=args, train_dataset=rows(64, "add {} and 1", "{}!"),
        proxy_dataset=rows(32, "be kind {}", "sure, friend {}."),
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )  # fmt: skip
    before = sum(p.detach().double().sum().item() for p in trainer.model.parameters())
    trainer.train()
    acc = trainer.accelerator
    result = {
        "rank": acc.process_index, "world": acc.num_processes, "type": acc.distributed_type.value,
        "before": before, "after": sum(p.detach().double().sum().item() for p in trainer.model.parameters()),
        "cosine_after": [h["grad_project/cosine_after"] for h in trainer.state.log_history
                         if "grad_project/cosine_after" in h],
    }  # fmt: skip
    with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as f:
        f.write(json.dumps(result))
    teardown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
