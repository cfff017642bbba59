"""LatentCollator on the tiny tokenizer: marker after the first user turn, labels on the assistant turns only,
padding of tokens, hidden states and plans, max_length, and the errors."""

from __future__ import annotations

import pytest
import torch

from trl_ext.common.errors import ConfigError, DataError
from trl_ext.latent.collator import LatentCollator
from trl_ext.latent.injection import FIRST_HUMAN_END, add_latent_tokens

TURNS = [
    {"role": "user", "content": "Where is the key?"},
    {"role": "assistant", "content": "Under the mat."},
    {"role": "user", "content": "And the car?"},
    {"role": "assistant", "content": "In the garage."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from trl_ext.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_path))
    add_latent_tokens(tok)
    return tok


def test_encode_supervises_exactly_the_assistant_turns(tokenizer):
    ids, labels = LatentCollator(tokenizer).encode(TURNS, "s0")
    marker = tokenizer.convert_tokens_to_ids(FIRST_HUMAN_END)
    assert ids.count(marker) == 1
    text = tokenizer.decode(ids[: ids.index(marker) + 1])
    assert text.endswith("Where is the key?" + FIRST_HUMAN_END)
    supervised = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != -100])
    end = tokenizer.eos_token or "<|im_end|>"
    assert supervised == f"Under the mat.{end}\nIn the garage.{end}\n"  # with the template's end of turn
    assert all(lab in (-100, t) for t, lab in zip(ids, labels))


def test_batch_padding(tokenizer):
    items = [
        {"id": "a", "messages": TURNS, "plan": "look under the mat", "hidden_state": torch.ones(3, 5)},
        {"id": "b", "messages": TURNS[:2], "plan": None, "hidden_state": torch.full((1, 5), 2.0)},
    ]
    batch = LatentCollator(tokenizer)(items)
    b = batch["input_ids"].shape
    assert batch["attention_mask"].shape == b == batch["labels"].shape
    n_b = int(batch["attention_mask"][1].sum())
    assert (batch["input_ids"][1, n_b:] == tokenizer.pad_token_id).all() and (batch["labels"][1, n_b:] == -100).all()
    assert batch["hidden_states"].shape == (2, 3, 5)
    assert batch["latent_padding"].tolist() == [[False, False, False], [False, True, True]]
    assert float(batch["hidden_states"][1, 1:].abs().sum()) == 0.0
    plan = tokenizer("look under the mat", add_special_tokens=False)["input_ids"]
    assert batch["plan_ids"][0, : len(plan)].tolist() == plan and int(batch["plan_mask"][0].sum()) == len(plan)
    assert int(batch["plan_mask"][1].sum()) == 0 and batch["ids"] == ["a", "b"]


def test_max_length_and_errors(tokenizer):
    collator = LatentCollator(tokenizer, max_length=16)
    with pytest.raises(DataError, match="'long': no assistant token is left within max_length=16"):
        collator.encode([{"role": "user", "content": "x " * 3}, {"role": "assistant", "content": "y"}] * 1, "long")
    ids, labels = LatentCollator(tokenizer, max_length=30).encode(TURNS, "cut")
    assert len(ids) == 30 and any(lab != -100 for lab in labels)
    with pytest.raises(DataError, match="'far': the first user turn does not fit"):
        LatentCollator(tokenizer, max_length=4).encode(TURNS, "far")
    from trl_ext.models import load_tokenizer

    with pytest.raises(ConfigError, match="add_latent_tokens"):
        LatentCollator(load_tokenizer(str(tokenizer.name_or_path)))
    items = [{"id": i, "messages": TURNS, "hidden_state": torch.ones(2, d)} for i, d in (("a", 4), ("b", 5))]
    with pytest.raises(DataError, match="widths"):
        LatentCollator(tokenizer)(items)
