"""Saving and loading a receiver: the causal LM in its own format, the adapter beside it (docs/latent.md, "Outputs").

A folder written by :func:`save_receiver` (every checkpoint of :class:`~trl_ext.latent.trainer.LatentCommTrainer`
and its final ``output_dir``) holds the causal LM as ``save_pretrained`` writes it (``config.json``,
``model.safetensors``), ``latent_comm_head.safetensors`` + ``latent_comm_head.json`` (the adapter) and, from the
trainer, the tokenizer with the latent tokens. :func:`load_latent_receiver` rebuilds the
:class:`~trl_ext.latent.receiver.LatentReceiver` and its tokenizer from such a folder; :func:`load_receiver_weights`
loads a folder's weights into an existing receiver (resume, best model). Only safetensors are read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trl_ext.common.errors import DataError, MissingPathError
from trl_ext.latent.adapter import ADAPTER_WEIGHTS, LatentAdapter
from trl_ext.latent.injection import add_latent_tokens
from trl_ext.latent.receiver import LatentReceiver

__all__ = ["load_latent_receiver", "load_receiver_weights", "save_receiver"]

_LM, _HEAD = "model.", "latent_adapter."


def save_receiver(receiver: LatentReceiver, folder: str | os.PathLike, state_dict: dict | None = None) -> None:
    """Write ``receiver``'s causal LM (``save_pretrained``) and adapter into ``folder``. ``state_dict``: the
    receiver's full state dict when the caller gathered it (DeepSpeed ZeRO-3), else the receiver's own."""
    state_dict = receiver.state_dict() if state_dict is None else state_dict
    lm = {k[len(_LM) :]: v for k, v in state_dict.items() if k.startswith(_LM)}
    head = {k[len(_HEAD) :]: v for k, v in state_dict.items() if k.startswith(_HEAD)}
    receiver.model.save_pretrained(folder, state_dict=lm)
    receiver.latent_adapter.save_pretrained(folder, state_dict=head)


def _lm_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        import json

        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(folder / shard)))
        return state
    raise MissingPathError(f"{folder} has no model.safetensors (or its index): not a saved receiver")


def load_receiver_weights(receiver: LatentReceiver, folder: str | os.PathLike) -> None:
    """Load the causal LM's and the adapter's weights saved in ``folder`` into ``receiver`` (in place).

    Raises:
        MissingPathError: the folder lacks the LM's safetensors or the adapter's file.
        DataError: the saved weights do not fit the receiver (keys named).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    head_file = folder / ADAPTER_WEIGHTS
    if not head_file.is_file():
        raise MissingPathError(f"{folder} has no {ADAPTER_WEIGHTS}: not a folder saved with a latent adapter")
    lm = receiver.model
    state = _lm_state(folder)
    result = lm.load_state_dict(state, strict=False)
    params = dict(lm.named_parameters(remove_duplicate=False))
    loaded = [params[k] for k in state if k in params]
    # a tied weight (lm_head.weight with tie_word_embeddings) is not saved: it shares the loaded tensor
    missing = [k for k in result.missing_keys if not any(params.get(k) is p for p in loaded)]
    if missing or result.unexpected_keys:
        raise DataError(
            f"{folder}: the saved causal LM does not fit the receiver (missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]})"
        )
    receiver.latent_adapter.load_state_dict(load_file(str(head_file)))


def load_latent_receiver(folder: str | os.PathLike, **model_kwargs: Any) -> tuple[LatentReceiver, Any]:
    """``(receiver, tokenizer)`` saved in ``folder`` (a trainer's ``output_dir`` or checkpoint); ``model_kwargs``
    go to the causal LM's loading (e.g. ``dtype``)."""
    from trl_ext.models import load_causal_lm, load_tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"{folder} is not a folder")
    adapter = LatentAdapter.from_pretrained(folder)
    tokenizer = load_tokenizer(str(folder))
    model = load_causal_lm(str(folder), **model_kwargs)
    token_ids = add_latent_tokens(tokenizer, model)
    return LatentReceiver(model, adapter.float(), token_ids), tokenizer
