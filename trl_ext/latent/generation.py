"""Answering with a latent message, and how much the answers depend on it (docs/latent.md, "Receiver", "Injection").

:func:`latent_generate` answers conversations that end with a user turn: ``<FIRST_HUMAN_END>`` is appended to the
first user turn, the conversation is rendered with the chat template and a generation prompt, the message of one
source is spliced in at the marker (:meth:`~trl_ext.latent.receiver.LatentReceiver.messages` and
:func:`~trl_ext.latent.injection.splice_message`: pure latents, no mixing; ``"plan"``: the plan's embeddings;
``"none"``: an empty message, ``<bop><eop>`` only), the rows are left-padded and the causal LM's
``generate(inputs_embeds=..., attention_mask=...)`` runs in batches, in evaluation mode, without gradient (with
``inputs_embeds`` it returns only the new tokens); each answer is cut at its first stop token (EOS, end of turn) and
decoded without special tokens. Greedy by default; ``repetition_penalty=1.0`` (and, sampling, ``top_k=0``) are
passed explicitly: ``generate`` fills unset options from the model's generation config, then global defaults.

:func:`evaluate_latent_conditions` scores the answers under conditions: ``"true"`` (each sample's own latents),
``"shuffled"`` (the latents of sample ``(j + 1) mod N`` of the evaluated set: a derangement, N ≥ 2), ``"none"`` (no
message) and ``"plan"`` (the plan's text, the teacher). For each, ``ce`` is the token-weighted mean answer
cross-entropy in nats (teacher forcing on :class:`~trl_ext.latent.collator.LatentCollator` batches: the sum over
the supervised tokens, those of every assistant turn, of all samples, divided by their number) and ``ce_per_sample``
the mean over samples of each sample's mean (:func:`~trl_ext.latent.probe.per_row_ce`, the probe's convention); with
``generate=True`` also ``exact_match``, the share of greedy answers equal to the first assistant turn (both
stripped; the prompt is the conversation before that turn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trl_ext.common.errors import ConfigError, DataError, InputTypeError, UnknownNameError
from trl_ext.latent.collator import LatentCollator
from trl_ext.latent.data import ROLES, LatentRow
from trl_ext.latent.injection import BOP, EOP, FIRST_HUMAN_END, splice_message
from trl_ext.latent.probe import per_row_ce
from trl_ext.latent.receiver import SOURCES

__all__ = ["CONDITIONS", "END_OF_TURN_TOKENS", "evaluate_latent_conditions", "latent_generate", "latent_generate_ids"]

CONDITIONS = ("true", "shuffled", "none", "plan")
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")
"""End-of-turn tokens that stop an answer when the tokenizer has them (besides the EOS ids)."""


def _conversation(messages: Any, name: str) -> list[dict[str, str]]:
    """Chat messages (``role``/``content``, or ShareGPT ``from``/``value``) with the marker after the first user
    turn; the last turn must be the user's."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise DataError(f"conversation {name!r}: expected a non-empty list of {{role, content}} messages")
    out = []
    for j, m in enumerate(messages):
        if isinstance(m, dict) and "from" in m and "value" in m:
            m = {"role": ROLES.get(str(m["from"]).lower(), m["from"]), "content": m["value"]}
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"conversation {name!r}: message {j} must have a role system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise DataError(f"conversation {name!r}: message {j} must have text content")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise DataError(f"conversation {name!r}: must end with a user turn to answer, ends with {out[-1]['role']!r}")
    first = next(j for j, m in enumerate(out) if m["role"] == "user")
    out[first]["content"] += FIRST_HUMAN_END
    return out


