"""The alignment plane S and the precomputed proxy gradient ḡ_A of a selective trainer; ``docs/selective.md``.

Both come from a private proxy-training pass that starts from the current weights and restores them afterwards:
ḡ = the mean gradient of CE on the proxy rows over one ordered pass (or ``alignment_plane_steps`` AdamW steps),
S = ḡ⁺ − ḡ⁻, or with ``alignment_plane_source="weights"`` θ_neg − θ_pos rescaled per tensor to that plane's norm.
Every process runs the same pass on the full proxy set, so the results agree without communication. Both are
saved to and reloaded from ``alignment_plane_path`` / ``proxy_grad_path`` when given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from trl_ext.selective.mechanisms import PlanePenalty, _ce_from_logits
from trl_ext.selective.projection import (
    MeanGradient,
    alignment_plane_from_gradients,
    alignment_plane_from_weights,
    load_plane,
    save_plane,
)

__all__ = ["AlignmentPlaneMixin"]


class AlignmentPlaneMixin:
    """Computes, caches and checks ``self.plane`` (S) and ``self.proxy_grad`` (ḡ_A) for a :class:`SelectiveMixin`
    host (it reads ``mechanisms``, ``proxy_datasets``, ``proxy_collator`` and ``trainable_parameters()``)."""

    def _proxy_training_pass(
        self, name: str, steps: int | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Proxy training from the current weights: (mean gradient, final weights); weights restored.

        One pass over the proxy set in order (``steps=None``), or ``steps`` AdamW steps cycling through it. Every
        process runs the same pass on the full proxy set, so the results agree without communication.
        """
        params = self.trainable_parameters()
        snapshot = {n: p.detach().clone() for n, p in params.items()}
        optimizer = torch.optim.AdamW(params.values(), lr=self.args.learning_rate, weight_decay=0.0)
        mean = MeanGradient()
        model = self._unwrapped_model()
        was_training = model.training
        model.train()
        dataset = self.proxy_datasets[name]
        batch_size = self.args.proxy_batch_size or self.args.per_device_train_batch_size
        starts = list(range(0, len(dataset), batch_size))
        try:
            for step in range(len(starts) if steps is None else steps):
                start = starts[step % len(starts)]
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                batch = self._prepare_input(self.proxy_collator(rows))
                optimizer.zero_grad(set_to_none=True)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                _ce_from_logits(logits, batch["labels"]).backward()
                mean.add({n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in params.items()})
                optimizer.step()
            final = {n: p.detach().clone() for n, p in params.items()}
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(snapshot[n])
                    p.grad = None
            model.train(was_training)
        return mean.mean(), final

    def _prepare_plane_and_proxy_grad(self) -> None:
        if any(m.needs_plane for m in self.mechanisms) and self.plane is None:
            path = self.args.alignment_plane_path
            if path and Path(path).is_file():
                self.plane = load_plane(path)
            else:
                self.plane = self.compute_alignment_plane()
                if path and self.accelerator.is_main_process:
                    save_plane(self.plane, path)
            self._check_names(self.plane, "alignment plane")
            penalised = [n for n in self.plane if "lora_A" in n]
            if any(isinstance(m, PlanePenalty) for m in self.mechanisms) and not any(
                self.plane[n].any() for n in penalised
            ):
                raise ValueError(
                    f"the alignment plane is zero on every LoRA A matrix ({len(penalised)} tensors), so the "
                    f"{self.args.strategy} penalty would be 0: LoRA B starts at zero, so a proxy pass of one batch "
                    "gives A no gradient. Set alignment_plane_steps >= 2 (or give more proxy rows than one batch)"
                )
        if any(m.needs_proxy_grad for m in self.mechanisms) and self.proxy_grad is None:
            path = self.args.proxy_grad_path
            if path and Path(path).is_file():
                self.proxy_grad = MeanGradient.load(path, self.trainable_parameters()).mean()
            else:
                mean, _ = self._proxy_training_pass("positive")
                self.proxy_grad = mean
                if path and self.accelerator.is_main_process:
                    acc = MeanGradient()
                    acc.add(mean)
                    acc.save(path)
            self._check_names(self.proxy_grad, "precomputed proxy gradient")

    def compute_alignment_plane(self) -> dict[str, torch.Tensor]:
        """S = ḡ⁺ − ḡ⁻ (mean gradients of a proxy / negative-proxy training pass from the current weights: one pass,
        or ``alignment_plane_steps`` steps),
        or, with ``alignment_plane_source="weights"``, θ_neg − θ_pos rescaled per tensor to that plane's norm."""
        steps = self.args.alignment_plane_steps
        mean_pos, theta_pos = self._proxy_training_pass("positive", steps)
        mean_neg, theta_neg = (
            self._proxy_training_pass("negative", steps) if "negative" in self.proxy_datasets else (None, None)
        )
        plane = alignment_plane_from_gradients(mean_pos, mean_neg)
        if self.args.alignment_plane_source == "weights":
            if theta_neg is None:
                raise ValueError("alignment_plane_source='weights' needs negative proxy data (θ_neg − θ_pos)")
            plane = alignment_plane_from_weights(theta_pos, theta_neg, reference_plane=plane)
        return plane

    def _check_names(self, tensors: Mapping[str, torch.Tensor], what: str) -> None:
        params = self.trainable_parameters()
        missing = [n for n in params if n not in tensors]
        if missing:
            raise ValueError(f"the {what} has no entry for trainable parameter(s) {missing[:5]}")
        for n, p in params.items():
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise ValueError(
                    f"the {what} entry {n} has shape {tuple(tensors[n].shape)}, expected {tuple(p.shape)}"
                )
