"""Tokenising latent-communication samples into the receiver's batches (docs/latent.md, "Batches").

For one sample, ``<FIRST_HUMAN_END>`` is appended to the content of the first user turn and the conversation is
rendered with the tokenizer's chat template. Labels are the tokens of the assistant turns only: the assistant turn
k spans ``[len(render(turns[:k], add_generation_prompt=True)), len(render(turns[:k+1])))`` in tokens (its content and
the template's end of turn, e.g. ``<|im_end|>\n``), so any chat
template that renders prefixes as prefixes of the whole works (a template that does not is a ``DataError`` naming
the sample). The plan is tokenised on its own (no special tokens). A batch holds:

* ``input_ids``, ``attention_mask``, ``labels`` ``(B, T)``, right-padded (pad id, 0, −100);
* ``hidden_states`` ``(B, K, d)`` float32 and ``latent_padding`` ``(B, K)`` (True on padding);
* ``plan_ids`` ``(B, P)`` and ``plan_mask`` ``(B, P)`` (1 on plan tokens; a row without a plan has none);
* ``ids``: the sample ids (for messages that name a sample).

``max_length`` (the document's ``model_max_length``) cuts the conversation's tokens on the right; a sample whose
marker or every supervised token would be cut off is a ``DataError`` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trl_ext.common.errors import ConfigError, DataError
from trl_ext.latent.injection import FIRST_HUMAN_END, SPECIAL_TOKENS

__all__ = ["LatentCollator"]


class LatentCollator:
    """``collator(items) -> batch`` for :class:`~trl_ext.latent.data.LatentDataset` items (see the module docstring).

    Raises:
        ConfigError: the tokenizer lacks the special tokens (see
            :func:`~trl_ext.latent.injection.add_latent_tokens`) or a pad token.
    """

    def __init__(self, tokenizer: Any, max_length: int | None = None) -> None:
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ConfigError(
                f"the tokenizer lacks {missing}: call trl_ext.latent.add_latent_tokens(tokenizer, model)"
            )
        if tokenizer.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token")
        if max_length is not None and max_length < 2:
            raise ConfigError(f"max_length must be >= 2, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.marker_id = tokenizer.convert_tokens_to_ids(FIRST_HUMAN_END)

    def _ids(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, messages: Sequence[dict[str, str]], sample_id: str = "?") -> tuple[list[int], list[int]]:
        """``(input_ids, labels)`` of one conversation (marker after the first user turn, assistant tokens
        supervised)."""
        messages = [dict(m) for m in messages]
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first_user]["content"] = messages[first_user]["content"] + FIRST_HUMAN_END
        ids = self._ids(messages)
        labels = [-100] * len(ids)
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start, end = self._ids(messages[:k], generation_prompt=True), self._ids(messages[: k + 1])
            if ids[: len(start)] != start or ids[: len(end)] != end:
                raise DataError(
                    f"sample {sample_id!r}: the chat template does not render the turns before assistant turn {k} as "
                    "a prefix of the whole conversation; the supervised tokens cannot be found"
                )
            labels[len(start) : len(end)] = ids[len(start) : len(end)]
        if self.max_length is not None and len(ids) > self.max_length:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        if self.marker_id not in ids:
            raise DataError(f"sample {sample_id!r}: the first user turn does not fit in max_length={self.max_length}")
        if all(label == -100 for label in labels):
            raise DataError(f"sample {sample_id!r}: no assistant token is left within max_length={self.max_length}")
        return ids, labels

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        encoded = [self.encode(item["messages"], item["id"]) for item in items]
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        for i, (ids, lab) in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            labels[i, : len(lab)] = torch.tensor(lab)
        hidden = [torch.as_tensor(item["hidden_state"], dtype=torch.float32) for item in items]
        widths = {h.shape[1] for h in hidden}
        if len(widths) != 1:
            raise DataError(f"samples {[item['id'] for item in items]} have hidden states of widths {sorted(widths)}")
        k = max(h.shape[0] for h in hidden)
        states = torch.zeros((len(items), k, widths.pop()))
        padding = torch.ones((len(items), k), dtype=torch.bool)
        for i, h in enumerate(hidden):
            states[i, : h.shape[0]], padding[i, : h.shape[0]] = h, False
        plans = [
            self.tokenizer(item["plan"], add_special_tokens=False)["input_ids"] if item.get("plan") else []
            for item in items
        ]
        p = max([len(x) for x in plans] + [1])
        plan_ids = torch.full((len(items), p), pad, dtype=torch.long)
        plan_mask = torch.zeros((len(items), p), dtype=torch.long)
        for i, ids in enumerate(plans):
            if ids:
                plan_ids[i, : len(ids)], plan_mask[i, : len(ids)] = torch.tensor(ids), 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "hidden_states": states,
            "latent_padding": padding,
            "plan_ids": plan_ids,
            "plan_mask": plan_mask,
            "ids": [item["id"] for item in items],
        }
