from .adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LatentAdapter, LatentAdapterConfig
from .collator import LatentCollator
from .data import (
    HIDDEN_STATE_SUFFIXES,
    ROLES,
    LatentDataset,
    LatentRow,
    load_hidden_state,
    read_latent_file,
    split_eval,
)
from .injection import (
    BOP,
    DEFAULT_MIX_RATIOS,
    EOP,
    FIRST_HUMAN_END,
    MIX_SCHEDULES,
    SPECIAL_TOKENS,
    MixSchedule,
    SplicedBatch,
    add_latent_tokens,
    mix_message,
    splice_message,
)
from .losses import (
    COSINE_WEIGHT,
    DEFAULT_MARGIN,
    KL_WEIGHT,
    align_supervised,
    delta_nll_bits,
    dynamic_weights,
    infonce,
    js_divergence,
    masked_token_mean,
    plan_similarity_loss,
    random_contrast_loss,
)
from .probe import infonce_probe, infonce_scores, per_row_ce
from .receiver import SOURCES, LatentReceiver
from .sender import ROWS_FILE, first_user_prompt, write_sender_states
