"""Selective generalisation on top of TRL's ``SFTTrainer`` (SPEC §3): one trainer, twelve strategies.

``SelectiveSFTTrainer`` adds proxy data (A⁺, optional A⁻) drawn alongside the outcome batches and runs the
mechanisms of ``args.strategy`` (:mod:`trl_ext.trainers.selective_mechanisms`) at four points: extra loss terms
in ``compute_loss``, gradient surgery on the accumulated and all-reduced gradient just before clipping and the
optimizer step, weight edits after the step, and a last edit at the end of training.

Proxy forwards run through the unwrapped model. Under DDP, loss terms computed that way share the outcome's
backward pass, so their gradients are all-reduced with it; a proxy gradient for surgery is computed after the
outcome reduction and all-reduced explicitly, so the projection always sees averaged gradients.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from trl import SFTTrainer

from trl_ext.data.proxy import ProxyCycler
from trl_ext.losses.projection import (
    MeanGradient,
    alignment_plane_from_gradients,
    alignment_plane_from_weights,
    load_plane,
    save_plane,
)
from trl_ext.losses.selective import sequence_logps
from trl_ext.trainers.selective_config import SelectiveConfig
from trl_ext.trainers.selective_mechanisms import Mechanism, PlanePenalty, _ce_from_logits, build_mechanisms

PROXY_NAMES = ("positive", "negative")


class _SelectiveHooks(TrainerCallback):
    def __init__(self, trainer: SelectiveSFTTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        for mechanism in self.trainer.mechanisms:
            mechanism.after_step(self.trainer)

    def on_train_end(self, args, state, control, **kwargs):
        for mechanism in self.trainer.mechanisms:
            mechanism.at_train_end(self.trainer)


class SelectiveSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with proxy data and the selective-generalisation strategy of ``args.strategy``.

    Args:
        proxy_dataset: positive proxy data A⁺ (any format ``SFTTrainer`` accepts).
        negative_proxy_dataset: negative proxy data A⁻ (same format); for ``dpo`` its rows pair with A⁺'s.
        Every other argument is ``SFTTrainer``'s; ``args`` must be a :class:`SelectiveConfig`.

    Raises:
        ValueError: proxy data missing for a strategy that needs it, LoRA missing for the plane penalties,
            DeepSpeed with a strategy whose proxy forwards or gradient surgery it cannot host, or a ``naive``
            union of datasets with different columns.
    """

    _tag_names = ["trl", "trl_ext", "sft", "selective-generalisation"]

    def __init__(
        self,
        model=None,
        args: SelectiveConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        proxy_dataset=None,
        negative_proxy_dataset=None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, SelectiveConfig):
            raise TypeError(f"SelectiveSFTTrainer needs a SelectiveConfig, got {type(args).__name__}")
        self.mechanisms: list[Mechanism] = build_mechanisms(args)
        raw_proxy = {"positive": proxy_dataset, "negative": negative_proxy_dataset}
        needed = {name for m in self.mechanisms for name in m.needs}
        if args.strategy in ("naive",) or any(m.needs_plane or m.needs_proxy_grad for m in self.mechanisms):
            needed.add("positive")
        for name in sorted(needed):
            if raw_proxy[name] is None:
                arg = "proxy_dataset" if name == "positive" else "negative_proxy_dataset"
                raise ValueError(f"strategy {args.strategy!r} needs {name} proxy data: pass {arg}=...")
        if args.strategy == "naive":
            train_dataset = _union(train_dataset, proxy_dataset, seed=args.seed)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        if self.is_deepspeed_enabled and self.mechanisms:
            raise ValueError(
                f"strategy {args.strategy!r} runs proxy forwards / gradient surgery outside DeepSpeed's engine: "
                "use DDP or a single device"
            )
        if any(isinstance(m, PlanePenalty) for m in self.mechanisms) and not self._is_peft():
            raise ValueError(f"strategy {args.strategy!r} penalises LoRA A matrices: train with a LoRA peft_config")
        self.proxy_datasets = {
            name: self._prepare_dataset(ds, self.processing_class, args, False, None, f"proxy_{name}")
            for name, ds in raw_proxy.items()
            if ds is not None
        }
        self._proxy = None
        self._step_batches: dict[str, dict] = {}
        self._step_outputs: dict[str, Any] = {}
        self._surgery_step = -1
        self._frozen_base = None
        self.plane: dict[str, torch.Tensor] | None = None
        self.proxy_grad: dict[str, torch.Tensor] | None = None
        self._needs_hidden = any(m.name == "representation" for m in self.mechanisms)
        if any(m.needs_base for m in self.mechanisms) and not self._is_peft():
            self._frozen_base = copy.deepcopy(self.accelerator.unwrap_model(self.model)).eval().requires_grad_(False)
        self.add_callback(_SelectiveHooks(self))
        if args.strategy == "safe_lora":
            if not self._is_peft():
                raise ValueError("strategy 'safe_lora' projects a LoRA adapter: train with a LoRA peft_config")
            from trl_ext.callbacks.safelora import SafeLoRACallback

            # the model given to the trainer is the aligned one (proxy LoRA merged); its frozen weights are W_aligned
            self.add_callback(
                SafeLoRACallback(
                    base=args.safelora_base_model,
                    aligned=self.accelerator.unwrap_model(self.model).get_base_model(),
                    projection=args.safelora_projection,
                    select=args.safelora_select,
                    threshold=args.safelora_threshold,
                    num_proj_layers=args.safelora_num_proj_layers,
                )
            )

    # ------------------------------------------------------------------ host services for the mechanisms

    def _is_peft(self) -> bool:
        return hasattr(self.accelerator.unwrap_model(self.model), "peft_config")

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        model = self.accelerator.unwrap_model(self.model)
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    @contextmanager
    def base_context(self):
        """Yield the base model p_base: the adapter disabled (PEFT) or the frozen copy."""
        if self._frozen_base is not None:
            yield self._frozen_base
            return
        model = self.accelerator.unwrap_model(self.model)
        with model.disable_adapter():
            yield model

    def _cycler(self) -> ProxyCycler:
        if self._proxy is None:
            self._proxy = ProxyCycler(
                self.proxy_datasets,
                batch_size=self.args.proxy_batch_size or self.args.per_device_train_batch_size,
                collate_fn=self.data_collator,
                cycling=self.args.proxy_cycling,
                seed=self.args.seed,
                num_outcome_batches=self._outcome_batches_per_epoch(),
                shard=(self.accelerator.process_index, self.accelerator.num_processes),
            )
        return self._proxy

    def _outcome_batches_per_epoch(self) -> int | None:
        """Outcome micro-batches per epoch on this process (the synchronized cycling epoch counts them)."""
        try:
            size = len(self.train_dataset)
        except TypeError:  # iterable dataset
            return None
        per_step = self.args.per_device_train_batch_size * self.accelerator.num_processes
        return -(-size // per_step)

    def _draw(self, names) -> None:
        """Draw this step's proxy batches; a stream that finished its synchronized pass gives ``None``."""
        batches = self._cycler().next_batches()
        self._step_batches = {n: None if batches[n] is None else self._prepare_inputs(batches[n]) for n in names}
        self._step_outputs = {}

    def proxy_batch(self, name: str) -> dict:
        return self._step_batches[name]

    def proxy_forward(self, name: str):
        """The policy's full-logits forward on this step's proxy batch ``name`` (computed once, with grad)."""
        if name not in self._step_outputs:
            batch = self._step_batches[name]
            model = self.accelerator.unwrap_model(self.model)
            self._step_outputs[name] = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=self._needs_hidden,
                use_cache=False,
            )
        return self._step_outputs[name]

    def base_forward(self, name: str):
        """p_base's forward (no grad) on this step's proxy batch ``name``, computed once per step."""
        key = f"base/{name}"
        if key not in self._step_outputs:
            batch = self._step_batches[name]
            with torch.no_grad(), self.base_context() as base:
                self._step_outputs[key] = base(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    output_hidden_states=self._needs_hidden,
                    use_cache=False,
                )
        return self._step_outputs[key]

    @staticmethod
    def sequence_mean_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ℓ = mean log-prob per response token (labels ≠ −100) of each sequence."""
        logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        target = labels[:, 1:]
        token = torch.gather(logps, 2, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return sequence_logps(token, target != -100, average=True)

    def log_metric(self, name: str, value) -> None:
        mode = "train" if self.model.training else "eval"
        value = value.detach().float().mean().item() if torch.is_tensor(value) else float(value)
        self._metrics[mode][name].append(value)

    def current_learning_rate(self) -> float:
        return float(self._get_learning_rate())

    def set_gradients(self, grads: dict[str, torch.Tensor]) -> None:
        params = self.trainable_parameters()
        for name, grad in grads.items():
            if grad is not None:
                params[name].grad = grad.to(params[name].dtype)

    def current_gradients(self) -> dict[str, torch.Tensor]:
        return {n: p.grad for n, p in self.trainable_parameters().items() if p.grad is not None}

    def proxy_gradient(self, source: str, sign: float = 1.0) -> dict[str, torch.Tensor] | None:
        """∇(sign · CE) on one fresh proxy batch of ``source``, averaged over processes; outcome grads kept.

        ``None`` when the stream has no batch this step (synchronized cycling past the end of its pass)."""
        params = self.trainable_parameters()
        saved = {n: p.grad for n, p in params.items()}
        for p in params.values():
            p.grad = None
        self._draw([source])
        batch = self._step_batches[source]
        if batch is None:  # synchronized cycling: this stream has finished its pass for the epoch
            for n, p in params.items():
                p.grad = saved[n]
            return None
        model = self.accelerator.unwrap_model(self.model)
        with self.compute_loss_context_manager():
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits
            ce = _ce_from_logits(logits, batch["labels"])
        (sign * ce).backward()
        grads = {
            n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() for n, p in params.items()
        }
        if dist.is_available() and dist.is_initialized() and self.accelerator.num_processes > 1:
            for g in grads.values():
                dist.all_reduce(g, op=dist.ReduceOp.SUM)
                g.div_(self.accelerator.num_processes)
        for n, p in params.items():
            p.grad = saved[n]
        self.log_metric(f"proxy/ce_{source}", ce)
        return grads

    # ------------------------------------------------------------------ trainer hooks

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss_mechanisms = [m for m in self.mechanisms if type(m).loss is not Mechanism.loss]
        if not self.model.training or not loss_mechanisms:
            return out
        loss = out[0] if return_outputs else out
        needed = sorted({name for m in loss_mechanisms for name in m.needs})
        if needed:
            self._draw(needed)
        terms: dict[str, torch.Tensor] = {}
        for mechanism in loss_mechanisms:
            if all(self._step_batches.get(name) is not None for name in mechanism.needs):
                terms.update(mechanism.loss(self, model, inputs))
        if not terms:
            return out
        extra = sum(terms.values())
        for name, value in terms.items():
            self.log_metric(f"loss/{name}", value)
        # SFT's loss is normalised over the whole accumulated batch; these are per-micro-batch means
        loss = loss + extra / self.current_gradient_accumulation_steps
        self._step_outputs = {}
        return (loss, out[1]) if return_outputs else loss

    def _apply_surgery(self) -> None:
        if self._surgery_step == self.state.global_step:
            return
        self._surgery_step = self.state.global_step
        for mechanism in self.mechanisms:
            if type(mechanism).surgery is not Mechanism.surgery:
                mechanism.surgery(self, self.current_gradients())

    def _clip_grad_norm(self, model):
        self._apply_surgery()  # before clipping, on the accumulated and all-reduced gradient
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is None:  # no clipping configured: surgery was not applied yet this step
            self._apply_surgery()
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def train(self, *args, **kwargs):
        self._prepare_plane_and_proxy_grad()
        return super().train(*args, **kwargs)

    # ------------------------------------------------------------------ alignment plane / proxy gradient

    def _proxy_training_pass(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One pass of proxy training from the current weights: (mean gradient, final weights); weights restored.

        Every process runs the same pass on the full proxy set, so the results agree without communication.
        """
        params = self.trainable_parameters()
        snapshot = {n: p.detach().clone() for n, p in params.items()}
        optimizer = torch.optim.AdamW(params.values(), lr=self.args.learning_rate, weight_decay=0.0)
        mean = MeanGradient()
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.train()
        dataset = self.proxy_datasets[name]
        batch_size = self.args.proxy_batch_size or self.args.per_device_train_batch_size
        try:
            for start in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                batch = self._prepare_inputs(self.data_collator(rows))
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
        """S = ḡ⁺ − ḡ⁻ (mean gradients of one proxy / negative-proxy training pass from the current weights),
        or, with ``alignment_plane_source="weights"``, θ_neg − θ_pos rescaled per tensor to that plane's norm."""
        mean_pos, theta_pos = self._proxy_training_pass("positive")
        mean_neg, theta_neg = (
            self._proxy_training_pass("negative") if "negative" in self.proxy_datasets else (None, None)
        )
        plane = alignment_plane_from_gradients(mean_pos, mean_neg)
        if self.args.alignment_plane_source == "weights":
            if theta_neg is None:
                raise ValueError("alignment_plane_source='weights' needs negative proxy data (θ_neg − θ_pos)")
            plane = alignment_plane_from_weights(theta_pos, theta_neg, reference_plane=plane)
        return plane

    def _check_names(self, tensors: dict[str, torch.Tensor], what: str) -> None:
        params = self.trainable_parameters()
        missing = [n for n in params if n not in tensors]
        if missing:
            raise ValueError(f"the {what} has no entry for trainable parameter(s) {missing[:5]}")
        for n, p in params.items():
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise ValueError(
                    f"the {what} entry {n} has shape {tuple(tensors[n].shape)}, expected {tuple(p.shape)}"
                )


def _union(outcome, proxy, seed: int):
    """The shuffled union T ∪ A⁺ of the ``naive`` strategy (same columns required)."""
    from datasets import concatenate_datasets

    if set(outcome.column_names) != set(proxy.column_names):
        raise ValueError(
            f"naive strategy: outcome columns {sorted(outcome.column_names)} and proxy columns "
            f"{sorted(proxy.column_names)} differ; give both datasets the same format"
        )
    return concatenate_datasets([outcome, proxy.select_columns(outcome.column_names)]).shuffle(seed=seed)