def _pad_states(states: Sequence[torch.Tensor], width: int, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """``(B, K, d)`` float32 states and their ``(B, K)`` padding (True on padding) from ``(K_i, d)`` tensors."""
    for h, name in zip(states, names):
        if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[0] < 1 or h.shape[1] != width:
            shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            raise DataError(f"sample {name!r}: the latent message must be a (K, {width}) tensor, K >= 1, got {shape}")
    k = max(h.shape[0] for h in states)
    padded = torch.zeros((len(states), k, width))
    padding = torch.ones((len(states), k), dtype=torch.bool)
    for i, h in enumerate(states):
        padded[i, : h.shape[0]], padding[i, : h.shape[0]] = h.detach().float().cpu(), False
    return padded, padding


def _pad_ids(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max([len(r) for r in rows] + [1])
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return ids, mask


def _stop_ids(receiver: Any, tokenizer: Any) -> list[int]:
    eos = getattr(receiver.model.generation_config, "eos_token_id", None)
    ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab]
    return list(dict.fromkeys(i for i in ids if i is not None))


def latent_generate_ids(
    receiver: Any, tokenizer: Any, messages_batch: Sequence[Sequence[dict[str, str]]],
    hidden_states: Sequence[torch.Tensor] | None = None, *, source: str = "latent",
    plans: Sequence[str | None] | None = None, ids: Sequence[str] | None = None, batch_size: int = 8,
    max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
    repetition_penalty: float = 1.0, seed: int | None = None, eos_token_id: int | list[int] | None = None,
    **generate_kwargs: Any,
) -> list[list[int]]:  # fmt: skip
    """The answer's token ids of each conversation, cut before the first stop token (see the module docstring).

    ``hidden_states[i]`` ``(K_i, d)``: the latent message of conversation i (source ``"latent"``); ``plans[i]``: its
    plan text (source ``"plan"``); ``ids``: names for the error messages; ``eos_token_id``: the stop tokens (default:
    the model's and the tokenizer's EOS and :data:`END_OF_TURN_TOKENS`); ``seed``: seeds sampling without touching
    the global random state; other keywords go to ``generate``.

    Raises:
        UnknownNameError: an unknown source. ConfigError: the tokenizer's latent tokens differ from the receiver's,
            or a bad setting. DataError: a malformed conversation, a missing or malformed message or plan, or counts
            that do not match (each naming the conversation).
    """
    if source not in SOURCES:
        raise UnknownNameError(f"source must be one of {SOURCES}, got {source!r}")
    if batch_size < 1 or max_new_tokens < 1:
        raise ConfigError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
    wanted = (receiver.marker_id, receiver.bop_id, receiver.eop_id)
    if tuple(tokenizer.convert_tokens_to_ids(t) for t in (FIRST_HUMAN_END, BOP, EOP)) != wanted:
        raise ConfigError(f"the tokenizer's {FIRST_HUMAN_END}, {BOP}, {EOP} ids are not the receiver's {wanted}")
    n = len(messages_batch)
    names = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    for what, given in (("ids", ids), ("hidden_states", hidden_states), ("plans", plans)):
        if given is not None and len(given) != n:
            raise DataError(f"{n} conversations but {len(given)} {what}")
    if source == "latent" and hidden_states is None:
        raise DataError('source "latent" needs hidden_states (one (K, d) tensor per conversation)')
    if source == "plan":
        missing = [names[i] for i in range(n) if plans is None or not plans[i]]
        if missing:
            raise DataError(f'source "plan" needs a plan for every conversation; none for {missing[:5]}')
    conversations = [_conversation(m, name) for m, name in zip(messages_batch, names)]
    stop = eos_token_id if eos_token_id is not None else _stop_ids(receiver, tokenizer)
    stop_set = {stop} if isinstance(stop, int) else set(stop)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_set)
    embed = receiver.model.get_input_embeddings()
    device = embed.weight.device
    options: dict[str, Any] = {"do_sample": do_sample, "repetition_penalty": repetition_penalty}
    if do_sample:  # the warpers; generate warns when they are set for greedy decoding
        options.update(temperature=temperature, top_p=top_p, top_k=top_k)
    options.update(pad_token_id=pad, eos_token_id=stop)
    options.update(max_new_tokens=max_new_tokens, **generate_kwargs)
    rng = torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else [], enabled=seed is not None)
    answers: list[list[int]] = []
    was_training = receiver.training
    receiver.eval()
    try:
        with torch.no_grad(), rng:
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, n, batch_size):
                rows = range(start, min(start + batch_size, n))
                texts = [tokenizer.apply_chat_template(conversations[i], tokenize=False, add_generation_prompt=True)
                         for i in rows]  # fmt: skip
                input_ids, mask = _pad_ids([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], pad)
                kwargs: dict[str, Any] = {"num_rows": len(rows)}
                if source == "latent":
                    width = receiver.latent_adapter.expected_width
                    states, padding = _pad_states([hidden_states[i] for i in rows], width, [names[i] for i in rows])
                    kwargs.update(hidden_states=states.to(device), latent_padding=padding.to(device))
                elif source == "plan":
                    plan_ids = [tokenizer(plans[i], add_special_tokens=False)["input_ids"] for i in rows]
                    plan_ids, plan_mask = _pad_ids(plan_ids, pad)
                    kwargs.update(plan_ids=plan_ids.to(device), plan_mask=plan_mask.to(device))
                messages = [m.to(embed.weight.dtype) for m in receiver.messages(source, **kwargs)]
                input_ids, mask = input_ids.to(device), mask.to(device)
                spliced = splice_message(
                    input_ids, mask, torch.full_like(input_ids, -100), embed, receiver.marker_id, receiver.bop_id,
                    receiver.eop_id, messages, [names[i] for i in rows],
                )  # fmt: skip
                # right padding -> left padding (batched decoding appends after the last position of every row)
                right, width = spliced.inputs_embeds, spliced.inputs_embeds.shape[1]
                left, left_mask = torch.zeros_like(right), torch.zeros_like(spliced.attention_mask)
                for i, length in enumerate(spliced.attention_mask.sum(1).tolist()):
                    left[i, width - length :], left_mask[i, width - length :] = right[i, :length], 1
                out = receiver.model.generate(inputs_embeds=left, attention_mask=left_mask, **options)
                for row in out.tolist():
                    cut = next((j for j, t in enumerate(row) if t in stop_set), len(row))
                    answers.append(row[:cut])
    finally:
        receiver.train(was_training)
    return answers


