"""Multi-dataset loading (:mod:`trl_ext.data.multi_dataset`) and the generated curriculum demo."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

datasets = pytest.importorskip("datasets")

from trl_ext.curriculum.demo import DEMO_ORDER, demo_prompts, make_curriculum_demo  # noqa: E402
from trl_ext.data.loading import DatasetLoadError  # noqa: E402
from trl_ext.data.multi_dataset import (  # noqa: E402
    FORMATTERS,
    DatasetSpec,
    format_field,
    format_join_turns,
    format_template,
    format_translation,
    load_text_datasets,
    resolve_formatter,
)


def shout(example: dict, suffix: str = "!") -> str:
    """An importable custom formatter for the ``"module:function"`` test."""
    return example["text"].upper() + suffix


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ------------------------------------------------------------------------------------------------- formatters


def test_formatter_registry():
    """The four built-in formatters are registered by name."""
    assert set(FORMATTERS) == {"field", "join_turns", "translation", "template"}
    assert FORMATTERS["join_turns"] is format_join_turns


def test_format_field():
    """``field`` returns one column, ``text`` by default."""
    assert format_field({"text": "a b", "x": 1}) == "a b"
    assert format_field({"body": "hello"}, field="body") == "hello"


def test_format_join_turns_strings_and_messages():
    """``join_turns`` joins string turns and the contents of role/content dicts, with a custom separator."""
    assert format_join_turns({"dialog": ["hi", "hello", "bye"]}) == "hi\nhello\nbye"
    assert format_join_turns({"turns": ["a", "b"]}, field="turns", separator=" | ") == "a | b"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert format_join_turns({"messages": messages}, field="messages") == "hi\nhello"


def test_format_join_turns_rejects_non_list():
    """``join_turns`` refuses a plain string column (it is not a list of turns)."""
    with pytest.raises(TypeError, match="list of turns"):
        format_join_turns({"dialog": "hi"})


def test_format_translation():
    """``translation`` picks one language, ``en`` from ``translation`` by default; a missing one names it."""
    row = {"translation": {"en": "the house", "fr": "la maison"}}
    assert format_translation(row) == "the house"
    assert format_translation(row, language="fr") == "la maison"
    assert format_translation({"pair": {"de": "das Haus"}}, field="pair", language="de") == "das Haus"
    with pytest.raises(KeyError, match="de"):
        format_translation(row, language="de")


def test_format_template():
    """``template`` fills a format string from the row."""
    row = {"question": "2+2?", "answer": "4"}
    assert format_template(row, template="Q: {question} A: {answer}") == "Q: 2+2? A: 4"


def test_resolve_formatter_import_and_unknown():
    """A ``module:function`` string is imported; an unknown name lists the built-ins."""
    assert resolve_formatter("tests.data.test_multi_dataset:shout")({"text": "hi"}) == "HI!"
    assert resolve_formatter(shout) is shout
    with pytest.raises(DatasetLoadError, match="unknown formatter 'nope'.*field, join_turns, translation, template"):
        resolve_formatter("nope")
    with pytest.raises(DatasetLoadError, match="has no function 'missing'"):
        resolve_formatter("tests.data.test_multi_dataset:missing")
    with pytest.raises(DatasetLoadError, match="cannot import module 'no_such_module_xyz'"):
        resolve_formatter("no_such_module_xyz:f")


# ------------------------------------------------------------------------------------------------------ loading


def test_load_jsonl_file(tmp_path):
    """A jsonl file loads through ``load_dataset_from`` and keeps only the ``text`` column by default."""
    path = _write_jsonl(tmp_path / "wiki.jsonl", [{"text": "first", "id": 1}, {"text": "second", "id": 2}])
    out = load_text_datasets([{"name": "wiki", "source": str(path)}])
    assert list(out) == ["wiki"]
    assert out["wiki"].column_names == ["text"]
    assert out["wiki"]["text"] == ["first", "second"]


def test_load_save_to_disk_folder(tmp_path):
    """A ``save_to_disk`` folder loads, here with the ``translation`` formatter."""
    rows = {"translation": [{"en": "one", "fr": "un"}, {"en": "two", "fr": "deux"}]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "europarl"))
    spec = DatasetSpec(
        name="europarl",
        source=str(tmp_path / "europarl"),
        formatter="translation",
        formatter_kwargs={"language": "fr"},
    )
    assert load_text_datasets([spec])["europarl"]["text"] == ["un", "deux"]


def test_load_in_memory_dataset_and_list():
    """A ``datasets.Dataset`` and a list of dicts load as sources, in the order given, with a custom text field."""
    ds = datasets.Dataset.from_dict({"body": ["x", "y"], "other": [1, 2]})
    rows = [{"dialog": ["hi", "hello"]}, {"dialog": ["bye", "ciao", "later"]}]
    out = load_text_datasets(
        [
            DatasetSpec(name="mem", source=ds, text_field="body"),
            {"name": "chat", "source": rows, "formatter": "join_turns"},
        ]
    )
    assert list(out) == ["mem", "chat"]
    assert out["mem"]["text"] == ["x", "y"]
    assert out["chat"]["text"] == ["hi\nhello", "bye\nciao\nlater"]
    assert out["chat"].features["text"] == datasets.Value("string")


def test_load_dataset_dict_split():
    """A ``DatasetDict`` source gives the spec's split."""
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["tr"]}),
            "validation": datasets.Dataset.from_dict({"text": ["va"]}),
        }
    )
    assert load_text_datasets([DatasetSpec(name="d", source=dd, split="validation")])["d"]["text"] == ["va"]


