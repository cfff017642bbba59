"""Plumbing shared by the recipes: model arguments with trl_ext defaults, scheduler floor, precision, teardown."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from trl import ModelConfig

logger = logging.getLogger(__name__)

ALL_LINEAR_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAModelConfig(ModelConfig):
    """TRL's ``ModelConfig`` with the two-stage pipeline's defaults (seed 004).

    LoRA is on by default: r 64, alpha 128, dropout 0.05 on every attention and MLP projection. The model
    defaults to ``tiny`` (the embedded tiny model); give any hub id or local folder instead.
    ``--load_in_4bit`` loads the base in nf4 for QLoRA.
    """

    model_name_or_path: str | None = field(
        default="tiny", metadata={"help": "Hub id, local folder, or 'tiny' for the embedded tiny model."}
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (default) instead of all weights."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: list(ALL_LINEAR_PROJECTIONS),
        metadata={"help": "Modules that get LoRA adapters (default: all attention and MLP projections)."},
    )


def apply_min_lr_ratio(training_args, min_lr_ratio: float | None) -> None:
    """Give a cosine schedule a floor: ``lr(t) >= min_lr_ratio * learning_rate``.

    ``cosine`` becomes transformers' ``cosine_with_min_lr`` with ``min_lr_rate=min_lr_ratio``, i.e.
    lr(t) = lr_min + (lr_max - lr_min) * (1 + cos(pi * progress)) / 2 after warm-up. A ratio of 0 or None
    leaves the schedule unchanged; other schedule types with a ratio > 0 are an error (the floor would be
    silently ignored).
    """
    from transformers import SchedulerType

    if not min_lr_ratio:
        return
    if not 0 < min_lr_ratio < 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1), got {min_lr_ratio}")
    sched = SchedulerType(training_args.lr_scheduler_type)
    if sched == SchedulerType.COSINE:
        training_args.lr_scheduler_type = SchedulerType.COSINE_WITH_MIN_LR
        kwargs = dict(training_args.lr_scheduler_kwargs or {})
        kwargs["min_lr_rate"] = min_lr_ratio
        training_args.lr_scheduler_kwargs = kwargs
    elif sched == SchedulerType.COSINE_WITH_MIN_LR:
        kwargs = dict(training_args.lr_scheduler_kwargs or {})
        kwargs.setdefault("min_lr_rate", min_lr_ratio)
        training_args.lr_scheduler_kwargs = kwargs
    else:
        raise ValueError(
            f"min_lr_ratio={min_lr_ratio} needs lr_scheduler_type 'cosine', got '{sched.value}' "
            "(set min_lr_ratio to 0 to use another schedule)"
        )


def bf16_supported() -> bool:
    """True on a CUDA device with bf16 support (CPU bf16 autocast is slow and is not used)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(training_args) -> None:
    """Use bf16 only where supported: TRL configs default ``bf16=True``; on other hardware it falls back to fp32."""
    if training_args.bf16 and not bf16_supported():
        logger.warning("bf16 is not supported on this hardware: training in float32")
        training_args.bf16 = False


def teardown_distributed() -> None:
    """End a multi-process run cleanly (barrier, then destroy the process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
