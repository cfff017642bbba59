"""The host side of selective generalisation (docs/selective.md), shared by the SFT, DPO and PPO trainers.

:class:`SelectiveMixin` turns a TRL trainer into a host for the mechanisms of
:mod:`trl_ext.selective.mechanisms`. It goes *first* in the bases (``class T(SelectiveMixin,
SFTTrainer)``) and runs the mechanisms at four points:

* **extra loss terms** in ``compute_loss``: ``loss ← L_host + c · Σ_k term_k``, where every term is a mean over
  one micro-batch and c makes the sum over a gradient-accumulation window a mean over its micro-batches. ``c``
  follows ``transformers.Trainer.training_step``'s own rule: when the Trainer divides the returned loss by the
  number of accumulated micro-batches (``loss_is_scaled_for_ga`` false, e.g. DPO), c = 1; when the host loss is
  already scaled for accumulation (GRPO/PPO, or SFT normalised by ``num_items_in_batch``), c = 1 / that number;
* **gradient surgery** in ``_clip_grad_norm`` / ``_get_grad_norm``: they run once per optimizer step, after
  the last micro-batch's backward, i.e. on the *accumulated* gradient and, under DDP, after its all-reduce;
* **weight edits** after each optimizer step, and once at the end of training (a callback).

Proxy forwards run through the unwrapped model without TRL's fused LM head (``model(input_ids,
attention_mask)`` returns full logits; TRL's patched forward only switches to the fused head when called with
``fused_lm_head=True``). Under DDP, loss terms computed that way share the outcome's backward pass, so their
gradients are all-reduced with it; a proxy gradient for surgery is computed after the outcome reduction and
all-reduced explicitly, so the projection always sees averaged gradients.

A host subclass calls :meth:`SelectiveMixin._selective_check` before and :meth:`SelectiveMixin._selective_setup`
after the TRL ``__init__``, and implements :meth:`SelectiveMixin._prepare_proxy_dataset`. It may override
:meth:`SelectiveMixin._reference_model` / :meth:`SelectiveMixin._reference_adapter_name` (p_base = the host's
own reference policy when it has one), :attr:`SelectiveMixin.proxy_collator` and
:meth:`SelectiveMixin._outcome_batches_per_epoch`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from trl_ext.common._trl_compat import append_metric
from trl_ext.common.checkpoint import ExtensionStateMixin, read_json, write_json
from trl_ext.common.errors import ConfigError
from trl_ext.common.inputs import check_dataset_columns, sft_formats
from trl_ext.common.logprobs import sequence_logps
from trl_ext.models.frozen import frozen_copy
from trl_ext.selective._trl_compat import use_adapter
from trl_ext.selective.config import SelectiveArguments
from trl_ext.selective.mechanisms import Mechanism, PlanePenalty, _ce_from_logits
from trl_ext.selective.plane import AlignmentPlaneMixin
from trl_ext.selective.proxy import ProxyCycler
from trl_ext.selective.registry import build_mechanisms

PROXY_STATE_FILE = "proxy_cycler.json"
"""Checkpoint file with the proxy streams' positions (:meth:`ProxyCycler.state_dict`)."""

PROXY_NAMES = ("positive", "negative")
"""The proxy streams: A⁺ (``proxy_dataset``) and A⁻ (``negative_proxy_dataset``)."""
_PROXY_ARGS = {"positive": "proxy_dataset", "negative": "negative_proxy_dataset"}


class _SelectiveHooks(TrainerCallback):
    """Runs the mechanisms' ``after_step`` after every optimizer step and ``at_train_end`` once at the end."""

    def __init__(self, trainer: SelectiveMixin) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        for mechanism in self.trainer.mechanisms:
            mechanism.after_step(self.trainer)

    def on_train_end(self, args, state, control, **kwargs):
        for mechanism in self.trainer.mechanisms:
            mechanism.at_train_end(self.trainer)


