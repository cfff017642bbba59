"""Splicing a latent message into the receiver's input, and the latent/plan mixing curriculum (docs/latent.md).

**Injection** (:func:`splice_message`). The first user turn ends with the marker token ``<FIRST_HUMAN_END>`` at
position ``p``; the marker itself is not fed to the model. The input embeddings become

    [e(x_<p), e(<bop>), M, e(<eop>), e(x_>p)]

where ``M`` ``(L, D)`` is the message (adapter output, plan embeddings or a mix). The inserted span (``<bop>``, M,
``<eop>``) has attention mask 1 and label −100; the other positions keep their token's attention and label. A batch
is right-padded to its longest row (attention 0, label −100, zero embeddings).

**Mixing** (:func:`mix_message`, :class:`MixSchedule`). With the adapter output ``A`` ``(K, D)``, the plan's token
embeddings ``P`` ``(|P|, D)`` and a ratio r: ``M = concat(A[: round(K·r)], P[round(|P|·r):])``: the first part of
the plan is replaced by latents, more of it as r grows. r is drawn per sample, per forward, uniformly from
``mix_ratios`` (default 0.2, 0.3, …, 0.8; ``mix_schedule="random"``) or follows ``"linear"``: the ratio grows with
training progress from the lowest to the highest of ``mix_ratios`` (``sorted(ratios)[⌊progress · n⌋]``).
**Decision:** a fresh ratio at every forward (upstream drew the ratios once and reused the first step's forever).
Mixing is off at evaluation and in the probe (pure latents, r = 1).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trl_ext.common.errors import ConfigError, DataError, UnknownNameError

__all__ = [
    "BOP",
    "DEFAULT_MIX_RATIOS",
    "EOP",
    "FIRST_HUMAN_END",
    "MIX_SCHEDULES",
    "SPECIAL_TOKENS",
    "MixSchedule",
    "SplicedBatch",
    "add_latent_tokens",
    "mix_message",
    "splice_message",
]

FIRST_HUMAN_END, BOP, EOP = "<FIRST_HUMAN_END>", "<bop>", "<eop>"
SPECIAL_TOKENS = (FIRST_HUMAN_END, BOP, EOP)
DEFAULT_MIX_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIX_SCHEDULES = ("random", "linear")


def mix_message(latents: torch.Tensor, plan: torch.Tensor, ratio: float) -> torch.Tensor:
    """``concat(latents[: round(K·r)], plan[round(|P|·r):])`` (Python's round: half to even)."""
    if latents.dim() != 2 or plan.dim() != 2 or latents.shape[1] != plan.shape[1]:
        raise ValueError(f"latents {tuple(latents.shape)} and plan {tuple(plan.shape)} must be (K, D) and (P, D)")
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"mixing ratio must be in [0, 1], got {ratio}")
    return torch.cat([latents[: round(latents.shape[0] * ratio)], plan[round(plan.shape[0] * ratio) :]], dim=0)


