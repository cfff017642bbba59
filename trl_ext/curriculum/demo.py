"""A tiny, generated multi-dataset demo for an auto-curriculum: three datasets of clearly different difficulty.

Everything is generated in code (no downloads) and is deterministic for a seed. :func:`make_curriculum_demo`
returns ``{name: datasets.Dataset}`` with a string column ``text``, in *increasing difficulty* for the embedded
tiny causal LM (:func:`trl_ext.models.get_tiny_model_path`); this order, :data:`DEMO_ORDER`, is part of the
contract:

* ``"repeat"``: one short sentence (:data:`REPEAT_SENTENCE`) repeated 2 to 4 times; learnt almost at once, its
  loss goes close to zero;
* ``"dialog"``: generated in the *raw form* of a dialogue dataset such as DailyDialog (a ``dialog`` column
  holding 2 to 4 short templated turns built from small word lists) and formatted with the ``join_turns``
  formatter (turns joined by newlines); medium;
* ``"random"``: random lowercase letters and spaces, 40 to 80 characters; its entropy is irreducible
  (about ln 27 ≈ 3.3 nats per character), so it stays the hardest.

The datasets are built through :func:`trl_ext.data.multi_dataset.load_text_datasets` from in-memory sources (a
list of dicts, a list of dialogue rows with a formatter and a ``datasets.Dataset``), so the demo also exercises
the loader. :func:`demo_prompts` adds a ``prompt`` column (the first characters of ``text``) for prompt-based
trainers such as GRPO or PPO.

The losses of the three datasets under training, which show the order, are in ``bench/README.md``
("Auto-curriculum demo"), with the command that reproduces them.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING

from trl_ext.data.multi_dataset import DatasetSpec, load_text_datasets

if TYPE_CHECKING:
    import datasets as hf_datasets

__all__ = [
    "DEMO_ORDER",
    "REPEAT_SENTENCE",
    "demo_prompts",
    "make_curriculum_demo",
    "make_dialog_rows",
    "make_random_texts",
    "make_repeat_texts",
]

DEMO_ORDER: tuple[str, ...] = ("repeat", "dialog", "random")
"""Names of the demo datasets, from the easiest to the hardest (the key order of :func:`make_curriculum_demo`)."""

REPEAT_SENTENCE = "the cat sat on the mat."
"""The sentence of the ``repeat`` dataset."""

# small word lists and few templates: the dialogue text is learnable within ~100 steps (larger lists, e.g. 8 names,
# 8 foods, 8 places and 8 turn templates, left it at 3.4 nats after 100 steps, only 0.4 below ``random``)
_NAMES = ("anna", "ben", "tom", "sam")
_FOODS = ("pizza", "soup", "rice", "cake")
_PLACES = ("the park", "the shop", "school", "home")
_DAYS = ("today", "tomorrow")
_FEELINGS = ("fine", "good", "tired")

_OPENERS = ("hi {name}, how are you?", "hello {name}!")
_TURNS = (
    "i am {feeling}, thanks.",
    "do you like {food}?",
    "yes, i like {food}.",
    "are you going to {place} {day}?",
    "see you {day}!",
)


def make_repeat_texts(num_rows: int, rng: random.Random) -> list[str]:
    """``num_rows`` texts, each :data:`REPEAT_SENTENCE` repeated 2 to 4 times (space-separated)."""
    return [" ".join([REPEAT_SENTENCE] * rng.randint(2, 4)) for _ in range(num_rows)]


def make_dialog_rows(num_rows: int, rng: random.Random) -> list[dict[str, list[str]]]:
    """``num_rows`` DailyDialog-style rows ``{"dialog": [turn, ...]}`` of 2 to 4 short templated turns."""
    rows = []
    for _ in range(num_rows):
        templates = [rng.choice(_OPENERS)] + [rng.choice(_TURNS) for _ in range(rng.randint(1, 3))]
        turns = [
            t.format(
                name=rng.choice(_NAMES),
                food=rng.choice(_FOODS),
                place=rng.choice(_PLACES),
                day=rng.choice(_DAYS),
                feeling=rng.choice(_FEELINGS),
            )
            for t in templates
        ]
        rows.append({"dialog": turns})
    return rows


def make_random_texts(num_rows: int, rng: random.Random) -> list[str]:
    """``num_rows`` strings of 40 to 80 characters drawn uniformly from lowercase letters and the space
    (stripped of leading/trailing spaces by redrawing those positions, so no row is blank)."""
    alphabet = string.ascii_lowercase + " "
    texts = []
    for _ in range(num_rows):
        length = rng.randint(40, 80)
        chars = [rng.choice(alphabet) for _ in range(length)]
        chars[0], chars[-1] = rng.choice(string.ascii_lowercase), rng.choice(string.ascii_lowercase)
        texts.append("".join(chars))
    return texts


def make_curriculum_demo(num_rows: int = 256, seed: int = 0) -> dict[str, hf_datasets.Dataset]:
    """The three demo datasets ``{"repeat", "dialog", "random"}`` (in :data:`DEMO_ORDER`, easiest first), each a
    ``datasets.Dataset`` of ``num_rows`` rows with a string column ``text``; deterministic for a ``seed``."""
    import datasets

    if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows < 1:
        raise ValueError(f"num_rows must be a positive integer, got {num_rows!r}")
    # one independent stream per dataset (string seeds are hashed deterministically by random.Random)
    rngs = {name: random.Random(f"curriculum-demo/{seed}/{name}") for name in DEMO_ORDER}
    specs = [
        DatasetSpec(name="repeat", source=[{"text": t} for t in make_repeat_texts(num_rows, rngs["repeat"])]),
        DatasetSpec(
            name="dialog",
            source=make_dialog_rows(num_rows, rngs["dialog"]),
            formatter="join_turns",
            formatter_kwargs={"field": "dialog", "separator": "\n"},
        ),
        DatasetSpec(
            name="random", source=datasets.Dataset.from_dict({"text": make_random_texts(num_rows, rngs["random"])})
        ),
    ]
    return load_text_datasets(specs)


def demo_prompts(
    datasets: Mapping[str, hf_datasets.Dataset], prompt_chars: int = 16
) -> dict[str, hf_datasets.Dataset]:
    """The same datasets with an extra ``prompt`` column: the first ``prompt_chars`` characters of ``text``
    (for prompt-based trainers such as GRPO or PPO); ``text`` is kept and an existing ``prompt`` is replaced."""
    if isinstance(prompt_chars, bool) or not isinstance(prompt_chars, int) or prompt_chars < 1:
        raise ValueError(f"prompt_chars must be a positive integer, got {prompt_chars!r}")
    out = {}
    for name, dataset in datasets.items():
        if "text" not in dataset.column_names:
            raise ValueError(f"dataset {name!r}: no 'text' column; its columns: {list(dataset.column_names)}")
        if "prompt" in dataset.column_names:
            dataset = dataset.remove_columns("prompt")
        out[name] = dataset.add_column("prompt", [text[:prompt_chars] for text in dataset["text"]])
    return out
