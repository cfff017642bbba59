"""Completions of fixed test prompts during training, as a table: ``samples.jsonl``, ``samples.md`` and the loggers.

:class:`SampleTableCallback` generates a completion for every test prompt at the end of each epoch (or every
``every_steps`` optimizer steps) with the model being trained, and

* appends one JSON line per prompt, ``{"epoch", "step", "prompt", "completion"}``, to ``<output_dir>/samples.jsonl``;
* rewrites ``<output_dir>/samples.md``: one markdown table per sampling point (readable without a dashboard);
* prints a compact table on the console;
* logs the table as ``samples`` to the active integrations: a ``wandb.Table`` when ``"wandb"`` is in ``report_to``
  and a wandb run is active, a ``trackio.Table`` when ``"trackio"`` is in ``report_to``, trackio is installed and
  a trackio run is active, and the markdown table as text (``add_text``, tag ``samples``) to a TensorBoard writer
  of its own (in ``TENSORBOARD_LOGGING_DIR``, else ``<output_dir>/runs/samples``) when ``"tensorboard"`` is in
  ``report_to``.

It needs nothing from the trainer beyond the callback arguments ``model`` and ``processing_class`` (a tokenizer, or
a processor with a ``tokenizer``), so it works with any ``transformers.Trainer``, TRL's and trl_ext's (PPO's policy
carries its value head as a submodule; ``generate`` ignores it). Generation: eval mode, ``torch.no_grad``, left
padding (the tokenizer's padding side is restored), greedy by default, KV cache on, in batches of ``batch_size``;
the model is put back in train mode afterwards. Sampling (``do_sample=True``) is seeded by ``args.seed`` and the
step and runs in a forked RNG, so the callback never changes the training's random stream.

Multi-process runs: only the main process generates and writes (with DDP or ZeRO-1/2 every process holds whole
weights, so generation involves no collective operation and the other processes simply go on to the next
synchronisation point). Under DeepSpeed ZeRO-3 (sharded parameters) every process generates with
``synced_gpus=True`` (a forward needs every rank), and still only the main process writes.

On resume (``global_step > 0`` at the start of training) rows of ``samples.jsonl`` logged after the checkpoint's
step are dropped; a fresh run (``global_step == 0``) starts a new file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from trl_ext.common.generation import generate_completions, unwrap_model

__all__ = ["SampleTableCallback", "format_sample_table"]

logger = logging.getLogger(__name__)

EVERY_CHOICES = ("epoch", "steps")


def _is_sharded(model: torch.nn.Module) -> bool:
    """True when the parameters are partitioned by DeepSpeed ZeRO-3 (each process holds a shard)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def _cell(text: str, width: int | None = None) -> str:
    text = " ".join(str(text).split())  # one line
    text = text.replace("|", "\\|")
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def format_sample_table(rows: Sequence[dict[str, Any]], width: int | None = None) -> str:
    """A markdown table of sample rows (``epoch``, ``step``, ``prompt``, ``completion``); ``width`` cuts long
    cells (for the console)."""
    lines = ["| epoch | step | prompt | completion |", "| ---: | ---: | --- | --- |"]
    for row in rows:
        lines.append(
            f"| {row['epoch']:g} | {row['step']} | {_cell(row['prompt'], width)} | {_cell(row['completion'], width)} |"
        )
    return "\n".join(lines)


