"""Validation loss of the policy on held-out texts at every evaluation, and the best model kept by it (the curriculum
PPO recipe, seed 003: "computes validation loss on a separate dataset ... saves the best model based on validation
loss"); ``docs/curriculum.md``.

For texts tokenized as ``x_0 … x_{n-1}`` (the tokenizer's own special tokens included, cut to ``max_length``
tokens), the validation loss is the mean token negative log-likelihood under the policy ``p_θ``

    eval_loss = Σ_texts Σ_{t=1}^{n-1} −log p_θ(x_t | x_<t)  /  Σ_texts (n − 1)

(token-weighted over the whole set, so it does not depend on the batch size or the number of processes), and
``eval_perplexity = exp(eval_loss)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from trl_ext.common.errors import DataError

__all__ = ["BEST_MODEL_DIR", "BEST_MODEL_FILE", "LMValidationMixin", "nll_sums", "tokenize_texts"]

BEST_MODEL_DIR = "best_model"
BEST_MODEL_FILE = "best_model.json"


def tokenize_texts(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[list[int]]:
    """Token ids of each text (``tokenizer(text)``, special tokens as the tokenizer adds them), the first
    ``max_length`` kept. Raises :class:`DataError` when no text has a token to predict (two tokens or more)."""
    ids = [list(tokenizer(text, truncation=True, max_length=max_length)["input_ids"]) for text in texts]
    if not any(len(row) >= 2 for row in ids):
        raise DataError(
            f"validation: none of the {len(ids)} text(s) has two tokens or more; the validation loss needs at "
            "least one token to predict"
        )
    return ids


@torch.no_grad()
def nll_sums(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    pad_token_id: int = 0,
    rank: int = 0,
    world: int = 1,
) -> tuple[float, int]:
    """``(Σ −log p(x_t | x_<t), number of predicted tokens)`` over the batches ``rank, rank + world, …`` of
    ``sequences`` (batches of ``batch_size`` in order; right-padded, so padding never precedes a scored token).
    Logits are taken in float32; ``model`` is used as it is (put it in eval mode first)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    starts = list(range(0, len(sequences), batch_size))
    for start in starts[rank::world]:
        chunk = [list(s) for s in sequences[start : start + batch_size] if len(s) >= 2]
        if not chunk:
            continue
        width = max(len(s) for s in chunk)
        input_ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for i, row in enumerate(chunk):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
            labels[i, : len(row)] = input_ids[i, : len(row)]
        input_ids, attention, labels = input_ids.to(device), attention.to(device), labels.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        targets = labels[:, 1:]
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        count += int((targets != -100).sum().item())
    return total, count


class LMValidationMixin:
    """A ``Trainer`` mixin whose :meth:`evaluate` is the causal-LM validation loss of the policy on the ``text``
    column of ``eval_dataset`` (see the module docstring), and which keeps the best model by it.

    Every evaluation logs ``eval_loss``, ``eval_perplexity`` and ``eval_tokens`` through ``Trainer.log`` (so they are
    in ``state.log_history``, ``loss_log.csv`` and every reporter), calls the callbacks' ``on_evaluate`` and returns
    the metrics, so ``eval_strategy``, ``metric_for_best_model="eval_loss"`` and ``load_best_model_at_end`` work as
    usual. When ``eval_loss`` is lower than at every earlier evaluation of ``state.log_history`` (restored on
    resume), the model is saved to ``<output_dir>/best_model`` with :meth:`save_model` (the adapter or model, the
    tokenizer and, for PPO, the value head). ``<output_dir>/best_model.json`` is rewritten at every evaluation:
    ``metric``, ``best`` (``epoch``, ``step``, ``eval_loss``, ``eval_perplexity``, ``path``, ``checkpoint``: the
    ``checkpoint-<step>`` folder saved at that step when checkpoints are saved) and ``history`` (every evaluation).

    Args:
        validation_max_length: tokens kept of each validation text.
        validation_batch_size: texts per forward pass.
        Every other argument is the host trainer's.
    """

    validation_text_column = "text"

    def __init__(self, *args: Any, validation_max_length: int = 256, validation_batch_size: int = 8, **kwargs: Any):
        if validation_max_length < 2 or validation_batch_size < 1:
            raise ValueError(
                f"validation_max_length must be >= 2 and validation_batch_size >= 1, got {validation_max_length} "
                f"and {validation_batch_size}"
            )
        self.validation_max_length = validation_max_length
        self.validation_batch_size = validation_batch_size
        self._validation_cache: tuple[int, list[list[int]]] | None = None
        super().__init__(*args, **kwargs)

    def _validation_ids(self, dataset: Any) -> list[list[int]]:
        if self._validation_cache is None or self._validation_cache[0] != id(dataset):
            column = self.validation_text_column
            if column not in dataset.column_names:
                raise DataError(f"validation dataset: no column {column!r}; its columns: {dataset.column_names}")
            ids = tokenize_texts(dataset[column], self.processing_class, self.validation_max_length)
            self._validation_cache = (id(dataset), ids)
        return self._validation_cache[1]

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Mean token NLL of the policy on the validation texts (``eval_dataset`` or the trainer's)."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, str):
            dataset = self.eval_dataset[dataset]
        if dataset is None:
            raise ValueError("evaluation requires an eval_dataset (validation texts in a 'text' column)")
        ids = self._validation_ids(dataset)
        accelerator = self.accelerator
        tokenizer = self.processing_class
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        was_training = self.model.training
        self.model.eval()  # also: GRPO-based hosts' log() then adds (and clears) their eval metrics, not train ones
        try:
            total, count = nll_sums(
                accelerator.unwrap_model(self.model),
                ids,
                self.validation_batch_size,
                pad,
                accelerator.process_index,
                accelerator.num_processes,
            )
            sums = torch.tensor([total, float(count)], dtype=torch.float64, device=accelerator.device)
            if accelerator.num_processes > 1:
                sums = accelerator.reduce(sums, reduction="sum")
            total, count = float(sums[0]), int(sums[1])
            loss = total / count
            metrics = {
                f"{metric_key_prefix}_loss": loss,
                f"{metric_key_prefix}_perplexity": math.exp(loss) if loss < 700 else math.inf,
                f"{metric_key_prefix}_tokens": float(count),
            }
            self.log(dict(metrics))
        finally:
            self.model.train(was_training)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if metric_key_prefix == "eval":
            self._keep_best_model(metrics)
        return metrics

    def _keep_best_model(self, metrics: dict[str, float]) -> None:
        """Save ``best_model/`` when this evaluation's ``eval_loss`` beats every earlier one; rewrite the JSON."""
        keys = ("epoch", "step", "eval_loss", "eval_perplexity")
        history = [{k: e.get(k) for k in keys} for e in self.state.log_history if "eval_loss" in e and "step" in e]
        earlier = history[:-1]  # the last entry is the evaluation just logged
        output_dir = Path(self.args.output_dir)
        best_path = output_dir / BEST_MODEL_DIR
        if not earlier or metrics["eval_loss"] < min(h["eval_loss"] for h in earlier):
            self.save_model(str(best_path))  # every process (gathers weights), written by the main one
        best = min(history, key=lambda h: h["eval_loss"])  # the first of equal losses
        saves = self.args.save_strategy != "no"
        record = {
            "metric": "eval_loss",
            "best": {
                **best,
                "path": str(best_path),
                "checkpoint": f"checkpoint-{best['step']}" if saves else None,
            },
            "history": history,
        }
        if self.accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / BEST_MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
        self.best_model_record = record
