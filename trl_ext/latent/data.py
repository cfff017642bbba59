"""Latent-communication data: rows of the document's format, validated, with hidden states loaded eagerly or lazily
(docs/latent.md, "Data").

A file is a JSON list of rows or JSON lines (one row per line). A row::

    {"id": "sample_0001",
     "conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}, ...],
     "plan": "optional text" | "plan_path": "optional file of text",
     "hidden_state": [[...], ...] | "hidden_state_path": "file"}

* ``conversations``: ShareGPT turns, ``from`` one of ``human``/``user``, ``gpt``/``assistant``, ``system``; the first
  non-system turn is the user's (its end is where the message is injected) and at least one assistant turn follows
  (only assistant turns are supervised).
* hidden states ``(K, d)``, K ≥ 1, finite: inline as a list of equal-length lists of numbers, or a path (relative to
  the data file's folder) to a ``.npy`` (``allow_pickle=False``), ``.pt``/``.pth`` (``torch.load(weights_only=True)``:
  a tensor, or a dict with the key ``hidden_state``) or ``.safetensors`` file (the key ``hidden_state``, or its only
  tensor). Never unpickled.
* ``hidden_state_key``: with a ``.safetensors`` path, the tensor of that name (a shard holding many samples, as
  :func:`~trl_ext.latent.sender.write_sender_states` writes them).
* ``plan`` (text) or ``plan_path`` (a text file, relative like the hidden states): optional.

Every malformed row is a :class:`~trl_ext.common.errors.DataError` naming the file, the row id (or its index) and the
field, raised when the file is read — the hidden-state *files* of a lazy dataset are checked to exist then, and
their contents when a batch reads them (``lazy=True``: hidden states are read per item, not all at the start).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trl_ext.common.errors import DataError, MissingPathError

__all__ = [
    "HIDDEN_STATE_SUFFIXES",
    "ROLES",
    "LatentDataset",
    "LatentRow",
    "load_hidden_state",
    "read_latent_file",
    "split_eval",
]

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
HIDDEN_STATE_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")


@dataclass
class LatentRow:
    """One validated row: ``messages`` as chat messages (``role``, ``content``), the plan text or None, and the
    hidden state as a ``(K, d)`` float32 tensor or, lazily, the path to read it from."""

    id: str
    messages: list[dict[str, str]]
    plan: str | None
    hidden_state: torch.Tensor | None = None
    hidden_state_path: Path | None = None
    hidden_state_key: str | None = None

    def load_hidden_state(self) -> torch.Tensor:
        """The ``(K, d)`` hidden state (read from its file when the row is lazy)."""
        if self.hidden_state is not None:
            return self.hidden_state
        return load_hidden_state(self.hidden_state_path, self.id, self.hidden_state_key)


def _where(source: str, row_id: str) -> str:
    return f"{source}: sample {row_id!r}"


def _as_matrix(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to(torch.float32)
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float32))
        except (ValueError, TypeError):
            raise DataError(
                f"{where}: hidden_state must be a (K, d) array of numbers with rows of one length"
            ) from None
    if tensor.dim() != 2 or tensor.shape[0] < 1 or tensor.shape[1] < 1:
        raise DataError(f"{where}: hidden_state must be 2-D (K, d) with K, d >= 1, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise DataError(f"{where}: hidden_state has non-finite values")
    return tensor.contiguous()


def load_hidden_state(path: str | os.PathLike, row_id: str = "?", key: str | None = None) -> torch.Tensor:
    """A ``(K, d)`` float32 hidden state from a ``.npy``, ``.pt``/``.pth`` or ``.safetensors`` file (never a pickle);
    ``key`` picks one tensor of a ``.safetensors`` shard (the sender tool's ``hidden_state_key``).

    Raises:
        MissingPathError: the file does not exist. DataError: an unknown suffix, an unreadable file or contents that
            are not one finite ``(K, d)`` array.
    """
    path = Path(path)
    where = f"sample {row_id!r}: hidden_state_path {str(path)!r}"
    if not path.is_file():
        raise MissingPathError(f"{where} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            value = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            value = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(value, dict):
                if "hidden_state" not in value:
                    raise DataError(f"{where}: a dict without the key 'hidden_state' (keys: {sorted(value)[:5]})")
                value = value["hidden_state"]
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if key is not None:
                if key not in tensors:
                    raise DataError(f"{where}: no tensor {key!r} (hidden_state_key) in the file")
                value = tensors[key]
            elif "hidden_state" in tensors:
                value = tensors["hidden_state"]
            elif len(tensors) == 1:
                value = next(iter(tensors.values()))
            else:
                raise DataError(f"{where}: several tensors and none named 'hidden_state' ({sorted(tensors)[:5]})")
        else:
            raise DataError(f"{where}: unknown format {suffix!r}; use one of {HIDDEN_STATE_SUFFIXES}")
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader error becomes one message naming the row and the file
        raise DataError(f"{where}: cannot be read ({type(err).__name__}: {err})") from None
    return _as_matrix(value, where)


def _check_conversations(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: conversations must be a non-empty list of {{from, value}} turns")
    messages = []
    for j, turn in enumerate(value):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: conversations[{j}] must be a mapping with 'from' and 'value'")
        role = ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise DataError(f"{where}: conversations[{j}].from {turn['from']!r} is not one of {sorted(ROLES)}")
        if not isinstance(turn["value"], str):
            raise DataError(f"{where}: conversations[{j}].value must be text, got {type(turn['value']).__name__}")
        messages.append({"role": role, "content": turn["value"]})
    roles = [m["role"] for m in messages if m["role"] != "system"]
    if not roles or roles[0] != "user":
        raise DataError(f"{where}: conversations must start (after any system turn) with a human turn")
    if "assistant" not in roles:
        raise DataError(f"{where}: conversations has no gpt turn to train on")
    return messages


def _read_rows(path: Path) -> list[Any]:
    text = path.read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err})") from None
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: not a JSON line ({err})") from None
    return rows


def read_latent_file(
    path: str | os.PathLike, lazy: bool = False, require_hidden_state: bool = True
) -> list[LatentRow]:
    """Read and validate every row of a JSON or JSONL file (see the module docstring).

    Args:
        lazy: keep hidden-state *paths* and read each file when the row is used (inline hidden states are kept).
        require_hidden_state: a row without ``hidden_state`` and ``hidden_state_path`` is an error.

    Raises:
        MissingPathError: the file, or a referenced hidden-state or plan file, does not exist.
        DataError: a malformed row (named by id and field), duplicate ids, or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"latent data file {str(path)!r} does not exist")
    rows = _read_rows(path)
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: expected a non-empty JSON list of rows or JSON lines")
    base = path.parent
    out, seen = [], set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i} is not a JSON object")
        row_id = str(row.get("id", f"#{i}"))
        where = _where(str(path), row_id)
        if row_id in seen:
            raise DataError(f"{where}: the id appears twice")
        seen.add(row_id)
        messages = _check_conversations(row.get("conversations"), where)
        plan = row.get("plan")
        if plan is not None and not isinstance(plan, str):
            raise DataError(f"{where}: plan must be text, got {type(plan).__name__}")
        if row.get("plan_path") is not None:
            if plan is not None:
                raise DataError(f"{where}: give plan or plan_path, not both")
            plan_file = base / str(row["plan_path"])
            if not plan_file.is_file():
                raise MissingPathError(f"{where}: plan_path {str(plan_file)!r} does not exist")
            plan = plan_file.read_text()
        inline, file = row.get("hidden_state"), row.get("hidden_state_path")
        if inline is not None and file is not None:
            raise DataError(f"{where}: give hidden_state or hidden_state_path, not both")
        hidden, hidden_path = None, None
        if inline is not None:
            hidden = _as_matrix(inline, where)
        elif file is not None:
            hidden_path = base / str(file)
            if hidden_path.suffix.lower() not in HIDDEN_STATE_SUFFIXES:
                raise DataError(f"{where}: hidden_state_path {str(file)!r}: use one of {HIDDEN_STATE_SUFFIXES}")
            key = row.get("hidden_state_key")
            if key is not None and hidden_path.suffix.lower() != ".safetensors":
                raise DataError(f"{where}: hidden_state_key needs a .safetensors hidden_state_path")
            if not hidden_path.is_file():
                raise MissingPathError(f"{where}: hidden_state_path {str(hidden_path)!r} does not exist")
            if not lazy:
                hidden, hidden_path = load_hidden_state(hidden_path, row_id, key), None
        elif require_hidden_state:
            raise DataError(f"{where}: has neither hidden_state nor hidden_state_path")
        key = row.get("hidden_state_key") if hidden_path is not None else None
        out.append(LatentRow(row_id, messages, plan, hidden, hidden_path, key))
    return out


