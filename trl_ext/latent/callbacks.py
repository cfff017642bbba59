"""The InfoNCE probe as a training callback (docs/latent.md, "InfoNCE probe").

:class:`InfoNCEProbeCallback` runs :meth:`~trl_ext.latent.trainer.LatentCommTrainer.infonce_probe` — K evaluation
samples (the first ``infoNCE_probe_k`` of the evaluation set, else of the training set), K batched forwards of K
rows, evaluation mode, no gradient — once before the first step (the untrained value) and then every
``infoNCE_probe_interval`` optimizer steps, and adds ``infonce/loss`` and ``infonce/mi_lower_bound`` (``log K − L``)
to the trainer's next log line (and so to ``loss_log.csv`` and the report_to trackers). Every process runs the same
probe on the same samples (no collective), so the values agree across processes. The trainer adds the callback
when ``enable_infoNCE_probe`` is set; ``history`` keeps ``(step, loss, mi_lower_bound)`` of every run.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

__all__ = ["InfoNCEProbeCallback"]


class InfoNCEProbeCallback(TrainerCallback):
    """See the module docstring; ``trainer`` is the :class:`~trl_ext.latent.trainer.LatentCommTrainer`."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.history: list[tuple[int, float, float]] = []

    def _run(self, step: int) -> None:
        result = self.trainer.infonce_probe()
        self.history.append((step, result["loss"], result["mi_lower_bound"]))
        values = {"infonce/loss": result["loss"], "infonce/mi_lower_bound": result["mi_lower_bound"]}
        self.trainer.record_metrics(values)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self._run(0)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.infoNCE_probe_interval == 0:
            self._run(state.global_step)
