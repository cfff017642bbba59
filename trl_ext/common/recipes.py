"""Plumbing shared by the recipes: model arguments with trl_ext defaults, scheduler floor, precision, teardown."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trl import ModelConfig, TrlParser

from trl_ext.common.config import bf16_supported
from trl_ext.common.errors import ConfigError, MissingPathError, UserInputError

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

    def load_causal_lm(self, path: str):
        """:func:`trl_ext.models.load_causal_lm` of ``path`` with this config's dtype, quantisation, attention
        implementation and revision (the recipes' one way to load the model they train)."""
        from trl_ext.models import load_causal_lm

        return load_causal_lm(
            path,
            dtype=self.dtype,
            load_in_4bit=self.load_in_4bit,
            load_in_8bit=self.load_in_8bit,
            bnb_4bit_quant_type=self.bnb_4bit_quant_type,
            use_bnb_nested_quant=self.use_bnb_nested_quant,
            attn_implementation=self.attn_implementation,
            revision=self.model_revision,
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


def _has_accelerator() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available()) or (mps is not None and mps.is_available()))


def cpu_distributed_defaults() -> dict[str, Any]:
    """TrainingArguments defaults that make a multi-process launch on a machine without GPUs really distributed.

    Measured with transformers 5.23 / accelerate 1.15: when ``accelerate launch`` (multi_gpu or DeepSpeed
    config) or ``torchrun`` starts several processes on a CPU-only machine,

    * DDP: unless ``use_cpu=True``, accelerate's state is ``DistributedType.NO`` and every process trains
      alone on the *same* batches (no sharding, no gradient all-reduce) without any error;
    * DeepSpeed: unless a backend is given, the state reports one process and DeepSpeed stops on its batch
      size check; ``use_cpu=True`` would instead silently drop DeepSpeed for DDP. ``ddp_backend="gloo"``
      gives a real 2-process DeepSpeed engine.

    Returns ``{}`` on a machine with an accelerator or in a single process. Values set in the YAML config or
    on the command line still win (these are parser defaults).
    """
    if _has_accelerator() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return {}
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return {"ddp_backend": "gloo"}
    return {"use_cpu": True}


class RecipeParser(TrlParser):
    """``TrlParser`` that also keeps recipe configs portable across hardware.

    * :func:`cpu_distributed_defaults` become parser defaults (a YAML or command-line value still wins);
    * bf16 is used only where supported: a config asking for ``bf16: true`` (the document's setting, and TRL's
      default) is parsed with ``bf16: false`` on hardware without bf16 support, where transformers would otherwise
      refuse the training arguments ("Your setup doesn't support bf16/gpu").
    """

    def __init__(self, dataclass_types, **kwargs: Any) -> None:
        super().__init__(dataclass_types, **kwargs)
        defaults = cpu_distributed_defaults()
        if defaults:
            self.set_defaults_with_config(**defaults)
        self._has_bf16 = any("bf16" in getattr(t, "__dataclass_fields__", {}) for t in self.dataclass_types)

    def parse_args_and_config(self, args=None, *rest: Any, **kwargs: Any):
        import sys

        args = list(sys.argv[1:] if args is None else args)
        if self._has_bf16 and not bf16_supported():
            logger.warning("bf16 is not supported on this hardware: training in float32")
            args += ["--bf16", "false"]
        return parse_or_config_error(super().parse_args_and_config, args, *rest, **kwargs)


def parse_or_config_error(parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``parse(*args, **kwargs)`` with the errors of parsing turned into user errors: the ``ValueError``/``TypeError``
    of the configs' validation (raised while the dataclasses are built from the YAML and the command line) into
    :class:`ConfigError`, a config file that does not exist into :class:`MissingPathError`."""
    try:
        return parse(*args, **kwargs)
    except UserInputError:
        raise
    except FileNotFoundError as err:  # e.g. --config that does not exist
        raise MissingPathError(str(err)) from err
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err


def recipe_parser(*dataclass_types) -> RecipeParser:
    """A :class:`RecipeParser` over ``dataclass_types``."""
    return RecipeParser(dataclass_types)


def describe_launch(trainer) -> str:
    """Print (main process) and return how the run is distributed, e.g. ``DEEPSPEED (ZeRO-2) x 2 processes``."""
    acc = trainer.accelerator
    kind = acc.distributed_type.value
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is not None:
        kind += f" (ZeRO-{plugin.zero_stage})"
    text = f"{kind} x {acc.num_processes} process{'es' if acc.num_processes > 1 else ''} on {acc.device}"
    if acc.is_main_process:
        print(f"[trl_ext] launch: {text}", flush=True)
    return text
