"""Configuration of :class:`trl_ext.diversity.trainer.DiversityTrainer` (docs/diversity.md)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from trl_ext.common.config import ExtensionArguments
from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.common.schedules import FLOOR_SCHEDULES
from trl_ext.diversity.concepts import CASE_VARIANTS, Concept
from trl_ext.diversity.losses import OPEN_BLOCK_REDUCTIONS, UNIFORM_OVER

__all__ = ["DEFAULT_STOP_STRINGS", "LOSS_TYPES", "DiversityConfig"]

LOSS_TYPES = ("kl", "tb")
DEFAULT_STOP_STRINGS = ("\n", ".\n\n", ".\n")


@dataclass
class DiversityConfig(ExtensionArguments, GRPOConfig):
    r"""Diversity training over concept clusters (docs/diversity.md), on TRL's GRPO machinery.

    Generation (transformers or vLLM), PEFT, the reference model, logging and checkpoints are GRPO's; the loss is
    replaced. Per step, ``generation_batch_size`` completions are sampled (defaults: 32 per step, temperature 1.0,
    top-p 0.95, 30 new tokens, stop strings ``"\n"``, ``".\n\n"``, ``".\n"``), cut into open and concept blocks, and
    the loss is computed on the whole generation batch (all processes, all accumulation steps):

    * ``loss_type="kl"`` (the document's): ``w_c · L_c + w_o · L_o`` with the concept loss
      ``L_c = KL(P̂ ‖ U)`` over the options and the open-block loss ``L_o = Σ_o KL(P̂_o ‖ U_K)`` over the replay
      buffer's clusters of the text that follows each option;
    * ``loss_type="tb"``: the GFlowNet trajectory balance ``mean_i (log Z + Σ_t log p_θ(y_t) − log R_i)²`` with a
      learned ``log Z`` per prompt and the cluster-rarity reward ``R_i = 1/share(cell_i)``;
    * both: ``+ w_kl · KL(p_θ ‖ p_ref)`` per token (masked mean), with gradient.

    Concepts come either as ``concepts`` (a list of ``{"name", "options", "case_variants"}``, or its JSON) or, for
    one concept, as ``concept_name`` + ``concept_options`` (+ ``case_variants``), the document's flags.
    ``num_samples`` completions per prompt prefill the replay buffers before the first step.

    The schedules ``cosine``, ``linear`` and ``constant`` warm up for ``warmup_steps`` and (cosine, linear) decay to
    ``final_learning_rate``. ``num_steps_per_epoch`` is the document's epoch: with it, ``max_steps`` defaults to
    ``num_train_epochs × num_steps_per_epoch`` and a samples table is written at the end of each such epoch.
    """

    # ---------------------------------------------------------------- concepts
    concepts: list[dict[str, Any]] | str | None = field(
        default=None,
        metadata={"help": "Concepts: a list of {name, options, case_variants} (YAML) or its JSON string."},
    )
    concept_name: str | None = field(default=None, metadata={"help": "Name of the one concept (see concept_options)."})
    concept_options: list[str] | None = field(
        default=None, metadata={"help": "Options of the one concept, e.g. `cat dog`."}
    )
    case_variants: list[str] = field(
        default_factory=lambda: list(CASE_VARIANTS),
        metadata={"help": f"Surface forms per option, from {list(CASE_VARIANTS)}."},
    )
    max_window_size: int = field(default=2, metadata={"help": "Most tokens of a concept block."})
    prompts: list[str] | None = field(
        default=None,
        metadata={"help": "Prompts to train on when no train_dataset is given (each becomes one dataset row)."},
    )
    stop_strings: list[str] = field(
        default_factory=lambda: list(DEFAULT_STOP_STRINGS),
        metadata={"help": "A completion ends with the token that completes one of these strings."},
    )

    # ---------------------------------------------------------------- losses
    loss_type: str = field(default="kl", metadata={"help": "'kl' (the document's losses) or 'tb' (GFlowNet TB)."})
    w_c: float = field(default=0.5, metadata={"help": "Weight of the concept loss (loss_type='kl')."})
    w_o: float = field(default=0.5, metadata={"help": "Weight of the open-block loss (loss_type='kl')."})
    w_kl: float = field(default=0.0, metadata={"help": "Weight of the token-level KL to the reference model."})
    uniform_over: str = field(
        default="all", metadata={"help": "Concept loss target: uniform over 'all' options or the 'observed' ones."}
    )
    open_block_reduction: str = field(
        default="sum", metadata={"help": "Sum the per-option open-block losses ('sum') or weight them by P̂_o."}
    )
    renormalize_top_p: bool = field(
        default=False, metadata={"help": "Divide p_t by the kept top-p mass (upstream's sampling distribution)."}
    )
    log_z_learning_rate: float = field(
        default=0.1, metadata={"help": "Adam learning rate of the learned log Z (loss_type='tb')."}
    )
    log_z_init: float | None = field(
        default=None,
        metadata={"help": "Initial log Z of every prompt (default: the TB minimiser on its first batch)."},
    )

    # ---------------------------------------------------------------- replay buffer
    n_clusters: int = field(default=5, metadata={"help": "K, the k-means clusters per option."})
    num_samples: int = field(default=100, metadata={"help": "Completions per prompt that prefill the buffers."})
    buffer_size: int = field(default=500, metadata={"help": "Most texts kept per option after an eviction."})
    update_clusters_every: int = field(default=20, metadata={"help": "Refit after this many added texts."})
    min_samples_for_clustering: int = field(default=10, metadata={"help": "No clusters below this many texts."})
    sentence_transformer: str = field(
        default="all-MiniLM-L6-v2", metadata={"help": "Sentence-transformers name or folder for the buffers."}
    )
    embedding_batch_size: int = field(default=64, metadata={"help": "Texts per embedding forward."})

    # ---------------------------------------------------------------- schedule and epochs
    final_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate at the end of a cosine/linear schedule (default: 0)."}
    )
    num_steps_per_epoch: int | None = field(
        default=None, metadata={"help": "Steps of the document's epoch (sets max_steps and the samples table)."}
    )
    samples_file: str = field(default="samples.csv", metadata={"help": "Samples table (CSV), in output_dir."})

    # ---------------------------------------------------------------- the document's flag names (aliases)
    prompt: list[str] | None = field(
        default=None, metadata={"help": "The document's --prompt: one or more prompts (sets `prompts`)."}
    )
    batch_size: int | None = field(
        default=None,
        metadata={"help": "The document's --batch_size: completions per step (sets generation_batch_size)."},
    )
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "The document's --max_new_tokens (sets max_completion_length)."}
    )
    num_epochs: float | None = field(default=None, metadata={"help": "The document's --num_epochs."})
    use_wandb: bool = field(default=False, metadata={"help": "The document's --use_wandb: add 'wandb' to report_to."})
    wandb_project: str | None = field(default=None, metadata={"help": "wandb project (WANDB_PROJECT)."})
    wandb_name: str | None = field(default=None, metadata={"help": "wandb run name (sets run_name)."})

    # ---------------------------------------------------------------- GRPO defaults of the document
    learning_rate: float = field(default=5e-5, metadata={"help": "Initial learning rate (after warm-up)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": f"One of {list(FLOOR_SCHEDULES)}."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Completions per device and step."})
    num_generations: int | None = field(default=32, metadata={"help": "Completions per prompt in a generation batch."})
    max_completion_length: int | None = field(default=30, metadata={"help": "max_new_tokens of the document."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    logging_steps: float = field(default=1, metadata={"help": "Log every this many steps."})

    def __post_init__(self) -> None:
        self._apply_document_flags()
        self.concept_list = self._build_concepts()
        if self.loss_type not in LOSS_TYPES:
            raise UnknownNameError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.uniform_over not in UNIFORM_OVER:
            raise UnknownNameError(f"uniform_over must be one of {UNIFORM_OVER}, got {self.uniform_over!r}")
        if self.open_block_reduction not in OPEN_BLOCK_REDUCTIONS:
            raise UnknownNameError(
                f"open_block_reduction must be one of {OPEN_BLOCK_REDUCTIONS}, got {self.open_block_reduction!r}"
            )
        for name in ("w_c", "w_o", "w_kl", "log_z_learning_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.loss_type == "kl" and self.w_c == 0 and self.w_o == 0:
            raise ConfigError("w_c and w_o are both 0: loss_type='kl' would train nothing")
        if self.num_samples < 0:
            raise ConfigError(f"num_samples must be >= 0, got {self.num_samples}")
        if self.embedding_batch_size < 1:
            raise ConfigError(f"embedding_batch_size must be >= 1, got {self.embedding_batch_size}")
        if not all(isinstance(s, str) and s for s in self.stop_strings):
            raise ConfigError(f"stop_strings must be non-empty strings, got {self.stop_strings!r}")
        if self.prompts is not None and (not self.prompts or not all(isinstance(p, str) and p for p in self.prompts)):
            raise ConfigError(f"prompts must be a non-empty list of non-empty strings, got {self.prompts!r:.120}")
        if self.num_iterations != 1:
            raise ConfigError(
                f"num_iterations={self.num_iterations}: the diversity losses are on-policy, each generation batch is "
                "used for one optimizer step (num_iterations=1)"
            )
        if self.lr_scheduler_type not in FLOOR_SCHEDULES:
            raise UnknownNameError(
                f"lr_scheduler_type must be one of {FLOOR_SCHEDULES} for DiversityTrainer, got "
                f"{self.lr_scheduler_type!r}"
            )
        if self.final_learning_rate is not None and not 0 <= self.final_learning_rate <= self.learning_rate:
            raise ConfigError(
                f"final_learning_rate ({self.final_learning_rate:g}) must lie in [0, learning_rate "
                f"({self.learning_rate:g})]"
            )
        if self.num_steps_per_epoch is not None:
            if self.num_steps_per_epoch < 1:
                raise ConfigError(f"num_steps_per_epoch must be >= 1, got {self.num_steps_per_epoch}")
            if self.max_steps is None or self.max_steps < 0:
                self.max_steps = int(round(self.num_train_epochs * self.num_steps_per_epoch))
        if self.beta not in (0.0, self.w_kl):
            raise ConfigError(f"beta={self.beta}: DiversityTrainer's KL weight is w_kl; leave beta unset")
        # GRPO builds the reference model (and its per-token log-probs of each rollout) only when beta != 0.
        self.beta = self.w_kl
        super().__post_init__()
        if self.steps_per_generation != self.gradient_accumulation_steps:
            raise ConfigError(
                f"steps_per_generation={self.steps_per_generation} differs from gradient_accumulation_steps="
                f"{self.gradient_accumulation_steps}: the diversity losses are computed over one generation batch per "
                "optimizer step, so the two must be equal (set generation_batch_size to per_device_train_batch_size "
                "× processes × gradient_accumulation_steps, or leave it unset)"
            )

    def _apply_document_flags(self) -> None:
        """Map the document's flag names onto the TRL fields (docs/diversity.md, "Recipe")."""
        if self.prompt is not None:
            if self.prompts is not None and list(self.prompts) != list(self.prompt):
                raise ConfigError("prompt and prompts disagree; set only one")
            self.prompts = list(self.prompt)
        if self.max_new_tokens is not None:
            self.max_completion_length = self.max_new_tokens
        if self.num_epochs is not None:
            self.num_train_epochs = self.num_epochs
        if self.batch_size is not None:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            per_step = world * self.gradient_accumulation_steps
            if self.batch_size < 1 or self.batch_size % per_step:
                raise ConfigError(
                    f"batch_size={self.batch_size} must be a positive multiple of processes × "
                    f"gradient_accumulation_steps = {per_step}"
                )
            self.per_device_train_batch_size = self.batch_size // per_step
            self.generation_batch_size, self.steps_per_generation = None, None
            self.num_generations = self.batch_size // len(self.prompts or [None])
        if self.use_wandb:
            report = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to or [])
            report = [r for r in report if r != "none"]
            self.report_to = report + ([] if "wandb" in report else ["wandb"])
        if self.wandb_project is not None:
            os.environ.setdefault("WANDB_PROJECT", self.wandb_project)
            self.project = self.wandb_project
        if self.wandb_name is not None:
            self.run_name = self.wandb_name

    def _build_concepts(self) -> list[Concept]:
        concepts = self.concepts
        if isinstance(concepts, str):
            try:
                concepts = json.loads(concepts)
            except json.JSONDecodeError as err:
                raise ConfigError(f"concepts is not valid JSON: {err}") from None
        if concepts is not None and (self.concept_name is not None or self.concept_options is not None):
            raise ConfigError("give either concepts or concept_name/concept_options, not both")
        if concepts is None:
            if self.concept_name is None and self.concept_options is None:
                return []
            if self.concept_name is None or not self.concept_options:
                raise ConfigError(
                    f"concept {self.concept_name!r}: concept_name and concept_options (one option or more) go together"
                )
            concepts = [{"name": self.concept_name, "options": list(self.concept_options)}]
        if not isinstance(concepts, list) or not concepts:
            raise ConfigError(f"concepts must be a non-empty list of {{name, options}}, got {concepts!r:.120}")
        built = []
        for i, item in enumerate(concepts):
            if isinstance(item, Concept):
                built.append(item)
                continue
            if not isinstance(item, dict) or "name" not in item or "options" not in item:
                raise ConfigError(f"concept {i} must be a mapping with 'name' and 'options', got {item!r:.120}")
            unknown = sorted(set(item) - {"name", "options", "case_variants"})
            if unknown:
                raise ConfigError(f"concept {item['name']!r}: unknown keys {unknown}")
            built.append(
                Concept(
                    name=str(item["name"]),
                    options=list(item["options"]),
                    case_variants=list(item.get("case_variants", self.case_variants)),
                )
            )
        names = [c.name for c in built]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"concept names must be unique; repeated: {repeated}")
        return built
