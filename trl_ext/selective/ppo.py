"""Selective generalisation on top of :class:`~trl_ext.ppo.trainer.PPOTrainer` (docs/selective.md on §5).

The outcome "data" of PPO are prompts scored by reward functions; L(T) is PPO's loss (clipped surrogate +
value loss − entropy bonus). The proxy data A⁺ / A⁻ are the language-modeling or prompt–completion rows of the
SFT variant, and every mechanism that acts on proxy data, gradients or weights applies unchanged through
:class:`~trl_ext.selective.mixin.SelectiveMixin`: proxy CE ±, KL, representation, the DPO regulariser,
gradient projection (live and precomputed), the plane penalties, steering (gradient or direct), steering at the
end, and SafeLoRA. Only ``naive`` is not available (see :class:`SelectivePPOConfig`). ``PPOTrainer`` itself is
not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from trl_ext.common.errors import InputTypeError
from trl_ext.ppo.config import PPOConfig
from trl_ext.ppo.trainer import VALUE_PREFIX, PPOTrainer
from trl_ext.selective.config import SelectiveArguments
from trl_ext.selective.mixin import SelectiveMixin
from trl_ext.selective.proxy import language_modeling_collator, tokenize_proxy_dataset

__all__ = ["SelectivePPOConfig", "SelectivePPOTrainer"]


@dataclass
class SelectivePPOConfig(SelectiveArguments, PPOConfig):
    """:class:`~trl_ext.ppo.config.PPOConfig` plus the selective-generalisation knobs of
    :class:`~trl_ext.selective.config.SelectiveArguments` (strategy table there).

    L(T) is PPO's loss on the rollouts of the outcome prompts. **Decision:** ``naive`` ("the host loss on the
    union of T and A⁺") is rejected: PPO's data are prompts whose completions the policy samples and the reward
    functions score, so a union would keep only A⁺'s prompts and drop its completions, which are the proxy
    signal; use ``positive_negative_proxy`` (PPO + λ_p·CE(A⁺), i.e. PPO-ptx on the proxy data) instead.
    """

    _unsupported_strategies: ClassVar[dict[str, str]] = {
        "naive": "PPO trains on sampled completions of prompts, so a union with A⁺ would drop A⁺'s completions; "
        "use 'positive_negative_proxy' (PPO + λ_p·CE(A⁺)) to train on the proxy completions"
    }

    proxy_max_length: int | None = field(
        default=None, metadata={"help": "Truncate proxy sequences to this many tokens (None: no truncation)."}
    )


class SelectivePPOTrainer(SelectiveMixin, PPOTrainer):
    """:class:`~trl_ext.ppo.trainer.PPOTrainer` with proxy data and the strategy of ``args.strategy``.

    * **Proxy data** are tokenized by ``SFTTrainer``'s dataset preparation
      (:func:`~trl_ext.selective.mixin.tokenize_proxy_dataset`, truncated to ``args.proxy_max_length``)
      and collated by TRL's ``DataCollatorForLanguageModeling``, as in the SFT and DPO variants.
    * **Parameters.** The mechanisms act on the *policy's* trainable parameters: the value function
      (``v_head.*``) is left out, so planes and proxy gradients are interchangeable with the SFT/DPO variants and
      projection and steering never touch the critic.
    * **p_base** is PPO's reference policy: GRPO's ``ref_model`` (full fine-tuning with ``kl_coef > 0``), the
      adapter disabled (PEFT; or GRPO's frozen ``"ref"`` adapter for a policy given with a trained adapter),
      otherwise a frozen copy made at construction.
    * **Gradient accumulation.** PPO's loss is already divided by the number of accumulated micro-batches (GRPO's
      ``loss_is_scaled_for_ga = True``), so the extra terms (means over one proxy batch) are divided by it too.
      Gradient surgery runs once per optimizer step on the accumulated (and, under DDP, all-reduced) gradient.
    * **Synchronized cycling** counts an epoch in micro-batches as GRPO's sampler does: (prompts //
      prompts per rollout) × ``steps_per_generation`` × ``num_iterations``.

    Args:
        model, reward_funcs, args: as for ``PPOTrainer``; ``args`` must be a :class:`SelectivePPOConfig`.
        proxy_dataset: positive proxy data A⁺ (language modeling or prompt–completion).
        negative_proxy_dataset: negative proxy data A⁻ (same format); for ``dpo`` its rows pair with A⁺'s.
        Every other keyword argument is ``PPOTrainer``'s.

    Raises:
        TypeError: ``args`` is not a :class:`SelectivePPOConfig`.
        ValueError: as :class:`~trl_ext.selective.sft.SelectiveSFTTrainer` (missing proxy data, LoRA
            missing for the plane penalties or ``safe_lora``, DeepSpeed with proxy forwards or surgery), and proxy
            data in a format other than language modeling / prompt–completion.
    """

    _tag_names = ["trl", "trl_ext", "ppo", "selective-generalisation"]

    def __init__(
        self,
        model,
        reward_funcs,
        args: SelectivePPOConfig | None = None,
        *,
        train_dataset=None,
        eval_dataset=None,
        proxy_dataset=None,
        negative_proxy_dataset=None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, SelectivePPOConfig):
            raise InputTypeError(f"SelectivePPOTrainer needs a SelectivePPOConfig, got {type(args).__name__}")
        raw_proxy = self._selective_check(args, proxy_dataset, negative_proxy_dataset)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        self._proxy_collate = language_modeling_collator(self.processing_class)
        self._selective_setup(raw_proxy)

    def _prepare_proxy_dataset(self, dataset, name: str):
        """SFT's tokenization of proxy rows, truncated to ``args.proxy_max_length``."""
        return tokenize_proxy_dataset(
            dataset,
            self.processing_class,
            max_length=self.args.proxy_max_length,
            name=f"proxy_{name}",
        )

    @property
    def proxy_collator(self):
        """TRL's language-modeling collator (PPO's data are prompts)."""
        return self._proxy_collate

    def trainable_parameters(self) -> dict[str, torch.nn.Parameter]:
        """The policy's trainable parameters: every trainable parameter except the value function's."""
        return {n: p for n, p in super().trainable_parameters().items() if not n.startswith(VALUE_PREFIX)}

    def _reference_model(self):
        """GRPO's reference model (``None`` with PEFT or ``kl_coef == 0``)."""
        return getattr(self, "ref_model", None)

    def _reference_adapter_name(self) -> str | None:
        """GRPO's frozen ``"ref"`` adapter when it made one, else ``None`` (all adapters disabled)."""
        model = self._unwrapped_model()
        return "ref" if "ref" in getattr(model, "peft_config", {}) else None

    def _outcome_batches_per_epoch(self) -> int | None:
        """Micro-batches per epoch on this process, as GRPO's ``RepeatSampler`` yields them."""
        try:
            size = len(self.train_dataset)
        except TypeError:  # iterable dataset
            return None
        prompts_per_rollout = self.args.generation_batch_size // self.num_generations
        return (size // prompts_per_rollout) * self.args.steps_per_generation * self.num_iterations