class MixSchedule:
    """The mixing ratio of each sample at each forward (see the module docstring).

    Args:
        ratios: the ratios to draw from (each in [0, 1]).
        schedule: ``"random"`` or ``"linear"``.
        seed: seeds the draws (``random.Random``); its state is part of :meth:`state_dict`.
    """

    def __init__(self, ratios: Sequence[float] = DEFAULT_MIX_RATIOS, schedule: str = "random", seed: int = 0):
        if schedule not in MIX_SCHEDULES:
            raise UnknownNameError(f"mix_schedule must be one of {MIX_SCHEDULES}, got {schedule!r}")
        ratios = [float(r) for r in ratios]
        if not ratios or not all(0.0 <= r <= 1.0 for r in ratios):
            raise ConfigError(f"mix_ratios must be a non-empty list of values in [0, 1], got {ratios}")
        self.ratios, self.schedule = sorted(ratios), schedule
        self._rng = random.Random(seed)

    def draw(self, n: int, progress: float = 0.0) -> list[float]:
        """``n`` ratios for one forward; ``progress`` in [0, 1] (the share of training done) for ``"linear"``."""
        if self.schedule == "linear":
            index = min(len(self.ratios) - 1, int(max(0.0, min(1.0, progress)) * len(self.ratios)))
            return [self.ratios[index]] * n
        return [self._rng.choice(self.ratios) for _ in range(n)]

    def seed(self, value: int | str) -> None:
        """Re-seed the draws (the trainer seeds each forward from its seed, step, micro-batch and process, so that
        a resumed run draws the same ratios without keeping a random state)."""
        self._rng.seed(value)

    def state_dict(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"ratios": self.ratios, "schedule": self.schedule, "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        self.ratios, self.schedule = [float(r) for r in state["ratios"]], state["schedule"]
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


@dataclass
class SplicedBatch:
    """The receiver's inputs with the messages spliced in: ``inputs_embeds`` ``(B, T', D)``, ``attention_mask`` and
    ``labels`` ``(B, T')``, and per row the ``(start, end)`` of the inserted span (``<bop>`` … ``<eop>``)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    spans: list[tuple[int, int]]


def splice_message(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    embed: torch.nn.Module,
    marker_id: int,
    bop_id: int,
    eop_id: int,
    messages: Sequence[torch.Tensor],
    row_ids: Sequence[str] | None = None,
) -> SplicedBatch:
    """Splice ``messages[i]`` ``(L_i, D)`` into row i at its marker (see the module docstring).

    ``input_ids``/``attention_mask``/``labels`` ``(B, T)`` (right-padded); ``embed`` is the receiver's input
    embedding. Each row must hold the marker exactly once, inside its attended tokens.

    Raises:
        DataError: a row without the marker or with more than one (named by ``row_ids[i]`` when given).
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != labels.shape:
        raise ValueError("input_ids, attention_mask and labels must have the same (B, T) shape")
    if len(messages) != input_ids.shape[0]:
        raise ValueError(f"{len(messages)} messages for {input_ids.shape[0]} rows")
    special = embed(torch.tensor([bop_id, eop_id], device=input_ids.device))
    rows, masks, labs, spans = [], [], [], []
    for i in range(input_ids.shape[0]):
        name = row_ids[i] if row_ids is not None else str(i)
        length = int(attention_mask[i].sum())
        ids = input_ids[i, :length]
        where = (ids == marker_id).nonzero().flatten()
        if where.numel() != 1:
            raise DataError(
                f"sample {name!r}: its first user turn must end with {FIRST_HUMAN_END} exactly once, found "
                f"{where.numel()} in the tokenised input"
            )
        p = int(where[0])
        tokens = embed(torch.cat([ids[:p], ids[p + 1 :]]))
        message = messages[i].to(tokens.dtype)
        if message.dim() != 2 or message.shape[1] != tokens.shape[1]:
            raise ValueError(f"sample {name!r}: message shape {tuple(message.shape)}, expected (L, {tokens.shape[1]})")
        inserted = message.shape[0] + 2
        rows.append(torch.cat([tokens[:p], special[:1], message, special[1:], tokens[p:]], dim=0))
        masks.append(torch.ones(rows[-1].shape[0], dtype=attention_mask.dtype, device=input_ids.device))
        ignore = torch.full((inserted,), -100, dtype=labels.dtype, device=labels.device)
        labs.append(torch.cat([labels[i, :p], ignore, labels[i, p + 1 : length]]))
        spans.append((p, p + inserted))
    width = max(r.shape[0] for r in rows)
    dim = rows[0].shape[1]
    embeds = rows[0].new_zeros((len(rows), width, dim))
    mask = torch.zeros((len(rows), width), dtype=attention_mask.dtype, device=input_ids.device)
    out_labels = torch.full((len(rows), width), -100, dtype=labels.dtype, device=labels.device)
    for i, (r, m, lab) in enumerate(zip(rows, masks, labs)):
        embeds[i, : r.shape[0]], mask[i, : m.shape[0]], out_labels[i, : lab.shape[0]] = r, m, lab
    return SplicedBatch(embeds, mask, out_labels, spans)


def add_latent_tokens(tokenizer: Any, model: Any = None) -> dict[str, int]:
    """Add ``<FIRST_HUMAN_END>``, ``<bop>``, ``<eop>`` as special tokens (those missing) and resize ``model``'s
    embeddings to the new vocabulary; returns ``{token: id}``."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if model is not None and model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