def latent_generate(
    receiver: Any, tokenizer: Any, messages_batch: Sequence[Sequence[dict[str, str]]],
    hidden_states: Sequence[torch.Tensor] | None = None, **kwargs: Any,
) -> list[str]:  # fmt: skip
    """The decoded answer of each conversation (:func:`latent_generate_ids`' keywords: ``source``, ``plans``,
    ``ids``, ``batch_size``, ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``seed``, ...), without
    special tokens."""
    answers = latent_generate_ids(receiver, tokenizer, messages_batch, hidden_states, **kwargs)
    return [tokenizer.decode(a, skip_special_tokens=True) for a in answers]


def _item(rows: Any, i: int) -> dict[str, Any]:
    row = rows[i]
    if isinstance(row, LatentRow):
        return {"id": row.id, "messages": row.messages, "plan": row.plan, "hidden_state": row.load_hidden_state()}
    if isinstance(row, dict) and {"messages", "hidden_state"} <= set(row):
        return {**row, "id": str(row.get("id", i)), "plan": row.get("plan")}
    raise InputTypeError(
        f"row {i}: expected a LatentRow or a LatentDataset item {{id, messages, plan, hidden_state}}, got "
        f"{type(row).__name__}"
    )


def evaluate_latent_conditions(
    receiver: Any, collator: Any, rows: Any, *, batch_size: int = 8,
    conditions: Sequence[str] = ("true", "shuffled", "none"), generate: bool = False, max_new_tokens: int = 64,
    show_progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """``{condition: {"ce", "ce_per_sample"[, "exact_match"]}, "num_samples", "num_tokens"}`` over ``rows`` (see the
    module docstring).

    ``collator``: a :class:`~trl_ext.latent.collator.LatentCollator` (its ``max_length`` cuts the teacher-forced
    conversations) or a tokenizer with the latent tokens; ``rows``: a :class:`~trl_ext.latent.data.LatentDataset`,
    a list of :class:`~trl_ext.latent.data.LatentRow` or of dataset items. The receiver runs in evaluation mode
    without gradient and gets its training mode back.

    Raises:
        UnknownNameError: an unknown condition. DataError: no rows, ``"shuffled"`` with fewer than 2, a row without a
            plan under ``"plan"``. InputTypeError: a row of another type.
    """
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise UnknownNameError(f"conditions must be a non-empty list of {CONDITIONS}, got {list(conditions)}")
    conditions = list(dict.fromkeys(conditions))
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(collator, LatentCollator):
        collator = LatentCollator(collator)
    n = len(rows)
    if n == 0:
        raise DataError("evaluate_latent_conditions: no rows to evaluate")
    if "shuffled" in conditions and n < 2:
        raise DataError(f'the "shuffled" condition needs at least 2 samples (a derangement), got {n}')
    device = receiver.model.get_input_embeddings().weight.device
    sums = {c: {"ce": 0.0, "ce_per_sample": 0.0, "exact_match": 0.0} for c in conditions}
    num_tokens = 0
    starts = range(0, n, batch_size)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="latent conditions", unit="batch")
    was_training = receiver.training
    receiver.eval()
    try:
        with torch.no_grad():
            for start in starts:
                idx = list(range(start, min(start + batch_size, n)))
                items = [_item(rows, i) for i in idx]
                names, missing = [it["id"] for it in items], [it["id"] for it in items if not it.get("plan")]
                if "plan" in conditions and missing:
                    raise DataError(f'the "plan" condition needs a plan for every sample; none for {missing[:5]}')
                batch = collator(items)
                tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
                local = dict(zip(idx, items))  # "shuffled": sample i reads the latents of sample (i + 1) mod n
                nxt = [(i + 1) % n for i in idx] if "shuffled" in conditions else []
                others = [local.get(j) or _item(rows, j) for j in nxt]
                others = [o["hidden_state"] for o in others], [o["id"] for o in others]
                firsts = [next(j for j, t in enumerate(it["messages"]) if t["role"] == "assistant") for it in items]
                prompts = [it["messages"][:j] for it, j in zip(items, firsts)]
                refs = [it["messages"][j]["content"].strip() for it, j in zip(items, firsts)]
                counted = False
                for condition in conditions:
                    inputs = dict(tensors)
                    source = {"true": "latent", "shuffled": "latent"}.get(condition, condition)
                    states = [item["hidden_state"] for item in items]
                    if condition == "shuffled":
                        shuffled, padding = _pad_states(others[0], tensors["hidden_states"].shape[-1], others[1])
                        inputs.update(hidden_states=shuffled.to(device), latent_padding=padding.to(device))
                        states = others[0]
                    logits, labels, _ = receiver(**inputs, source=source)
                    ce = per_row_ce(logits, labels).float().cpu()
                    counts = (labels != -100).sum(1).float().cpu()
                    if not counted:
                        num_tokens, counted = num_tokens + int(counts.sum()), True
                    sums[condition]["ce"] += float((ce * counts).sum())
                    sums[condition]["ce_per_sample"] += float(ce.sum())
                    if generate:
                        answers = latent_generate(
                            receiver, collator.tokenizer, prompts, states if source == "latent" else None,
                            source=source, plans=[item.get("plan") for item in items], ids=names,
                            batch_size=len(idx), max_new_tokens=max_new_tokens,
                        )  # fmt: skip
                        sums[condition]["exact_match"] += sum(a.strip() == r for a, r in zip(answers, refs))
    finally:
        receiver.train(was_training)
    result: dict[str, Any] = {
        c: {k: v / (max(num_tokens, 1) if k == "ce" else n) for k, v in s.items() if generate or k != "exact_match"}
        for c, s in sums.items()
    }
    return {**result, "num_samples": n, "num_tokens": num_tokens}
