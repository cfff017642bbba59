"""Configuration of the selective-generalisation trainers (docs/selective.md).

The selective knobs are defined once, in the dataclass mixin :class:`SelectiveArguments`, and combined with a
TRL config per host trainer: :class:`SelectiveConfig` (``SFTConfig``), :class:`SelectiveDPOConfig`
(``DPOConfig``) and ``SelectivePPOConfig`` (:class:`~trl_ext.ppo.config.PPOConfig`, in
:mod:`trl_ext.selective.ppo`). Each is a plain dataclass, so ``TrlParser`` reads it from YAML and the
command line like any TRL config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from trl import DPOConfig, SFTConfig

from trl_ext.common.config import ExtensionArguments
from trl_ext.common.errors import ConfigError, warn_at_caller

STRATEGIES = (
    "naive",
    "positive_negative_proxy",
    "kl_divergence",
    "representation_constraint",
    "dpo",
    "grad_project",
    "grad_project_precomputed_proxy_grad",
    "orth_penalty",
    "directional_penalty",
    "steering_weights",
    "steering_weights_add_alignment_plane",
    "safe_lora",
)
"""The twelve built-in strategies, by their document names (``docs/selective.md``); the registry of
:mod:`trl_ext.selective.registry` holds them and those added with ``register_strategy``."""


STRATEGY_WEIGHTS: dict[str, tuple[str, ...]] = {
    "positive_negative_proxy": ("lambda_proxy", "lambda_negative"),
    "kl_divergence": ("beta_kl",),
    "representation_constraint": ("beta_representation",),
    "dpo": ("lambda_dpo",),
    "orth_penalty": ("lambda_plane",),
    "directional_penalty": ("lambda_plane",),
    "steering_weights": ("steering_alpha", "final_steering_alpha"),
    "steering_weights_add_alignment_plane": ("steering_alpha",),
}
"""The config fields that weight each built-in strategy's own term or edit: with all of them 0 the strategy is plain
outcome training, and the config warns at the caller's line. Every default is > 0 (docs/selective.md)."""


def check_strategy(name: str) -> str:
    """Return ``name`` if it is a registered strategy; otherwise raise ``ValueError`` listing the known ones."""
    from trl_ext.selective.registry import get_strategy

    return get_strategy(name).name