class SampleTableCallback(TrainerCallback):
    """Generate completions of ``prompts`` during training and record them (see the module docstring).

    Args:
        prompts: the test prompts (plain strings, given to the tokenizer as they are).
        max_new_tokens: new tokens per completion.
        do_sample: sample (seeded, at ``temperature``) instead of greedy decoding.
        every: ``"epoch"`` (at the end of each epoch) or ``"steps"`` (every ``every_steps`` optimizer steps).
        every_steps: interval for ``every="steps"``.
        output_file: JSON-lines file, relative to ``args.output_dir`` unless absolute.
        markdown_file: markdown file (all tables so far) beside it; ``None`` writes none.
        temperature: sampling temperature (``do_sample=True``).
        batch_size: prompts per ``generate`` call.
        print_table: print a compact table on the console.

    Attributes:
        rows: every row recorded by this process in this run (the main process's).
    """

    def __init__(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        do_sample: bool = False,
        every: str = "epoch",
        output_file: str | os.PathLike = "samples.jsonl",
        *,
        every_steps: int | None = None,
        markdown_file: str | os.PathLike | None = "samples.md",
        temperature: float = 1.0,
        batch_size: int = 8,
        print_table: bool = True,
    ) -> None:
        if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.80}")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p]
        if bad:
            raise ValueError(f"prompt {bad[0]} is not a non-empty string: {prompts[bad[0]]!r:.80}")
        if every not in EVERY_CHOICES:
            raise ValueError(f"every must be one of {EVERY_CHOICES}, got {every!r}")
        if every == "steps" and (every_steps is None or every_steps < 1):
            raise ValueError(f"every='steps' needs every_steps >= 1, got {every_steps!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.prompts = list(prompts)
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.every = every
        self.every_steps = every_steps
        self.output_file = Path(output_file)
        self.markdown_file = Path(markdown_file) if markdown_file is not None else None
        self.temperature = temperature
        self.batch_size = batch_size
        self.print_table = print_table
        self.rows: list[dict[str, Any]] = []
        self._tb_writer: Any = None
        self._last_step: int | None = None

    # ------------------------------------------------------------------ paths

    def jsonl_path(self, args: Any) -> Path:
        return self.output_file if self.output_file.is_absolute() else Path(args.output_dir) / self.output_file

    def markdown_path(self, args: Any) -> Path | None:
        if self.markdown_file is None:
            return None
        return self.markdown_file if self.markdown_file.is_absolute() else Path(args.output_dir) / self.markdown_file

    # ------------------------------------------------------------------ hooks

    def on_train_begin(self, args, state, control, **kwargs):
        self.rows, self._last_step = [], None
        path = self.jsonl_path(args)
        if not state.is_world_process_zero or not path.exists():
            return
        if state.global_step > 0:  # resuming: keep the rows up to the checkpoint
            kept = [r for r in _read_jsonl(path) if r.get("step", 0) <= state.global_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.rows = kept
        else:
            path.unlink()
        self._write_markdown(args)

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every == "epoch":
            self.sample(args, state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.every == "steps" and state.global_step % self.every_steps == 0:
            self.sample(args, state, model, processing_class)

    def on_train_end(self, args, state, control, **kwargs):
        if self._tb_writer is not None:
            self._tb_writer.close()
            self._tb_writer = None

    # ------------------------------------------------------------------ work

    def sample(self, args: Any, state: Any, model: Any, processing_class: Any) -> list[dict[str, Any]]:
        """Generate, record and log one table now; returns its rows (empty on processes that do not write)."""
        if model is None or processing_class is None:
            raise ValueError("SampleTableCallback needs the callback arguments 'model' and 'processing_class'")
        if self._last_step == state.global_step and self.every == "steps":
            return []  # the same step already sampled (e.g. on_step_end twice at the end)
        self._last_step = state.global_step
        sharded = _is_sharded(unwrap_model(model))
        main = state.is_world_process_zero
        if not (main or sharded):
            return []
        completions = generate_completions(
            model,
            processing_class,
            self.prompts,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            temperature=self.temperature,
            batch_size=self.batch_size,
            chat_template=False,
            seed=int(getattr(args, "seed", 0)) + int(state.global_step),
            synced_gpus=sharded,
            show_progress=False,
        )
        if not main:
            return []
        epoch = round(float(state.epoch or 0.0), 4)
        rows = [
            {"epoch": epoch, "step": int(state.global_step), "prompt": p, "completion": c}
            for p, c in zip(self.prompts, completions)
        ]
        self.rows.extend(rows)
        path = self.jsonl_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._write_markdown(args)
        if self.print_table:
            print(f"[trl_ext] samples at epoch {epoch:g}, step {state.global_step}:", flush=True)
            print(format_sample_table(rows, width=60), flush=True)
        self._log_integrations(args, state, rows)
        return rows

    def _write_markdown(self, args: Any) -> None:
        path = self.markdown_path(args)
        if path is None:
            return
        by_step: dict[int, list[dict[str, Any]]] = {}
        for row in self.rows:
            by_step.setdefault(row["step"], []).append(row)
        parts = ["# Samples of the test prompts\n"]
        for step, rows in by_step.items():
            parts.append(f"## epoch {rows[0]['epoch']:g}, step {step}\n\n{format_sample_table(rows)}\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(parts), encoding="utf-8")

    def _log_integrations(self, args: Any, state: Any, rows: list[dict[str, Any]]) -> None:
        report_to = args.report_to or []
        if isinstance(report_to, str):
            report_to = [report_to]
        columns = ["epoch", "step", "prompt", "completion"]
        data = [[row[c] for c in columns] for row in rows]
        if "wandb" in report_to or "all" in report_to:
            try:
                import wandb
            except ImportError:
                wandb = None
            if wandb is not None and wandb.run is not None:
                wandb.log({"samples": wandb.Table(columns=columns, data=data), "train/global_step": state.global_step})
        if "trackio" in report_to or "all" in report_to:
            try:
                import trackio
            except ImportError:
                trackio = None
            if trackio is not None and trackio.context_vars.current_run.get() is not None:
                trackio.log({"samples": trackio.Table(columns=columns, data=data)})
        if "tensorboard" in report_to or "all" in report_to:
            try:
                if self._tb_writer is None:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb_writer = SummaryWriter(log_dir=_tensorboard_dir(args))
                self._tb_writer.add_text("samples", format_sample_table(rows), global_step=state.global_step)
                self._tb_writer.flush()
            except ImportError:
                logger.info("tensorboard is not installed: samples are only written to samples.md")


def _tensorboard_dir(args: Any) -> str:
    """TensorBoard folder: ``TENSORBOARD_LOGGING_DIR`` (as transformers' callback), ``args.logging_dir`` where the
    arguments still have it, else ``<output_dir>/runs/samples``."""
    return (
        os.environ.get("TENSORBOARD_LOGGING_DIR")
        or getattr(args, "logging_dir", None)
        or os.path.join(args.output_dir, "runs", "samples")
    )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
