"""Auto-curriculum knobs (docs/curriculum.md), once, as a dataclass mixin, and the configs that combine them with each
host's.

``CurriculumArguments`` can also be built on its own and passed to a curriculum trainer as ``curriculum_args=``
(then the trainer's ``args`` can be the host's plain config). Every field is a YAML key and a command-line flag
with ``TrlParser``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, SFTConfig

from trl_ext.common.config import ExtensionArguments
from trl_ext.common.errors import ConfigError
from trl_ext.curriculum.difficulty import FROZEN_MODES
from trl_ext.curriculum.weights import UPDATE_RULES
from trl_ext.ppo.config import PPOConfig

__all__ = [
    "CURRICULUM_FIELDS",
    "CurriculumArguments",
    "CurriculumDPOConfig",
    "CurriculumGRPOConfig",
    "CurriculumPPOConfig",
    "CurriculumSFTConfig",
    "CurriculumTrainingArguments",
]

INTERVAL_UNITS = ("epoch", "steps")


@dataclass
class CurriculumArguments:
    r"""Auto-curriculum over several datasets (docs/curriculum.md).

    At every update a rolling frozen copy of the model scores a fixed seeded subset of each dataset
    (``difficulty_sample_size`` rows in batches of ``difficulty_batch_size``): μ_i is the mean of the per-batch
    losses, σ²_i their variance, m_i = μ_i + σ²_i. The sampling weights then move by
    ``w ← clip(w + η·g, ≥ min_weight)``, ``w ← w/Σw`` with g = m − mean(m) (``centered``) or the finite differences
    of m along the dataset index (``index_gradient``, the upstream rule). Updates happen at the start of every
    ``curriculum_interval``-th epoch (or every ``curriculum_interval`` optimizer steps, and once before the first
    step), except where no batch still to be trained would be drawn with the new weights (the final step, or one
    after which the data loader has drawn every remaining batch: docs/curriculum.md, "Update schedule"); the frozen
    model is refreshed from the live weights every ``freeze_interval`` units, before that unit's update.
    """

    curriculum_update: str = field(
        default="centered",
        metadata={"help": "Weight update rule: 'centered' (g = m - mean(m)) or 'index_gradient' (np.gradient(m))."},
    )
    curriculum_eta: float = field(default=0.1, metadata={"help": "Step size η of the weight update."})
    curriculum_min_weight: float = field(
        default=0.0, metadata={"help": "Floor applied to w + η·g before renormalising."}
    )
    curriculum_initial_weights: list[float] | None = field(
        default=None, metadata={"help": "Initial sampling weights, one per dataset (default: uniform)."}
    )
    curriculum_interval: int = field(
        default=1, metadata={"help": "Update the weights every this many epochs/steps (see curriculum_interval_unit)."}
    )
    freeze_interval: int = field(
        default=1, metadata={"help": "Refresh the frozen model every this many epochs/steps (same unit)."}
    )
    curriculum_interval_unit: str = field(
        default="epoch", metadata={"help": "Unit of curriculum_interval and freeze_interval: 'epoch' or 'steps'."}
    )
    difficulty_sample_size: int = field(
        default=100, metadata={"help": "Rows per dataset (a fixed seeded subset) scored at each update."}
    )
    difficulty_batch_size: int = field(default=8, metadata={"help": "Batch size of the difficulty estimate."})
    difficulty_max_length: int = field(
        default=256, metadata={"help": "Tokens per row in the difficulty estimate (longer rows are truncated)."}
    )
    difficulty_text_field: str | None = field(
        default=None,
        metadata={
            "help": "Column holding the text scored for difficulty; default: 'text', else the chat-templated "
            "'messages', else prompt + completion/chosen."
        },
    )
    difficulty_completion_only: bool = field(
        default=True,
        metadata={
            "help": "For prompt + completion/chosen rows, score only the answer tokens (what SFT's completion-only "
            "loss and DPO train on); the prompt is context."
        },
    )
    curriculum_epoch_size: int | None = field(
        default=None, metadata={"help": "Examples drawn per epoch (default: the total number of rows)."}
    )
    curriculum_seed: int | None = field(
        default=None, metadata={"help": "Seed of the sampler and of the difficulty subsets (default: seed)."}
    )
    frozen_model_mode: str = field(
        default="auto",
        metadata={"help": "'copy' (a second full model), 'adapter' (PEFT: adapter tensors only) or 'auto'."},
    )
    save_frozen_model: bool = field(
        default=True,
        metadata={"help": "Write the frozen weights into checkpoints (needed for an exact resume)."},
    )

    def __post_init__(self) -> None:
        self.check_curriculum_args()
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()

    def check_curriculum_args(self) -> None:
        """Raise ``ValueError`` naming the first invalid knob."""
        if self.curriculum_update not in UPDATE_RULES:
            raise ConfigError(f"curriculum_update must be one of {UPDATE_RULES}, got {self.curriculum_update!r}")
        if self.curriculum_interval_unit not in INTERVAL_UNITS:
            raise ConfigError(
                f"curriculum_interval_unit must be one of {INTERVAL_UNITS}, got {self.curriculum_interval_unit!r}"
            )
        if self.frozen_model_mode not in FROZEN_MODES:
            raise ConfigError(f"frozen_model_mode must be one of {FROZEN_MODES}, got {self.frozen_model_mode!r}")
        for name in ("curriculum_interval", "freeze_interval", "difficulty_sample_size", "difficulty_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.difficulty_max_length < 2:
            raise ConfigError(
                f"difficulty_max_length must be >= 2 (a loss needs two tokens), got {self.difficulty_max_length}"
            )
        if self.curriculum_eta < 0:
            raise ConfigError(f"curriculum_eta must be >= 0, got {self.curriculum_eta}")
        if self.curriculum_min_weight < 0:
            raise ConfigError(f"curriculum_min_weight must be >= 0, got {self.curriculum_min_weight}")
        if self.curriculum_epoch_size is not None and self.curriculum_epoch_size < 1:
            raise ConfigError(f"curriculum_epoch_size must be >= 1, got {self.curriculum_epoch_size}")


CURRICULUM_FIELDS = tuple(CurriculumArguments.__dataclass_fields__)
"""Names of the curriculum knobs (used to read them from a combined config)."""


@dataclass
class CurriculumTrainingArguments(CurriculumArguments, TrainingArguments):
    """``transformers.TrainingArguments`` plus the curriculum knobs (for :class:`CurriculumTrainer`)."""


@dataclass
class CurriculumSFTConfig(CurriculumArguments, ExtensionArguments, SFTConfig):
    """``trl.SFTConfig`` plus the curriculum knobs (for :class:`CurriculumSFTTrainer`); packing is refused."""


@dataclass
class CurriculumDPOConfig(CurriculumArguments, ExtensionArguments, DPOConfig):
    """``trl.DPOConfig`` plus the curriculum knobs (for :class:`CurriculumDPOTrainer`)."""


@dataclass
class CurriculumGRPOConfig(CurriculumArguments, ExtensionArguments, GRPOConfig):
    """``trl.GRPOConfig`` plus the curriculum knobs (for :class:`CurriculumGRPOTrainer`)."""


@dataclass
class CurriculumPPOConfig(CurriculumArguments, PPOConfig):
    """trl_ext's ``PPOConfig`` plus the curriculum knobs (for :class:`CurriculumPPOTrainer`)."""
