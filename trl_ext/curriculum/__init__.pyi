from .callback import CurriculumCallback, curriculum_summary, plot_curriculum, write_curriculum_report
from .config import (
    CURRICULUM_FIELDS,
    CurriculumArguments,
    CurriculumDPOConfig,
    CurriculumGRPOConfig,
    CurriculumPPOConfig,
    CurriculumSFTConfig,
    CurriculumTrainingArguments,
)
from .difficulty import FROZEN_MODES, RollingFrozenModel, difficulty_segments
from .sampler import CurriculumSampler
from .trainer import (
    CurriculumDPOTrainer,
    CurriculumGRPOTrainer,
    CurriculumMixin,
    CurriculumPPOTrainer,
    CurriculumSFTTrainer,
    CurriculumTrainer,
    with_curriculum,
)
from .weights import UPDATE_RULES, check_weights, difficulty_statistics, update_weights
