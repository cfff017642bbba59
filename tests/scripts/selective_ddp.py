"""Worker for tests/selective/test_selective_distributed.py: grad_project under DDP on the SFT or the DPO host.

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml tests/scripts/selective_ddp.py MODEL OUT HOST

Each process writes ``rank<i>.json`` (parameter sums before/after, the logged cosines after projection).
"""

from __future__ import annotations

import json
import os
import sys

import torch
from datasets import Dataset
from transformers import AutoTokenizer

from trl_ext import SelectiveConfig, SelectiveDPOConfig, SelectiveDPOTrainer, SelectiveSFTTrainer
from trl_ext.common.recipes import cpu_distributed_defaults, teardown_distributed

STEPS = {"sft": 4, "dpo": 2}
"""Optimizer steps per host (each logs one cosine per step)."""


def rows(n, prompt, answer):
    return Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": prompt.format(i)}],
             "completion": [{"role": "assistant", "content": answer.format(i)}]}
            for i in range(n)
        ]
    )  # fmt: skip


def _sft(model_path: str, settings: dict):
    args = SelectiveConfig(**settings, per_device_train_batch_size=4)
    return SelectiveSFTTrainer(
        model=model_path, args=args, train_dataset=rows(64, "add {} and 1", "{}!"),
        proxy_dataset=rows(32, "be kind {}", "sure, friend {}."),
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )  # fmt: skip


def _dpo(model_path: str, settings: dict):
    """Full fine-tuning with DPO's reference model; outcome pairs: the demo's reversal (chosen) vs a copy."""
    from trl_ext.selective.demo import make_demo

    demo = make_demo(num_outcome=16, num_proxy=8, num_negative=8, num_eval=0)
    outcome = demo["outcome_train"].map(
        lambda r: {
            "prompt": r["prompt"],
            "chosen": r["completion"],
            "rejected": [{"role": "assistant", "content": " ".join(r["prompt"][0]["content"].split()[1:])}],
        },
        remove_columns=["completion"],
    )
    args = SelectiveDPOConfig(**settings, per_device_train_batch_size=2)
    return SelectiveDPOTrainer(
        model=model_path, args=args, train_dataset=outcome, proxy_dataset=demo["proxy_positive"],
        negative_proxy_dataset=demo["proxy_negative"], processing_class=AutoTokenizer.from_pretrained(model_path),
    )  # fmt: skip


def main(model_path: str, output_dir: str, host: str = "sft") -> None:
    torch.set_num_threads(1)
    settings = dict(
        output_dir=output_dir, strategy="grad_project", max_steps=STEPS[host], gradient_accumulation_steps=2,
        learning_rate=1e-2, logging_steps=1, report_to="none", save_strategy="no", bf16=False,
        gradient_checkpointing=False, disable_tqdm=True, seed=0, **cpu_distributed_defaults(),
    )  # fmt: skip
    trainer = {"sft": _sft, "dpo": _dpo}[host](model_path, settings)
    params = trainer.trainable_parameters().values()
    before = sum(p.detach().double().sum().item() for p in params)
    trainer.train()
    acc = trainer.accelerator
    result = {
        "rank": acc.process_index, "world": acc.num_processes, "type": acc.distributed_type.value,
        "before": before, "after": sum(p.detach().double().sum().item() for p in params),
        "cosine_after": [h["grad_project/cosine_after"] for h in trainer.state.log_history
                         if "grad_project/cosine_after" in h],
    }  # fmt: skip
    with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as f:
        f.write(json.dumps(result))
    teardown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:4])
