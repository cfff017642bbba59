"""One module per trainer: a config dataclass and a thin trainer subclass."""

from trl_ext.trainers.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller
from trl_ext.trainers.ppo_config import PPOConfig
from trl_ext.trainers.ppo_trainer import PPOTrainer, load_policy_with_value_head

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "PPOConfig",
    "PPOTrainer",
    "load_policy_with_value_head",
    "make_kl_controller",
]
