# The public API of trl_ext, each name once. lazy_loader reads this stub at import time (trl_ext/__init__.py):
# a name is imported from its module on first access. Type checkers read it as the package's interface.

__version__: str

from .common.loss_log import LossLogCallback
from .common.sample_table import SampleTableCallback
from .curriculum.callback import CurriculumCallback
from .curriculum.config import (
    CurriculumArguments,
    CurriculumDPOConfig,
    CurriculumGRPOConfig,
    CurriculumPPOConfig,
    CurriculumSFTConfig,
    CurriculumTrainingArguments,
)
from .curriculum.sampler import CurriculumSampler
from .curriculum.trainer import (
    CurriculumDPOTrainer,
    CurriculumGRPOTrainer,
    CurriculumPPOTrainer,
    CurriculumSFTTrainer,
    CurriculumTrainer,
    with_curriculum,
)
from .data.multi_dataset import DatasetSpec, load_text_datasets
from .diversity.config import DiversityConfig
from .diversity.report import diversity_report
from .diversity.trainer import DiversityTrainer
from .latent.config import LatentCommConfig
from .latent.trainer import LatentCommTrainer
from .models.tiny_model import TinyModelConfig, build_tiny_model, get_tiny_model_path
from .ppo.config import PPOConfig
from .ppo.episodes import EpisodeRollout
from .ppo.trainer import PPOTrainer, load_policy_with_value_head
from .ppo.value_head import ValueHead
from .selective.config import SelectiveConfig, SelectiveDPOConfig
from .selective.dpo import SelectiveDPOTrainer
from .selective.ppo import SelectivePPOConfig, SelectivePPOTrainer
from .selective.registry import available_strategies, get_trainer, register_strategy
from .selective.safelora.callback import SafeLoRACallback
from .selective.safelora.cli import safelora_from_paths
from .selective.safelora.core import SafeLoRAReport, safelora_project
from .selective.safelora.loading import load_state_dict_from
from .selective.sft import SelectiveSFTTrainer
from .tasks.base import Task, TaskInstance
from .tasks.registry import available_tasks, get_task
