"""Vocabulary tile width of TRL's fused LM head (``add_fused_lm_head``) on devices without Triton.

TRL 1.16's trainers (SFT, DPO, GRPO) compute per-token log-probs and entropies with a chunked LM head
(``trl.kernels.ChunkedLogProbFunction``): the logits are produced tile by tile, a tile being at most
``TOKEN_CHUNK_SIZE`` (4096) tokens × ``chunk_size`` vocabulary entries, and each tile is folded into online
log-sum-exp statistics. On CUDA/XPU with Triton the fold is one kernel. Everywhere else (CPU, MPS, ...) it is a
sequence of torch ops, each of which materialises a tile-sized temporary. With TRL's tile width of 32768 entries,
a forward + backward over 2048 tokens of a 32k vocabulary peaks at +2.4 GiB and takes 8.0 s on CPU; with 256-wide
tiles it takes +19 MiB and 3.0 s, with identical log-probs and gradients (``bench/bench_lm_head_tiles.py``).

:func:`resolve_vocab_tile` picks the width for a device and :func:`vocab_tile` applies it for the duration of a
forward. The width is read by TRL at call time from the module global
``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE`` and saved by the autograd function for its backward, so
setting it around the forward covers the backward too (the coupling ``lm_head_tile_global`` of
:mod:`trl_ext.common._trl_compat`).

TRL's SFT, DPO and GRPO trainers all score through this head. trl_ext's trainers apply the width for the whole of
``train()``, ``evaluate()`` and ``predict()`` through :class:`LMHeadTileMixin`, configured by the
``lm_head_vocab_tile`` field of :class:`LMHeadTileArguments` (part of every trl_ext config; a host config without
the field gets the automatic choice). Plain TRL trainers get it with ``with vocab_tile(resolve_vocab_tile(None,
trainer.accelerator.device)): trainer.train()``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from trl_ext.common._trl_compat import CHUNK_SIZE_GLOBAL, get_tile_width, set_tile_width, tile_supported, use_triton

DEFAULT_TILE_WITHOUT_TRITON = 256
"""Vocabulary entries per tile where the fold runs as torch ops (no Triton): a tile of N tokens costs ~N KiB per
temporary in fp32; 128 and 256 were the fastest widths on CPU (``bench/README.md``), 1024 15 % slower."""

_lock = threading.Lock()


def folds_with_triton(device: torch.device) -> bool:
    """Whether TRL folds the LM-head tiles in its Triton kernel on ``device`` (CUDA/XPU with Triton)."""
    return use_triton(device)


def resolve_vocab_tile(requested: int | None, device: torch.device) -> int | None:
    """The tile width to apply on ``device``, or None to keep TRL's.

    ``requested`` None means automatic: :data:`DEFAULT_TILE_WITHOUT_TRITON` where the fold runs as torch ops, TRL's
    own width where Triton folds the tiles (and where the installed TRL has no such setting). A positive value is
    applied on every device.

    Raises:
        ValueError: ``requested`` is not positive, or it is set and the installed TRL has no tile width to set.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"lm_head_vocab_tile must be a positive number of vocabulary entries, got {requested}")
        if not tile_supported():
            import trl

            raise ValueError(
                f"lm_head_vocab_tile={requested} cannot be applied: TRL {trl.__version__} has no "
                f"trl.trainer.utils.{CHUNK_SIZE_GLOBAL} (its fused LM head changed); leave lm_head_vocab_tile unset"
            )
        return requested
    if not tile_supported() or folds_with_triton(device):
        return None
    return DEFAULT_TILE_WITHOUT_TRITON


@contextmanager
def vocab_tile(width: int | None) -> Iterator[None]:
    """Set TRL's fused-LM-head tile width to ``width`` inside the block (no-op for None); restored afterwards."""
    if width is None:
        yield
        return
    with _lock:
        previous = get_tile_width()
        set_tile_width(width)
    try:
        yield
    finally:
        with _lock:
            set_tile_width(previous)


@dataclass
class LMHeadTileArguments:
    """The ``lm_head_vocab_tile`` config field, shared by trl_ext's configs (YAML key and command-line flag)."""

    lm_head_vocab_tile: int | None = field(
        default=None,
        metadata={
            "help": "Vocabulary entries per tile of TRL's fused LM head (log-probs and entropy without full logits). "
            "Default: 256 where the tiles are folded with torch ops (CPU, MPS: each op makes a tokens x tile "
            "temporary, so TRL's 32768-wide tile costs GiBs there), TRL's own width where Triton folds them "
            "(CUDA/XPU). A value is applied on every device. See trl_ext.common.lm_head_tiles."
        },
    )

    def __post_init__(self) -> None:
        if self.lm_head_vocab_tile is not None and self.lm_head_vocab_tile < 1:
            raise ValueError(
                f"lm_head_vocab_tile must be a positive number of vocabulary entries or None, got "
                f"{self.lm_head_vocab_tile}"
            )
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()


class LMHeadTileMixin:
    """Runs ``train()``, ``evaluate()`` and ``predict()`` of a TRL trainer with the LM-head tile width of
    ``args.lm_head_vocab_tile`` (automatic when the config has no such field), see :func:`resolve_vocab_tile`."""

    @property
    def lm_head_vocab_tile(self) -> int | None:
        """The width applied (None: TRL's own)."""
        if not hasattr(self, "_lm_head_vocab_tile"):
            requested = getattr(self.args, "lm_head_vocab_tile", None)
            self._lm_head_vocab_tile = resolve_vocab_tile(requested, self.accelerator.device)
        return self._lm_head_vocab_tile

    def train(self, *args: Any, **kwargs: Any):
        with vocab_tile(self.lm_head_vocab_tile):
            return super().train(*args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any):
        with vocab_tile(self.lm_head_vocab_tile):
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any):
        with vocab_tile(self.lm_head_vocab_tile):
            return super().predict(*args, **kwargs)
