"""Latent data: every hidden-state format, plans inline and from a file, JSON and JSONL, lazy reading, the eval
split, and a clear error for a bad row of each kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trl_ext.common.errors import DataError, MissingPathError
from trl_ext.latent.data import LatentDataset, read_latent_file, split_eval

CONV = [{"from": "human", "value": "Where is the key?"}, {"from": "gpt", "value": "Under the mat."}]
H = np.arange(12, dtype=np.float32).reshape(3, 4) / 10


def _write(folder, rows, jsonl=False):
    path = folder / ("data.jsonl" if jsonl else "data.json")
    path.write_text("\n".join(json.dumps(r) for r in rows) if jsonl else json.dumps(rows))
    return path


def test_every_format_loads_the_same_hidden_state(tmp_path):
    from safetensors.torch import save_file

    np.save(tmp_path / "h.npy", H)
    torch.save(torch.from_numpy(H), tmp_path / "h.pt")
    torch.save({"hidden_state": torch.from_numpy(H)}, tmp_path / "h_dict.pth")
    save_file({"hidden_state": torch.from_numpy(H)}, str(tmp_path / "h.safetensors"))
    (tmp_path / "plan.txt").write_text("look under the mat")
    rows = [
        {"id": "inline", "conversations": CONV, "plan": "a plan", "hidden_state": H.tolist()},
        {"id": "npy", "conversations": CONV, "hidden_state_path": "h.npy", "plan_path": "plan.txt"},
        {"id": "pt", "conversations": CONV, "hidden_state_path": "h.pt"},
        {"id": "pth", "conversations": CONV, "hidden_state_path": "h_dict.pth"},
        {"id": "st", "conversations": CONV, "hidden_state_path": "h.safetensors"},
    ]
    for jsonl in (False, True):
        for lazy in (False, True):
            loaded = read_latent_file(_write(tmp_path, rows, jsonl), lazy=lazy)
            assert [r.id for r in loaded] == ["inline", "npy", "pt", "pth", "st"]
            assert loaded[0].plan == "a plan" and loaded[1].plan == "look under the mat" and loaded[2].plan is None
            assert loaded[0].messages == [
                {"role": "user", "content": "Where is the key?"},
                {"role": "assistant", "content": "Under the mat."},
            ]
            assert (loaded[1].hidden_state is None) == lazy  # lazy rows keep the path
            for row in loaded:
                torch.testing.assert_close(row.load_hidden_state(), torch.from_numpy(H))
    item = LatentDataset(read_latent_file(_write(tmp_path, rows), lazy=True), prepended_length=2)[1]
    assert item["hidden_state"].shape == (2, 4) and item["id"] == "npy"


@pytest.mark.parametrize(
    ("row", "error", "match"),
    [
        ({"id": "a", "conversations": []}, DataError, "'a': conversations must be a non-empty list"),
        ({"id": "b", "conversations": [{"from": "human"}]}, DataError, r"'b': conversations\[0\] must be a mapping"),
        ({"id": "c", "conversations": [{"from": "robot", "value": "x"}]}, DataError, "'c': conversations.0..from"),
        ({"id": "d", "conversations": [{"from": "gpt", "value": "x"}]}, DataError, "'d': .*start .*with a human"),
        ({"id": "e", "conversations": CONV[:1]}, DataError, "'e': conversations has no gpt turn"),
        ({"id": "f", "conversations": CONV}, DataError, "'f': has neither hidden_state"),
        ({"id": "g", "conversations": CONV, "hidden_state": [[1, 2], [3]]}, DataError, "'g': hidden_state must be"),
        ({"id": "h", "conversations": CONV, "hidden_state": [1, 2]}, DataError, r"'h': hidden_state must be 2-D"),
        ({"id": "i", "conversations": CONV, "hidden_state": [[float("nan")]]}, DataError, "'i': .*non-finite"),
        ({"id": "j", "conversations": CONV, "hidden_state_path": "no.npy"}, MissingPathError, "'j': .*does not exist"),
        ({"id": "k", "conversations": CONV, "hidden_state_path": "h.txt"}, DataError, "'k': .*use one of"),
        ({"id": "l", "conversations": CONV, "hidden_state": [[1]], "plan": 3}, DataError, "'l': plan must be text"),
        ({"id": "m", "conversations": CONV, "hidden_state": [[1]], "hidden_state_path": "h.npy"}, DataError,
         "'m': give hidden_state or hidden_state_path"),
        ({"id": "n", "conversations": CONV, "hidden_state": [[1]], "plan_path": "none.txt"}, MissingPathError,
         "'n': plan_path"),
        ({"id": "q", "conversations": CONV, "hidden_state_path": "h.npy", "hidden_state_key": "q"}, DataError,
         "'q': hidden_state_key needs a .safetensors"),
    ],
)  # fmt: skip
def test_bad_rows_name_the_row_and_the_field(tmp_path, row, error, match):
    with pytest.raises(error, match=match):
        read_latent_file(_write(tmp_path, [row]))


def test_bad_files(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        read_latent_file(tmp_path / "none.json")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl:2: not a JSON line"):
        read_latent_file(tmp_path / "bad.jsonl")
    rows = [{"id": "x", "conversations": CONV, "hidden_state": [[1]]}] * 2
    with pytest.raises(DataError, match="'x': the id appears twice"):
        read_latent_file(_write(tmp_path, rows))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    rows = [{"id": "p", "conversations": CONV, "hidden_state_path": "obj.npy"}]
    with pytest.raises(DataError, match="'p': .*cannot be read"):  # object arrays need a pickle: refused
        read_latent_file(_write(tmp_path, rows))


def test_split_eval_is_seeded_and_disjoint(tmp_path):
    rows = [{"id": str(i), "conversations": CONV, "hidden_state": [[float(i)]]} for i in range(20)]
    loaded = read_latent_file(_write(tmp_path, rows))
    train, evaluation = split_eval(loaded, 0.1, seed=1)
    assert len(evaluation) == 2 and len(train) == 18
    assert not {r.id for r in train} & {r.id for r in evaluation}
    assert [r.id for r in split_eval(loaded, 0.1, seed=1)[1]] == [r.id for r in evaluation]
    assert len(split_eval(loaded[:3], 0.01)[1]) == 1 and split_eval(loaded, 0.0)[1] == []