def test_template_and_custom_formatters():
    """The ``template`` formatter and an imported custom formatter with kwargs both work through the loader."""
    rows = [{"q": "a?", "a": "b", "text": "yo"}]
    out = load_text_datasets(
        [
            {"name": "t", "source": rows, "formatter": "template", "formatter_kwargs": {"template": "{q} -> {a}"}},
            {"name": "c", "source": rows, "formatter": "tests.data.test_multi_dataset:shout", "formatter_kwargs": {}},
            DatasetSpec(name="f", source=rows, formatter=lambda ex: ex["q"] + ex["a"]),
        ]
    )
    assert out["t"]["text"] == ["a? -> b"]
    assert out["c"]["text"] == ["YO!"]
    assert out["f"]["text"] == ["a?b"]


def test_keep_columns_and_text_column():
    """``keep_columns`` keeps the other columns; ``text_column`` renames the output column."""
    rows = [{"dialog": ["a", "b"], "topic": "x"}]
    kept = load_text_datasets([{"name": "d", "source": rows, "formatter": "join_turns"}], keep_columns=True)["d"]
    assert set(kept.column_names) == {"dialog", "topic", "text"}
    assert kept[0]["text"] == "a\nb"
    renamed = load_text_datasets([{"name": "d", "source": rows, "formatter": "join_turns"}], text_column="content")
    assert renamed["d"].column_names == ["content"]


def test_max_rows():
    """``max_rows`` keeps the first N rows; a larger value keeps them all."""
    rows = [{"text": f"row {i}"} for i in range(10)]
    out = load_text_datasets(
        [{"name": "a", "source": rows, "max_rows": 3}, {"name": "b", "source": rows, "max_rows": 50}]
    )
    assert out["a"]["text"] == ["row 0", "row 1", "row 2"]
    assert len(out["b"]) == 10


# ------------------------------------------------------------------------------------------------------- errors


def test_from_dict_unknown_key():
    """``from_dict`` names the unknown key and lists the known ones; missing required keys are named too."""
    with pytest.raises(DatasetLoadError, match=r"dataset 'wiki': unknown key\(s\) \['txt_field'\].*text_field"):
        DatasetSpec.from_dict({"name": "wiki", "source": "w.jsonl", "txt_field": "text"})
    with pytest.raises(DatasetLoadError, match=r"missing required key\(s\) \['source'\]"):
        DatasetSpec.from_dict({"name": "wiki"})
    assert DatasetSpec.from_dict({"name": "w", "source": "w.jsonl", "formatter_kwargs": None}).formatter_kwargs == {}


def test_duplicate_names():
    """Two specs with one name fail before loading, naming the duplicate."""
    rows = [{"text": "a"}]
    with pytest.raises(DatasetLoadError, match="dataset 'wiki': duplicate name"):
        load_text_datasets([{"name": "wiki", "source": rows}, {"name": "wiki", "source": rows}])


