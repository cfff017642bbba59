"""Batched generation, the one implementation behind evaluation, the demos and the sample tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["generate_completions", "generate_token_ids", "stop_token_ids", "unwrap_model"]

Message = dict[str, str]


def unwrap_model(model: Any) -> Any:
    """The module under DDP / DataParallel wrappers (PEFT models are kept: their ``generate`` uses the adapter)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while isinstance(model, (DataParallel, DistributedDataParallel)):
        model = model.module
    return model


def stop_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """The ids that end a generation (a turn): the model's ``generation_config.eos_token_id`` (one or a list) and the
    tokenizer's EOS."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (eos, getattr(getattr(tokenizer, "tokenizer", tokenizer), "eos_token_id", None)):
        if value is not None:
            ids.update(int(i) for i in (value if isinstance(value, (list, tuple)) else [value]))
    return ids


def _render(tokenizer: Any, prompt: str | Sequence[Message], chat_template: bool) -> str:
    if not chat_template:
        if not isinstance(prompt, str):
            raise TypeError(f"chat_template=False takes text prompts, got {type(prompt).__name__}")
        return prompt
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[Message]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    chat_template: bool = True,
    seed: int | None = None,
    synced_gpus: bool = False,
    show_progress: bool = True,
    desc: str = "generating",
) -> list[str]:
    """Generate one completion per prompt and return the decoded new text, in the input order.

    A prompt is a string (sent as one user message) or a list of chat messages, rendered with the tokenizer's chat
    template and a generation prompt; with ``chat_template=False`` text prompts are continued as they are (plain
    language modelling). Prompts are batched by length (longest first, so memory peaks early and padding is small)
    with left padding, and the original order is restored. Greedy decoding unless ``do_sample`` (then ``top_k``:
    None keeps the model's default, 0 turns top-k off); with ``seed`` the sampling runs in a forked RNG seeded by
    it, so the caller's random state is untouched. ``synced_gpus`` is for
    DeepSpeed ZeRO-3 (every process must generate). Special tokens are stripped from the output. The model runs in
    eval mode under ``inference_mode`` and gets its training mode back; ``tokenizer`` may be a processor.

    Raises:
        ValueError: ``batch_size < 1``.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    texts = [_render(tokenizer, p, chat_template) for p in prompts]
    encoded = [tokenizer(t, add_special_tokens=not chat_template)["input_ids"] for t in texts]
    new_tokens = generate_token_ids(
        model, tokenizer, encoded, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=do_sample,
        temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, synced_gpus=synced_gpus,
        show_progress=show_progress, desc=desc,
    )  # fmt: skip
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in new_tokens]


def generate_token_ids(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    synced_gpus: bool = False,
    show_progress: bool = False,
    desc: str = "generating",
) -> list[list[int]]:
    """The token-level core of :func:`generate_completions`: continue each context (token ids) and return its new
    tokens up to and including the first end-of-sequence token (none after it, no padding). Same batching,
    decoding options, seeding and model-mode handling as :func:`generate_completions`.

    Raises:
        ValueError: ``batch_size < 1``.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    model = unwrap_model(model)
    encoded = [list(c) for c in contexts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = stop_token_ids(tokenizer, model)
    eos_id = sorted(eos_ids) if len(eos_ids) > 1 else next(iter(eos_ids), None)
    device = next(model.parameters()).device
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
    }
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p)
        if top_k is not None:
            gen_kwargs["top_k"] = top_k  # 0: no top-k filter (TRL's online trainers); None: the model's default
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if synced_gpus:
        gen_kwargs["synced_gpus"] = True
    results: list[list[int]] = [[] for _ in encoded]
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    model.eval()
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress, unit="batch"):
                idx = order[start : start + batch_size]
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention[row, width - len(ids) :] = 1
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **gen_kwargs)
                for row, i in enumerate(idx):
                    tokens = out[row, width:].tolist()
                    cut = next((j + 1 for j, t in enumerate(tokens) if t in eos_ids), len(tokens))
                    results[i] = tokens[:cut]
    finally:
        model.train(was_training)
    return results
