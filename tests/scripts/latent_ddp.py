"""Worker for tests/latent/test_latent_ddp.py: LatentCommTrainer on one process or two (DDP over gloo).

    accelerate launch --config_file accelerate_configs/multi_gpu.yaml tests/scripts/latent_ddp.py MODEL OUT BATCH

Each process builds the same 8 rows with the sender tool (the tiny model as sender), checks where its negatives come
from for a local batch of one row (rank r holds row r), then trains 3 steps with per-device batch ``BATCH`` (all
three loss terms on, noise on, the linear mixing schedule, no dropout) and writes ``rank<i>.json``: the negatives'
sources, the logged losses and the adapter's weights. Two processes with batch ``BATCH`` see the same global
batches as one process with ``2 * BATCH``.
"""

from __future__ import annotations

import json
import os
import sys

import torch

from trl_ext import LatentCommConfig, LatentCommTrainer
from trl_ext.common.recipes import cpu_distributed_defaults, teardown_distributed
from trl_ext.latent import LatentDataset, length_matched, read_latent_file, write_sender_states
from trl_ext.models import load_causal_lm, load_tokenizer


def _rows(n: int) -> list[dict]:
    return [
        {"id": f"s{i}", "plan": f"Answer {i % 3}.",
         "conversations": [{"from": "human", "value": "Q " + "x" * i + "?"}, {"from": "gpt", "value": f"A{i % 3}."}]}
        for i in range(n)
    ]  # fmt: skip


def main(model_path: str, output_dir: str, batch: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    data = write_sender_states(
        load_causal_lm(model_path), load_tokenizer(model_path), _rows(8), os.path.join(output_dir, f"data{rank}"),
        show_progress=False,
    )  # fmt: skip
    rows = read_latent_file(data)
    args = LatentCommConfig(
        output_dir=output_dir, per_device_train_batch_size=int(batch), max_steps=3, learning_rate=1e-3,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, seed=0, num_heads=4,
        prepended_length=12, mix_schedule="linear", adapter_dropout=0.0, negative_noise_std=0.05,
        enable_loss_plot=False, **cpu_distributed_defaults(),
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = LatentCommTrainer(
        load_causal_lm(model_path), args, train_dataset=LatentDataset(rows, 12),
        processing_class=load_tokenizer(model_path),
    )  # fmt: skip
    acc = trainer.accelerator
    # a local batch of one row: rank r holds row r, its negative must be another process's row
    item = trainer.data_collator([trainer.train_dataset[acc.process_index]])
    h, pad = item["hidden_states"].to(acc.device), item["latent_padding"].to(acc.device)
    everyone = trainer.data_collator([trainer.train_dataset[i] for i in range(acc.num_processes)])
    sources = []
    for step in range(4):
        neg = trainer._negatives(f"probe{step}", h, pad)
        if neg is None:
            sources.append(None)
            continue
        n = int((~pad[0]).sum())
        states, padding = everyone["hidden_states"], everyone["latent_padding"]
        own = [length_matched(states[j][~padding[j]], n).to(acc.device) for j in range(acc.num_processes)]
        dist = [float((neg[0, :n] - o).abs().max()) for o in own]
        sources.append(min(range(len(dist)), key=dist.__getitem__))
    trainer.train()
    adapter = {k: v.detach().flatten()[:16].tolist() for k, v in trainer.receiver.latent_adapter.state_dict().items()}
    result = {
        "rank": acc.process_index, "world": acc.num_processes, "type": acc.distributed_type.value,
        "sources": sources, "adapter": adapter,
        "logs": [{k: h[k] for k in ("loss", "loss/ce", "loss/plan_similarity", "loss/random_contrast")}
                 for h in trainer.state.log_history if "loss" in h and "loss/ce" in h],
    }  # fmt: skip
    with open(os.path.join(output_dir, f"rank{acc.process_index}.json"), "w") as f:
        f.write(json.dumps(result))
    teardown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:4])
