"""trl_ext: trainer extensions for Hugging Face TRL.

Public names are imported lazily: ``import trl_ext`` loads no torch, transformers or TRL, and touches no
network. ``from trl_ext import LossLogCallback`` imports only what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # trainers
    "PPOConfig": "trl_ext.trainers.ppo_config",
    "PPOTrainer": "trl_ext.trainers.ppo_trainer",
    "load_policy_with_value_head": "trl_ext.trainers.ppo_trainer",
    "ValueHead": "trl_ext.models.value_head",
    # selective generalisation
    "SelectiveConfig": "trl_ext.trainers.selective_config",
    "SelectiveSFTTrainer": "trl_ext.trainers.selective_trainer",
    "SelectiveDPOConfig": "trl_ext.trainers.selective_config",
    "SelectiveDPOTrainer": "trl_ext.trainers.selective_dpo",
    "SelectivePPOConfig": "trl_ext.trainers.selective_ppo",
    "SelectivePPOTrainer": "trl_ext.trainers.selective_ppo",
    "get_trainer": "trl_ext.trainers.registry",
    "SafeLoRACallback": "trl_ext.callbacks.safelora",
    "SafeLoRAReport": "trl_ext.safelora",
    "safelora_project": "trl_ext.safelora",
    "safelora_from_paths": "trl_ext.safelora",
    "load_state_dict_from": "trl_ext.safelora",
    # auto-curriculum
    "CurriculumArguments": "trl_ext.trainers.curriculum_config",
    "CurriculumDPOConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumGRPOConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumPPOConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumSFTConfig": "trl_ext.trainers.curriculum_config",
    "CurriculumTrainingArguments": "trl_ext.trainers.curriculum_config",
    "CurriculumDPOTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumGRPOTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumPPOTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumSFTTrainer": "trl_ext.trainers.curriculum_trainer",
    "CurriculumTrainer": "trl_ext.trainers.curriculum_trainer",
    "with_curriculum": "trl_ext.trainers.curriculum_trainer",
    "CurriculumSampler": "trl_ext.data.curriculum_sampler",
    "CurriculumCallback": "trl_ext.callbacks.curriculum",
    "SampleTableCallback": "trl_ext.callbacks.sample_table",
    "DatasetSpec": "trl_ext.data.multi_dataset",
    "load_text_datasets": "trl_ext.data.multi_dataset",
    # callbacks
    "LossLogCallback": "trl_ext.callbacks.loss_log",
    # models
    "TinyModelConfig": "trl_ext.models.tiny_model",
    "build_tiny_model": "trl_ext.models.tiny_model",
    "get_tiny_model_path": "trl_ext.models.tiny_model",
    # tasks
    "Task": "trl_ext.data.tasks.base",
    "TaskInstance": "trl_ext.data.tasks.base",
    "get_task": "trl_ext.data.tasks.registry",
    "available_tasks": "trl_ext.data.tasks.registry",
}

__all__ = [
    "CurriculumArguments",
    "CurriculumCallback",
    "CurriculumDPOConfig",
    "CurriculumDPOTrainer",
    "CurriculumGRPOConfig",
    "CurriculumGRPOTrainer",
    "CurriculumPPOConfig",
    "CurriculumPPOTrainer",
    "CurriculumSFTConfig",
    "CurriculumSFTTrainer",
    "CurriculumSampler",
    "CurriculumTrainer",
    "CurriculumTrainingArguments",
    "DatasetSpec",
    "LossLogCallback",
    "PPOConfig",
    "PPOTrainer",
    "SafeLoRACallback",
    "SafeLoRAReport",
    "SampleTableCallback",
    "SelectiveConfig",
    "SelectiveDPOConfig",
    "SelectiveDPOTrainer",
    "SelectivePPOConfig",
    "SelectivePPOTrainer",
    "SelectiveSFTTrainer",
    "Task",
    "TaskInstance",
    "TinyModelConfig",
    "ValueHead",
    "__version__",
    "available_tasks",
    "build_tiny_model",
    "get_task",
    "get_tiny_model_path",
    "get_trainer",
    "load_policy_with_value_head",
    "load_state_dict_from",
    "load_text_datasets",
    "safelora_from_paths",
    "safelora_project",
    "with_curriculum",
]

if TYPE_CHECKING:  # pragma: no cover
    from trl_ext.callbacks.curriculum import CurriculumCallback
    from trl_ext.callbacks.loss_log import LossLogCallback
    from trl_ext.callbacks.safelora import SafeLoRACallback
    from trl_ext.callbacks.sample_table import SampleTableCallback
    from trl_ext.data.curriculum_sampler import CurriculumSampler
    from trl_ext.data.multi_dataset import DatasetSpec, load_text_datasets
    from trl_ext.data.tasks.base import Task, TaskInstance
    from trl_ext.data.tasks.registry import available_tasks, get_task
    from trl_ext.models.tiny_model import TinyModelConfig, build_tiny_model, get_tiny_model_path
    from trl_ext.models.value_head import ValueHead
    from trl_ext.safelora import (
        SafeLoRAReport,
        load_state_dict_from,
        safelora_from_paths,
        safelora_project,
    )
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
        CurriculumPPOTrainer,
        CurriculumSFTTrainer,
        CurriculumTrainer,
        with_curriculum,
    )
    from trl_ext.trainers.ppo_config import PPOConfig
    from trl_ext.trainers.ppo_trainer import PPOTrainer, load_policy_with_value_head
    from trl_ext.trainers.registry import get_trainer
    from trl_ext.trainers.selective_config import SelectiveConfig, SelectiveDPOConfig
    from trl_ext.trainers.selective_dpo import SelectiveDPOTrainer
    from trl_ext.trainers.selective_ppo import SelectivePPOConfig, SelectivePPOTrainer
    from trl_ext.trainers.selective_trainer import SelectiveSFTTrainer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trl_ext' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
