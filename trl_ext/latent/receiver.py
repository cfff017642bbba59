"""The receiver: a causal LM and its latent adapter in one module (docs/latent.md, "Receiver").

Keeping the adapter inside the module that the Trainer wraps (DDP, DeepSpeed) is what lets the wrappers see its
parameters: the adapter runs inside the wrapped ``forward``. One :meth:`LatentReceiver.forward` call is one batched
forward of the receiver with the messages of one *source* spliced in
(:func:`~trl_ext.latent.injection.splice_message`):

* ``"latent"``: the adapter's output of ``hidden_states`` (optionally mixed with the plan's embeddings at per-row
  ``ratios``, :func:`~trl_ext.latent.injection.mix_message`);
* ``"plan"``: the embeddings of the plan tokens (the teacher of the plan-similarity loss);
* ``"latent"`` with other rows' hidden states (the negatives of the random-contrast loss): pass them as
  ``hidden_states``;
* ``"none"``: no message (an empty one, so the inserted span is just ``<bop><eop>``): the receiver without latent
  communication, the baseline of the evaluation (:mod:`trl_ext.latent.generation`).

It returns the logits at the positions that predict each token, ``(B, T' − 1, V)``, the spliced labels shifted to
match (``labels[:, 1:]``) and the spliced batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trl_ext.common.errors import UnknownNameError
from trl_ext.latent.adapter import LatentAdapter
from trl_ext.latent.injection import BOP, EOP, FIRST_HUMAN_END, SplicedBatch, mix_message, splice_message

__all__ = ["SOURCES", "LatentReceiver"]

SOURCES = ("latent", "plan", "none")


class LatentReceiver(nn.Module):
    """``model`` (a causal LM whose tokenizer has the latent tokens) and its ``adapter``; ``token_ids`` maps
    ``<FIRST_HUMAN_END>``, ``<bop>``, ``<eop>`` to their ids (:func:`~trl_ext.latent.injection.add_latent_tokens`)."""

    def __init__(self, model: nn.Module, adapter: LatentAdapter, token_ids: dict[str, int]) -> None:
        super().__init__()
        self.model = model
        self.latent_adapter = adapter
        self.marker_id, self.bop_id, self.eop_id = (token_ids[t] for t in (FIRST_HUMAN_END, BOP, EOP))

    @property
    def config(self):
        """The causal LM's config (what the Trainer and PEFT read)."""
        return self.model.config

    def activation_checkpointing_enable(self, **kwargs) -> None:
        """Activation (gradient) checkpointing of the causal LM: what ``--activation_checkpointing`` (or the older
        ``--gradient_checkpointing``) calls through the Trainer; the small adapter runs without it."""
        self.model.activation_checkpointing_enable(**kwargs)

    def activation_checkpointing_disable(self) -> None:
        self.model.activation_checkpointing_disable()

    def messages(
        self,
        source: str,
        hidden_states: torch.Tensor | None = None,
        latent_padding: torch.Tensor | None = None,
        plan_ids: torch.Tensor | None = None,
        plan_mask: torch.Tensor | None = None,
        ratios: Sequence[float] | None = None,
        num_rows: int | None = None,
    ) -> list[torch.Tensor]:
        """The message of each row for ``source`` (see the module docstring); ``"none"`` gives ``num_rows`` (default:
        the rows of ``hidden_states`` or ``plan_ids``) empty ``(0, D)`` messages."""
        if source not in SOURCES:
            raise UnknownNameError(f"source must be one of {SOURCES}, got {source!r}")
        embed = self.model.get_input_embeddings()
        if source == "none":
            if num_rows is None:
                given = hidden_states if hidden_states is not None else plan_ids
                if given is None:
                    raise ValueError('source "none" needs num_rows (or hidden_states or plan_ids to count the rows)')
                num_rows = given.shape[0]
            return [embed.weight.new_zeros((0, embed.weight.shape[1])) for _ in range(num_rows)]

        def plan_of(i: int) -> torch.Tensor:
            return embed(plan_ids[i][plan_mask[i].bool()])

        if source == "plan":
            return [plan_of(i) for i in range(plan_ids.shape[0])]
        adapted = self.latent_adapter(hidden_states, latent_padding)
        rows = [
            adapted[i][~latent_padding[i]] if latent_padding is not None else adapted[i] for i in range(len(adapted))
        ]
        if ratios is not None:
            rows = [mix_message(rows[i], plan_of(i), float(r)) for i, r in enumerate(ratios)]
        return rows

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        hidden_states: torch.Tensor | None = None,
        latent_padding: torch.Tensor | None = None,
        plan_ids: torch.Tensor | None = None,
        plan_mask: torch.Tensor | None = None,
        source: str = "latent",
        ratios: Sequence[float] | None = None,
        ids: Sequence[str] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, SplicedBatch]:
        messages = self.messages(
            source, hidden_states, latent_padding, plan_ids, plan_mask, ratios, num_rows=input_ids.shape[0]
        )
        embed = self.model.get_input_embeddings()
        messages = [m.to(embed.weight.dtype) for m in messages]
        spliced = splice_message(
            input_ids, attention_mask, labels, embed, self.marker_id, self.bop_id, self.eop_id, messages, ids
        )
        out = self.model(inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, use_cache=False)
        return out.logits[:, :-1], spliced.labels[:, 1:], spliced