class SelectiveMixin(AlignmentPlaneMixin, ExtensionStateMixin):
    """Host services and trainer hooks for the selective-generalisation mechanisms (see the module docstring).

    Attributes set up by :meth:`_selective_setup`: ``mechanisms`` (of ``args.strategy``), ``proxy_datasets``
    (tokenized A⁺/A⁻), ``plane`` (alignment plane S, when a mechanism needs it) and ``proxy_grad`` (cached mean
    proxy gradient ḡ_A, when a mechanism needs it).
    """

    mechanisms: list[Mechanism]
    proxy_datasets: dict[str, Any]
    plane: dict[str, torch.Tensor] | None
    proxy_grad: dict[str, torch.Tensor] | None

    def _outcome_formats(self, args: Any, formatting_func: Any) -> tuple[tuple[tuple[str, ...], ...], str] | None:
        """The column sets of the outcome data the host takes, and a hint (checked by :meth:`_selective_check`);
        None: the host's own trainer checks them (``PPOTrainer``), or takes any columns."""
        return None

    # ------------------------------------------------------------------ set-up (called by the host's __init__)

    def _selective_check(
        self,
        args: SelectiveArguments,
        proxy_dataset: Any,
        negative_proxy_dataset: Any,
        naive_needs: tuple[str, ...] = ("positive",),
        train_dataset: Any = None,
        eval_dataset: Any = None,
        formatting_func: Any = None,
    ) -> dict[str, Any]:
        """Build ``self.mechanisms`` and check the inputs before the TRL init: every proxy stream the mechanisms read
        was given, and every dataset has the columns its role needs (outcome data: the host's formats,
        :meth:`_outcome_formats`; proxy data: TRL's SFT formats, :func:`~trl_ext.common.inputs.sft_formats`).

        ``naive_needs``: the proxy streams the host's ``naive`` union reads. Returns ``{name: raw dataset}``.

        Raises:
            ValueError: a needed proxy dataset is missing (naming the argument to pass).
            DataError: (a ``ValueError``) a dataset without the columns of its role, naming it and its columns.
        """
        host = type(self).__name__
        outcome = self._outcome_formats(args, formatting_func)
        if outcome is not None:
            for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
                check_dataset_columns(data, name, outcome[0], host, outcome[1])
        self.mechanisms = build_mechanisms(args)
        raw_proxy = {"positive": proxy_dataset, "negative": negative_proxy_dataset}
        proxy_formats, hint = sft_formats(args)
        for name, data in raw_proxy.items():
            check_dataset_columns(data, _PROXY_ARGS[name], proxy_formats, f"{host} (proxy rows)", hint)
        needed = {name for m in self.mechanisms for name in m.needs}
        if args.strategy == "naive":
            needed.update(naive_needs)
        if any(m.needs_plane or m.needs_proxy_grad for m in self.mechanisms):
            needed.add("positive")
        for name in sorted(needed):
            if raw_proxy[name] is None:
                raise ConfigError(f"strategy {args.strategy!r} needs {name} proxy data: pass {_PROXY_ARGS[name]}=...")
        return raw_proxy

    def _selective_setup(self, raw_proxy: Mapping[str, Any]) -> None:
        """Tokenize the proxy data and set up p_base, the state and the callbacks; after ``super().__init__``.

        Raises:
            ValueError: DeepSpeed with a strategy that runs proxy forwards or gradient surgery, a LoRA-only
                strategy without a LoRA adapter.
        """
        args = self.args
        if self.is_deepspeed_enabled and self.mechanisms:
            raise ValueError(
                f"strategy {args.strategy!r} runs proxy forwards / gradient surgery outside DeepSpeed's engine: "
                "use DDP or a single device"
            )
        if any(isinstance(m, PlanePenalty) for m in self.mechanisms) and not self._is_peft():
            raise ValueError(f"strategy {args.strategy!r} penalises LoRA A matrices: train with a LoRA peft_config")
        self.proxy_datasets = {
            name: self._prepare_proxy_dataset(ds, name) for name, ds in raw_proxy.items() if ds is not None
        }
        self._proxy: ProxyCycler | None = None
        self._step_batches: dict[str, dict | None] = {}
        self._step_outputs: dict[str, Any] = {}
        self._surgery_step = -1
        self._frozen_base: torch.nn.Module | None = None
        self.plane = None
        self.proxy_grad = None
        self._needs_hidden = any(m.name == "representation" for m in self.mechanisms)
        # representation_constraint reads only hidden states: skip the (B, L, vocab) logits (logits_to_keep=1)
        self._logits_to_keep = 1 if self.mechanisms and all(m.name == "representation" for m in self.mechanisms) else 0
        needs_base = any(m.needs_base for m in self.mechanisms)
        if needs_base and not self._is_peft() and self._reference_model() is None:
            self._frozen_base = frozen_copy(self._unwrapped_model())
        self.add_callback(_SelectiveHooks(self))
        if args.strategy == "safe_lora":
            if not self._is_peft():
                raise ValueError("strategy 'safe_lora' projects a LoRA adapter: train with a LoRA peft_config")
            from trl_ext.selective.safelora.callback import SafeLoRACallback

            # the model given to the trainer is the aligned one (proxy LoRA merged); its frozen weights are W_aligned
            self.add_callback(
                SafeLoRACallback(
                    base=args.safelora_base_model,
                    aligned=self._unwrapped_model().get_base_model(),
                    projection=args.safelora_projection,
                    select=args.safelora_select,
                    threshold=args.safelora_threshold,
                    num_proj_layers=args.safelora_num_proj_layers,
                )
            )

    # ------------------------------------------------------------------ host-specific pieces (overridable)

    def _prepare_proxy_dataset(self, dataset: Any, name: str) -> Any:
        """Tokenize proxy dataset ``name`` into rows the :attr:`proxy_collator` takes (``input_ids``, ``labels``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _prepare_proxy_dataset")

    @property
    def proxy_collator(self):
        """Collates tokenized proxy rows into ``input_ids`` / ``attention_mask`` / ``labels`` (default: the host's)."""
        return self.data_collator

    def _reference_model(self) -> torch.nn.Module | None:
        """The host's separate reference model, reused as p_base (``None``: adapter disabled or a frozen copy)."""
        return None

    def _reference_adapter_name(self) -> str | None:
        """PEFT adapter that is p_base (``None``: all adapters disabled)."""
        return None

    def _outcome_batches_per_epoch(self) -> int | None:
        """Outcome micro-batches per epoch on this process (the synchronized cycling epoch counts them)."""
        try:
            size = len(self.train_dataset)
        except TypeError:  # iterable dataset
            return None
        per_step = self.args.per_device_train_batch_size * self.accelerator.num_processes
        return -(-size // per_step)

    # ------------------------------------------------------------------ host services for the mechanisms

    def _unwrapped_model(self) -> torch.nn.Module:
        """``accelerator.unwrap_model(self.model)``, cached per wrapper (unwrapping costs ~1 ms of CPU per call)."""
        cache = getattr(self, "_unwrap_cache", None)
        if cache is None or cache[0] is not self.model:
            cache = self._unwrap_cache = (self.model, self.accelerator.unwrap_model(self.model))
        return cache[1]

    def _is_peft(self) -> bool:
        return hasattr(self._unwrapped_model(), "peft_config")

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The parameters the mechanisms act on, by name: every trainable parameter of the unwrapped model."""
        model = self._unwrapped_model()
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    @contextmanager
    def base_context(self) -> Iterator[torch.nn.Module]:
        """Yield the base model p_base: the frozen copy, the host's reference model, or the model with its adapter
        disabled (PEFT; or switched to :meth:`_reference_adapter_name`)."""
        if self._frozen_base is not None:
            yield self._frozen_base
            return
        reference = self._reference_model()
        if reference is not None:
            yield self.accelerator.unwrap_model(reference)
            return
        model = self._unwrapped_model()
        adapter = self._reference_adapter_name()
        if adapter is None:
            with model.disable_adapter():
                yield model
            return
        with use_adapter(model, adapter_name=adapter):
            yield model

    def _cycler(self) -> ProxyCycler:
        if self._proxy is None:
            self._proxy = ProxyCycler(
                self.proxy_datasets,
                batch_size=self.args.proxy_batch_size or self.args.per_device_train_batch_size,
                collate_fn=self.proxy_collator,
                cycling=self.args.proxy_cycling,
                seed=self.args.seed,
                num_outcome_batches=self._outcome_batches_per_epoch(),
                shard=(self.accelerator.process_index, self.accelerator.num_processes),
            )
        return self._proxy

    def _draw(self, names: Iterable[str]) -> None:
        """Draw this step's proxy batches; a stream that finished its synchronized pass gives ``None``."""
        batches = self._cycler().next_batches(names)
        self._step_batches = {n: None if b is None else self._prepare_input(b) for n, b in batches.items()}
        self._step_outputs = {}

    def proxy_batch(self, name: str) -> dict:
        """This step's proxy batch ``name`` (``input_ids``, ``attention_mask``, ``labels``), on the device."""
        return self._step_batches[name]

    def proxy_forward(self, name: str):
        """The policy's full-logits forward on this step's proxy batch ``name`` (computed once, with grad)."""
        if name not in self._step_outputs:
            batch = self._step_batches[name]
            model = self._unwrapped_model()
            self._step_outputs[name] = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                output_hidden_states=self._needs_hidden,
                logits_to_keep=self._logits_to_keep,
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
                    logits_to_keep=self._logits_to_keep,
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
        """Append ``value`` (a tensor's mean, or a number) to the host's metrics; averaged at the next log."""
        value = value.detach().float().mean().item() if torch.is_tensor(value) else float(value)
        append_metric(self, name, value)

    def current_learning_rate(self) -> float:
        return float(self._get_learning_rate())

    def set_gradients(self, grads: Mapping[str, torch.Tensor | None]) -> None:
        """Replace ``.grad`` of the named trainable parameters (``None`` entries are left alone)."""
        params = self.trainable_parameters()
        for name, grad in grads.items():
            if grad is not None:
                params[name].grad = grad.to(params[name].dtype)

    def current_gradients(self) -> dict[str, torch.Tensor]:
        """The trainable parameters' current ``.grad`` by name (parameters without a gradient left out)."""
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
        model = self._unwrapped_model()
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

    def _extra_loss_scale(self, num_items_in_batch) -> float:
        """c in ``loss ← L_host + c·extra``: 1/accumulated micro-batches if the host loss is already scaled for
        gradient accumulation (so ``Trainer.training_step`` will not divide it), else 1 (the Trainer divides).

        The test is ``Trainer.training_step``'s own: ``loss_is_scaled_for_ga`` when the host sets it (DPO: false,
        GRPO/PPO: true), otherwise "the model accepts loss kwargs and ``num_items_in_batch`` was given, or a
        ``compute_loss_func`` is set" (SFT normalises over the tokens of the whole accumulation window)."""
        scaled = self.loss_is_scaled_for_ga
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or (
                self.compute_loss_func is not None
            )
        return 1.0 / self.current_gradient_accumulation_steps if scaled else 1.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The host's loss plus c · Σ of the mechanisms' terms on this step's proxy batches (training only)."""
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
        loss = loss + extra * self._extra_loss_scale(num_items_in_batch)
        self._step_outputs = {}
        return (loss, out[1]) if return_outputs else loss

    def _apply_surgery(self) -> None:
        """Run the mechanisms' surgery once per optimizer step. A step without any gradient (every micro-batch
        skipped, e.g. by PPO's KL early stopping) has nothing to edit: the optimizer does not move the weights."""
        if self._surgery_step == self.state.global_step:
            return
        self._surgery_step = self.state.global_step
        if not self.current_gradients():
            return
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

    def _save_extension_state(self, folder: Path) -> None:
        """The proxy streams' positions (``proxy_cycler.json``), so a resumed run draws the same proxy batches as an
        uninterrupted one."""
        super()._save_extension_state(folder)
        if self._proxy is not None:
            write_json(folder, PROXY_STATE_FILE, self._proxy.state_dict())

    def _load_extension_state(self, folder: Path) -> None:
        """Restore the proxy streams' positions saved in the checkpoint ``folder``."""
        super()._load_extension_state(folder)
        state = read_json(folder, PROXY_STATE_FILE)
        if state is not None:
            self._cycler().load_state_dict(state)
        elif any(m.needs for m in self.mechanisms):
            warnings.warn(
                f"{folder} has no {PROXY_STATE_FILE} (a checkpoint written before proxy positions were saved): the "
                "proxy streams restart from their first batch",
                stacklevel=4,
            )

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """Compute the alignment plane / proxy gradient when a strategy needs them, then train (and resume)."""
        self._prepare_plane_and_proxy_grad()
        return super().train(resume_from_checkpoint, *args, **kwargs)
