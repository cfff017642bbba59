"""``LatentCommTrainer``: a ``transformers.Trainer`` that trains a receiver to act on latent messages
(docs/latent.md, "Trainer").

Per batch, three explicit batched forwards of the :class:`~trl_ext.latent.receiver.LatentReceiver`:

1. **latents, with gradient**: each row's adapter output, mixed with its plan's embeddings at a ratio drawn for this
   forward (training only; a row without a plan reads pure latents), spliced after the first user turn;
2. **plan teacher, no gradient** (when the plan term is on): the plan's token embeddings in the same place;
3. **negative, no gradient** (when the contrast term is on): the latents of *another* sample — drawn from the batch
   gathered across processes, never the row itself — length-matched to the row's own (cut, or tiled) plus
   ``N(0, negative_noise_std²)`` noise, mixed with the row's own plan at the same ratio, so that only the latents
   differ between the positive and the negative.

With ``CE = Σ_t −log p_lat(y_t) / N_tok``, ``L_plan = 0.7 · Σ_t KL(p_plan,t ‖ p_lat,t) / N_plan_tok + 0.3 ·
Σ_b (1 − cos_b) / N_plan_rows`` and ``L_rc = Σ_b max(0, margin − JS_b) / N_rows``, the loss is
``CE + w_plan · L_plan + w_rc · L_rc``. The counts N are those of the whole accumulated batch over all processes
(``_get_num_items_in_batch``), so gradient accumulation and DDP give the update of one large batch (the negatives
are drawn per micro-batch). ``dynamic_weights`` sets ``w_plan``, ``w_rc`` from the micro-batch's detached terms.

**Decisions:** a fresh mixing ratio at every forward, seeded from (seed, step, micro-batch, process), so that a
resumed run draws the same ratios; a sample is never its own negative — the negative of global row g is row
``(g + o) mod N`` of the gathered batch with one shift ``o ∈ [1, N − 1]`` per forward, drawn from the same seed on
every process; with a batch of one (N = 1) the contrast term is 0 and ``negatives_missing`` is logged as 1.

Logged (train and ``eval_``): ``loss/ce``, ``loss/plan_similarity``, ``loss/random_contrast``, ``plan_kl``,
``plan_cosine``, ``js_bits`` (mean JS_b / ln 2), ``delta_nll_bits`` ((CE_neg − CE_pos) / ln 2), ``w_plan`` / ``w_rc``
and ``negatives_missing``; the InfoNCE probe adds ``infonce/loss`` and ``infonce/mi_lower_bound``.
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer

from trl_ext.common.checkpoint import ExtensionStateMixin
from trl_ext.common.errors import ConfigError
from trl_ext.latent.adapter import LatentAdapter, LatentAdapterConfig
from trl_ext.latent.collator import LatentCollator
from trl_ext.latent.config import LatentCommConfig
from trl_ext.latent.data import LatentDataset, LatentRow
from trl_ext.latent.injection import MixSchedule, add_latent_tokens
from trl_ext.latent.losses import align_supervised, dynamic_weights, plan_similarity_sums, random_contrast_sums
from trl_ext.latent.receiver import LatentReceiver
from trl_ext.latent.weights import load_receiver_weights, save_receiver

__all__ = ["LatentCommTrainer"]

_LN2 = math.log(2.0)


def _as_dataset(data: Any, prepended_length: int, name: str) -> Any:
    if data is None or isinstance(data, LatentDataset):
        return data
    if isinstance(data, list | tuple) and all(isinstance(row, LatentRow) for row in data):
        return LatentDataset(list(data), prepended_length)
    raise ConfigError(
        f"{name} must be a trl_ext.latent.LatentDataset or a list of LatentRow (read_latent_file), got "
        f"{type(data).__name__}"
    )


def _sender_width(*datasets: Any) -> int | None:
    widths: set[int] = set()
    for data in datasets:
        if data is not None:
            # lazy rows are not read up front: the first one tells the width
            widths |= data.widths or ({int(data[0]["hidden_state"].shape[1])} if len(data) else set())
    if len(widths) > 1:
        raise ConfigError(f"the datasets' hidden states have different widths {sorted(widths)}")
    return widths.pop() if widths else None


def length_matched(hidden: torch.Tensor, length: int) -> torch.Tensor:
    """``hidden`` ``(K, d)`` cut to ``length`` rows, or tiled to them (the negative's length-matching)."""
    if hidden.shape[0] >= length:
        return hidden[:length]
    repeats = -(-length // hidden.shape[0])
    return hidden.repeat(repeats, 1)[:length]


class LatentCommTrainer(ExtensionStateMixin, Trainer):
    """Train a receiver on latent messages (see the module docstring).

    Args:
        model: the receiver's causal LM (a ``PreTrainedModel``); the latent tokens are added to ``processing_class``
            and its embeddings resized.
        args: a :class:`~trl_ext.latent.config.LatentCommConfig`.
        train_dataset / eval_dataset: :class:`~trl_ext.latent.data.LatentDataset` (or lists of
            :class:`~trl_ext.latent.data.LatentRow`, cut to ``args.prepended_length``).
        processing_class: the receiver's tokenizer (with a chat template and a pad token).
        adapter: a :class:`~trl_ext.latent.adapter.LatentAdapter` to start from (default: a new one, with an input
            projection when the data's hidden width differs from the receiver's).
    """

    def __init__(
        self,
        model: Any,
        args: LatentCommConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        adapter: LatentAdapter | None = None,
        data_collator: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = LatentCommConfig(output_dir="latent_comm_output")
        if not isinstance(args, LatentCommConfig):
            raise ConfigError(f"LatentCommTrainer needs a LatentCommConfig, got {type(args).__name__}")
        if processing_class is None:
            raise ConfigError("LatentCommTrainer needs processing_class: the receiver's tokenizer")
        if isinstance(model, LatentReceiver):
            raise ConfigError("pass the causal LM as model and the adapter as adapter=, not a LatentReceiver")
        if not hasattr(model, "get_input_embeddings") or not hasattr(model, "config"):
            raise ConfigError(f"model must be a transformers causal LM, got {type(model).__name__}")
        train_dataset = _as_dataset(train_dataset, args.prepended_length, "train_dataset")
        eval_dataset = _as_dataset(eval_dataset, args.prepended_length, "eval_dataset")
        token_ids = add_latent_tokens(processing_class, model)
        width = _sender_width(train_dataset, eval_dataset)
        hidden = model.config.get_text_config().hidden_size
        if adapter is None:
            config = LatentAdapterConfig(hidden, width, num_heads=args.num_heads, dropout=args.adapter_dropout)
            adapter = LatentAdapter(config)
        elif adapter.config.hidden_size != hidden or (width is not None and adapter.expected_width != width):
            raise ConfigError(
                f"the adapter maps width {adapter.expected_width} to {adapter.config.hidden_size}, but the data has "
                f"width {width} and the receiver {hidden}"
            )
        receiver = LatentReceiver(model, adapter.float(), token_ids)
        collator = data_collator or LatentCollator(processing_class, args.model_max_length)
        super().__init__(
            model=receiver, args=args, data_collator=collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, callbacks=callbacks,
            optimizers=optimizers, **kwargs,
        )  # fmt: skip
        self.loss_is_scaled_for_ga = True  # normalised over the whole accumulated batch (_get_num_items_in_batch)
        self._mix = MixSchedule(args.mix_ratios, args.mix_schedule, seed=args.seed)
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._key: tuple[str, int, int] = ("", -1, 0)
        self._batch_counts: torch.Tensor | None = None
        if args.enable_loss_plot:
            from trl_ext.common.loss_log import LossLogCallback

            if not any(isinstance(cb, LossLogCallback) for cb in self.callback_handler.callbacks):
                self.add_callback(LossLogCallback())
        if args.enable_infoNCE_probe:
            from trl_ext.latent.callbacks import InfoNCEProbeCallback

            self.add_callback(InfoNCEProbeCallback(self))

    # ------------------------------------------------------------------ seeds of one forward

    def _forward_key(self, mode: str) -> str:
        """``seed:mode:step:index``: the index counts the forwards since the step began (micro-batches)."""
        step = self.state.global_step
        index = self._key[2] + 1 if self._key[:2] == (mode, step) else 0
        self._key = (mode, step, index)
        return f"{self.args.seed}:{mode}:{step}:{index}"

    def _ratios(self, key: str, has_plan: torch.Tensor) -> list[float]:
        self._mix.seed(f"{key}:mix:{self.accelerator.process_index}")
        progress = self.state.global_step / max(1, self.state.max_steps or 1)
        drawn = self._mix.draw(len(has_plan), progress)
        return [r if bool(p) else 1.0 for r, p in zip(drawn, has_plan)]

    # ------------------------------------------------------------------ normalisation over the accumulated batch

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """Supervised tokens of the accumulated batch (all processes when ``average_tokens_across_devices``); also
        keeps the rows, the plan rows' tokens and the plan rows in ``_batch_counts``."""
        if not batch_samples:
            return None
        counts = torch.zeros(4, dtype=torch.float64)
        for batch in batch_samples:
            supervised = batch["labels"][:, 1:].ne(-100)
            rows = supervised.any(dim=1)
            plan = batch["plan_mask"].sum(dim=1) > 0
            counts += torch.tensor(
                [supervised.sum(), rows.sum(), supervised[plan].sum(), (rows & plan).sum()], dtype=torch.float64
            )
        counts = counts.to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.gather(counts[None]).sum(dim=0)
        self._batch_counts = counts
        return counts[0]

    # ------------------------------------------------------------------ negatives

    def _gather_pool(self, hidden: torch.Tensor, padding: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        """The latent messages of every row of the batch on all processes (each ``(K_g, d)`` without padding) and
        the global index of this process's first row."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return [hidden[i][~padding[i]] for i in range(hidden.shape[0])], 0
        sizes = acc.gather(torch.tensor([hidden.shape[0]], device=hidden.device)).tolist()
        width = int(acc.gather(torch.tensor([hidden.shape[1]], device=hidden.device)).max())
        rows = max(sizes)
        h = hidden.new_zeros((rows, width, hidden.shape[2]))
        p = torch.ones((rows, width), dtype=torch.bool, device=hidden.device)
        h[: hidden.shape[0], : hidden.shape[1]], p[: hidden.shape[0], : hidden.shape[1]] = hidden, padding
        all_h, all_p = acc.gather(h), acc.gather(p)
        pool = [all_h[r * rows + i][~all_p[r * rows + i]] for r, n in enumerate(sizes) for i in range(n)]
        return pool, sum(sizes[: acc.process_index])

    def _negatives(self, key: str, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor | None:
        """``(B, K, d)`` negatives for this process's rows (padding as the rows' own), or None when the gathered
        batch has a single row."""
        pool, offset = self._gather_pool(hidden, padding)
        if len(pool) < 2:
            return None
        shift = random.Random(f"{key}:negative").randrange(1, len(pool))
        out = torch.zeros_like(hidden)
        for i in range(hidden.shape[0]):
            length = int((~padding[i]).sum())
            neg = length_matched(pool[(offset + i + shift) % len(pool)], length)
            if self.args.negative_noise_std > 0:  # seeded per global row: the same noise on any number of processes
                generator = torch.Generator().manual_seed(random.Random(f"{key}:noise:{offset + i}").randrange(2**63))
                noise = torch.randn(neg.shape, generator=generator, dtype=torch.float32) * self.args.negative_noise_std
                neg = neg + noise.to(neg.device, neg.dtype)
            out[i, :length] = neg
        return out

    # ------------------------------------------------------------------ the loss

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        key = self._forward_key(mode)
        ids = inputs.get("ids")
        batch = {k: v for k, v in inputs.items() if k != "ids"}
        has_plan = batch["plan_mask"].sum(dim=1) > 0
        ratios = self._ratios(key, has_plan) if mode == "train" else None
        logits, labels, _ = model(**batch, source="latent", ratios=ratios, ids=ids)
        mask = labels.ne(-100)
        token_ce = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none"
        ).view(labels.shape)
        ce_sum = token_ce.sum()
        local = torch.stack(
            [mask.sum(), mask.any(1).sum(), mask[has_plan].sum(), (mask.any(1) & has_plan).sum()]
        ).double()
        if num_items_in_batch is not None and self._batch_counts is not None:
            counts, scale = self._batch_counts, self._process_scale()
        else:
            counts, scale = local, 1.0
        tokens, rows, plan_tokens, plan_rows = (c.clamp(min=1.0).to(logits.device) for c in counts)
        metrics: dict[str, float] = {"loss/ce": float(ce_sum.detach() / local[0].clamp(min=1.0))}
        w_plan, w_rc = self.args.plan_similarity_weight, self.args.random_contrast_weight
        dynamic = self.args.dynamic_weights
        plan_term = logits.sum() * 0.0
        if (w_plan > 0 or dynamic) and bool(has_plan.any()):
            with torch.no_grad():
                plan_logits, plan_labels, _ = model(**batch, source="plan", ids=ids)
            lat, teacher, aligned = align_supervised(logits, mask, plan_logits, plan_labels.ne(-100))
            sums = plan_similarity_sums(lat, teacher, aligned & has_plan[:, None])
            plan_term = 0.7 * sums["kl_sum"] / plan_tokens + 0.3 * sums["cosine_sum"] / plan_rows
            n_tok, n_rows = sums["tokens"].clamp(min=1.0), sums["rows"].clamp(min=1.0)
            metrics["plan_kl"] = float(sums["kl_sum"].detach() / n_tok)
            metrics["plan_cosine"] = float(sums["cosine_sum"].detach() / n_rows)
            metrics["loss/plan_similarity"] = 0.7 * metrics["plan_kl"] + 0.3 * metrics["plan_cosine"]
        contrast_term = logits.sum() * 0.0
        if w_rc > 0 or dynamic:
            negatives = self._negatives(key, batch["hidden_states"], batch["latent_padding"])
            metrics["negatives_missing"] = float(negatives is None)
            if negatives is not None:
                with torch.no_grad():
                    neg_logits, _, _ = model(**{**batch, "hidden_states": negatives}, source="latent", ratios=ratios)
                sums = random_contrast_sums(logits, neg_logits, mask, self.args.contrast_margin)
                contrast_term = sums["hinge_sum"] / rows
                supervised_rows = mask.any(1)
                metrics["loss/random_contrast"] = float(sums["hinge_sum"].detach() / sums["rows"].clamp(min=1.0))
                metrics["js_bits"] = (
                    float(sums["js"][supervised_rows].detach().mean()) / _LN2 if supervised_rows.any() else 0.0
                )
                neg_ce = torch.nn.functional.cross_entropy(
                    neg_logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum"
                )
                metrics["delta_nll_bits"] = float((neg_ce - ce_sum.detach()) / local[0].clamp(min=1.0)) / _LN2
            else:
                metrics["loss/random_contrast"] = 0.0
        if dynamic:
            w_plan, w_rc = dynamic_weights(metrics.get("loss/plan_similarity", 0.0), metrics["loss/random_contrast"])
            metrics["w_plan"], metrics["w_rc"] = w_plan, w_rc
        loss = (ce_sum / tokens + w_plan * plan_term + w_rc * contrast_term) * scale
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _process_scale(self) -> float:
        """DDP averages gradients over processes: a loss normalised by the global counts is multiplied back."""
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            return float(self.accelerator.num_processes)
        return 1.0

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ logging

    def record_metrics(self, values: dict[str, float], mode: str = "train") -> None:
        """Add values to the next log (e.g. the InfoNCE probe's); logged as their mean over the interval."""
        for name, value in values.items():
            self._metrics[mode][name].append(float(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        stored = self._metrics[mode]
        names = sorted(stored)
        if names:
            means = torch.tensor([sum(stored[n]) / len(stored[n]) for n in names], dtype=torch.float64)
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means.to(self.args.device), reduction="mean").cpu()
            prefix = "eval_" if mode == "eval" else ""
            logs = {**logs, **{f"{prefix}{n}": float(v) for n, v in zip(names, means)}}
        stored.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ the probe

    def infonce_probe(self, dataset: Any = None) -> dict[str, float]:
        """The InfoNCE probe (:func:`~trl_ext.latent.probe.infonce_probe`) on the first ``infoNCE_probe_k`` samples
        of ``dataset`` (default: the evaluation set, else the training set)."""
        from trl_ext.latent.probe import infonce_probe

        dataset = dataset if dataset is not None else (self.eval_dataset or self.train_dataset)
        if dataset is None or len(dataset) < 2:
            raise ConfigError("the InfoNCE probe needs a dataset of at least 2 samples")
        k = min(self.args.infoNCE_probe_k, len(dataset))
        batch = self._prepare_inputs(self.data_collator([dataset[i] for i in range(k)]))
        receiver = self.accelerator.unwrap_model(self.model)
        return infonce_probe(receiver, batch, k=k, temperature=self.args.infoNCE_probe_temperature)

    # ------------------------------------------------------------------ saving and loading

    @property
    def receiver(self) -> LatentReceiver:
        """The unwrapped receiver (causal LM + adapter)."""
        return self.accelerator.unwrap_model(self.model)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The causal LM (``save_pretrained``), ``latent_comm_head.safetensors`` + ``.json``, the tokenizer and the
        training arguments, into ``output_dir``."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        save_receiver(self.receiver, output_dir, state_dict)
        self.processing_class.save_pretrained(output_dir)
        from transformers.trainer import TRAINING_ARGS_NAME

        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_receiver_weights(self.receiver if model is None else model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_best_model()
        load_receiver_weights(self.receiver, self.state.best_model_checkpoint)
