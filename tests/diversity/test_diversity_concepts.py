"""Concepts (surface forms, config errors) and segmentation with the tiny tokenizer (SPEC §1 step 2)."""

from __future__ import annotations

import pytest

from trl_ext.common.errors import ConfigError, UnknownNameError
from trl_ext.diversity.concepts import Block, Concept, plural, segment


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


ANIMAL = Concept("animal", ["dog", "cat"])


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def texts(tokenizer, token_ids, blocks):
    return [tokenizer.decode(token_ids[b.start : b.end]) for b in blocks]


def test_surface_forms_all_variants():
    forms = Concept("animal", ["dog", "fox"]).surface_forms()
    assert forms == {
        **dict.fromkeys(["dog", "Dog", "DOG", "dogs", "Dogs", "DOGS"], "dog"),
        **dict.fromkeys(["fox", "Fox", "FOX", "foxes", "Foxes", "FOXES"], "fox"),
    }
    assert Concept("c", ["Berry"], case_variants=["lower"]).surface_forms() == {"Berry": "Berry", "berry": "Berry"}
    assert [plural(w) for w in ("dog", "box", "church", "berry", "day", "DOG")] == [
        "dogs",
        "boxes",
        "churches",
        "berries",
        "days",
        "DOGS",
    ]


def test_config_errors_name_the_offender():
    with pytest.raises(ConfigError, match="concept 'animal' has no options"):
        Concept("animal", [])
    with pytest.raises(ConfigError, match="options 'Dog' and 'dog' both have the surface form 'dog'"):
        Concept("animal", ["Dog", "dog"])
    with pytest.raises(ConfigError, match="options 'cat' and 'cats' both have the surface form 'cats'"):
        Concept("animal", ["cat", "cats"])
    with pytest.raises(ConfigError, match="option 'cat' is listed twice"):
        Concept("animal", ["cat", "cat"])
    with pytest.raises(UnknownNameError, match="unknown case variant 'title'"):
        Concept("animal", ["cat"], case_variants=["title"])
    assert isinstance(ConfigError("x"), ValueError)
    Concept("animal", ["cat", "cats"], case_variants=["capitalized"])  # no plural, no collision


def test_lowercase_single_token_match(tokenizer):
    seq = ids(tokenizer, "I love my dog because he is loyal.")
    blocks = segment(seq, tokenizer, [ANIMAL])
    assert [b.kind for b in blocks] == ["open", "concept", "open"]
    assert texts(tokenizer, seq, blocks) == ["I love my", " dog", " because he is loyal."]
    assert blocks[1] == Block("concept", 3, 4, option="dog", concept="animal")
    assert blocks[0].start == 0 and blocks[-1].end == len(seq)


def test_capitalized_two_token_match(tokenizer):
    seq = ids(tokenizer, "I love Cat more")  # ' ', 'C', 'at': the match is the two tokens 'C', 'at'
    blocks = segment(seq, tokenizer, [ANIMAL])
    concept = [b for b in blocks if b.kind == "concept"]
    assert len(concept) == 1 and len(concept[0]) == 2 and concept[0].option == "cat"
    assert tokenizer.decode(seq[concept[0].start : concept[0].end]) == "Cat"
    assert segment(seq, tokenizer, [Concept("animal", ["dog", "cat"], case_variants=["lower"])]) == [
        Block("open", 0, len(seq))
    ]


def test_plural_takes_the_longest_window(tokenizer):
    seq = ids(tokenizer, "I love dogs")  # ' dog', 's'
    blocks = segment(seq, tokenizer, [ANIMAL])
    assert texts(tokenizer, seq, blocks) == ["I love", " dogs"]
    assert blocks[-1].option == "dog"


def test_window_size_limits_the_match(tokenizer):
    seq = ids(tokenizer, "I love DOG now")  # ' ', 'D', 'O', 'G': three tokens
    assert [b.kind for b in segment(seq, tokenizer, [ANIMAL])] == ["open"]
    blocks = segment(seq, tokenizer, [ANIMAL], max_window_size=3)
    assert [b.kind for b in blocks] == ["open", "concept", "open"] and blocks[1].option == "dog"
    with pytest.raises(ConfigError, match="max_window_size"):
        segment(seq, tokenizer, [ANIMAL], max_window_size=0)


def test_no_match_is_one_open_block(tokenizer):
    seq = ids(tokenizer, "I love my hamster")
    assert segment(seq, tokenizer, [ANIMAL]) == [Block("open", 0, len(seq))]
    assert segment([], tokenizer, [ANIMAL]) == []


def test_each_concept_matches_once(tokenizer):
    seq = ids(tokenizer, "dog cat dog cat")
    blocks = segment(seq, tokenizer, [ANIMAL])
    assert [b.kind for b in blocks].count("concept") == 1
    assert blocks[0].kind == "concept" and blocks[0].start == 0  # no empty open block before it
    assert [b.option for b in blocks if b.kind == "concept"] == ["dog"]
    # a second concept is matched after the first, once too; the blocks tile the sequence
    color = Concept("color", ["blue"])
    seq = ids(tokenizer, "I love my cat and blue shoes, blue.")
    blocks = segment(seq, tokenizer, [ANIMAL, color])
    assert [(b.kind, b.option) for b in blocks] == [
        ("open", None),
        ("concept", "cat"),
        ("open", None),
        ("concept", "blue"),
        ("open", None),
    ]
    assert [b.concept for b in blocks if b.kind == "concept"] == ["animal", "color"]
    assert all(a.end == b.start for a, b in zip(blocks, blocks[1:]))
    with pytest.raises(ConfigError, match="repeated: 'animal'"):
        segment(seq, tokenizer, [ANIMAL, ANIMAL])
