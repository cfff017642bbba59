"""Selective generalisation on top of TRL's ``DPOTrainer`` (docs/selective.md): preference outcome data, SFT-style
proxies.

The outcome data T are a TRL preference dataset (``prompt`` / ``chosen`` / ``rejected``, plain or
conversational) trained with DPO's loss L_DPO(T) (any ``DPOConfig.loss_type``); the proxy data A⁺ / A⁻ are the
same language-modeling or prompt–completion rows the SFT variant takes. Every mechanism of
:mod:`trl_ext.selective.mechanisms` applies, through :class:`~trl_ext.selective.mixin.
SelectiveMixin`; what is specific to DPO is documented on :class:`SelectiveDPOTrainer`.
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer

from trl_ext.common.errors import InputTypeError
from trl_ext.common.inputs import PREFERENCE_FORMATS, PREFERENCE_HINT, check_model_argument
from trl_ext.common.lm_head_tiles import LMHeadTileMixin
from trl_ext.selective.config import SelectiveDPOConfig
from trl_ext.selective.mixin import SelectiveMixin
from trl_ext.selective.proxy import language_modeling_collator, paired_batches, tokenize_proxy_dataset

__all__ = ["SelectiveDPOTrainer"]


class SelectiveDPOTrainer(SelectiveMixin, LMHeadTileMixin, DPOTrainer):
    r"""``DPOTrainer`` with proxy data and the selective-generalisation strategy of ``args.strategy``.

    L(T) below is DPO's loss on the outcome preference pairs, e.g. ``mean −log σ(β((log π_θ(y_c) − log
    π_ref(y_c)) − (log π_θ(y_r) − log π_ref(y_r))))`` for the default ``loss_type="sigmoid"``.

    * **Proxy data** (language modeling or prompt–completion rows) are tokenized by ``SFTTrainer``'s own dataset
      preparation (:func:`~trl_ext.selective.mixin.tokenize_proxy_dataset`: the tokenizer's chat
      template, completion-only labels for prompt–completion rows, truncation to ``args.max_length`` with
      ``args.truncation_mode``) and collated by TRL's ``DataCollatorForLanguageModeling``, so a proxy batch is
      the same as in :class:`~trl_ext.selective.sft.SelectiveSFTTrainer`. DPO's own preference
      preparation does not fit: proxy rows have one completion, not a pair.
    * **p_base is DPO's reference policy π_ref**, so KL, representation and the ``dpo`` regulariser measure the
      distance to the same model DPO's loss does, without a second copy: ``ref_model`` when DPO keeps one
      (given, or reloaded from the policy's path for full fine-tuning); with PEFT the adapter disabled, or
      DPO's frozen ``"ref"`` adapter when the policy came with a trained adapter; a frozen copy made at
      construction only when DPO keeps no reference (full fine-tuning with ``precompute_ref_log_probs``).
    * **Gradient accumulation.** DPO's loss is a mean over the pairs of one micro-batch, and DPOTrainer sets
      ``loss_is_scaled_for_ga = False``: ``Trainer.training_step`` divides the returned loss by the number of
      accumulated micro-batches. The extra terms (means over one proxy batch) are therefore added *unscaled*
      (``L_DPO + Σ terms``, then the Trainer divides both), unlike in SFT. Gradient surgery runs once per
      optimizer step on the accumulated (and, under DDP, all-reduced) gradient.
    * **Decision (``naive``):** DPO on the shuffled union of T and the proxy pairs ``(prompt of A⁺[i], chosen =
      completion of A⁺[i], rejected = completion of A⁻[i])`` (:func:`~trl_ext.selective.proxy.paired_batches`): the
      DPO analogue of "the host loss on T ∪ A⁺", since DPO cannot train on A⁺ alone. It therefore needs both
      proxy datasets, index-aligned with equal prompts, and outcome data with exactly the columns ``prompt``,
      ``chosen``, ``rejected`` in the same (plain or conversational) format.

    Args:
        model, ref_model, args: as for ``DPOTrainer``; ``args`` must be a
            :class:`~trl_ext.selective.config.SelectiveDPOConfig`.
        train_dataset: outcome preference data T.
        proxy_dataset: positive proxy data A⁺ (language modeling or prompt–completion).
        negative_proxy_dataset: negative proxy data A⁻ (same format); for ``dpo`` and ``naive`` its rows pair
            with A⁺'s index by index.
        Every other keyword argument is ``DPOTrainer``'s (``processing_class``, ``peft_config``, ...).

    Raises:
        TypeError: ``args`` is not a ``SelectiveDPOConfig``.
        ValueError: proxy data missing for a strategy that needs it (``naive`` needs both), proxy data in a format
            other than language modeling / prompt–completion, a ``naive`` union whose pairs do not line up or
            whose columns or format differ from the outcome data's, LoRA missing for the plane penalties or
            ``safe_lora``, DeepSpeed with a strategy that runs proxy forwards or gradient surgery, a vision
            dataset with a strategy that runs proxy forwards.
    """

    _tag_names = ["trl", "trl_ext", "dpo", "selective-generalisation"]

    def _outcome_formats(self, args, formatting_func):
        """TRL's preference formats: ``chosen`` + ``rejected``, with or without ``prompt``."""
        return PREFERENCE_FORMATS, PREFERENCE_HINT

    def __init__(
        self,
        model,
        ref_model=None,
        args: SelectiveDPOConfig | None = None,
        *,
        train_dataset=None,
        eval_dataset=None,
        proxy_dataset=None,
        negative_proxy_dataset=None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, SelectiveDPOConfig):
            raise InputTypeError(f"SelectiveDPOTrainer needs a SelectiveDPOConfig, got {type(args).__name__}")
        raw_proxy = self._selective_check(
            args,
            proxy_dataset,
            negative_proxy_dataset,
            naive_needs=("positive", "negative"),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
        )
        model = check_model_argument(model)
        if args.strategy == "naive":
            train_dataset = preference_union(train_dataset, proxy_dataset, negative_proxy_dataset, seed=args.seed)
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        if self._is_vision_dataset and self.mechanisms:
            raise ValueError(
                f"strategy {args.strategy!r} runs text-only proxy forwards: vision preference datasets are not "
                "supported by SelectiveDPOTrainer"
            )
        self._proxy_collate = language_modeling_collator(self.processing_class, args.pad_to_multiple_of)
        self._selective_setup(raw_proxy)

    def _prepare_proxy_dataset(self, dataset, name: str):
        """SFT's tokenization of proxy rows, truncated like the outcome pairs (``max_length``, ``truncation_mode``)."""
        return tokenize_proxy_dataset(
            dataset,
            self.processing_class,
            max_length=self.args.max_length,
            truncation_mode=self.args.truncation_mode,
            dataset_num_proc=self.args.dataset_num_proc,
            name=f"proxy_{name}",
        )

    @property
    def proxy_collator(self):
        """TRL's language-modeling collator (DPO's own collator builds chosen/rejected pairs)."""
        return self._proxy_collate

    def _reference_model(self):
        """DPO's separate reference model (``None`` with PEFT or a precomputed reference)."""
        return self.ref_model

    def _reference_adapter_name(self) -> str | None:
        """DPO's frozen ``"ref"`` adapter when it made one (policy given with a trained adapter), else ``None``."""
        model = self._unwrapped_model()
        return "ref" if "ref" in getattr(model, "peft_config", {}) else None


PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def preference_union(outcome, positive, negative, seed: int):
    """The ``naive`` data of :class:`SelectiveDPOTrainer`: T ∪ {(A⁺[i].prompt, A⁺[i].completion ≻ A⁻[i].completion)},
    shuffled with ``seed``.

    Raises:
        ValueError: the proxy rows do not pair (:func:`~trl_ext.selective.proxy.paired_batches`: lengths, prompts,
            columns), the outcome columns are not exactly ``prompt``/``chosen``/``rejected``, or one side is
            conversational and the other not.
    """
    from datasets import Dataset, concatenate_datasets
    from trl.data_utils import is_conversational

    pairs = paired_batches(positive, negative)
    if not isinstance(pairs, Dataset):
        pairs = Dataset.from_list(pairs)
    if set(outcome.column_names) != set(PREFERENCE_COLUMNS):
        raise ValueError(
            f"naive strategy: outcome columns {sorted(outcome.column_names)} differ from the proxy pairs' "
            f"{sorted(PREFERENCE_COLUMNS)}; give the preference data explicit prompt/chosen/rejected columns only"
        )
    if is_conversational(outcome[0]) != is_conversational(pairs[0]):
        kinds = {True: "conversational", False: "plain text"}
        raise ValueError(
            f"naive strategy: the outcome preference data are {kinds[is_conversational(outcome[0])]} but the proxy "
            f"pairs are {kinds[is_conversational(pairs[0])]}; give both the same format"
        )
    pairs = pairs.select_columns(outcome.column_names)
    try:
        pairs = pairs.cast(outcome.features)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"naive strategy: the proxy pairs' features {pairs.features} do not match the outcome's "
            f"{outcome.features}: {err}"
        ) from err
    return concatenate_datasets([outcome, pairs]).shuffle(seed=seed)