@dataclass
class SelectiveArguments:
    r"""The selective-generalisation knobs, shared by every ``Selective*Config`` (a dataclass mixin);
    docs/selective.md defaults.

    Outcome (task) data T is the trainer's ``train_dataset``; proxy data A⁺ (and optionally negative proxy A⁻)
    are drawn alongside every outcome batch. Loss or update per strategy, with L(T) the host trainer's own loss
    (CE for SFT, the DPO loss for DPO, the PPO loss for PPO); p_base = the host's reference policy (adapter
    disabled, or a frozen copy); KL and MSE masked by the attention mask:

    * ``naive``: L on the shuffled union of T and the proxy data (SFT: T ∪ A⁺; DPO: T ∪ pairs (A⁺[i] ≻ A⁻[i]));
    * ``positive_negative_proxy``: L(T) + λ_p·[CE(A⁺) + β_kl·KL(p_θ‖p_base)(A⁺)] − λ_n·CE(A⁻);
    * ``kl_divergence``: L(T) + β_kl·KL(p_θ‖p_base)(A⁺);
    * ``representation_constraint``: L(T) + β·Σ_l MSE(h_θ^l, h_base^l)(A⁺), embedding layer excluded;
    * ``dpo``: L(T) + λ_dpo·mean −log σ(β_dpo((ℓ_c − ℓ_c^ref) − (ℓ_r − ℓ_r^ref))) on pairs (A⁺[i], A⁻[i]);
    * ``grad_project``: per tensor, g_T ← g_T − λ g_A with λ = ⟨g_T,g_A⟩/‖g_A‖² (conflict-only: λ ← min(λ, 0));
    * ``grad_project_precomputed_proxy_grad``: g ← g − (⟨g,ḡ_A⟩/‖ḡ_A‖²) ḡ_A with a cached mean proxy gradient;
    * ``orth_penalty`` / ``directional_penalty``: L(T) ± λ₁·Σ_{LoRA A} (Σ|A S_Aᵀ| / −Σ A S_Aᵀ);
    * ``steering_weights``: g ← g + α S before each step (``direct_steering``: θ ← θ − lr α S after it);
    * ``steering_weights_add_alignment_plane``: plain outcome training, then θ ← θ − α S once at the end;
    * ``safe_lora``: proxy LoRA merged into the base = aligned model, outcome LoRA on top, then SafeLoRA.

    Put the mixin *before* the TRL config in the bases (``class C(SelectiveArguments, SFTConfig)``): its fields
    then come after the TRL fields (positional arguments such as ``output_dir`` keep their place), its
    ``ddp_find_unused_parameters`` default overrides the TRL one, and its ``__post_init__`` validates the knobs
    before the TRL config's own ``__post_init__`` runs. A host that cannot run a strategy lists it, with the
    reason, in ``_unsupported_strategies``.
    """

    _unsupported_strategies: ClassVar[dict[str, str]] = {}

    strategy: str = field(
        default="naive",
        metadata={"help": f"One of: {', '.join(STRATEGIES)}; or a name given to register_strategy."},
    )
    proxy_cycling: str = field(
        default="continuous",
        metadata={"help": "'continuous' (proxy iterators restart on their own) or 'synchronized'."},
    )
    proxy_batch_size: int | None = field(
        default=None, metadata={"help": "Proxy examples per outcome batch (default: per_device_train_batch_size)."}
    )
    lambda_proxy: float = field(default=0.5, metadata={"help": "λ_p: weight of the positive-proxy terms."})
    lambda_negative: float = field(default=0.5, metadata={"help": "λ_n: weight of the negative-proxy CE."})
    beta_kl: float | None = field(
        default=None,
        metadata={
            "help": "β_kl: weight of KL(p_θ‖p_base) on proxy data. Default: 0 for positive_negative_proxy (its KL "
            "term off, docs/selective.md), 1.0 for every other strategy (kl_divergence)."
        },
    )
    beta_representation: float = field(default=0.1, metadata={"help": "β: weight of the representation MSE."})
    lambda_dpo: float = field(default=1.0, metadata={"help": "λ_dpo: weight of the DPO regulariser."})
    dpo_beta: float = field(default=0.1, metadata={"help": "β of the DPO regulariser."})
    lambda_plane: float = field(default=0.5, metadata={"help": "λ₁: weight of the orth/directional penalties."})
    grad_project_strict: bool = field(
        default=True, metadata={"help": "Strict projection; false removes only a conflicting component."}
    )
    grad_project_source: str = field(
        default="positive", metadata={"help": "g_A from 'positive' (∇CE(A⁺)) or 'negative' (−∇CE(A⁻)) proxy data."}
    )
    proxy_grad_path: str | None = field(
        default=None,
        metadata={"help": "Cache of the precomputed mean proxy gradient (computed and written there if missing)."},
    )
    alignment_plane_path: str | None = field(
        default=None, metadata={"help": "Alignment plane S file (computed and written there if missing)."}
    )
    alignment_plane_source: str = field(
        default="gradients", metadata={"help": "S from 'gradients' (ḡ⁺ − ḡ⁻) or 'weights' (θ_neg − θ_pos)."}
    )
    alignment_plane_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps of each proxy training pass behind S (cycling the data); default one pass. "
            "LoRA B starts at zero, so the first step gives A no gradient: use >= 2 steps for the A penalties."
        },
    )
    steering_alpha: float = field(default=0.5, metadata={"help": "α at the start of steering."})
    final_steering_alpha: float = field(default=0.1, metadata={"help": "α at the end (linear after warm-up)."})
    alpha_warmup_steps: int = field(default=0, metadata={"help": "Steps at constant α before the linear decay."})
    direct_steering: bool = field(
        default=False, metadata={"help": "Steer the weights after each step instead of the gradient before it."}
    )
    safelora_base_model: str | None = field(
        default=None,
        metadata={
            "help": "safe_lora: the unaligned base model (path or hub id); the trainer's model is the aligned one."
        },
    )
    safelora_projection: str = field(default="approx", metadata={"help": "SafeLoRA projection: approx | exact."})
    safelora_select: str = field(default="threshold", metadata={"help": "SafeLoRA selection: threshold | number."})
    safelora_threshold: float = field(default=0.5, metadata={"help": "SafeLoRA: project modules with cos ≤ τ."})
    safelora_num_proj_layers: int = field(default=10, metadata={"help": "SafeLoRA: modules projected ('number')."})

    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "Off: proxy forwards run outside DDP's forward, so its unused-parameter search misfires."},
    )

    def __post_init__(self) -> None:
        check_strategy(self.strategy)
        if self.strategy in self._unsupported_strategies:
            raise ConfigError(
                f"strategy {self.strategy!r} is not available with {type(self).__name__}: "
                f"{self._unsupported_strategies[self.strategy]}"
            )
        if self.beta_kl is None:
            self.beta_kl = 0.0 if self.strategy == "positive_negative_proxy" else 1.0
        zero = [name for name in STRATEGY_WEIGHTS.get(self.strategy, ()) if getattr(self, name) == 0]
        if zero and len(zero) == len(STRATEGY_WEIGHTS[self.strategy]):
            warn_at_caller(
                f"strategy {self.strategy!r} with {' = '.join(zero)} = 0 adds nothing to plain outcome training "
                "(while still running its proxy passes); set a weight > 0 (the original sweeps 1e-4 … 1e4)"
            )
        if self.strategy == "safe_lora" and not self.safelora_base_model:
            raise ConfigError("strategy 'safe_lora' needs safelora_base_model (the unaligned base weights)")
        if self.proxy_cycling not in ("continuous", "synchronized"):
            raise ConfigError(f"proxy_cycling must be 'continuous' or 'synchronized', got {self.proxy_cycling!r}")
        if self.grad_project_source not in ("positive", "negative"):
            raise ConfigError(
                f"grad_project_source must be 'positive' or 'negative', got {self.grad_project_source!r}"
            )
        if self.alignment_plane_steps is not None and self.alignment_plane_steps < 1:
            raise ConfigError(
                f"alignment_plane_steps must be >= 1 (or None: one pass), got {self.alignment_plane_steps}"
            )
        if self.alignment_plane_source not in ("gradients", "weights"):
            raise ConfigError(
                f"alignment_plane_source must be 'gradients' or 'weights', got {self.alignment_plane_source!r}"
            )
        parent = super()
        if hasattr(parent, "__post_init__"):
            parent.__post_init__()


@dataclass
class SelectiveConfig(SelectiveArguments, ExtensionArguments, SFTConfig):
    """``SFTConfig`` plus the selective-generalisation knobs of :class:`SelectiveArguments` (strategy table there).

    The host loss L(T) is SFT's cross-entropy on the outcome data; proxy data are tokenized like the outcome data.
    """


@dataclass
class SelectiveDPOConfig(SelectiveArguments, ExtensionArguments, DPOConfig):
    """``DPOConfig`` plus the selective-generalisation knobs of :class:`SelectiveArguments` (strategy table there).

    The host loss L(T) is DPO's loss on the outcome preference pairs; ``beta`` is its β, ``dpo_beta`` the β of the
    ``dpo`` strategy's regulariser on the proxy pairs. Proxy data are truncated with ``max_length`` /
    ``truncation_mode`` like the outcome data. See :class:`~trl_ext.selective.dpo.SelectiveDPOTrainer`.
    """
