from .config import SelectiveArguments, SelectiveConfig, SelectiveDPOConfig, check_strategy
from .dpo import SelectiveDPOTrainer
from .losses import (
    KL_DIRECTIONS,
    directional_penalty,
    dpo_regulariser,
    orth_penalty,
    positive_negative_proxy_loss,
    representation_mse,
    token_kl,
)
from .mechanisms import Mechanism, build_mechanisms
from .mixin import SelectiveMixin
from .ppo import SelectivePPOConfig, SelectivePPOTrainer
from .projection import (
    MeanGradient,
    alignment_plane_from_gradients,
    alignment_plane_from_weights,
    load_plane,
    project_gradients,
    project_out,
    save_plane,
)
from .proxy import CYCLING_MODES, ProxyCycler, paired_batches
from .registry import get_trainer
from .safelora import SafeLoRACallback, SafeLoRAReport, load_state_dict_from, safelora_from_paths, safelora_project
from .sft import SelectiveSFTTrainer
