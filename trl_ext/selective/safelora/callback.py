"""SafeLoRA at the end of training: project the trainer's LoRA adapter onto the alignment subspace (docs/selective.md
(SafeLoRA)).

:class:`SafeLoRACallback` runs :func:`trl_ext.selective.safelora.core.safelora_project` on the trainer's PEFT model in
``on_train_end``. The projection runs on **every** process, so each in-memory model ends up projected and a
later ``trainer.save_model()`` (which recipes call after ``train()`` returns) writes the projected adapter
whichever process saves; only the main process writes ``safelora_report.json``. Checkpoints saved *during*
training hold the unprojected adapter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import TrainerCallback

from trl_ext.selective.safelora.core import (
    REPORT_NAME,
    Projection,
    SafeLoRAReport,
    Select,
    safelora_project,
)
from trl_ext.selective.safelora.loading import load_state_dict_from

WeightsSource = str | os.PathLike | torch.nn.Module | Mapping[str, torch.Tensor]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):  # DDP and similar wrappers
        model = model.module
    return model


class SafeLoRACallback(TrainerCallback):
    """Apply SafeLoRA to the trained adapter at the end of training.

    Args:
        base: base weights ``W_base``: a model folder, hub id, model object or state dict
            (anything :func:`~trl_ext.selective.safelora.load_state_dict_from` accepts). Loaded lazily at train end.
        aligned: aligned weights ``W_aligned``, same forms.
        projection, select, threshold, num_proj_layers, adapter_name, exact_rtol: see
            :func:`~trl_ext.selective.safelora.safelora_project` (defaults ``"approx"``, ``"threshold"``, 0.5, 10).
        report_path: where the main process writes the JSON report; defaults to
            ``<args.output_dir>/safelora_report.json``.

    After training, ``self.report`` holds the :class:`~trl_ext.selective.safelora.SafeLoRAReport`. Paths are loaded
    at train end and released afterwards; state dicts or models given directly are kept referenced.
    Not for DeepSpeed ZeRO-3/FSDP-sharded parameters (raises); use the CLI on the saved adapter there.
    """

    def __init__(
        self,
        base: WeightsSource,
        aligned: WeightsSource,
        projection: Projection = "approx",
        select: Select = "threshold",
        threshold: float = 0.5,
        num_proj_layers: int = 10,
        adapter_name: str = "default",
        exact_rtol: float | None = None,
        report_path: str | os.PathLike | None = None,
    ) -> None:
        from trl_ext.selective.safelora.core import PROJECTIONS, SELECTS

        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        if select not in SELECTS:
            raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
        self.base = base
        self.aligned = aligned
        self.projection = projection
        self.select = select
        self.threshold = threshold
        self.num_proj_layers = num_proj_layers
        self.adapter_name = adapter_name
        self.exact_rtol = exact_rtol
        self.report_path = report_path
        self.report: SafeLoRAReport | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("SafeLoRACallback needs the trainer's model at on_train_end")
        model = _unwrap(model)
        base_sd = load_state_dict_from(self.base)
        aligned_sd = load_state_dict_from(self.aligned)
        self.report = safelora_project(
            model,
            base_sd,
            aligned_sd,
            projection=self.projection,
            select=self.select,
            threshold=self.threshold,
            num_proj_layers=self.num_proj_layers,
            adapter_name=self.adapter_name,
            exact_rtol=self.exact_rtol,
        )
        del base_sd, aligned_sd
        if state.is_world_process_zero:
            path = Path(self.report_path) if self.report_path is not None else Path(args.output_dir) / REPORT_NAME
            self.report.save(path)
        return control
