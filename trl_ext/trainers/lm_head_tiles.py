"""Vocabulary tile width of TRL's fused LM head (``add_fused_lm_head``) on devices without Triton.

TRL 1.16's online trainers compute per-token log-probs and entropies with a chunked LM head
(``trl.kernels.ChunkedLogProbFunction``): the logits are produced tile by tile, a tile being at most
``TOKEN_CHUNK_SIZE`` (4096) tokens × ``chunk_size`` vocabulary entries, and each tile is folded into online
log-sum-exp statistics. On CUDA/XPU with Triton the fold is one kernel. Everywhere else (CPU, MPS, ...) it is a
sequence of torch ops, each of which materialises a tile-sized temporary; with TRL's tile width of 32768 entries a
forward + backward over 2048 tokens of a 32k vocabulary peaks at +2.4 GiB on CPU (measured; +46 MiB with 256-wide
tiles, identical log-probs and gradients, and faster because the tiles stay in cache).

:func:`resolve_vocab_tile` picks the width for a device and :func:`vocab_tile` applies it for the duration of a
forward. The width is read by TRL at call time from the module global
``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE`` and saved by the autograd function for its backward, so
setting it around the forward covers the backward too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DEFAULT_TILE_WITHOUT_TRITON = 256
"""Vocabulary entries per tile where the fold runs as torch ops (no Triton): a tile of N tokens costs ~N KiB per
temporary in fp32, and 128-512 was fastest on CPU in ``bench/README.md``'s measurement."""

_GLOBAL = "_CHUNKED_LOGPROB_CHUNK_SIZE"
_lock = threading.Lock()


def _trl_utils():
    import trl.trainer.utils as trl_utils

    return trl_utils


def tile_supported() -> bool:
    """Whether the installed TRL exposes the tile width (``trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE``)."""
    return isinstance(getattr(_trl_utils(), _GLOBAL, None), int)


def folds_with_triton(device: torch.device) -> bool:
    """Whether TRL folds the LM-head tiles in its Triton kernel on ``device`` (CUDA/XPU with Triton)."""
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:  # another TRL layout: assume the accelerator path
        return device.type in ("cuda", "xpu")
    return bool(_use_triton(device))


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
                f"trl.trainer.utils.{_GLOBAL} (its fused LM head changed); leave lm_head_vocab_tile unset"
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
    trl_utils = _trl_utils()
    with _lock:
        previous = getattr(trl_utils, _GLOBAL)
        setattr(trl_utils, _GLOBAL, width)
    try:
        yield
    finally:
        with _lock:
            setattr(trl_utils, _GLOBAL, previous)
