"""The sender side: run a sender model on conversations and write its last-layer hidden states (docs/latent.md).

:func:`write_sender_states` renders, for each row of the document's format, what the sender reads — by default the
conversation up to and including its first user turn, with the sender's chat template and a generation prompt — runs
the sender on it in batches (right padding, no gradient, a progress bar) and keeps the last layer's hidden states of
the row's own tokens, ``(K, d)`` float32 (``max_positions``: the last ``max_positions`` of them). They are written as
safetensors shards, ``hidden_states-00000.safetensors``, … (``shard_size`` samples each, one tensor per sample named
by its id), and the rows as ``rows.jsonl`` beside them, each pointing at its tensor with ``hidden_state_path`` and
``hidden_state_key`` — the input of :func:`~trl_ext.latent.data.read_latent_file`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from trl_ext.common.errors import ConfigError, DataError

__all__ = ["ROWS_FILE", "first_user_prompt", "write_sender_states"]

ROWS_FILE = "rows.jsonl"


def first_user_prompt(row: dict[str, Any]) -> list[dict[str, str]]:
    """The messages a sender reads by default: any system turns and the first human turn of ``row``."""
    from trl_ext.latent.data import ROLES

    messages = []
    for turn in row["conversations"]:
        role = ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise DataError(f"sample {row.get('id')!r}: conversation turn from {turn.get('from')!r} is not known")
        messages.append({"role": role, "content": turn["value"]})
        if role == "user":
            return messages
    raise DataError(f"sample {row.get('id')!r}: the conversation has no human turn for the sender to read")


def write_sender_states(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    shard_size: int = 256,
    max_positions: int | None = None,
    sender_messages: Callable[[dict[str, Any]], list[dict[str, str]]] = first_user_prompt,
    show_progress: bool = True,
) -> Path:
    """Write the hidden-state shards and ``rows.jsonl`` into ``output_dir`` (see the module docstring); returns the
    path of ``rows.jsonl``.

    Raises:
        ConfigError: ``batch_size``, ``shard_size`` or ``max_positions`` < 1. DataError: a row without an id or with
            an id used twice, or a conversation the sender cannot read.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    for name, value in (("batch_size", batch_size), ("shard_size", shard_size), ("max_positions", max_positions)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    ids = [str(r.get("id", "")) for r in rows]
    if any(not i for i in ids) or len(set(ids)) != len(ids):
        raise DataError("every row needs an id, and ids must be unique (they name the tensors in the shards)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    texts = [
        tokenizer.apply_chat_template(sender_messages(row), tokenize=False, add_generation_prompt=True) for row in rows
    ]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    shard: dict[str, torch.Tensor] = {}
    out_rows: list[dict[str, Any]] = []
    n_shard = 0

    def flush() -> None:
        nonlocal shard, n_shard
        if shard:
            save_file(shard, str(output_dir / f"hidden_states-{n_shard:05d}.safetensors"))
            shard, n_shard = {}, n_shard + 1

    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(rows), batch_size), desc="sender states", disable=not show_progress):
                encoded = [
                    tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + batch_size]
                ]
                width = max(len(e) for e in encoded)
                input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
                attention = torch.zeros((len(encoded), width), dtype=torch.long)
                for i, e in enumerate(encoded):
                    input_ids[i, : len(e)], attention[i, : len(e)] = torch.tensor(e), 1
                out = model(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), output_hidden_states=True
                )
                last = out.hidden_states[-1].float().cpu()
                for i, e in enumerate(encoded):
                    row = rows[start + i]
                    states = last[i, : len(e)]
                    if max_positions is not None:
                        states = states[-max_positions:]
                    shard[ids[start + i]] = states.contiguous()
                    entry = {k: v for k, v in row.items() if k not in ("hidden_state", "hidden_state_path")}
                    entry["hidden_state_path"] = f"hidden_states-{n_shard:05d}.safetensors"
                    entry["hidden_state_key"] = ids[start + i]
                    out_rows.append(entry)
                    if len(shard) == shard_size:
                        flush()
            flush()
    finally:
        model.train(was_training)
    path = output_dir / ROWS_FILE
    path.write_text("".join(json.dumps(r) + "\n" for r in out_rows))
    return path
