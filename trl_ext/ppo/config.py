"""Configuration of :class:`trl_ext.ppo.trainer.PPOTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from trl_ext.common.config import ExtensionArguments
from trl_ext.common.errors import ConfigError
from trl_ext.ppo._trl_compat import AtLeastTwo


@dataclass
class PPOConfig(ExtensionArguments, GRPOConfig):
    r"""PPO with a learned value function, per-token KL control and GAE (docs/ppo.md), on TRL's GRPO machinery.

    Every ``GRPOConfig`` field works as in GRPO (generation, vLLM, reward functions and weights, logging, ...)
    except the loss fields (``loss_type``, ``beta``, ``scale_rewards``, ``delta``, ...), which PPO replaces.
    PPO names map onto GRPO's batching: a *rollout* is ``per_device_train_batch_size × num_mini_batches ×
    processes`` completions (GRPO's generation batch); it is split into ``num_mini_batches`` mini-batches
    (``steps_per_generation``) and reused for ``num_ppo_epochs`` epochs (``num_iterations``). GRPO shuffles the
    rollout once, not once per epoch.

    Per rollout, with the score s of each completion (weighted sum of the reward functions):

    * per-token reward  r_t = −kl_coef · KL_t,  plus s on the last completion token, where KL_t is the ``k1``
      (log π − log π_ref) or ``k3`` estimator against the reference (adapter disabled with PEFT);
    * GAE: δ_t = r_t + γ V_{t+1} − V_t,  A_t = δ_t + γλ A_{t+1},  R_t = A_t + V_t  (V after the last token is 0);
    * loss  max(−A ρ, −A clip(ρ, 1−ε, 1+ε_high)) + vf_coef · ½ max((V − R)², (clip(V, V_old ± ε_v) − R)²)
      − entropy_coef · H, masked means over completion tokens.

    **Decision** (two KL targets). docs/ppo.md names one ``target_kl`` for the adaptive controller and for early
    stopping, but the two act on different quantities: the controller compares KL(π‖π_ref) summed over a
    completion (Ziegler et al. use 6 nats) and early stopping the per-token KL between the policy before and
    during the update (≈0.01–0.05 in CleanRL/SB3). They are therefore two fields: ``kl_target`` (controller) and
    ``target_kl`` (early stop, off by default).
    """

    num_generations: int | None = field(
        default=1, metadata={"help": "Completions per prompt. PPO works with 1; groups > 1 are allowed."}
    )
    num_ppo_epochs: int | None = field(
        default=None, metadata={"help": "PPO epochs per rollout (sets `num_iterations`). Default: num_iterations."}
    )
    num_mini_batches: int | None = field(
        default=None,
        metadata={"help": "Mini-batches per rollout (sets `steps_per_generation`). Default: steps_per_generation."},
    )
    cliprange: float | None = field(
        default=None, metadata={"help": "Policy clip range ε (sets `epsilon`). Default: epsilon (0.2)."}
    )
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range ε_v around the rollout values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    gamma: float = field(default=1.0, metadata={"help": "Discount γ of GAE."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    kl_coef: float = field(
        default=0.05, metadata={"help": "KL penalty coefficient in the reward (initial value if adaptive)."}
    )
    kl_estimator: str = field(default="k1", metadata={"help": "Per-token KL estimator: 'k1' or 'k3'."})
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt kl_coef towards `kl_target` (Ziegler et al.)."})
    kl_target: float = field(
        default=6.0, metadata={"help": "Adaptive KL: target KL(π‖π_ref) per completion (summed over tokens), nats."}
    )
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive KL: horizon (in completions)."})
    target_kl: float | None = field(
        default=None,
        metadata={
            "help": "Early stopping: skip the rest of a rollout's PPO epochs once the mean per-token approx KL "
            "between the rollout policy and the current policy exceeds 1.5 * target_kl. None disables it."
        },
    )
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards (mean kept)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten the advantages (masked)."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of completions that end without EOS."}
    )
    value_head_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Width of the value head's middle layer (default: the policy's hidden size; 0: a linear head)."
        },
    )
    detach_value_trunk: bool = field(
        default=False, metadata={"help": "Stop value gradients at the value head input (shared trunk untouched)."}
    )
    value_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Use a separate value model (its own trunk, e.g. a small LM) instead of a head."},
    )
    value_init_path: str | None = field(
        default=None,
        metadata={
            "help": "Folder holding a saved value head / value model to start from (continuation). Default: the "
            "policy folder when it holds one."
        },
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Disable dropout so rollout and update log-probs and values agree."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP's unused-parameter search. Off for PPO: the value head runs inside the policy's forward but "
            "its output is not the forward's return value, so the search would wrongly mark it unused."
        },
    )

    def __post_init__(self) -> None:
        if self.num_ppo_epochs is not None:
            self.num_iterations = self.num_ppo_epochs
        if self.num_mini_batches is not None:
            if self.steps_per_generation is not None and self.steps_per_generation != self.num_mini_batches:
                raise ConfigError(
                    f"num_mini_batches={self.num_mini_batches} and steps_per_generation={self.steps_per_generation} "
                    "disagree; set only one"
                )
            self.steps_per_generation = self.num_mini_batches
        if self.cliprange is not None:
            self.epsilon = self.cliprange
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.kl_coef < 0:
            raise ConfigError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.adaptive_kl and self.kl_coef == 0:
            raise ConfigError("adaptive_kl needs an initial kl_coef > 0")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ConfigError(f"target_kl must be > 0 or None, got {self.target_kl}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ConfigError(f"gamma and lam must be in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        if self.use_adaptive_entropy:
            raise ConfigError("use_adaptive_entropy is a GRPO loss option; PPOTrainer uses a fixed entropy_coef")
        if self.num_generations is None or self.num_generations < 1:
            raise ConfigError(f"num_generations must be >= 1, got {self.num_generations}")
        # GRPO builds the reference model and its log-probs only when beta != 0; PPO's KL lives in the reward.
        self.beta = self.kl_coef
        one = self.num_generations == 1
        if one:
            self.num_generations = AtLeastTwo(1)
            if self.num_generations_eval is None:
                self.num_generations_eval = 1
        super().__post_init__()
        if one:
            self.num_generations = 1
