from .config import PPOConfig
from .episodes import EpisodeRollout
from .kl_control import AdaptiveKLController, FixedKLController, KLController, make_kl_controller
from .losses import (
    KL_ESTIMATORS,
    explained_variance,
    gae,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from .trainer import PPOTrainer, load_policy_with_value_head
from .value_head import VALUE_FUNCTION_FILES, SeparateValueModel, ValueHead, has_value_head
