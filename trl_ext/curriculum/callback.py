"""The auto-curriculum's state across steps: rolling frozen model, difficulty estimate, weight updates, logging.

:class:`CurriculumCallback` is created by the curriculum trainers (:mod:`trl_ext.curriculum.trainer`) and
drives a :class:`~trl_ext.curriculum.sampler.CurriculumSampler`:

* when an update is due (start of every ``curriculum_interval``-th epoch, or every ``curriculum_interval`` optimizer
  steps and once before the first), it refreshes the frozen model if ``freeze_interval`` says so, scores the fixed
  difficulty subsets with it, and sets the sampler's new weights;
* an update is made only if a batch that is still to be trained will be drawn with its weights
  (:meth:`CurriculumCallback.weights_would_be_used`, docs/curriculum.md "Update schedule"): an epoch-unit update
  always is (it precedes its epoch's draws); a steps-unit update at the final step, or so near it that the data
  loader has already drawn every remaining batch, is skipped, so every entry of ``history`` was sampled with;
* difficulty batches are split round-robin over the processes and the per-batch losses summed across them, so every
  process computes the same μ, σ², m and weights (the sampler then draws identically everywhere);
* every update is logged (``curriculum/weight/<name>``, ``curriculum/difficulty/<name>`` (μ),
  ``curriculum/variance/<name>``, ``curriculum/frozen_age``) through ``Trainer.log``, so wandb, tensorboard,
  trackio, the console and :class:`~trl_ext.common.loss_log.LossLogCallback` all see it;
* :meth:`state_dict` / :meth:`load_state_dict` carry the schedule and bookkeeping through checkpoints;
* at the end of training the main process writes the report into ``args.output_dir``: ``curriculum.json``
  (:func:`curriculum_summary` plus the trainer's ``curriculum_report_extra``) and ``curriculum_weights.png``
  (:func:`plot_curriculum`); :attr:`CurriculumCallback.report` holds the summary on every process.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from trl_ext.curriculum.difficulty import RollingFrozenModel, _has_text, difficulty_segments
from trl_ext.curriculum.sampler import CurriculumSampler
from trl_ext.curriculum.weights import difficulty_statistics, update_weights

__all__ = [
    "CURRICULUM_JSON",
    "CURRICULUM_PNG",
    "CurriculumCallback",
    "curriculum_summary",
    "plot_curriculum",
    "write_curriculum_report",
]

CURRICULUM_JSON = "curriculum.json"
CURRICULUM_PNG = "curriculum_weights.png"


class CurriculumCallback(TrainerCallback):
    """Frozen-model refreshes, difficulty estimates and weight updates of one curriculum trainer.

    Args:
        trainer: the trainer (for its unwrapped model, accelerator and ``log``).
        datasets: name -> raw dataset (before the host's processing), in sampler order.
        sampler: the trainer's curriculum sampler.
        curriculum: the knobs (:class:`~trl_ext.curriculum.config.CurriculumArguments`).
        tokenizer: tokenizes the difficulty texts.
        seed: seed of the difficulty subsets.
    """

    def __init__(
        self,
        trainer: Any,
        datasets: Mapping[str, Any],
        sampler: CurriculumSampler,
        curriculum: Any,
        tokenizer: Any,
        seed: int,
    ) -> None:
        self.trainer = trainer
        self.names = list(datasets)
        self.sampler = sampler
        self.cfg = curriculum
        self.frozen = RollingFrozenModel(curriculum.frozen_model_mode)
        self.batches = self._difficulty_batches(datasets, tokenizer, seed)
        self.last_update: int | None = None  # epoch or step (per the unit) of the last weight update
        self.last_refresh: int | None = None
        self.history: list[dict[str, Any]] = []
        self.report: dict[str, Any] | None = None  # the summary written at the end of the last train()

    # ------------------------------------------------------------------ data

    def _difficulty_batches(
        self, datasets: Mapping[str, Any], tokenizer: Any, seed: int
    ) -> list[list[list[tuple[list[int], int]]]]:
        """Per dataset: its fixed subset as ``(token ids, first scored position)``, in batches."""
        tok = getattr(tokenizer, "tokenizer", tokenizer)
        out = []
        for index, (name, data) in enumerate(datasets.items()):
            n = len(data)
            k = min(n, self.cfg.difficulty_sample_size)
            rows = np.random.default_rng([seed, index]).choice(n, size=k, replace=False)
            items = [self._tokenize_row(name, r, data[r], tok) for r in rows.tolist()]
            bs = self.cfg.difficulty_batch_size
            out.append([items[i : i + bs] for i in range(0, len(items), bs)])
        return out

    def _tokenize_row(self, name: str, r: int, row: Mapping[str, Any], tok: Any) -> tuple[list[int], int]:
        """Token ids (at most ``difficulty_max_length``) and the first scored position of one row.

        A row with an unscored prefix is truncated from the left (the scored answer is kept), others from the right.
        """
        limit = self.cfg.difficulty_max_length
        if self.cfg.difficulty_text_field is None and "input_ids" in row and not _has_text(row):
            ids, start = list(row["input_ids"])[:limit], 1  # pre-tokenized rows
        else:
            try:
                prefix, full = difficulty_segments(
                    row, tok, self.cfg.difficulty_text_field, self.cfg.difficulty_completion_only
                )
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"curriculum dataset {name!r}, row {r}: {err}") from err
            if tok is None:
                raise ValueError("the curriculum needs a processing_class (tokenizer) to score text rows")
            ids = tok(full)["input_ids"]
            start = len(tok(prefix)["input_ids"]) if prefix else 1
            if len(ids) > limit:
                if prefix:
                    cut = len(ids) - limit
                    ids, start = ids[cut:], max(1, start - cut)
                else:
                    ids = ids[:limit]
        if len(ids) - max(start, 1) < 1:
            raise ValueError(
                f"curriculum dataset {name!r}, row {r}: nothing to score ({len(ids)} token(s), the first "
                f"{start} unscored); the difficulty loss needs at least one scored token after the first"
            )
        return ids, max(start, 1)

    # ------------------------------------------------------------------ difficulty

    def _pad(self, batch: Sequence[tuple[list[int], int]], device: torch.device) -> dict[str, torch.Tensor]:
        """Right-padded ids, attention mask and labels (-100 on padding and on each row's unscored prefix)."""
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, (row, start) in enumerate(batch):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
            labels[i, start : len(row)] = ids[i, start : len(row)]
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}

    def batch_losses(self, model: torch.nn.Module) -> list[np.ndarray]:
        """Per dataset, the frozen model's mean token loss on each difficulty batch (identical on every process)."""
        jobs = [(i, b) for i, batches in enumerate(self.batches) for b in range(len(batches))]
        accelerator = self.trainer.accelerator
        rank, world = accelerator.process_index, accelerator.num_processes
        device = next(model.parameters()).device
        losses = torch.zeros(len(jobs), dtype=torch.float64, device=device)
        with self.frozen.scoring(model) as scorer:
            for j in range(rank, len(jobs), world):
                i, b = jobs[j]
                out = scorer(**self._pad(self.batches[i][b], device))
                losses[j] = out.loss.double()
        if world > 1:
            losses = accelerator.reduce(losses, reduction="sum")
        values = losses.cpu().numpy()
        per_dataset: list[list[float]] = [[] for _ in self.batches]
        for (i, _), v in zip(jobs, values):
            per_dataset[i].append(float(v))
        return [np.asarray(v) for v in per_dataset]

    # ------------------------------------------------------------------ updates

    def _model(self) -> torch.nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def update(self, state: Any, unit_value: int, *, epoch: int | None = None, position: int | None = None) -> None:
        """Refresh the frozen model if due, estimate the difficulties and set new weights (logged)."""
        started = time.perf_counter()
        model = self._model()
        if self.last_refresh is None or unit_value - self.last_refresh >= self.cfg.freeze_interval:
            self.frozen.refresh(model, state.global_step)
            self.last_refresh = unit_value
        stats = [difficulty_statistics(v) for v in self.batch_losses(model)]
        mu, var, metric = (np.array(x) for x in zip(*stats))
        new = update_weights(
            self.sampler.weights,
            metric,
            eta=self.cfg.curriculum_eta,
            min_weight=self.cfg.curriculum_min_weight,
            update=self.cfg.curriculum_update,
            names=self.names,
        )
        self.sampler.set_weights(new, epoch=epoch, position=position)
        new = self.sampler.weights  # as stored (renormalised), so history, logs and the report agree exactly
        self.last_update = unit_value
        record = {
            "step": state.global_step,
            "epoch": epoch if epoch is not None else self.sampler.epoch,
            "frozen_age": self.frozen.age(state.global_step),
            "weights": new.tolist(),
            "difficulty": mu.tolist(),
            "variance": var.tolist(),
            "seconds": time.perf_counter() - started,
        }
        self.history.append(record)
        logs: dict[str, float] = {"curriculum/frozen_age": float(record["frozen_age"])}
        for name, w, m, v in zip(self.names, new, mu, var):
            logs[f"curriculum/weight/{name}"] = float(w)
            logs[f"curriculum/difficulty/{name}"] = float(m)
            logs[f"curriculum/variance/{name}"] = float(v)
        from transformers import Trainer

        # The base log: host overrides (GRPO's) would flush their own metrics early. Logging resets
        # control.should_log, which would swallow the step's regular log when the update runs in on_step_end.
        should_log = self.trainer.control.should_log
        Trainer.log(self.trainer, logs)
        self.trainer.control.should_log = should_log

    def _epoch_due(self, epoch: int) -> bool:
        return epoch % self.cfg.curriculum_interval == 0 and (self.last_update is None or epoch > self.last_update)

    def weights_would_be_used(self, args: Any, state: Any, train_dataloader: Any = None) -> bool:
        """Whether weights set now would be used: a batch still to be trained is drawn after this point.

        The sampler applies new weights from its next draw on (:attr:`CurriculumSampler.next_draw_output`), and the
        data loader draws ahead of training (accelerate's loader one batch, worker processes more), so an update at
        the final step, or at a step whose remaining batches have all been drawn already (with one micro-batch per
        step and no workers: the step before the final one), would set weights that nothing is sampled with. Counted
        in sampler outputs: the current epoch trains ``min(steps left in it · gradient_accumulation_steps, its
        micro-batches)`` micro-batches of ``train_dataloader.total_batch_size`` outputs; the weights are used if the
        next draw falls among them, or if a later epoch trains (it draws afresh with the latest weights). Without a
        sized ``train_dataloader`` only "a step is left" is checked. See docs/curriculum.md, "Update schedule".
        """
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            return False
        try:
            micro_per_epoch = len(train_dataloader)
            micro_size = int(getattr(train_dataloader, "total_batch_size", None) or train_dataloader.batch_size)
        except TypeError:  # no loader, or an unsized one
            return True
        accumulation = max(1, int(args.gradient_accumulation_steps))
        steps_per_epoch = max(micro_per_epoch // accumulation + int(micro_per_epoch % accumulation > 0), 1)
        epoch = self.sampler.epoch
        if state.max_steps > (epoch + 1) * steps_per_epoch:
            return True  # a later epoch trains, drawing with the latest weights
        steps_here = state.max_steps - epoch * steps_per_epoch  # steps of this epoch that are trained, in all
        trained_outputs = min(min(steps_here * accumulation, micro_per_epoch) * micro_size, len(self.sampler))
        return self.sampler.next_draw_output < trained_outputs

    # ------------------------------------------------------------------ TrainerCallback hooks

    def on_train_begin(self, args, state, control, **kwargs):
        if self.cfg.curriculum_interval_unit == "steps" and self.last_update is None:
            if self.weights_would_be_used(args, state, kwargs.get("train_dataloader")):
                self.update(state, state.global_step)

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(math.floor(state.epoch + 1e-6)) if state.epoch else 0
        self.sampler.set_epoch(epoch)
        if self.cfg.curriculum_interval_unit == "epoch" and self._epoch_due(epoch):
            if state.max_steps <= 0 or state.global_step < state.max_steps:  # the epoch trains: always, in practice
                self.update(state, epoch, epoch=epoch, position=0)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.cfg.curriculum_interval_unit == "steps" and step % self.cfg.curriculum_interval == 0:
            if self.last_update is None or step > self.last_update:
                if self.weights_would_be_used(args, state, kwargs.get("train_dataloader")):
                    self.update(state, step)

    def on_train_end(self, args, state, control, **kwargs):
        """Write ``curriculum.json`` and ``curriculum_weights.png`` into ``args.output_dir`` (main process)."""
        extra = getattr(self.trainer, "curriculum_report_extra", None) or {}
        self.report = write_curriculum_report(self.trainer, args.output_dir, **extra)

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "last_update": self.last_update,
            "last_refresh": self.last_refresh,
            "frozen_refreshed_at": self.frozen.refreshed_at,
            "history": self.history,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.last_update = state["last_update"]
        self.last_refresh = state["last_refresh"]
        self.history = list(state["history"])


# ---------------------------------------------------------------------- reports


def curriculum_summary(trainer: Any) -> dict[str, Any]:
    """Names, sizes, initial and final weights, the update history and the run's length of a curriculum trainer
    (what ``curriculum.json`` holds)."""
    sampler = trainer.curriculum_sampler
    return {
        "names": list(sampler.names),
        "sizes": dict(zip(sampler.names, sampler.sizes)),
        "initial_weights": sampler.initial_weights.tolist(),
        "final_weights": sampler.named_weights,
        "history": list(trainer.curriculum.history),
        "num_updates": len(trainer.curriculum.history),
        "global_step": trainer.state.global_step,
    }


def plot_curriculum(summary: Mapping[str, Any], png_path: str | os.PathLike) -> None:
    """Sampling weights (top, a step plot from the initial weights, a marker per update) and frozen-model
    difficulties μ (bottom) against the step, one line per dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, history = summary["names"], summary["history"]
    fig = Figure(figsize=(8, 6))
    FigureCanvasAgg(fig)
    ax_w = fig.add_subplot(2, 1, 1)
    ax_d = fig.add_subplot(2, 1, 2, sharex=ax_w)
    last = max([summary.get("global_step", 0)] + [h["step"] for h in history])
    for i, name in enumerate(names):
        steps = [0] + [h["step"] for h in history] + [last]
        weights = [summary["initial_weights"][i]] + [h["weights"][i] for h in history]
        weights.append(weights[-1])
        (line,) = ax_w.plot(steps, weights, drawstyle="steps-post", label=name)
        ax_w.plot(steps[1:-1], weights[1:-1], "o", color=line.get_color())
        if history:
            ax_d.plot([h["step"] for h in history], [h["difficulty"][i] for h in history], "o-", label=name)
    ax_w.set_ylabel("sampling weight")
    ax_w.set_title("curriculum weights")
    ax_d.set_ylabel("difficulty μ (nats)")
    ax_d.set_xlabel("step")
    for ax in (ax_w, ax_d):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def write_curriculum_report(trainer: Any, output_dir: str | os.PathLike, **extra: Any) -> dict[str, Any]:
    """Write ``curriculum.json`` (:func:`curriculum_summary` plus ``extra``) and ``curriculum_weights.png`` into
    ``output_dir`` (main process only); returns the summary on every process.

    The curriculum trainers call it themselves at the end of ``train()`` (into ``args.output_dir``, with their
    ``curriculum_report_extra``); call it to write the report of a trainer elsewhere too (docs/curriculum.md).
    """
    summary = {**curriculum_summary(trainer), **extra}
    if trainer.accelerator.is_main_process:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CURRICULUM_JSON).write_text(json.dumps(summary, indent=2) + "\n")
        plot_curriculum(summary, out / CURRICULUM_PNG)
    return summary
