"""Batched evaluation generation: left padding and reordering give exactly the one-at-a-time greedy outputs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_ext.common.generation import generate_completions


def test_batched_equals_one_by_one(tiny_model_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    with torch.no_grad():  # large random weights: greedy outputs then depend on the prompt
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.5)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    prompts = ["hi", "x1=True, x2=False, x3=True, and a much longer prompt here", "(x1 ∨ ¬x2)", "def solve():"]
    batched = generate_completions(model, tok, prompts, batch_size=3, max_new_tokens=8, show_progress=False)
    singles = []
    for p in prompts:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id)  # fmt: skip
        singles.append(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    assert batched == singles
    assert len(set(singles)) > 1  # the check is not vacuous


def test_message_lists_and_bad_batch_size(tiny_model_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model.train()
    as_text = generate_completions(model, tok, ["hello"], max_new_tokens=4, show_progress=False)
    as_messages = generate_completions(
        model, tok, [[{"role": "user", "content": "hello"}]], max_new_tokens=4, show_progress=False
    )
    assert as_text == as_messages
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        generate_completions(model, tok, ["hello"], batch_size=0)
