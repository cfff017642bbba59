"""Teacher-forced likelihood of one part of a chat row's answer, batched (a continuous evaluation score)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _span(full: Sequence[int], without: Sequence[int]) -> tuple[int, int]:
    """``(start, end)`` of the tokens that ``full`` has and ``without`` lacks (common prefix and suffix removed)."""
    shorter = min(len(full), len(without))
    start = 0
    while start < shorter and full[start] == without[start]:
        start += 1
    suffix = 0  # never into the common prefix
    while suffix < shorter - start and full[-1 - suffix] == without[-1 - suffix]:
        suffix += 1
    return start, len(full) - suffix


def span_nll(
    model, tokenizer, rows: Sequence[Mapping[str, Any]], cut: Callable[[str], str], batch_size: int = 32
) -> float:
    """Mean over ``rows`` of −log p(span | tokens before it), teacher-forced.

    ``rows`` are conversational prompt–completion rows (``prompt``: messages, ``completion``: one assistant
    message). ``cut(answer) -> shorter`` names the span: the tokens that the chat-template rendering of the row with
    its answer has and the rendering with ``shorter`` instead lacks (after the common prefix, before the common
    suffix). E.g. ``cut = lambda a: ""`` scores the whole answer, and a cut that drops a sign-off scores the
    sign-off given the rest. The span's −log-likelihood is the sum over its tokens
    (:func:`trl_ext.common.logprobs.sequence_logps`); rows are right-padded in batches of ``batch_size``.
    Raises ``ValueError`` for no rows, or for a row whose two renderings do not differ.
    """
    import torch

    from trl_ext.common.logprobs import sequence_logps

    sequences: list[tuple[list[int], int, int]] = []
    for row in rows:
        prompt, answer = list(row["prompt"]), row["completion"][0]["content"]
        full, without = (
            tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": text}], tokenize=True)[
                "input_ids"
            ]
            for text in (answer, cut(answer))
        )
        start, end = _span(full, without)
        if not 0 < start < end:
            raise ValueError(f"row {row['prompt']!r}: no span between {answer!r} and {cut(answer)!r}")
        sequences.append((full, start, end))
    if not sequences:
        raise ValueError("span_nll needs at least one row")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for i in range(0, len(sequences), batch_size):
            chunk = sequences[i : i + batch_size]
            width = max(len(ids) for ids, _, _ in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            span = torch.zeros((len(chunk), width - 1), dtype=torch.bool)  # over the predicted tokens 1..width-1
            for j, (ids, start, end) in enumerate(chunk):
                input_ids[j, : len(ids)] = torch.tensor(ids)
                attention[j, : len(ids)] = 1
                span[j, start - 1 : end - 1] = True  # logits at t predict token t + 1
            input_ids, attention, span = input_ids.to(device), attention.to(device), span.to(device)
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
            logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
            total -= sequence_logps(logps, span, average=False).sum().item()
    finally:
        model.train(was_training)
    return total / len(sequences)