def split_eval(rows: Sequence[LatentRow], eval_ratio: float, seed: int = 0) -> tuple[list, list]:
    """``(train, eval)``: a seeded shuffle, then ``round(len · eval_ratio)`` rows (at least 1 when the ratio is
    positive and there are 2 rows or more) for evaluation."""
    if not 0.0 <= eval_ratio < 1.0:
        raise DataError(f"eval_ratio must be in [0, 1), got {eval_ratio}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(rows) * eval_ratio)
    if eval_ratio > 0 and n_eval == 0 and len(rows) >= 2:
        n_eval = 1
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [r for i, r in enumerate(rows) if i in eval_idx]


class LatentDataset(torch.utils.data.Dataset):
    """Rows as dataset items ``{"id", "messages", "plan", "hidden_state"}``, the hidden state cut to its first
    ``prepended_length`` positions (``None``: whole) and read from its file at access time for lazy rows."""

    def __init__(self, rows: Sequence[LatentRow], prepended_length: int | None = None) -> None:
        if prepended_length is not None and prepended_length < 1:
            raise DataError(f"prepended_length must be >= 1, got {prepended_length}")
        self.rows = list(rows)
        self.prepended_length = prepended_length

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        hidden = row.load_hidden_state()
        if self.prepended_length is not None:
            hidden = hidden[: self.prepended_length]
        return {"id": row.id, "messages": row.messages, "plan": row.plan, "hidden_state": hidden}

    @property
    def widths(self) -> set[int]:
        """The hidden-state widths d of the rows loaded eagerly (lazy rows are not read for this)."""
        return {int(r.hidden_state.shape[1]) for r in self.rows if r.hidden_state is not None}
