"""One module per trainer: a config dataclass and a thin trainer subclass.

The selective-generalisation trainers and configs are imported lazily (on first access), so importing a
sibling module such as :mod:`trl_ext.trainers.selective_config` does not load every TRL trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trl_ext.trainers.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from trl_ext.trainers.ppo_config import PPOConfig
from trl_ext.trainers.ppo_trainer import PPOTrainer, load_policy_with_value_head

_LAZY: dict[str, str] = {
    "CurriculumArguments": "trl_ext.trainers.curriculum_config",
    "CurriculumDPOConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumGRPOConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumPPOConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumSFTConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumTrainingArguments": "trl_ext.trainers.curriculum_config",
    "CurriculumDPOTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumGRPOTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumMixin": "trl_ext.trainers.curriculum_trainer",
    "CurriculumPPOTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumSFTTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumTrainer": "trl_ext.trainers.curriculum_trainer",
    "with_curriculum": "trl_ext.trainers.curriculum_trainer",
    "SelectiveArguments": "trl_ext.trainers.selective_config",
    "SelectiveConfig": "trl_ext.trainers.selective_config",
    "SelectiveDPOConfig": "trl_ext.trainers.selective_config",
    "SelectiveDPOTrainer": "trl_ext.trainers.selective_dpo",
    "SelectiveMixin": "trl_ext.trainers.selective_mixin",
    "SelectivePPOConfig": "trl_ext.trainers.selective_ppo",
    "SelectivePPOTrainer": "trl_ext.trainers.selective_ppo",
    "SelectiveSFTTrainer": "trl_ext.trainers.selective_trainer",
    "get_trainer": "trl_ext.trainers.registry",
}

__all__ = [
    "AdaptiveKLController",
    "CurriculumArguments",
    "CurriculumDPOConfig",
    "CurriculumDPOTrainer",
    "CurriculumGRPOConfig",
    "CurriculumGRPOTrainer",
    "CurriculumMixin",
    "CurriculumPPOConfig",
    "CurriculumPPOTrainer",
    "CurriculumSFTConfig",
    "CurriculumSFTTrainer",
    "CurriculumTrainer",
    "CurriculumTrainingArguments",
    "FixedKLController",
    "PPOConfig",
    "PPOTrainer",
    "SelectiveArguments",
    "SelectiveConfig",
    "SelectiveDPOConfig",
    "SelectiveDPOTrainer",
    "SelectiveMixin",
    "SelectivePPOConfig",
    "SelectivePPOTrainer",
    "SelectiveSFTTrainer",
    "get_trainer",
    "load_policy_with_value_head",
    "make_kl_controller",
    "with_curriculum",
]

if TYPE_CHECKING:  # pragma: no cover
    from trl_ext.trainers.curriculum_config import (
        CurriculumArguments,
        CurriculumDPOConfig,
        CurriculumGRPOConfig,
        CurriculumPPOConfig,
        CurriculumSFTConfig,
        CurriculumTrainingArguments,
    )
    from trl_ext.trainers.curriculum_trainer import (
        CurriculumDPOTrainer,
        CurriculumGRPOTrainer,
        CurriculumMixin,
        CurriculumPPOTrainer,
        CurriculumSFTTrainer,
        CurriculumTrainer,
        with_curriculum,
    )
    from trl_ext.trainers.registry import get_trainer
    from trl_ext.trainers.selective_config import SelectiveArguments, SelectiveConfig, SelectiveDPOConfig
    from trl_ext.trainers.selective_dpo import SelectiveDPOTrainer
    from trl_ext.trainers.selective_mixin import SelectiveMixin
    from trl_ext.trainers.selective_ppo import SelectivePPOConfig, SelectivePPOTrainer
    from trl_ext.trainers.selective_trainer import SelectiveSFTTrainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trl_ext.trainers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
