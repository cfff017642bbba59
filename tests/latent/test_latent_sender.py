"""The sender tool on the tiny model: shards and rows written, read back by the data loader, and each hidden state
equal to the sender's last layer on that row alone."""

from __future__ import annotations

import pytest
import torch

from trl_ext.common.errors import ConfigError, DataError
from trl_ext.latent.data import read_latent_file
from trl_ext.latent.sender import ROWS_FILE, first_user_prompt, write_sender_states


def _rows(n):
    return [
        {"id": f"s{i}", "plan": f"plan {i}",
         "conversations": [{"from": "human", "value": "Where is item " + "x" * i + "?"},
                           {"from": "gpt", "value": f"At {i}."}]}
        for i in range(n)
    ]  # fmt: skip


def test_sender_states_round_trip(tmp_path, tiny_model_path):
    from trl_ext.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(str(tiny_model_path)), load_tokenizer(str(tiny_model_path))
    rows = _rows(5)
    path = write_sender_states(model, tok, rows, tmp_path, batch_size=2, shard_size=2, show_progress=False)
    assert path == tmp_path / ROWS_FILE
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        f"hidden_states-0000{i}.safetensors" for i in range(3)
    ]
    loaded = read_latent_file(path)
    assert [r.id for r in loaded] == [r["id"] for r in rows] and loaded[2].plan == "plan 2"
    for row, original in zip(loaded, rows):
        text = tok.apply_chat_template(first_user_prompt(original), tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            want = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        torch.testing.assert_close(row.hidden_state, want, rtol=1e-4, atol=1e-5)
    lazy = read_latent_file(path, lazy=True)
    torch.testing.assert_close(lazy[3].load_hidden_state(), loaded[3].hidden_state)
    cut = write_sender_states(model, tok, rows[:2], tmp_path / "cut", max_positions=3, show_progress=False)
    assert [r.hidden_state.shape[0] for r in read_latent_file(cut)] == [3, 3]


def test_sender_errors(tmp_path, tiny_model_path):
    from trl_ext.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(str(tiny_model_path)), load_tokenizer(str(tiny_model_path))
    with pytest.raises(DataError, match="unique"):
        write_sender_states(model, tok, _rows(2) * 2, tmp_path, show_progress=False)
    with pytest.raises(ConfigError, match="shard_size"):
        write_sender_states(model, tok, _rows(2), tmp_path, shard_size=0, show_progress=False)
    bad = [{"id": "g", "conversations": [{"from": "gpt", "value": "x"}]}]
    with pytest.raises(DataError, match="'g': the conversation has no human turn"):
        write_sender_states(model, tok, bad, tmp_path, show_progress=False)
