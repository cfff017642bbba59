"""A DiversityTrainer on fixed completions, for tests/diversity/test_diversity_trainer.py and its DDP worker run.

``FixedDiversityTrainer`` returns, for the ``i``-th prompt of a generation call on process ``p`` with ``n`` prompts,
the completion ``TEXTS[(p · n + i) % len(TEXTS)]``: the same completions for one process with the whole batch and
for P processes each with its slice. ``embed`` is a deterministic embedding (no model). ``main`` runs one optimizer
step with plain SGD (so the parameter change is −lr · gradient) and writes it as ``delta_rank<p>.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import torch

from trl_ext.diversity import DiversityConfig, DiversityTrainer

PROMPT = "In 20 words, say whether you love dog or cat more, and give a reason; Answer:"
TEXTS = [
    " cat because it purrs softly",
    " I love my dog, loyal friend",
    " cats are calm and clean",
    " dog walks in the park",
    " cat, quiet and independent",
    " dogs play fetch all day",
    " cat naps in the sun",
    " neither, I like birds",
]


def embed(texts):
    """Deterministic 8-d embeddings from a hash of each text."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest()[:8], dtype=np.uint8) for t in texts]
    return np.stack(rows).astype(np.float32) / 255.0 if rows else np.zeros((0, 8), np.float32)


class FixedDiversityTrainer(DiversityTrainer):
    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        n, p = len(prompt_ids), self.accelerator.process_index
        ids = [
            self._tokenizer(TEXTS[(p * n + i) % len(TEXTS)], add_special_tokens=False)["input_ids"] for i in range(n)
        ]
        return ids, None


def config(output_dir: str, **overrides) -> DiversityConfig:
    values = dict(
        output_dir=output_dir, concept_name="animal", concept_options=["cat", "dog"], prompts=[PROMPT],
        per_device_train_batch_size=8, num_generations=8, max_steps=1, num_samples=8, n_clusters=2,
        min_samples_for_clustering=2, update_clusters_every=4, report_to="none", save_strategy="no", bf16=False,
        seed=0, disable_tqdm=True, log_completions=False, optim="sgd", learning_rate=1.0, max_grad_norm=1e9,
        lr_scheduler_type="constant", use_cpu=True,
    )  # fmt: skip
    values.update(overrides)
    return DiversityConfig(**values)


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in model.parameters()])


def main(model_path: str, output_dir: str, overrides: dict) -> dict:
    torch.set_num_threads(1)
    trainer = FixedDiversityTrainer(model_path, args=config(output_dir, **overrides), embedder=embed)
    before = flat_params(trainer.model)
    trainer.train()
    delta = flat_params(trainer.model) - before
    rank = trainer.accelerator.process_index
    from safetensors.torch import save_file

    os.makedirs(output_dir, exist_ok=True)
    save_file({"delta": delta.contiguous()}, os.path.join(output_dir, f"delta_rank{rank}.safetensors"))
    losses = [h["diversity/loss/total"] for h in trainer.state.log_history if "diversity/loss/total" in h]
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as f:
        acc = trainer.accelerator
        json.dump({"rank": rank, "world": acc.num_processes, "type": acc.distributed_type.value, "losses": losses}, f)
    if trainer.accelerator.num_processes > 1:
        from trl_ext.common.recipes import teardown_distributed

        teardown_distributed()
    return {"delta": delta, "losses": losses, "trainer": trainer}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
