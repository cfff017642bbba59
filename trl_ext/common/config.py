"""What every trl_ext config shares: the LM-head tile field and device-aware precision (docs/architecture.md).

TRL's configs default to ``bf16=True`` (when ``fp16`` is not set), and transformers refuses such a config on a
machine without bf16 support ("Your setup doesn't support bf16/gpu"), even with ``use_cpu=True``, where it trains
with slow CPU bf16 autocast. Every trl_ext config (:class:`ExtensionArguments` is in their bases) resolves the
*unset* ``bf16`` the way the recipes do: bf16 where the device supports it, otherwise float32 with one log line
saying so. A value the user sets (``bf16=True`` or ``False``) is kept as given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from trl_ext.common.lm_head_tiles import LMHeadTileArguments

__all__ = ["ExtensionArguments", "bf16_supported", "resolve_default_precision"]

logger = logging.getLogger(__name__)

_FP32_MESSAGE = "bf16 is not supported on this device: training in float32 (set bf16=True to force it)"
_said_fp32 = False


def bf16_supported(use_cpu: bool = False) -> bool:
    """True on a CUDA or XPU device with bf16 support; False with ``use_cpu`` (CPU bf16 autocast is slow)."""
    if use_cpu:
        return False
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available() and getattr(xpu, "is_bf16_supported", lambda: False)())


def resolve_default_precision(args) -> None:
    """Set an unset ``args.bf16`` (None, and ``fp16`` off) to :func:`bf16_supported`; log once when that is False."""
    global _said_fp32
    if getattr(args, "bf16", False) is not None or getattr(args, "fp16", False):
        return
    args.bf16 = bf16_supported(bool(getattr(args, "use_cpu", False)))
    if not args.bf16 and not _said_fp32:
        _said_fp32 = True
        logger.warning(_FP32_MESSAGE)


@dataclass
class ExtensionArguments(LMHeadTileArguments):
    """Mixin of every trl_ext config, placed before the TRL config in the bases: the ``lm_head_vocab_tile`` field
    (:class:`~trl_ext.common.lm_head_tiles.LMHeadTileArguments`) and :func:`resolve_default_precision`, run before
    the TRL config's own ``__post_init__``."""

    def __post_init__(self) -> None:
        resolve_default_precision(self)
        super().__post_init__()
