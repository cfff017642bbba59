from .buffer import N_INIT, ReplayBuffer
from .concepts import CASE_VARIANTS, Block, Concept, plural, segment
from .config import DEFAULT_STOP_STRINGS, LOSS_TYPES, DiversityConfig
from .embedding import DEFAULT_EMBEDDER, SentenceEmbedder, resolve_embedder_path
from .log_z import LogPartition
from .losses import (
    OPEN_BLOCK_REDUCTIONS,
    UNIFORM_OVER,
    block_logps,
    cluster_rarity_log_reward,
    cluster_rarity_reward,
    concept_distribution,
    concept_loss,
    kl_to_uniform,
    open_block_loss,
    reduce_open_block_losses,
    trajectory_balance_loss,
)
from .objective import (
    BLOCK_COLUMNS,
    DiversityLoss,
    block_table,
    cell_log_rewards,
    diversity_objective,
    objective_weights,
    top_p_renormalized_logps,
)
from .report import (
    cluster_entropy,
    distinct_n,
    diversity_report,
    mean_pairwise_distance,
    plot_report,
    report_from_completions,
    sample_completions,
    write_report,
)
from .trainer import DiversityTrainer, prompt_key
