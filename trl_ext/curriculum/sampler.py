"""A sampler over several concatenated datasets that draws each example's dataset with probabilities ``w``.

The datasets are concatenated (dataset ``i`` holds the indices ``[offset_i, offset_i + n_i)``). For every unique
draw the sampler takes one uniform number ``u`` from a stream seeded by ``(seed, epoch)`` and picks the dataset by
inverse CDF over ``w``; within dataset ``i`` it walks a permutation seeded by ``(seed, epoch, i, cycle)`` and starts a
new permutation when one is used up. So:

* every process with the same seed and the same weights draws the same indices (accelerate then gives each process
  its share of every batch), which is what keeps DDP ranks in step;
* the ``u`` stream does not depend on ``w``, and the weights in force at each draw are kept as a schedule of
  ``(epoch, position, w)`` entries (:meth:`CurriculumSampler.set_weights`). Replaying an epoch (as ``Trainer`` does to
  skip the batches already trained on when it resumes) therefore yields the same indices as the first time, and a
  checkpoint needs only the schedule (:meth:`state_dict`).

GRPO's grouping is kept: with ``mini_repeat_count`` / ``batch_size`` / ``repeat_count`` the output has the structure
of TRL's ``RepeatSampler`` (chunks of ``batch_size`` unique indices, each chunk repeated ``repeat_count`` times, each
index ``mini_repeat_count`` times in a row); a chunk's indices are drawn together.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from trl_ext.curriculum.weights import check_weights

__all__ = ["CurriculumSampler"]

_U_BLOCK = 1024
"""Uniform numbers drawn at a time (the draws do not depend on it: a numpy stream is the same in any block size)."""


class CurriculumSampler(Sampler[int]):
    """Weighted dataset-by-dataset sampler (see the module docstring).

    Args:
        dataset_sizes: rows of each dataset, in concatenation order.
        weights: initial sampling weights (normalised); uniform when ``None``.
        num_samples: unique draws per epoch; defaults to the total number of rows.
        seed: seed of the draws (the same on every process).
        names: dataset names for error messages and :attr:`named_weights`.
        mini_repeat_count, batch_size, repeat_count: ``RepeatSampler``'s repetition structure (all 1: plain sampling).
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        *,
        num_samples: int | None = None,
        seed: int = 0,
        names: Sequence[str] | None = None,
        mini_repeat_count: int = 1,
        batch_size: int = 1,
        repeat_count: int = 1,
    ) -> None:
        self.sizes = [int(n) for n in dataset_sizes]
        self.names = list(names) if names is not None else [f"dataset_{i}" for i in range(len(self.sizes))]
        if not self.sizes:
            raise ValueError("CurriculumSampler needs at least one dataset")
        if len(self.names) != len(self.sizes):
            raise ValueError(f"{len(self.names)} names for {len(self.sizes)} datasets")
        for name, n in zip(self.names, self.sizes):
            if n <= 0:
                raise ValueError(f"dataset {name!r} is empty: a curriculum dataset needs at least one row")
        for label, value in (("mini_repeat_count", mini_repeat_count), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if repeat_count < 1:
            raise ValueError(f"repeat_count must be >= 1, got {repeat_count}")
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.num_samples = int(num_samples) if num_samples is not None else int(sum(self.sizes))
        if self.num_samples < batch_size:
            raise ValueError(f"num_samples ({self.num_samples}) is smaller than one chunk (batch_size {batch_size})")
        self.seed = int(seed)
        self.mini_repeat_count = mini_repeat_count
        self.batch_size = batch_size
        self.repeat_count = repeat_count
        w0 = check_weights(np.ones(len(self.sizes)) if weights is None else weights, self.names)
        self.initial_weights = w0.copy()
        self._version = 0  # bumped by every change of the schedule
        self._schedule: list[tuple[tuple[int, int], np.ndarray]] = [((0, 0), w0)]
        self.epoch = 0
        self.position = 0  # unique draws made so far in the current pass

    # ------------------------------------------------------------------ weights

    @property
    def weights(self) -> np.ndarray:
        """The latest weights set (those used for draws from now on)."""
        return self._schedule[-1][1].copy()

    @property
    def named_weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.names, self.weights)}

    def set_weights(self, weights: Sequence[float], *, epoch: int | None = None, position: int | None = None) -> None:
        """Use ``weights`` (normalised) for draws from ``(epoch, position)`` on (default: the next draw)."""
        key = (self.epoch if epoch is None else int(epoch), self.position if position is None else int(position))
        w = check_weights(weights, self.names)
        if key < self._schedule[-1][0]:
            raise ValueError(f"weights set at {key}, before the last change at {self._schedule[-1][0]}")
        if key == self._schedule[-1][0]:
            self._schedule[-1] = (key, w)
        else:
            self._schedule.append((key, w))
        self._version += 1

    def weights_at(self, epoch: int, position: int) -> np.ndarray:
        """The weights in force for unique draw ``position`` of ``epoch``."""
        keys = [k for k, _ in self._schedule]
        return self._schedule[bisect.bisect_right(keys, (epoch, position)) - 1][1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def next_draw_output(self) -> int:
        """Index, in the output of the current pass, of the next output that needs new draws (the first output of
        the next chunk): weights set now are used from that output on. With no repetition structure it is
        :attr:`position`; with one, the outputs up to it repeat the chunk already drawn."""
        return self.position * self.mini_repeat_count * self.repeat_count

    # ------------------------------------------------------------------ drawing

    def dataset_of(self, index: int) -> int:
        """Which dataset a (concatenated) index belongs to."""
        return int(np.searchsorted(self.offsets, index, side="right") - 1)

    def _epoch_stream(self, epoch: int) -> Iterator[int]:
        """Unique draws of ``epoch``, chunk by chunk (``self.position`` counts the draws made)."""
        k = len(self.sizes)
        u_stream = np.random.default_rng([self.seed, epoch])
        u_buffer: list[float] = []
        u_next = 0
        cursors = [0] * k
        cycles = [0] * k
        perms: list[list[int]] = [[] for _ in range(k)]
        offsets = self.offsets.tolist()
        cached = (-1, None)  # (schedule version, key of the next scheduled change) the cumulative weights hold for
        cum: list[float] = []
        total = 0.0
        for start in range(0, self.num_samples - self.batch_size + 1, self.batch_size):
            version, next_change = cached
            if version != self._version or (next_change is not None and (epoch, start) >= next_change):
                # weights may change while the epoch runs (set_weights), or at a replayed schedule entry
                w = self.weights_at(epoch, start)
                cum = np.cumsum(w).tolist()
                total = cum[-1]
                later = [key for key, _ in self._schedule if key > (epoch, start)]
                cached = (self._version, later[0] if later else None)
            chunk = []
            for _ in range(self.batch_size):
                if u_next == len(u_buffer):  # the stream is the same whatever the block size
                    u_buffer, u_next = u_stream.random(_U_BLOCK).tolist(), 0
                i = min(bisect.bisect_right(cum, u_buffer[u_next] * total), k - 1)
                u_next += 1
                if cursors[i] == len(perms[i]):
                    perms[i] = (
                        np.random.default_rng([self.seed, epoch, i, cycles[i]]).permutation(self.sizes[i]).tolist()
                    )
                    cycles[i] += 1
                    cursors[i] = 0
                chunk.append(offsets[i] + perms[i][cursors[i]])
                cursors[i] += 1
            self.position = start + self.batch_size
            yield from chunk

    def __iter__(self) -> Iterator[int]:
        self.position = 0
        epoch = self.epoch
        stream = self._epoch_stream(epoch)
        if self.batch_size == self.mini_repeat_count == self.repeat_count == 1:
            yield from stream  # no repetition structure: pass the draws through
            return
        chunk: list[int] = []
        for index in stream:
            chunk.append(index)
            if len(chunk) < self.batch_size:
                continue
            for _ in range(self.repeat_count):
                for idx in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield idx
            chunk = []

    def __len__(self) -> int:
        return (self.num_samples // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """The weight schedule and the epoch (JSON-serialisable); positions are recomputed by replaying."""
        return {
            "names": self.names,
            "sizes": self.sizes,
            "seed": self.seed,
            "epoch": self.epoch,
            "initial_weights": self.initial_weights.tolist(),
            "schedule": [[list(k), w.tolist()] for k, w in self._schedule],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["names"] != self.names or state["sizes"] != self.sizes:
            raise ValueError(
                f"the checkpoint's curriculum datasets {dict(zip(state['names'], state['sizes']))} differ from this "
                f"run's {dict(zip(self.names, self.sizes))}"
            )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        if "initial_weights" in state:
            self.initial_weights = check_weights(state["initial_weights"], self.names)
        self._schedule = [((int(k[0]), int(k[1])), check_weights(w, self.names)) for k, w in state["schedule"]]
        self._version += 1
