"""The tiny latent demo: rows the data reader accepts, the secret only in the sender's prompt and the plan (never in
the receiver's input), seeded rows and hidden states, and bad arguments named."""

from __future__ import annotations

import json

import pytest
import torch

from trl_ext.common.errors import ConfigError
from trl_ext.latent.data import read_latent_file
from trl_ext.latent.demo import DEMO_MAX_POSITIONS, DEMO_QUESTION, DEMO_SECRETS, build_demo, demo_rows
from trl_ext.latent.sender import ROWS_FILE


def _raw(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_rows_and_secret_placement(tmp_path, tiny_model_path):
    path = build_demo(tmp_path / "a", num_rows=10, seed=0, sender=tiny_model_path)
    assert path == tmp_path / "a" / ROWS_FILE
    rows, raw = read_latent_file(path), _raw(path)
    assert len(rows) == 10 and len({r.id for r in rows}) == 10
    for row, entry in zip(rows, raw):
        secret = entry["secret"]
        assert secret in DEMO_SECRETS and secret in entry["sender_prompt"] and secret in row.plan
        receiver_input = [m["content"] for m in row.messages if m["role"] != "assistant"]
        assert receiver_input == [DEMO_QUESTION]
        assert not any(word in text.lower() for text in receiver_input for word in DEMO_SECRETS)
        assert [m["content"] for m in row.messages if m["role"] == "assistant"] == [secret]
        assert row.hidden_state.shape == (DEMO_MAX_POSITIONS, 64) and torch.isfinite(row.hidden_state).all()
    assert len({e["secret"] for e in raw}) > 1


def test_demo_words_are_short_and_distinct(tiny_model_path):
    from trl_ext.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_path))
    pieces = [tok(word, add_special_tokens=False)["input_ids"] for word in DEMO_SECRETS]
    assert 4 <= len(DEMO_SECRETS) <= 8 and all(1 <= len(p) <= 3 for p in pieces)
    assert len({p[0] for p in pieces}) == len(DEMO_SECRETS)  # the answer's first token names the word


def test_demo_is_seeded(tmp_path, tiny_model_path):
    first = build_demo(tmp_path / "a", num_rows=6, seed=3, sender=tiny_model_path)
    again = build_demo(tmp_path / "b", num_rows=6, seed=3)  # the default sender: the same tiny model
    assert _raw(first) == _raw(again)
    for x, y in zip(read_latent_file(first), read_latent_file(again)):
        assert torch.equal(x.hidden_state, y.hidden_state)
    assert [r["secret"] for r in demo_rows(16, 0)] != [r["secret"] for r in demo_rows(16, 1)]
    assert demo_rows(16, 5) == demo_rows(16, 5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_rows": 1}, "num_rows"),
        ({"num_rows": 2.5}, "num_rows"),
        ({"num_rows": True}, "num_rows"),
        ({"seed": -1}, "seed"),
        ({"seed": "0"}, "seed"),
        ({"sender": "/no/such/model"}, "sender"),
    ],
)
def test_demo_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ConfigError, match=name):
        build_demo(tmp_path, **kwargs)


def test_demo_output_dir_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="output_dir"):
        build_demo(tmp_path / "file")
