"""The selective family's couplings to TRL and transformers internals (checked by ``tests/test_trl_compat.py``).

* ``sft_prepare_dataset``: proxy data of a DPO or PPO host is tokenized by ``trl.SFTTrainer._prepare_dataset``
  itself, called on a minimal stand-in for the trainer (:func:`prepare_dataset_as_sft`), so proxy batches are those
  of the SFT host. The stand-in carries the attributes that method reads of ``self`` and of ``args`` in TRL 1.16;
* ``sft_collator``: ``trl.trainer.sft_trainer.DataCollatorForLanguageModeling``, SFT's collator, for those rows;
* ``use_adapter``: ``trl.trainer.utils.use_adapter(model, adapter_name=...)``, to run p_base as a named adapter;
* ``grad_norm_hooks``: ``transformers.Trainer._clip_grad_norm(model)`` and ``_get_grad_norm(model, grad_norm)``,
  called once per optimizer step on the accumulated (and all-reduced) gradient: gradient surgery runs there;
* ``loss_scaling_rule``: ``transformers.Trainer.training_step`` divides the loss by the accumulation steps unless
  ``loss_is_scaled_for_ga`` (or, when that is unset, loss kwargs with ``num_items_in_batch``, or a
  ``compute_loss_func``); the extra terms follow the same rule.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from trl_ext.common._trl_compat import Coupling, TRLCouplingError, require_params, require_source, source_of

__all__ = ["COUPLINGS", "prepare_dataset_as_sft", "sft_collator_class", "use_adapter"]

_STAND_IN_SELF = ("_tokenizer", "completion_only_loss", "chat_template")
_STAND_IN_ARGS = (
    "dataset_num_proc",
    "dataset_text_field",
    "assistant_only_loss",
    "max_length",
    "truncation_mode",
    "shuffle_dataset",
    "seed",
)
_PACKING_ONLY_ARGS = ("packing_strategy",)  # read only when packing, which proxy data never is


def prepare_dataset_as_sft(
    dataset: Any,
    processing_class: Any,
    *,
    completion_only_loss: bool,
    max_length: int | None,
    truncation_mode: str,
    dataset_num_proc: int | None,
    dataset_text_field: str,
    name: str,
) -> Any:
    """``SFTTrainer._prepare_dataset`` (no packing, no formatting function) on a stand-in trainer."""
    from trl import SFTTrainer

    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    host = SimpleNamespace(_tokenizer=tokenizer, completion_only_loss=completion_only_loss, chat_template=None)
    args = SimpleNamespace(
        dataset_num_proc=dataset_num_proc,
        dataset_text_field=dataset_text_field,
        assistant_only_loss=False,
        max_length=max_length,
        truncation_mode=truncation_mode,
        shuffle_dataset=False,
        seed=0,
    )
    return SFTTrainer._prepare_dataset(host, dataset, processing_class, args, False, None, name)


def sft_collator_class() -> type:
    """SFT's ``DataCollatorForLanguageModeling``."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling


def use_adapter(model: Any, adapter_name: str):
    """TRL's context manager that activates ``adapter_name`` of a PEFT model."""
    from trl.trainer.utils import use_adapter as trl_use_adapter

    return trl_use_adapter(model, adapter_name=adapter_name)


def _check_prepare_dataset() -> None:
    from trl import SFTTrainer

    name = "sft_prepare_dataset"
    method = SFTTrainer._prepare_dataset
    require_params(name, method, ("dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name"))
    text = source_of(method)
    read_self = set(re.findall(r"self\.(\w+)", text))
    read_args = set(re.findall(r"args\.(\w+)", text))
    extra_self = sorted(read_self - set(_STAND_IN_SELF))
    extra_args = sorted(read_args - set(_STAND_IN_ARGS) - set(_PACKING_ONLY_ARGS))
    if extra_self or extra_args:
        raise TRLCouplingError(
            f"{name}: SFTTrainer._prepare_dataset now reads self.{extra_self} / args.{extra_args}, which the "
            "stand-in of trl_ext.selective._trl_compat.prepare_dataset_as_sft does not carry"
        )


def _check_collator() -> None:
    collator = sft_collator_class()
    require_params("sft_collator", collator, ("pad_token_id", "pad_to_multiple_of"))


def _check_use_adapter() -> None:
    from trl.trainer.utils import use_adapter as trl_use_adapter

    require_params("use_adapter", trl_use_adapter, ("model", "adapter_name"))


def _check_grad_norm_hooks() -> None:
    from transformers import Trainer

    require_params("grad_norm_hooks", Trainer._clip_grad_norm, ("model",))
    require_params("grad_norm_hooks", Trainer._get_grad_norm, ("model", "grad_norm"))
    require_source("grad_norm_hooks", Trainer, (r"self\._clip_grad_norm\(", r"self\._get_grad_norm\("))


def _check_loss_scaling() -> None:
    from transformers import Trainer

    require_source(
        "loss_scaling_rule",
        Trainer.training_step,
        (r"loss_is_scaled_for_ga", r"model_accepts_loss_kwargs", r"compute_loss_func"),
    )


COUPLINGS = (
    Coupling("sft_prepare_dataset", "trl.SFTTrainer._prepare_dataset on a stand-in self", _check_prepare_dataset),
    Coupling("sft_collator", "trl.trainer.sft_trainer.DataCollatorForLanguageModeling", _check_collator),
    Coupling("use_adapter", "trl.trainer.utils.use_adapter", _check_use_adapter),
    Coupling("grad_norm_hooks", "transformers.Trainer._clip_grad_norm / _get_grad_norm", _check_grad_norm_hooks),
    Coupling("loss_scaling_rule", "transformers.Trainer.training_step (loss_is_scaled_for_ga)", _check_loss_scaling),
)
