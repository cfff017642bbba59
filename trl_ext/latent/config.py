"""Configuration of :class:`trl_ext.latent.trainer.LatentCommTrainer` (docs/latent.md, "Trainer")."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from trl_ext.common.config import ExtensionArguments
from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.latent.injection import DEFAULT_MIX_RATIOS, MIX_SCHEDULES
from trl_ext.latent.losses import DEFAULT_MARGIN

__all__ = ["LatentCommConfig"]


@dataclass
class LatentCommConfig(ExtensionArguments, TrainingArguments):
    r"""Latent communication (seed 001, docs/latent.md): ``transformers.TrainingArguments`` and the document's flags.

    The loss of a batch is ``CE + plan_similarity_weight · L_plan + random_contrast_weight · L_rc`` with the
    plan-similarity loss ``L_plan = 0.7 · KL(p_plan ‖ p_lat) + 0.3 · (1 − cos)`` against the receiver reading the
    plan text, and the random-contrast hinge ``L_rc = mean_b max(0, contrast_margin − JS_b)`` against the answer
    under another sample's latents (``negative_noise_std`` Gaussian noise on them). ``dynamic_weights`` replaces the
    two weights by upstream's schedule. ``mix_ratios`` / ``mix_schedule``: the latent/plan mixing curriculum.

    The data flags of the document (``train_file``, ``eval_file``, ``eval_ratio``, ``lazy_preprocess``) belong to
    the recipe (``recipes/latent_comm.py``); ``evaluation_strategy`` and ``warmup_ratio`` are accepted as the old
    names of ``eval_strategy`` and a fractional ``warmup_steps``. ``remove_unused_columns`` is always False (the
    batches carry hidden states and plans).
    """

    # ---------------------------------------------------------------- adapter and data
    prepended_length: int = field(
        default=256, metadata={"help": "Most positions of a latent message (longer hidden states are cut)."}
    )
    num_heads: int = field(default=8, metadata={"help": "Attention heads of the latent adapter."})
    adapter_dropout: float = field(default=0.1, metadata={"help": "Dropout of the adapter's attention."})
    model_max_length: int | None = field(
        default=None, metadata={"help": "Most tokens of a conversation (cut on the right; None: no limit)."}
    )

    # ---------------------------------------------------------------- losses
    plan_similarity_weight: float = field(default=1.0, metadata={"help": "Weight of the plan-similarity loss."})
    random_contrast_weight: float = field(default=2.0, metadata={"help": "Weight of the random-contrast loss."})
    contrast_margin: float = field(default=DEFAULT_MARGIN, metadata={"help": "Hinge margin of L_rc, in nats."})
    negative_noise_std: float = field(
        default=0.01, metadata={"help": "Std of the Gaussian noise added to the negative's hidden states."}
    )
    dynamic_weights: bool = field(
        default=False, metadata={"help": "Upstream's loss-dependent weights instead of the two fixed ones."}
    )

    # ---------------------------------------------------------------- mixing curriculum
    mix_ratios: list[float] = field(
        default_factory=lambda: list(DEFAULT_MIX_RATIOS),
        metadata={"help": "Latent share r of the message, drawn per sample and forward (0.2 … 0.8)."},
    )
    mix_schedule: str = field(default="random", metadata={"help": f"One of {list(MIX_SCHEDULES)}."})

    # ---------------------------------------------------------------- outputs and probe
    enable_loss_plot: bool = field(
        default=True, metadata={"help": "Write loss_log.csv and loss_curve.png (one line per loss term)."}
    )
    enable_infoNCE_probe: bool = field(  # noqa: N815 (the document's flag name)
        default=False, metadata={"help": "Run the InfoNCE probe every infoNCE_probe_interval steps."}
    )
    infoNCE_probe_interval: int = field(  # noqa: N815
        default=200, metadata={"help": "Steps between two runs of the InfoNCE probe."}
    )
    infoNCE_probe_k: int = field(default=8, metadata={"help": "K, the samples of the probe."})  # noqa: N815
    infoNCE_probe_temperature: float = field(  # noqa: N815
        default=1.0, metadata={"help": "τ, the temperature of the probe."}
    )
    evaluation_strategy: str | None = field(
        default=None, metadata={"help": "The document's (older transformers') name of eval_strategy."}
    )
    warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "The document's warm-up share of the steps, in [0, 1) (transformers 5: warmup_steps < 1)."},
    )

    def __post_init__(self) -> None:
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0.0 <= self.warmup_ratio < 1.0:
                raise ConfigError(f"LatentCommConfig: warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            self.warmup_steps = self.warmup_ratio
        self.remove_unused_columns = False
        if self.label_names is None:
            self.label_names = ["labels"]
        super().__post_init__()
        checks = {
            "prepended_length": self.prepended_length >= 1,
            "num_heads": self.num_heads >= 1,
            "adapter_dropout": 0.0 <= self.adapter_dropout < 1.0,
            "plan_similarity_weight": self.plan_similarity_weight >= 0,
            "random_contrast_weight": self.random_contrast_weight >= 0,
            "contrast_margin": self.contrast_margin > 0,
            "negative_noise_std": self.negative_noise_std >= 0,
            "infoNCE_probe_interval": self.infoNCE_probe_interval >= 1,
            "infoNCE_probe_k": self.infoNCE_probe_k >= 2,
            "infoNCE_probe_temperature": self.infoNCE_probe_temperature > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"LatentCommConfig: invalid {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}")
        if self.model_max_length is not None and self.model_max_length < 2:
            raise ConfigError(f"LatentCommConfig: model_max_length must be >= 2, got {self.model_max_length}")
        if self.mix_schedule not in MIX_SCHEDULES:
            raise UnknownNameError(f"mix_schedule must be one of {list(MIX_SCHEDULES)}, got {self.mix_schedule!r}")
        self.mix_ratios = [float(r) for r in self.mix_ratios]
        if not self.mix_ratios or not all(0.0 <= r <= 1.0 for r in self.mix_ratios):
            raise ConfigError(f"mix_ratios must be a non-empty list of values in [0, 1], got {self.mix_ratios}")
