"""Proxy batches drawn alongside every outcome batch (docs/selective.md).

Selective generalisation trains on outcome (task) data T while drawing, at every step, one batch from each
proxy dataset: positive proxy A⁺ and optionally negative proxy A⁻ (any names work). The caller's outcome
loader drives the steps; :class:`ProxyCycler` supplies the proxy batches that go with each outcome batch.

Cycling modes (``cycling=``)
----------------------------
``"continuous"``
    Every proxy stream restarts on its own, reshuffled, as soon as it is exhausted, so every step has a batch
    from every stream. An epoch is one pass over T: :meth:`ProxyCycler.epoch_length` is ``num_outcome_batches``.
    The proxy streams ignore epoch boundaries (a stream in the middle of a pass continues where it was).

``"synchronized"``
    **Decision** (upstream's behaviour, made precise): an epoch lasts ``max(num_outcome_batches, longest
    proxy pass)`` steps. Within an epoch each stream makes exactly one pass; a stream that is exhausted
    before the epoch ends yields ``None`` for the remaining steps of that epoch (it does *not* restart on its
    own). When the epoch's last step has been drawn, all streams restart together, reshuffled. The caller's
    outcome loader follows the same rule: when it has fewer batches than the epoch, the steps after its last
    batch have no outcome batch. ``num_outcome_batches=None`` counts no outcome stream (the epoch is the
    longest proxy pass).

Order and determinism
---------------------
Pass ``r`` of a stream (``r`` = the stream's restart count; in synchronized mode the epoch index, the same for
all streams) visits the examples in the order ``numpy.random.default_rng(seed + r).permutation(n)``
(``arange(n)`` with ``shuffle=False``). The order depends only on ``seed``, ``r`` and the dataset length, so
it is the same on every process, and index-aligned streams of equal length (A⁺[i] and A⁻[i] with the same
prompt) stay aligned batch for batch. No global random state is read or changed.

Sharding for DDP (``shard=(process_index, num_processes)``)
-----------------------------------------------------------
Each pass's order is padded cyclically (like ``torch.utils.data.DistributedSampler``) to a multiple of
``num_processes`` and process ``i`` takes every ``num_processes``-th example starting at ``i``; its batches
are consecutive ``batch_size`` chunks of that slice (``batch_size`` is per process, like
``per_device_train_batch_size``). So the processes see pairwise disjoint examples in each pass (exactly
disjoint when ``num_processes`` divides the dataset length; otherwise up to ``num_processes - 1`` examples of
the pass start are repeated as padding), together they cover the whole dataset, and every process has the same
number of batches per pass, the same positions and restart counts. A :meth:`ProxyCycler.state_dict` saved on
one process (e.g. rank 0) therefore restores every process.

Resuming
--------
:meth:`ProxyCycler.state_dict` holds the positions, restart counts and epoch (JSON-serialisable);
:meth:`ProxyCycler.load_state_dict` into a cycler built with the same datasets and settings makes the next
:meth:`ProxyCycler.next_batches` return exactly what the saved run would have drawn next.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from trl_ext.common.errors import UnknownNameError
from trl_ext.common.inputs import check_dataset_columns, sft_formats
from trl_ext.selective._trl_compat import prepare_dataset_as_sft, sft_collator_class

__all__ = ["CYCLING_MODES", "ProxyCycler", "language_modeling_collator", "paired_batches", "tokenize_proxy_dataset"]

CYCLING_MODES = ("continuous", "synchronized")
"""The proxy cycling modes of docs/selective.md."""


class ProxyCycler:
    """One shuffling, restarting batch stream per named proxy dataset.

    Args:
        datasets: name -> dataset (a ``datasets.Dataset`` or any sized sequence of rows), e.g.
            ``{"positive": proxy_pos, "negative": proxy_neg}``.
        batch_size: examples per proxy batch on each process (>= 1).
        collate_fn: turns a list of rows into a batch; ``None`` returns the list of rows.
        cycling: ``"continuous"`` or ``"synchronized"`` (see the module docstring).
        seed: seed of the per-pass shuffles.
        num_outcome_batches: outcome batches per epoch on this process (used by the synchronized epoch and as
            the default of :meth:`epoch_length`).
        shard: ``(process_index, num_processes)``; each process draws a disjoint slice of every stream.
        shuffle: shuffle each pass (otherwise dataset order).
        drop_last: drop the last, smaller batch of each pass (the same on every process).

    Raises:
        ValueError: unknown cycling mode, no datasets, an empty dataset, ``batch_size < 1``, a bad ``shard``,
            a negative ``num_outcome_batches``, or a stream with no batch at all (``drop_last`` with fewer than
            ``batch_size`` examples per process).
    """

    def __init__(
        self,
        datasets: Mapping[str, Sequence[Any]],
        batch_size: int,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        cycling: str = "continuous",
        seed: int = 0,
        num_outcome_batches: int | None = None,
        shard: tuple[int, int] = (0, 1),
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if cycling not in CYCLING_MODES:
            raise UnknownNameError(f"unknown proxy cycling mode {cycling!r}; known modes: {', '.join(CYCLING_MODES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"proxy batch_size must be an integer >= 1, got {batch_size!r}")
        batch_size = int(batch_size)
        if not datasets:
            raise ValueError("ProxyCycler needs at least one proxy dataset, got none")
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be (process_index, num_processes) with 0 <= index < count, got {shard!r}")
        if num_outcome_batches is not None and num_outcome_batches < 0:
            raise ValueError(f"num_outcome_batches must be >= 0 or None, got {num_outcome_batches}")
        self.datasets = dict(datasets)
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.cycling = cycling
        self.seed = int(seed)
        self.num_outcome_batches = num_outcome_batches
        self.shard = (int(index), int(count))
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._sizes: dict[str, int] = {}
        self._pass_lengths: dict[str, int] = {}
        for name, data in self.datasets.items():
            n = len(data)
            if n == 0:
                raise ValueError(f"proxy dataset {name!r} is empty")
            per_process = math.ceil(n / count)
            batches = per_process // batch_size if drop_last else math.ceil(per_process / batch_size)
            if batches == 0:
                raise ValueError(
                    f"proxy dataset {name!r} has {n} examples: {per_process} per process over {count} process(es), "
                    f"fewer than one batch of {batch_size} with drop_last=True"
                )
            self._sizes[name] = n
            self._pass_lengths[name] = batches
        self._positions = dict.fromkeys(self.datasets, 0)
        self._restarts = dict.fromkeys(self.datasets, 0)
        self._epoch = 0
        self._step_in_epoch = 0
        self._order_cache: dict[tuple[str, int], np.ndarray] = {}

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        """Stream names, in the order given."""
        return list(self.datasets)

    @property
    def pass_lengths(self) -> dict[str, int]:
        """Batches per pass of each stream, on each process."""
        return dict(self._pass_lengths)

    @property
    def restarts(self) -> dict[str, int]:
        """How many times each stream has restarted (= the pass index being drawn)."""
        return dict(self._restarts)

    @property
    def epoch(self) -> int:
        """Synchronized mode: index of the current epoch (0-based); continuous mode: always 0."""
        return self._epoch

    def epoch_length(self, num_outcome_batches: int | None = None) -> int:
        """Steps in one epoch: ``num_outcome_batches`` (continuous) or the longest pass (synchronized).

        ``num_outcome_batches`` defaults to the constructor's value. Continuous mode needs it (an epoch is a
        pass over T); in synchronized mode ``None`` counts no outcome stream. The synchronized restarts of this
        cycler always use the constructor's value.
        """
        n_out = self.num_outcome_batches if num_outcome_batches is None else num_outcome_batches
        if n_out is not None and n_out < 0:
            raise ValueError(f"num_outcome_batches must be >= 0 or None, got {n_out}")
        if self.cycling == "continuous":
            if n_out is None:
                raise ValueError(
                    "continuous cycling: an epoch is one pass over the outcome data; pass num_outcome_batches"
                )
            return n_out
        return max(n_out or 0, *self._pass_lengths.values())

    # ------------------------------------------------------------------ drawing
    def _order(self, name: str, restart: int) -> np.ndarray:
        """This process's example indices for pass ``restart`` of stream ``name``."""
        key = (name, restart)
        if key not in self._order_cache:
            n = self._sizes[name]
            perm = np.random.default_rng(self.seed + restart).permutation(n) if self.shuffle else np.arange(n)
            index, count = self.shard
            padded = np.resize(perm, math.ceil(n / count) * count)  # cyclic padding, as DistributedSampler
            self._order_cache = {k: v for k, v in self._order_cache.items() if k[0] != name}
            self._order_cache[key] = padded[index::count]
        return self._order_cache[key]

    def batch_indices(self, name: str, restart: int, position: int) -> list[int]:
        """Dataset indices of batch ``position`` in pass ``restart`` of stream ``name`` on this process."""
        if not 0 <= position < self._pass_lengths[name]:
            raise IndexError(f"stream {name!r} has {self._pass_lengths[name]} batches per pass, asked for {position}")
        order = self._order(name, restart)
        return [int(i) for i in order[position * self.batch_size : (position + 1) * self.batch_size]]

    def _make_batch(self, name: str, indices: list[int]) -> Any:
        data = self.datasets[name]
        if hasattr(data, "select") and hasattr(data, "column_names"):  # datasets.Dataset: one columnar read
            columns = data[indices]
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []
        else:
            rows = [data[i] for i in indices]
        return self.collate_fn(rows) if self.collate_fn is not None else rows

    def next_indices(self) -> dict[str, list[int] | None]:
        """Advance one step; return each stream's dataset indices (``None``: exhausted, synchronized mode)."""
        out: dict[str, list[int] | None] = {}
        if self.cycling == "synchronized":
            if self._step_in_epoch >= self.epoch_length():
                self._epoch += 1
                self._step_in_epoch = 0
                for name in self.datasets:
                    self._positions[name] = 0
                    self._restarts[name] = self._epoch
            self._step_in_epoch += 1
        for name in self.datasets:
            if self._positions[name] >= self._pass_lengths[name]:
                if self.cycling == "synchronized":
                    out[name] = None
                    continue
                self._restarts[name] += 1
                self._positions[name] = 0
            out[name] = self.batch_indices(name, self._restarts[name], self._positions[name])
            self._positions[name] += 1
        return out

    def next_batches(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Advance one step; return ``{name: batch}`` (``None`` for a stream exhausted in synchronized mode).

        Every stream advances (so positions do not depend on who reads what); only the streams in ``names``
        (default: all) are fetched and collated. An unknown name raises ``KeyError`` listing the streams."""
        indices = self.next_indices()
        wanted = list(indices) if names is None else list(names)
        unknown = [n for n in wanted if n not in indices]
        if unknown:
            raise KeyError(f"unknown proxy stream(s) {unknown}; streams: {', '.join(indices)}")
        return {n: None if indices[n] is None else self._make_batch(n, indices[n]) for n in wanted}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Endless iterator of :meth:`next_batches` (the caller decides when to stop)."""
        while True:
            yield self.next_batches()

    # ------------------------------------------------------------------ checkpointing
    def _signature(self) -> dict[str, Any]:
        return {
            "cycling": self.cycling,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_processes": self.shard[1],
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "num_outcome_batches": self.num_outcome_batches,
            "sizes": dict(self._sizes),
        }

    def state_dict(self) -> dict[str, Any]:
        """Positions, restart counts and epoch (plus the settings they depend on), JSON-serialisable."""
        return {
            **self._signature(),
            "positions": dict(self._positions),
            "restarts": dict(self._restarts),
            "epoch": self._epoch,
            "step_in_epoch": self._step_in_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` naming every setting that differs."""
        mine = self._signature()
        diffs = [f"{k}: saved {state.get(k)!r}, here {v!r}" for k, v in mine.items() if state.get(k) != v]
        if diffs:
            raise ValueError("proxy cycler state does not match this cycler: " + "; ".join(diffs))
        self._positions = {name: int(state["positions"][name]) for name in self.datasets}
        self._restarts = {name: int(state["restarts"][name]) for name in self.datasets}
        self._epoch = int(state["epoch"])
        self._step_in_epoch = int(state["step_in_epoch"])


def paired_batches(positive: Sequence[Mapping[str, Any]], negative: Sequence[Mapping[str, Any]]):
    """Pair A⁺[i] with A⁻[i] as preference rows ``{"prompt", "chosen", "rejected"}`` (TRL's DPO format).

    Both inputs are prompt–completion rows (conversational or plain text) of equal length whose prompts
    match index by index; ``chosen`` is A⁺[i]'s completion, ``rejected`` A⁻[i]'s. The result is a
    ``datasets.Dataset`` when either input is one, else a list of dicts (so it also pairs two batches of rows).
    Cycle the pairs as one stream (e.g. ``ProxyCycler({"pairs": pairs}, ...)``) to keep them together.

    Raises:
        ValueError: different lengths (naming both), a row without ``prompt``/``completion``, or prompts that
            differ at some index.
    """
    if len(positive) != len(negative):
        raise ValueError(
            f"paired proxy data need equal lengths: positive has {len(positive)} rows, negative has {len(negative)}"
        )
    rows = []
    for i in range(len(positive)):
        pos, neg = positive[i], negative[i]
        for which, r in (("positive", pos), ("negative", neg)):
            missing = [k for k in ("prompt", "completion") if k not in r]
            if missing:
                raise ValueError(f"{which} row {i} has no field(s) {missing}; pairs need prompt-completion rows")
        if pos["prompt"] != neg["prompt"]:
            raise ValueError(
                f"pair {i}: the prompts differ (positive {pos['prompt']!r:.80}, negative {neg['prompt']!r:.80})"
            )
        rows.append({"prompt": pos["prompt"], "chosen": pos["completion"], "rejected": neg["completion"]})
    try:
        from datasets import Dataset
    except ImportError:  # pragma: no cover - datasets is a dependency
        return rows
    if isinstance(positive, Dataset) or isinstance(negative, Dataset):
        return Dataset.from_list(rows)
    return rows


# ---------------------------------------------------------------------- tokenizing proxy data outside SFTTrainer


def tokenize_proxy_dataset(
    dataset: Any,
    processing_class: Any,
    *,
    max_length: int | None,
    truncation_mode: str = "keep_start",
    dataset_num_proc: int | None = None,
    dataset_text_field: str = "text",
    name: str = "proxy",
):
    """Tokenize proxy data for a host that is not an ``SFTTrainer`` (DPO, PPO) exactly as ``SFTTrainer`` does.

    The rows go through ``SFTTrainer._prepare_dataset`` itself (called on a minimal stand-in for the trainer
    state it reads), so proxy batches are identical to those of :class:`SelectiveSFTTrainer`: the tokenizer's
    chat template for conversational rows, EOS appended to plain text, ``labels`` = ``input_ids`` for
    language-modeling rows and −100 on the prompt for prompt–completion rows (SFT's default completion-only loss
    for that format), truncation to ``max_length`` (``truncation_mode``) and rows without any label dropped.

    Accepted formats: language modeling (``dataset_text_field`` / ``"text"``, ``"messages"``, ``"conversations"``),
    prompt–completion (``"prompt"`` + ``"completion"``, plain or conversational), or already tokenized
    (``"input_ids"``, optional ``"labels"``).

    Raises:
        DataError: (a ``ValueError``) a dataset in none of these formats (e.g. preference rows), naming it and its
            columns (:func:`~trl_ext.common.inputs.check_dataset_columns`).
    """
    formats, hint = sft_formats(SimpleNamespace(dataset_text_field=dataset_text_field))
    check_dataset_columns(dataset, name, formats, "proxy data", hint)
    first = next(iter(dataset))
    is_prompt_completion = "prompt" in first and "completion" in first
    return prepare_dataset_as_sft(
        dataset,
        processing_class,
        completion_only_loss=is_prompt_completion,
        max_length=max_length,
        truncation_mode=truncation_mode,
        dataset_num_proc=dataset_num_proc,
        dataset_text_field=dataset_text_field,
        name=name,
    )


def language_modeling_collator(processing_class: Any, pad_to_multiple_of: int | None = None):
    """TRL's ``DataCollatorForLanguageModeling`` with the tokenizer's pad token (what ``SFTTrainer`` uses)."""
    DataCollatorForLanguageModeling = sft_collator_class()
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataCollatorForLanguageModeling(pad_token_id=pad, pad_to_multiple_of=pad_to_multiple_of)
