"""trl_ext.data.loading: datasets from files, save_to_disk folders and hub ids, with errors that name the argument."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict

from trl_ext.data.loading import DatasetLoadError, check_sft_format, load_dataset_from

ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Reverse: a b {c}"}],
        "completion": [{"role": "assistant", "content": f"{c} b a"}],
    }
    for c in "cdfg"
]


@pytest.fixture(scope="module")
def conversational() -> Dataset:
    return Dataset.from_list(ROWS)


def test_json_jsonl_and_parquet_files_round_trip(tmp_path, conversational):
    conversational.to_json(tmp_path / "rows.jsonl")
    conversational.to_json(tmp_path / "rows.json")
    conversational.to_parquet(tmp_path / "rows.parquet")
    for name in ("rows.jsonl", "rows.json", "rows.parquet"):
        loaded = load_dataset_from(str(tmp_path / name), what="outcome_dataset")
        assert loaded.to_list() == ROWS, name
    sliced = load_dataset_from(str(tmp_path / "rows.jsonl"), "train[:2]")
    assert sliced.to_list() == ROWS[:2]


def test_csv_file_in_text_format(tmp_path):
    Dataset.from_dict({"text": ["one", "two"]}).to_csv(tmp_path / "rows.csv", index=False)
    loaded = load_dataset_from(str(tmp_path / "rows.csv"))
    assert loaded["text"] == ["one", "two"]
    assert check_sft_format(loaded) == "language modeling"


def test_save_to_disk_dataset_and_dataset_dict(tmp_path, conversational):
    conversational.save_to_disk(tmp_path / "one")
    assert load_dataset_from(str(tmp_path / "one"), "test").to_list() == ROWS  # a saved Dataset ignores the split
    DatasetDict(train=conversational, test=conversational.select([0])).save_to_disk(tmp_path / "dict")
    assert load_dataset_from(str(tmp_path / "dict"), "test").to_list() == ROWS[:1]
    with pytest.raises(DatasetLoadError, match=r"proxy_eval_dataset: .*dict' has no split 'valid'; .*: train, test"):
        load_dataset_from(str(tmp_path / "dict"), "valid", what="proxy_eval_dataset")


def test_missing_path_names_the_argument_and_the_path(tmp_path):
    missing = tmp_path / "nope" / "proxy.jsonl"
    with pytest.raises(FileNotFoundError, match=rf"proxy_dataset: '{missing}' does not exist"):
        load_dataset_from(str(missing), what="proxy_dataset")
    with pytest.raises(FileNotFoundError, match=r"proxy_dataset: 'data/proxy.jsonl' does not exist \(resolved to "):
        load_dataset_from("data/proxy.jsonl", what="proxy_dataset")
    with pytest.raises(DatasetLoadError, match="outcome_dataset is not set"):
        load_dataset_from("", what="outcome_dataset")


def test_unknown_suffix_bad_split_unreadable_file_and_empty_data(tmp_path, conversational):
    (tmp_path / "rows.txt").write_text("hello\n")
    with pytest.raises(
        DatasetLoadError, match=r"unknown file type '\.txt' \(known: \.csv, \.json, \.jsonl, \.parquet\)"
    ):
        load_dataset_from(str(tmp_path / "rows.txt"))
    conversational.to_json(tmp_path / "rows.jsonl")
    with pytest.raises(
        DatasetLoadError, match=r"outcome_eval_dataset: could not read .*rows\.jsonl' \(split 'test'\)"
    ):
        load_dataset_from(str(tmp_path / "rows.jsonl"), "test", what="outcome_eval_dataset")
    (tmp_path / "broken.json").write_text('{"prompt": [1, 2')
    with pytest.raises(DatasetLoadError, match=r"could not read .*broken\.json'"):
        load_dataset_from(str(tmp_path / "broken.json"))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DatasetLoadError, match=r"proxy_dataset: '.*empty\.jsonl' is an empty file"):
        load_dataset_from(str(tmp_path / "empty.jsonl"), what="proxy_dataset")


def test_unreachable_hub_id_is_named():
    # the tests run with HF_DATASETS_OFFLINE=1 (conftest): a hub id not in the cache cannot be loaded
    with pytest.raises(
        DatasetLoadError, match=r"negative_proxy_dataset: 'no-such-org/no-such-dataset' is not a local"
    ):
        load_dataset_from("no-such-org/no-such-dataset", what="negative_proxy_dataset")


def test_check_sft_format(conversational):
    assert check_sft_format(conversational) == "prompt-completion"
    assert check_sft_format(Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"}]]})) == "conversational"
    no_completion = conversational.remove_columns("completion")
    with pytest.raises(
        DatasetLoadError,
        match=r"outcome_dataset \(x\.jsonl\): missing column\(s\) \['completion'\] for the prompt-completion format; "
        r"it has columns \['prompt'\], an SFT dataset needs prompt \+ completion",
    ):
        check_sft_format(no_completion, what="outcome_dataset (x.jsonl)")
    with pytest.raises(DatasetLoadError, match=r"needs messages \(conversational\)$"):
        check_sft_format(conversational, formats=["conversational"])
    with pytest.raises(ValueError, match="unknown SFT format"):
        check_sft_format(conversational, formats=["chat"])
