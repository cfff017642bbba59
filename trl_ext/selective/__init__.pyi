from .config import SelectiveArguments, SelectiveConfig, SelectiveDPOConfig, check_strategy
from .convert import KEY_MAPPING, Conversion, convert, convert_config, mapping_markdown, write_converted
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
from .mechanisms import Mechanism
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
from .proxy import CYCLING_MODES, ProxyCycler, language_modeling_collator, paired_batches, tokenize_proxy_dataset
from .registry import (
    Strategy,
    available_strategies,
    build_mechanisms,
    get_strategy,
    get_trainer,
    register_strategy,
    unregister_strategy,
)
from .safelora import SafeLoRACallback, SafeLoRAReport, load_state_dict_from, safelora_from_paths, safelora_project
from .sft import SelectiveSFTTrainer