def test_missing_text_field_lists_columns():
    """A dataset without the text field names the dataset, the field and its columns."""
    with pytest.raises(
        DatasetLoadError, match=r"dataset 'web': no column 'text' \(the text field\).*\['body', 'id'\]"
    ):
        load_text_datasets([{"name": "web", "source": [{"body": "x", "id": 1}]}])
    with pytest.raises(DatasetLoadError, match="dataset 'chat': no column 'dialog'.*join_turns.*'turns'"):
        load_text_datasets([{"name": "chat", "source": [{"turns": ["a"]}], "formatter": "join_turns"}])
    template = {"template": "{q} {missing}"}
    with pytest.raises(DatasetLoadError, match="dataset 't': no column 'missing'"):
        load_text_datasets(
            [{"name": "t", "source": [{"q": "x"}], "formatter": "template", "formatter_kwargs": template}]
        )


def test_formatter_key_error_names_row():
    """A formatter raising ``KeyError`` names the dataset, the row index and the key."""
    rows = [{"translation": {"en": "a"}}, {"translation": {"fr": "b"}}]
    with pytest.raises(
        DatasetLoadError, match="dataset 'ep': formatter 'translation' failed on row 1: missing key.*en"
    ):
        load_text_datasets([{"name": "ep", "source": rows, "formatter": "translation"}])
    bad = [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    with pytest.raises(DatasetLoadError, match="dataset 'c': formatter .* failed on row 0: missing key 'nope'"):
        load_text_datasets([DatasetSpec(name="c", source=bad, formatter=lambda ex: ex["nope"])])


def test_formatter_non_string_names_row():
    """A formatter (or text field) giving a non-string names the dataset, the type and the row index."""
    rows = [{"text": "a", "n": 1}, {"text": "b", "n": 2}]
    with pytest.raises(DatasetLoadError, match="dataset 'n': formatter 'field' returned int for row 0"):
        load_text_datasets([{"name": "n", "source": rows, "text_field": "n"}])
    with pytest.raises(DatasetLoadError, match="dataset 'f': formatter .* returned NoneType for row 1"):
        load_text_datasets(
            [DatasetSpec(name="f", source=rows, formatter=lambda ex: ex["text"] if ex["n"] == 1 else None)]
        )


def test_bad_formatter_names_dataset():
    """An unknown formatter or bad formatter kwargs fail naming the dataset."""
    with pytest.raises(DatasetLoadError, match="dataset 'x': unknown formatter 'jointurns'.*join_turns"):
        load_text_datasets([{"name": "x", "source": [{"text": "a"}], "formatter": "jointurns"}])
    with pytest.raises(DatasetLoadError, match="dataset 'x': bad formatter_kwargs.*'join_turns'.*field, separator"):
        load_text_datasets(
            [{"name": "x", "source": [{"dialog": ["a"]}], "formatter": "join_turns", "formatter_kwargs": {"sep": " "}}]
        )
    with pytest.raises(DatasetLoadError, match="dataset 'x': bad formatter_kwargs.*'template'"):
        load_text_datasets([{"name": "x", "source": [{"text": "a"}], "formatter": "template"}])


def test_empty_dataset():
    """An empty source, or 0 rows after ``max_rows``, fails naming the dataset."""
    with pytest.raises(DatasetLoadError, match="dataset 'e': the dataset has no rows"):
        load_text_datasets([{"name": "e", "source": datasets.Dataset.from_dict({"text": []})}])
    with pytest.raises(DatasetLoadError, match="dataset 'e': the dataset has no rows"):
        load_text_datasets([{"name": "e", "source": []}])
    with pytest.raises(DatasetLoadError, match="dataset 'm': the dataset has no rows after max_rows=0"):
        load_text_datasets([{"name": "m", "source": [{"text": "a"}], "max_rows": 0}])


def test_empty_text_rows_are_an_error():
    """Rows with empty (or blank) text fail with the count and the first index; nothing is skipped."""
    rows = [{"text": "a"}, {"text": ""}, {"text": "b"}, {"text": "  "}]
    with pytest.raises(DatasetLoadError, match=r"dataset 'blank': 2 of 4 row\(s\) have empty text.*first: row 1"):
        load_text_datasets([{"name": "blank", "source": rows}])
    with pytest.raises(DatasetLoadError, match=r"dataset 'd': 1 of 1 row\(s\) have empty text.*first: row 0"):
        load_text_datasets([{"name": "d", "source": [{"dialog": []}], "formatter": "join_turns"}])


def test_missing_file_and_bad_source():
    """A missing path names the dataset (``FileNotFoundError``); an unsupported source type is refused."""
    with pytest.raises(FileNotFoundError, match="dataset 'gone': './nope.jsonl' does not exist"):
        load_text_datasets([{"name": "gone", "source": "./nope.jsonl"}])
    with pytest.raises(DatasetLoadError, match="dataset 'n': unsupported source type int"):
        load_text_datasets([{"name": "n", "source": 3}])
    with pytest.raises(DatasetLoadError, match="dataset 'l': row 1 of the list is a str"):
        load_text_datasets([{"name": "l", "source": [{"text": "a"}, "b"]}])


# ---------------------------------------------------------------------------------------------------------- demo


def test_demo_names_order_and_sizes():
    """The demo gives ``repeat``, ``dialog``, ``random`` in that order, each with ``num_rows`` string rows."""
    demo = make_curriculum_demo(num_rows=32, seed=0)
    assert tuple(demo) == DEMO_ORDER == ("repeat", "dialog", "random")
    for dataset in demo.values():
        assert dataset.column_names == ["text"]
        assert len(dataset) == 32
        assert all(isinstance(t, str) and t.strip() for t in dataset["text"])


def test_demo_content():
    """``repeat`` repeats one sentence, ``dialog`` rows are joined turns (newlines), ``random`` is 40-80 letters."""
    demo = make_curriculum_demo(num_rows=64, seed=3)
    for text in demo["repeat"]["text"]:
        assert text.count("the cat sat on the mat.") in (2, 3, 4)
    assert all("\n" in text and 2 <= len(text.split("\n")) <= 4 for text in demo["dialog"]["text"])
    for text in demo["random"]["text"]:
        assert 40 <= len(text) <= 80
        assert set(text) <= set("abcdefghijklmnopqrstuvwxyz ")


def test_demo_determinism():
    """The same seed gives the same data; another seed gives different data."""
    a, b, c = make_curriculum_demo(16, seed=0), make_curriculum_demo(16, seed=0), make_curriculum_demo(16, seed=1)
    for name in DEMO_ORDER:
        assert a[name]["text"] == b[name]["text"]
    assert a["dialog"]["text"] != c["dialog"]["text"]
    assert a["random"]["text"] != c["random"]["text"]


def test_demo_prompts_prefix():
    """``demo_prompts`` adds a ``prompt`` column that is a prefix of ``text`` (kept) of ``prompt_chars`` chars."""
    demo = make_curriculum_demo(8, seed=0)
    prompted = demo_prompts(demo, prompt_chars=10)
    assert tuple(prompted) == DEMO_ORDER
    for name, dataset in prompted.items():
        assert set(dataset.column_names) == {"text", "prompt"}
        assert dataset["text"] == demo[name]["text"]
        for row in dataset:
            assert row["text"].startswith(row["prompt"])
            assert len(row["prompt"]) == min(10, len(row["text"]))
    with pytest.raises(ValueError, match="prompt_chars"):
        demo_prompts(demo, prompt_chars=0)


def test_min_chars_drops_short_rows_and_subset_reaches_the_hub_loader(monkeypatch):
    """min_chars keeps rows with enough text (an explicit, logged filter); subset is the hub configuration name."""
    import datasets

    rows = [{"text": "a long enough line"}, {"text": " "}, {"text": "ok"}, {"text": "another long line"}]
    out = load_text_datasets([{"name": "wiki", "source": rows, "min_chars": 5}])
    assert out["wiki"]["text"] == ["a long enough line", "another long line"]
    with pytest.raises(DatasetLoadError, match="dataset 'wiki': no row has at least min_chars=50"):
        load_text_datasets([{"name": "wiki", "source": rows, "min_chars": 50}])
    with pytest.raises(DatasetLoadError, match="dataset 'wiki': subset 'v1' needs a hub id"):
        load_text_datasets([{"name": "wiki", "source": rows, "subset": "v1"}])

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = load_text_datasets([{"name": "wiki", "source": "Salesforce/wikitext", "subset": "wikitext-103-raw-v1",
                               "split": "validation", "min_chars": 5}])  # fmt: skip
    assert calls == [("Salesforce/wikitext", "wikitext-103-raw-v1", "validation")]
    assert len(out["wiki"]) == 2
