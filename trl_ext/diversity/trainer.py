"""Diversity training over concept clusters as a thin subclass of TRL's ``GRPOTrainer`` (docs/diversity.md, "Trainer").

GRPO's generation (transformers or vLLM), prompts, PEFT, reference model (for ``w_kl``), logging and checkpoints
are used as they are. This class cuts completions at the stop strings (``_generate_single_turn``); segments each
rollout, embeds the block after each concept block and labels it with its option's replay buffer, on the gathered
batch (``_generate_and_score_completions``); and replaces the loss (``_compute_loss``) by the batch objective of
:mod:`trl_ext.diversity.objective`, computed either **directly** (one process without accumulation, or evaluation:
one micro-batch holds the batch) or through ``W = ∂L/∂ log p`` of the whole batch from a no-grad scoring forward,
back-propagated as ``P · Σ_t W_t log p_θ(y_t)`` per micro-batch (exact under accumulation and DDP). It prefills the
buffers, keeps buffers and ``log Z`` in checkpoints (:mod:`trl_ext.diversity.state`), records metrics and samples
(:mod:`trl_ext.diversity.records`) and decays the learning rate to ``final_learning_rate``.

**Decision** (scoring forward): generation runs without gradient and the per-token log-probs come from a
teacher-forced forward (SPEC §1 step 3); on the W path the batch is scored once without gradient (for ``W``) and
once with gradient per micro-batch, the price of exact gradient accumulation and DDP.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from trl import GRPOTrainer

from trl_ext.common._trl_compat import metrics_of
from trl_ext.common.checkpoint import ExtensionStateMixin
from trl_ext.common.errors import ConfigError, InputTypeError
from trl_ext.common.inputs import PROMPT_FORMATS, PROMPT_HINT, check_dataset_columns, check_model_argument
from trl_ext.common.lm_head_tiles import LMHeadTileMixin
from trl_ext.common.schedules import floor_schedule
from trl_ext.diversity.concepts import segment
from trl_ext.diversity.config import DiversityConfig
from trl_ext.diversity.log_z import LogPartition
from trl_ext.diversity.objective import (
    ROLE_FOLLOWING,
    block_table,
    cell_log_rewards,
    diversity_objective,
    k2_k3,
    objective_weights,
    stop_string_cut,
    top_p_renormalized_logps,
)
from trl_ext.diversity.prompts import check_prompt_lengths, prompt_dataset, prompt_key, prompt_keys, prompts_of
from trl_ext.diversity.records import (
    NamedOption,
    append_samples,
    batch_metrics,
    log_samples_to_wandb,
    loss_metrics,
    sample_rows,
    trim_samples,
)
from trl_ext.diversity.state import load_state, make_buffers, save_state

logger = logging.getLogger(__name__)

__all__ = ["DiversityTrainer", "prompt_key"]

WEIGHTS_KEY = "diversity_weights"
TABLE_KEY, GROUPS_KEY, REWARDS_KEY = "diversity_table", "diversity_groups", "diversity_log_rewards"


class DiversityTrainer(ExtensionStateMixin, LMHeadTileMixin, GRPOTrainer):
    """Diversity training (docs/diversity.md). See :class:`~trl_ext.diversity.config.DiversityConfig`.

    Args:
        model: the policy, as for ``GRPOTrainer`` (hub id, folder or ``PreTrainedModel``; with ``peft_config`` a LoRA
            is trained and the reference for ``w_kl`` is the model with the adapter disabled).
        args: a :class:`DiversityConfig` with at least one concept.
        train_dataset: prompts (a ``prompt`` column of strings or chat messages); default: ``args.prompts``.
        reward_funcs: optional reward functions, scored and logged (``rewards/<name>/mean``) but not trained on.
        embedder: ``embed(texts) -> (n, d)`` for the replay buffers; default: a
            :class:`~trl_ext.diversity.embedding.SentenceEmbedder` of ``args.sentence_transformer`` on the
            trainer's device.
        Every other argument is ``GRPOTrainer``'s.

    Raises:
        InputTypeError: ``args`` is not a :class:`DiversityConfig`.
        ConfigError: no concept, or neither a dataset nor ``args.prompts``.
        DataError: a dataset without a ``prompt`` column, or a prompt that leaves no room for
            ``max_completion_length`` tokens in the model's context.
    """

    _tag_names = ["trl", "trl_ext", "diversity"]

    def __init__(
        self,
        model,
        args: DiversityConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_funcs=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        embedder=None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            raise ConfigError("DiversityTrainer needs a DiversityConfig with at least one concept (args=None given)")
        if not isinstance(args, DiversityConfig):
            raise InputTypeError(f"DiversityTrainer needs a DiversityConfig, got {type(args).__name__}")
        if not args.concept_list:
            raise ConfigError(
                "DiversityConfig has no concept: set concept_name and concept_options (e.g. 'animal', ['cat', 'dog']) "
                "or concepts=[{'name': ..., 'options': [...]}]"
            )
        if train_dataset is None:
            if not args.prompts:
                raise ConfigError("DiversityTrainer needs a train_dataset with a 'prompt' column or args.prompts")
            train_dataset = prompt_dataset(args)
        for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            check_dataset_columns(data, name, PROMPT_FORMATS, "DiversityTrainer", PROMPT_HINT)
        model = check_model_argument(model)
        self._segments: dict[tuple[int, ...], list] = {}
        if not reward_funcs:
            reward_funcs = [NamedOption(self)]
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            **kwargs,
        )
        self.concepts = list(args.concept_list)
        config = self.accelerator.unwrap_model(self.model).config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        check_prompt_lengths(
            self._tokenize_prompts, (train_dataset, eval_dataset), getattr(config, "max_position_embeddings", None),
            self.max_completion_length,
        )  # fmt: skip
        if embedder is None:
            from trl_ext.diversity.embedding import SentenceEmbedder

            embedder = SentenceEmbedder(
                args.sentence_transformer, device=self.accelerator.device, batch_size=args.embedding_batch_size
            )
        self.embedder = embedder
        self.buffers = make_buffers(args, self.concepts, embedder)
        self.log_z = LogPartition(args.log_z_learning_rate, args.log_z_init)
        for data in (train_dataset, eval_dataset):
            for key in prompt_keys(data):
                self.log_z.index(key)
        self._prefilled = args.num_samples == 0
        self.last_rollout: dict[str, Any] | None = None  # the gathered block table etc. of the last rollout
        self._value_share = 0.0
        self._train_prompts = sorted(set(prompt_keys(train_dataset)))
        self._prompt_by_key = {prompt_key(p): p for p in prompts_of(train_dataset)}

    # ------------------------------------------------------------------ checks

    # ------------------------------------------------------------------ schedule

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """Warm-up, then cosine/linear decay to ``final_learning_rate`` (or constant)."""
        if self.lr_scheduler is None:
            base = self.args.learning_rate
            final = self.args.final_learning_rate or 0.0
            self.lr_scheduler = floor_schedule(
                optimizer if optimizer is not None else self.optimizer,
                str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)),
                self.args.get_warmup_steps(num_training_steps),
                num_training_steps,
                final / base if base > 0 else 0.0,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    # ------------------------------------------------------------------ generation

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        """GRPO's generation, each completion cut after the token that completes a stop string."""
        completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        stops = self.args.stop_strings
        if not stops:
            return completion_ids, logprobs
        decode = self._decode
        cut = [stop_string_cut(ids, decode, stops) for ids in completion_ids]
        completion_ids = [ids[:k] for ids, k in zip(completion_ids, cut)]
        if logprobs is not None:
            logprobs = [lp[:k] for lp, k in zip(logprobs, cut)]
        return completion_ids, logprobs

    def _segment(self, ids: list[int]) -> list:
        """:func:`~trl_ext.diversity.concepts.segment` of a completion (cached for the current rollout)."""
        key = tuple(ids)
        if key not in self._segments:
            self._segments[key] = segment(key, self._tokenizer, self.concepts, self.args.max_window_size)
        return self._segments[key]

    def _decode(self, ids) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _prefill(self) -> None:
        """Fill the replay buffers with ``num_samples`` completions per training prompt (no clustering)."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        per_call = self.args.per_device_train_batch_size * self.args.steps_per_generation
        share = math.ceil(self.args.num_samples / acc.num_processes)
        # whole generation batches (vLLM's server mode groups the gathered prompts by num_generations), then the
        # first `share` completions of each prompt on each process
        calls = [key for key in self._train_prompts for _ in range(math.ceil(share / per_call))]
        was_training = self.model.training
        collected: list[tuple[str, list[int]]] = []
        kept: Counter = Counter()
        for key in tqdm(calls, desc="prefilling replay buffers", disable=not acc.is_main_process):
            _, completion_ids, *_ = self._generate([self._prompt_by_key[key]] * per_call)
            for ids in completion_ids[: share - kept[key]]:
                collected.append((key, ids))
                kept[key] += 1
        self.model.train(was_training)
        _, items = self._following_items([ids for _, ids in collected])
        gathered = _gather_objects(acc, [(collected[i][0], c, o, t, e) for i, c, o, t, e in items])
        per_prompt: Counter = Counter()
        by_buffer: dict[tuple[int, int], list[tuple[str, np.ndarray]]] = {}
        for key, c, o, text, emb in gathered:
            per_prompt[key] += 1
            by_buffer.setdefault((c, o), []).append((text, emb))
        for (c, o), pairs in by_buffer.items():
            self.buffers[(c, o)].prefill([t for t, _ in pairs], np.stack([e for _, e in pairs]))
        self._prefilled = True
        sizes = ", ".join(f"{b.name}: {len(b)}" for b in self.buffers.values())
        logger.info("prefilled the replay buffers from %d completions per prompt (%s)", self.args.num_samples, sizes)

    def _following_items(self, completion_ids: list[list[int]]):
        """``(blocks per row, items)``: the segmentation of each completion and ``(row, concept, option, text,
        embedding)`` of each open block that follows a concept block (texts embedded in one batched call)."""
        items = []
        blocks_per_row = [self._segment(ids) for ids in completion_ids]
        for i, blocks in enumerate(blocks_per_row):
            for prev, block in zip(blocks, blocks[1:]):
                if prev.kind == "concept" and block.kind == "open":
                    c = [x.name for x in self.concepts].index(prev.concept)
                    o = self.concepts[c].option_index(prev.option)
                    items.append((i, c, o, self._decode(completion_ids[i][block.start : block.end]).strip()))
        unique = list(dict.fromkeys(t for *_, t in items))  # each distinct text embedded once
        vectors = np.asarray(self.embedder(unique), dtype=np.float32) if unique else []
        embedding = {text: vectors[j] for j, text in enumerate(unique)}
        return blocks_per_row, [(i, c, o, t, embedding[t]) for i, c, o, t in items]

    # ------------------------------------------------------------------ rollout

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if mode == "train" and not self._prefilled:
            self._prefill()
        self._segments = {}
        out = super()._generate_and_score_completions(inputs)
        acc = self.accelerator
        completion_ids, completion_mask = out["completion_ids"], out["completion_mask"]
        local_ids = [row[m.bool()].tolist() for row, m in zip(completion_ids.cpu(), completion_mask.cpu())]
        keys = [prompt_key(x["prompt"]) for x in inputs]

        # blocks and buffers, on the gathered batch (the same on every process)
        local_blocks, items = self._following_items(local_ids)
        table = block_table(local_blocks, self.concepts, max(1, 2 * len(self.concepts) + 1))
        global_table, offsets = self._label_gathered(table, items, len(local_ids), train=mode == "train")
        global_keys = _gather_objects(acc, keys)
        groups_index = [self.log_z.index(k) for k in global_keys]
        uniq = sorted(set(groups_index))
        groups = torch.tensor([uniq.index(g) for g in groups_index], dtype=torch.long)
        tb = self.args.loss_type == "tb"
        log_rewards = cell_log_rewards(global_table, groups, len(self.concepts)) if tb else None
        self._log_batch_metrics(mode, global_table)
        if mode == "train":
            self._record_samples(global_keys, global_table, acc, local_ids)
        self._batch_prompts = uniq
        if self._direct():
            # one micro-batch holds the whole batch: _compute_loss computes L itself (no scoring forward)
            device = completion_ids.device
            out[TABLE_KEY] = global_table.to(device)
            out[GROUPS_KEY] = groups.to(device)
            out[REWARDS_KEY] = (log_rewards if tb else torch.zeros(len(groups))).to(device)
            return out

        # the loss of the whole batch and its gradient with respect to the per-token log-probs
        with torch.no_grad():
            logps, _ = self._token_logps(self.model, out, grad=False)
        t_local = logps.shape[1]
        global_logps = acc.gather(acc.pad_across_processes(logps, dim=1)).float().cpu()
        global_mask = acc.gather(acc.pad_across_processes(completion_mask, dim=1)).float().cpu()
        if tb:
            self._init_log_z(uniq, groups, log_rewards, (global_logps * global_mask).sum(dim=1))
        log_z = self.log_z.tensor(uniq) if tb else None
        result, weights, grad_z = objective_weights(
            global_logps,
            log_z,
            lambda leaf, z: self._objective(leaf, global_mask, global_table, groups, z, log_rewards),
        )
        self.last_rollout = {
            "table": global_table,
            "groups": groups,
            "mask": global_mask,
            "log_rewards": log_rewards,
            "log_z": log_z,
            "result": result,
        }
        start = int(offsets[acc.process_index])
        out[WEIGHTS_KEY] = weights[start : start + len(local_ids), :t_local].to(logps.device)
        self._value_share = float(result.loss.detach()) / (self.args.steps_per_generation if mode == "train" else 1)
        if tb and mode == "train":
            self.log_z.step(uniq, grad_z)
        self._log_loss_metrics(mode, result, log_rewards, uniq)
        return out

    def _direct(self) -> bool:
        """Whether one micro-batch holds the whole generation batch (one process; no accumulation, or evaluation):
        ``_compute_loss`` then computes ``L`` directly with autograd and the no-grad scoring forward is skipped."""
        return self.accelerator.num_processes == 1 and (self.args.steps_per_generation == 1 or not self.model.training)

    def _objective(self, logps, mask, table, groups, log_z, log_rewards):
        return diversity_objective(
            logps,
            mask,
            table,
            groups,
            [len(c.options) for c in self.concepts],
            n_clusters=self.args.n_clusters,
            loss_type=self.args.loss_type,
            w_c=self.args.w_c,
            w_o=self.args.w_o,
            uniform_over=self.args.uniform_over,
            open_block_reduction=self.args.open_block_reduction,
            log_z=log_z,
            log_rewards=log_rewards,
        )

    def _init_log_z(self, uniq, groups, log_rewards, seq) -> None:
        """Start the log Z of each prompt seen for the first time at the TB minimiser of this batch."""
        for j, g in enumerate(uniq):
            if self.log_z.needs_init(g):
                self.log_z.initialize(g, float((log_rewards - seq.detach().cpu())[groups == j].mean()))

    def _label_gathered(self, table: torch.Tensor, items: list, n_local: int, train: bool):
        """Gather the block tables and the following blocks (texts, embeddings) of every process, add them to the
        buffers in process order (``train``; in evaluation only label them) and write the labels into the global
        table. Returns ``(global table, row offset of each process)``."""
        acc = self.accelerator
        gathered = _gather_objects(acc, [(acc.process_index, i, c, o, t, e) for i, c, o, t, e in items])
        offsets = np.concatenate([[0], np.cumsum(_gather_objects(acc, [n_local]))]).astype(int)
        global_table = acc.gather(table.to(acc.device)).cpu()
        for c, o in sorted({(x[2], x[3]) for x in gathered}):
            members = [x for x in gathered if (x[2], x[3]) == (c, o)]
            texts, emb = [x[4] for x in members], np.stack([x[5] for x in members])
            found = self.buffers[(c, o)].add(texts, emb) if train else self.buffers[(c, o)].assign(emb)
            for k, (p, i, *_) in enumerate(members):
                row = offsets[p] + i
                following = (global_table[row, :, 4] == ROLE_FOLLOWING) & (global_table[row, :, 2] == c)
                global_table[row, following.nonzero()[0, 0], 5] = -1 if found is None else int(found[k])
        return global_table, offsets

    def _token_logps(self, model, inputs, grad: bool):
        """``(logps, plain)``: the per-token log-probs the losses use and the temperature-scaled ones (for the KL);
        the same tensor unless ``renormalize_top_p``."""
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        t = completion_ids.size(1)
        if not self.args.renormalize_top_p:
            logps, _, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, t, batch_size=None if grad else self.args.per_device_train_batch_size
            )
            return logps, logps
        step = input_ids.shape[0] if grad else self.args.per_device_train_batch_size
        parts = []
        for i in range(0, input_ids.shape[0], step):  # full logits: (rows, T, V) at a time
            outputs = model(
                input_ids=input_ids[i : i + step], attention_mask=attention_mask[i : i + step], use_cache=False
            )
            logits = outputs.logits[:, -t - 1 : -1]
            parts.append(
                top_p_renormalized_logps(logits, completion_ids[i : i + step], self.args.top_p, self.temperature)
            )
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    # ------------------------------------------------------------------ loss

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"].float()
        logps, plain = self._token_logps(model, inputs, grad=True)
        world = self.accelerator.num_processes
        if TABLE_KEY in inputs:
            loss = self._direct_loss(logps, mask, inputs, mode)
        else:
            surrogate = (inputs[WEIGHTS_KEY] * logps * mask).sum()
            loss = world * (surrogate - surrogate.detach()) + self._value_share
        if self.args.w_kl > 0:
            k2, k3 = k2_k3(plain, inputs["ref_per_token_logps"])
            tokens = inputs["num_items_in_batch"].clamp(min=1)
            loss = loss + self.args.w_kl * world * (k2 * mask).sum() / tokens
            stats = torch.stack([(k3 * mask).sum(), mask.sum()]).to(self.accelerator.device)
            total, count = self.accelerator.gather(stats.unsqueeze(0)).sum(0).tolist()
            metrics_of(self, mode)["diversity/kl"].append(total / max(count, 1.0))
        return loss

    def _direct_loss(self, logps, mask, inputs, mode):
        """``L`` of the whole batch (:meth:`_direct`), differentiated by autograd; TB's log Z steps on its gradient."""
        table, groups = inputs[TABLE_KEY].cpu(), inputs[GROUPS_KEY].cpu()
        uniq, tb = self._batch_prompts, self.args.loss_type == "tb"
        log_rewards = inputs[REWARDS_KEY].float().cpu() if tb else None
        log_z = None
        if tb:
            self._init_log_z(uniq, groups, log_rewards, (logps * mask).sum(dim=1))
            log_z = self.log_z.tensor(uniq, logps.device).requires_grad_(mode == "train")
        result = self._objective(logps.float(), mask, table, groups.to(logps.device), log_z, log_rewards)
        if tb and mode == "train":
            (grad_z,) = torch.autograd.grad(result.loss, log_z, retain_graph=True)
            self.log_z.step(uniq, grad_z)
        self.last_rollout = {"table": table, "groups": groups, "mask": mask.detach().cpu(),
                             "log_rewards": log_rewards, "log_z": log_z, "result": result}  # fmt: skip
        self._log_loss_metrics(mode, result, log_rewards, uniq)
        return result.loss

    # ------------------------------------------------------------------ metrics and samples

    def _log_loss_metrics(self, mode, result, log_rewards, uniq) -> None:
        log_z = float(np.mean([self.log_z.values[g] for g in uniq])) if result.tb is not None else None
        log_reward = float(log_rewards.mean()) if result.tb is not None else None
        self._append_metrics(mode, loss_metrics(result, self.concepts, log_z, log_reward))

    def _log_batch_metrics(self, mode, table) -> None:
        sizes = {key: len(buffer) for key, buffer in self.buffers.items()}
        self._append_metrics(mode, batch_metrics(table, self.concepts, sizes))

    def _append_metrics(self, mode: str, values: dict[str, float]) -> None:
        metrics = metrics_of(self, mode)
        for name, value in values.items():
            metrics[name].append(value)

    def _epoch_length(self) -> int:
        return self.args.num_steps_per_epoch or max(1, int(self.state.max_steps or 1))

    def _samples_path(self) -> Path:
        return Path(self.args.output_dir) / self.args.samples_file

    def _record_samples(self, keys, table, acc, local_ids) -> None:
        """At the last step of each epoch: this rollout's completions as rows of ``samples.csv`` (and a wandb
        table with ``report_to=wandb``)."""
        step = self.state.global_step + 1  # the optimizer step this rollout trains
        if step % self._epoch_length() != 0:
            return
        texts = _gather_objects(acc, [self._decode(ids) for ids in local_ids])
        if not acc.is_main_process:
            return
        rows = sample_rows(keys, texts, table, self.concepts, step // self._epoch_length(), step)
        append_samples(self._samples_path(), rows)
        log_samples_to_wandb(rows, self.args.report_to)

    def train(self, resume_from_checkpoint=None, *args: Any, **kwargs: Any):
        if resume_from_checkpoint in (None, False) and self.args.should_save and self._samples_path().exists():
            self._samples_path().unlink()  # a fresh run starts a new samples table
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ------------------------------------------------------------------ state

    def save_diversity_state(self, folder: str | Path) -> None:
        """Write the replay buffers and ``log Z`` into ``folder`` (checkpoints do it by themselves)."""
        save_state(folder, self.buffers, self.log_z, self._prefilled)

    def _save_extension_state(self, folder: Path) -> None:
        super()._save_extension_state(folder)
        self.save_diversity_state(folder)

    def _load_extension_state(self, folder: Path) -> None:
        super()._load_extension_state(folder)
        prefilled = load_state(folder, self.buffers, self.log_z)
        if prefilled is None:
            return
        self._prefilled = prefilled
        step = folder.name.rsplit("-", 1)[-1]
        if step.isdigit() and self.args.should_save:
            trim_samples(self._samples_path(), int(step))


# ---------------------------------------------------------------------- helpers


def _gather_objects(accelerator, objects: list) -> list:
    """Concatenate every process's list, in process order (the same list on every process)."""
    if accelerator.num_processes == 1:
        return list(objects)
    from accelerate.utils import gather_object

    return gather_object(objects)
