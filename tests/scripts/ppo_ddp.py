"""Worker for tests/ppo/test_ppo_distributed.py: a short PPO run; each process writes ``rank<i>.json``."""

from __future__ import annotations

import json
import os
import sys

import torch
from datasets import Dataset
from transformers import AutoTokenizer

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.common.recipes import cpu_distributed_defaults, teardown_distributed


def reward(completions, completion_ids, **kwargs):
    return [2.0 + sum(100 <= t < 132 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def checksum(module) -> float:
    return float(sum(p.detach().double().sum().item() for p in module.parameters()))


def main(model_path: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    config = dict(
        output_dir=output_dir, per_device_train_batch_size=4, num_mini_batches=2, num_ppo_epochs=2,
        max_completion_length=8, learning_rate=3e-3, max_steps=8, logging_steps=1, report_to="none",
        save_strategy="no", bf16=False, gradient_checkpointing=False, seed=0, disable_tqdm=True,
        log_completions=False, **cpu_distributed_defaults(),
    )  # fmt: skip
    config.update(json.loads(os.environ.get("PPO_DDP_CONFIG", "{}")))  # overrides, for experiments
    args = PPOConfig(**config)
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": f"count {i}"}]} for i in range(64)])
    trainer = PPOTrainer(
        model=model_path, reward_funcs=reward, args=args, train_dataset=prompts,
        processing_class=AutoTokenizer.from_pretrained(model_path),
    )  # fmt: skip
    head0, policy0 = checksum(trainer.value_function), checksum(trainer.model.model)
    trainer.train()
    acc = trainer.accelerator
    result = json.dumps({
        "rank": acc.process_index, "world": acc.num_processes, "type": acc.distributed_type.value,
        "wrapper": type(trainer.model_wrapped).__name__,
        "head0": head0, "head": checksum(trainer.value_function),
        "policy0": policy0, "policy": checksum(trainer.model.model),
        "vf_loss": [h["ppo/loss/value"] for h in trainer.state.log_history if "ppo/loss/value" in h],
    })  # fmt: skip
    with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as f:  # stdout lines would interleave
        f.write(result)
    teardown_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
