"""The known-harmless messages of dependencies, filtered in the recipes and console scripts only.

Library code never hides a warning: a user importing trl_ext sees everything their dependencies say. The entry
points (``recipes/*.py``, ``trl-ext-*``) call :func:`quiet_dependency_noise` first, before torch, transformers or
TRL are imported, so that a run's output starts with what the run says. Each filter names the message it drops and
why it is harmless. Standard library only (imported before the heavy packages).
"""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["HARMLESS_LOG_MESSAGES", "HARMLESS_WARNINGS", "quiet_dependency_noise"]

HARMLESS_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # transformers 5 renames gradient_checkpointing to activation_checkpointing (removal in v6): TRL's configs and
    # the recipes still pass the old field name, which transformers maps onto the new one.
    (r"`(is_)?gradient_checkpointing` is deprecated and will be removed in v6", FutureWarning),
    # torch's DataLoader on a machine without an accelerator: transformers sets pin_memory=True by default, and
    # torch says that pinning is skipped, which is what a CPU run wants.
    (r"'pin_memory' argument is set as true but no accelerator is found", UserWarning),
)
"""``(message regex, category)`` of the warnings the entry points ignore."""

HARMLESS_LOG_MESSAGES: dict[str, str] = {
    # bitsandbytes on an AVX-512-BF16 CPU tries the optional `kernels` package for a faster nf4 matmul, and falls
    # back to its own kernel when it is not installed.
    "bitsandbytes.backends.cpu.ops": r"Failed to load CPU gemm_4bit_forward from kernels-community",
    # DeepSpeed's import on a machine without GPU picks its CPU accelerator, as it should here.
    "DeepSpeed": r"Setting accelerator to CPU\. If you have GPU or other accelerator, we were unable to detect it",
}
"""Logger name -> regex of the log message the entry points drop from it."""


class _DropMessage(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


_installed = False


def quiet_dependency_noise() -> None:
    """Install the filters of :data:`HARMLESS_WARNINGS` and :data:`HARMLESS_LOG_MESSAGES` (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, pattern in HARMLESS_LOG_MESSAGES.items():
        logging.getLogger(name).addFilter(_DropMessage(pattern))
