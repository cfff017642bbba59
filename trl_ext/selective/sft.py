"""Selective generalisation on top of TRL's ``SFTTrainer`` (docs/selective.md): one trainer, twelve strategies.

``SelectiveSFTTrainer`` adds proxy data (A⁺, optional A⁻) drawn alongside the outcome batches and runs the
mechanisms of ``args.strategy`` (:mod:`trl_ext.selective.mechanisms`) at four points: extra loss terms
in ``compute_loss``, gradient surgery on the accumulated and all-reduced gradient just before clipping and the
optimizer step, weight edits after the step, and a last edit at the end of training. The host services and
hooks are :class:`~trl_ext.selective.mixin.SelectiveMixin`'s, shared with the DPO and PPO variants.

Proxy forwards run through the unwrapped model. Under DDP, loss terms computed that way share the outcome's
backward pass, so their gradients are all-reduced with it; a proxy gradient for surgery is computed after the
outcome reduction and all-reduced explicitly, so the projection always sees averaged gradients.
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from trl_ext.common.errors import InputTypeError
from trl_ext.common.inputs import check_model_argument, sft_formats
from trl_ext.common.lm_head_tiles import LMHeadTileMixin
from trl_ext.selective.config import SelectiveConfig
from trl_ext.selective.mixin import PROXY_NAMES, SelectiveMixin

__all__ = ["PROXY_NAMES", "SelectiveSFTTrainer"]


class SelectiveSFTTrainer(SelectiveMixin, LMHeadTileMixin, SFTTrainer):
    """``SFTTrainer`` with proxy data and the selective-generalisation strategy of ``args.strategy``.

    The host loss L(T) is SFT's cross-entropy; ``naive`` trains it on the shuffled union T ∪ A⁺. Proxy data are
    tokenized by ``SFTTrainer``'s own dataset preparation (same format rules as the outcome data) and collated by
    its collator. p_base is the model with its adapter disabled (PEFT) or a frozen copy made at construction.
    Extra loss terms are per-micro-batch means; SFT's loss is normalised over the tokens of the whole
    accumulation window, so they enter divided by the number of accumulated micro-batches.

    Args:
        proxy_dataset: positive proxy data A⁺ (any format ``SFTTrainer`` accepts).
        negative_proxy_dataset: negative proxy data A⁻ (same format); for ``dpo`` its rows pair with A⁺'s.
        Every other argument is ``SFTTrainer``'s; ``args`` must be a :class:`SelectiveConfig`.

    Raises:
        TypeError: ``args`` is not a :class:`SelectiveConfig`.
        ValueError: proxy data missing for a strategy that needs it, LoRA missing for the plane penalties,
            DeepSpeed with a strategy whose proxy forwards or gradient surgery it cannot host, or a ``naive``
            union of datasets with different columns.
    """

    _tag_names = ["trl", "trl_ext", "sft", "selective-generalisation"]

    def _outcome_formats(self, args, formatting_func):
        """TRL's SFT formats with ``args`` (:func:`~trl_ext.common.inputs.sft_formats`)."""
        return sft_formats(args, formatting_func)

    def __init__(
        self,
        model=None,
        args: SelectiveConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        proxy_dataset=None,
        negative_proxy_dataset=None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, SelectiveConfig):
            raise InputTypeError(f"SelectiveSFTTrainer needs a SelectiveConfig, got {type(args).__name__}")
        raw_proxy = self._selective_check(
            args,
            proxy_dataset,
            negative_proxy_dataset,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            formatting_func=kwargs.get("formatting_func"),
        )
        model = check_model_argument(model)
        if args.strategy == "naive":
            train_dataset = _union(train_dataset, proxy_dataset, seed=args.seed)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self._selective_setup(raw_proxy)

    def _prepare_proxy_dataset(self, dataset, name: str):
        """SFT's own preparation of the outcome data (``completion_only_loss`` as decided for the outcome data)."""
        return self._prepare_dataset(dataset, self.processing_class, self.args, False, None, f"proxy_{name}")


def _union(outcome, proxy, seed: int):
    """The shuffled union T ∪ A⁺ of the ``naive`` strategy (same columns required)."""
    from datasets import concatenate_datasets

    if set(outcome.column_names) != set(proxy.column_names):
        raise ValueError(
            f"naive strategy: outcome columns {sorted(outcome.column_names)} and proxy columns "
            f"{sorted(proxy.column_names)} differ; give both datasets the same format"
        )
    return concatenate_datasets([outcome, proxy.select_columns(outcome.column_names)]).shuffle(seed=seed)
