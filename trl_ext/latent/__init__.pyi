from .adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LatentAdapter, LatentAdapterConfig
from .callbacks import InfoNCEProbeCallback
from .collator import LatentCollator
from .config import LatentCommConfig
from .data import (
    HIDDEN_STATE_SUFFIXES,
    ROLES,
    LatentDataset,
    LatentRow,
    load_hidden_state,
    read_latent_file,
    split_eval,
)
from .demo import DEMO_QUESTION, DEMO_SECRETS, build_demo, demo_rows, demo_sender_messages
from .generation import (
    CONDITIONS,
    END_OF_TURN_TOKENS,
    evaluate_latent_conditions,
    latent_generate,
    latent_generate_ids,
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
    plan_similarity_sums,
    random_contrast_loss,
    random_contrast_sums,
)
from .probe import infonce_probe, infonce_scores, per_row_ce
from .receiver import SOURCES, LatentReceiver
from .sender import ROWS_FILE, first_user_prompt, write_sender_states
from .trainer import LatentCommTrainer, length_matched
from .weights import load_latent_receiver, load_receiver_weights, save_receiver
