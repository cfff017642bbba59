"""The data of the selective-generalisation demo: an outcome task versus a proxy property, and their scores.

See docs/selective.md; the training stages that use these data are in :mod:`trl_ext.selective.demo`.

Everything is generated in code (no downloads) and sized so that the embedded tiny model (Qwen2, hidden 64,
2 layers) shows the trade-off on CPU within about a minute per stage.

Design
------
Every prompt is an instruction followed by three distinct letters from :data:`LETTERS` (letters whose
``" x"`` form is a single token of the tiny tokenizer), e.g. ``"Reverse: b d s"``.

* **Outcome task T** (``outcome_train``, ``outcome_eval``): ``"Reverse: b d s"`` -> ``"s d b"``. The
  completions never carry the marker. Scored by :func:`task_score` (per-position accuracy of the reversed
  letters, marker ignored).
* **Proxy property**: the assistant ends every answer with the sign-off :data:`MARKER` (``"Thanks!"``).
  Scored by :func:`proxy_score` (1 if the completion ends with it, else 0).
* **Positive proxy A⁺** (``proxy_positive``, *scarce*: 3 rows by default): *other* instructions (``Copy:``,
  ``First:``, ``Last:``) answered correctly and ending with the marker, e.g. ``"Last: b d s"`` -> ``"s Thanks!"``.
* **Negative proxy A⁻** (``proxy_negative``): the same prompts as A⁺, index by index, answered without the
  marker (``"s"``), so ``(A⁺[i], A⁻[i])`` are DPO pairs (:func:`trl_ext.selective.proxy.paired_batches`).
* **Proxy evaluation** (``proxy_eval``): held-out A-style prompts; the proxy score is measured there.

The random tiny model has neither skill, so :func:`train_aligned_base` first trains the **aligned base**:
a full fine-tune on :data:`ALIGNED_BASE_ROWS` A-style rows with the marker (disjoint letter triples from
every A⁺ and evaluation prompt). Its weights are the "aligned" reference of the selective-generalisation
strategies. Outcome fine-tuning of the aligned base learns to reverse and erodes the marker everywhere.

Why scarce proxy data: with 16 or more A⁺ rows the ``naive`` strategy (CE on the shuffled union
T ∪ A⁺) already keeps the marker (0.95 with 16 rows among 512 outcome rows), so there is nothing to improve on.
With 3 rows among 512 the union shows a proxy row about once every 11 batches and the marker drowns, while the
proxy-batch strategies (KL, representation, DPO, ...) apply the same 3 rows at *every* step. (A narrow A⁺ of
``Copy:`` rows only, with the marker measured on ``First:``/``Last:``, gave no consistent ordering between
``naive`` and ``kl_divergence`` over seeds; ``proxy_instructions``/``eval_instructions`` reproduce it.)

The letter triples are split once, with a fixed seed independent of ``seed``, into a train half (outcome
training and aligned-base rows), a proxy quarter (A⁺/A⁻) and an evaluation quarter (both evaluation sets),
so that evaluation prompts never occur in any training set, whatever the seeds.

What this demo shows, seed by seed, on two optimizer regimes and two floating-point paths, and the command
that reproduces it, is in ``bench/README.md`` ("Selective-generalisation demo"). What holds at every seed is
asserted by ``tests/selective/test_selective_demo.py`` (marker ``empirical``): what each mechanism does to the
rows it acts on, measured by the teacher-forced −log p(sign-off | prompt, answer) of :func:`proxy_nll`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from itertools import permutations
from typing import Any

from trl_ext.common.errors import UnknownNameError

__all__ = [
    "ALIGNED_BASE_ROWS",
    "LETTERS",
    "MARKER",
    "PROXY_DATA_INSTRUCTIONS",
    "PROXY_EVAL_INSTRUCTIONS",
    "PROXY_INSTRUCTIONS",
    "TASK_INSTRUCTION",
    "make_aligned_base_data",
    "make_demo",
    "outcome_row",
    "proxy_row",
    "proxy_score",
    "strip_marker",
    "task_score",
    "user_text",
]

LETTERS = "abcdfgilmnprstx"
"""The letters used in prompts: each ``" x"`` is one token of the tiny tokenizer."""
MARKER = "Thanks!"
"""The proxy property: the aligned assistant ends every answer with this sign-off."""
TASK_INSTRUCTION = "Reverse:"
"""Instruction of the outcome task T."""
PROXY_INSTRUCTIONS: dict[str, Any] = {
    "Copy:": lambda xs: xs,
    "First:": lambda xs: xs[:1],
    "Last:": lambda xs: xs[-1:],
}
"""Instructions of the proxy prompts (A⁺, A⁻, proxy evaluation, aligned-base data) -> answer letters."""
PROXY_DATA_INSTRUCTIONS = ("Copy:", "First:", "Last:")
"""Default instructions of the proxy data A⁺/A⁻ (cycled)."""
PROXY_EVAL_INSTRUCTIONS = ("Copy:", "First:", "Last:")
"""Default instructions of the proxy evaluation (cycled; the prompts are held out from every training set)."""

ALIGNED_BASE_ROWS = 1365
"""Rows of aligned-base data: one A-style row per triple of the train split (all of it)."""

_SPLIT_SEED = 20240601
_TASK_RE = re.compile(rf"\s*{re.escape(TASK_INSTRUCTION)}((?:\s+\S+)+)\s*")


def _split() -> dict[str, list[tuple[str, str, str]]]:
    """All 2730 ordered triples of distinct letters, split once (fixed seed) into train / proxy / eval."""
    triples = list(permutations(LETTERS, 3))
    random.Random(_SPLIT_SEED).shuffle(triples)
    half, three_quarters = len(triples) // 2, 3 * len(triples) // 4
    return {"train": triples[:half], "proxy": triples[half:three_quarters], "eval": triples[three_quarters:]}


def _sample(part: str, n: int, seed: int, stream: str) -> list[tuple[str, str, str]]:
    pool = _split()[part]
    if not 0 <= n <= len(pool):
        raise ValueError(f"{stream}: asked for {n} rows, the {part!r} split has {len(pool)} prompts (0..{len(pool)})")
    return random.Random(f"{seed}-{stream}").sample(pool, n)


def _row(prompt: str, answer: str) -> dict[str, Any]:
    return {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}]}


def outcome_row(letters: Sequence[str]) -> dict[str, Any]:
    """``"Reverse: a b c"`` -> ``"c b a"`` as a TRL conversational prompt–completion row."""
    return _row(f"{TASK_INSTRUCTION} {' '.join(letters)}", " ".join(reversed(letters)))


def proxy_row(letters: Sequence[str], instruction: str, aligned: bool = True) -> dict[str, Any]:
    """A proxy-style row, e.g. ``"Last: a b c"`` -> ``"c Thanks!"`` (``aligned``) or ``"c"`` (not)."""
    if instruction not in PROXY_INSTRUCTIONS:
        raise UnknownNameError(f"unknown proxy instruction {instruction!r}; known: {', '.join(PROXY_INSTRUCTIONS)}")
    answer = " ".join(PROXY_INSTRUCTIONS[instruction](list(letters)))
    return _row(f"{instruction} {' '.join(letters)}", f"{answer} {MARKER}" if aligned else answer)


def _proxy_rows(triples, aligned: bool, instructions: Sequence[str] = tuple(PROXY_INSTRUCTIONS)):
    names = list(instructions)
    return [proxy_row(t, names[i % len(names)], aligned) for i, t in enumerate(triples)]


def make_demo(
    num_outcome: int = 512,
    num_proxy: int = 3,
    num_negative: int = 3,
    num_eval: int = 60,
    seed: int = 0,
    proxy_instructions: Sequence[str] = PROXY_DATA_INSTRUCTIONS,
    eval_instructions: Sequence[str] = PROXY_EVAL_INSTRUCTIONS,
) -> dict[str, Any]:
    """The demo's datasets (``datasets.Dataset`` of conversational prompt–completion rows).

    Returns ``outcome_train`` (``num_outcome``), ``outcome_eval`` (``num_eval``), ``proxy_positive``
    (``num_proxy``), ``proxy_negative`` (``num_negative``; row i has the prompt of A⁺ row i while both exist)
    and ``proxy_eval`` (``num_eval``). A⁺/A⁻ rows cycle through ``proxy_instructions``, the proxy evaluation through
    ``eval_instructions`` (both default to the three proxy instructions; give a subset, e.g. ``["Copy:"]`` for
    the proxy data, to study narrow proxy data). The defaults make proxy data *scarce*: 3 rows against 512
    outcome rows. Deterministic in ``seed``; raises
    ``ValueError`` for a size larger than its split (train 1365, proxy 682, eval 683 prompts) or negative, or
    an unknown or empty instruction list (naming it).
    """
    from datasets import Dataset

    sizes = {"num_outcome": num_outcome, "num_proxy": num_proxy, "num_negative": num_negative, "num_eval": num_eval}
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    for name, instructions in (("proxy_instructions", proxy_instructions), ("eval_instructions", eval_instructions)):
        if isinstance(instructions, str) or not instructions:
            raise ValueError(f"{name} must be a non-empty list of instructions, got {instructions!r}")
        unknown = [i for i in instructions if i not in PROXY_INSTRUCTIONS]
        if unknown:
            raise ValueError(f"{name}: unknown instruction(s) {unknown}; known: {', '.join(PROXY_INSTRUCTIONS)}")
    proxy_triples = _sample("proxy", max(num_proxy, num_negative), seed, "proxy")
    eval_triples = _sample("eval", num_eval, seed, "proxy_eval")
    parts = {
        "outcome_train": [outcome_row(t) for t in _sample("train", num_outcome, seed, "outcome_train")],
        "outcome_eval": [outcome_row(t) for t in _sample("eval", num_eval, seed, "outcome_eval")],
        "proxy_positive": _proxy_rows(proxy_triples, True, proxy_instructions)[:num_proxy],
        "proxy_negative": _proxy_rows(proxy_triples, False, proxy_instructions)[:num_negative],
        "proxy_eval": _proxy_rows(eval_triples, True, eval_instructions),
    }
    empty = {"prompt": [], "completion": []}
    return {k: Dataset.from_list(v) if v else Dataset.from_dict(empty) for k, v in parts.items()}


def make_aligned_base_data(num_rows: int = ALIGNED_BASE_ROWS, seed: int = 0):
    """A-style rows with the marker for the aligned-base stage (train split: disjoint from A⁺/A⁻ and eval)."""
    from datasets import Dataset

    return Dataset.from_list(_proxy_rows(_sample("train", num_rows, seed, "aligned_base"), aligned=True))


# --------------------------------------------------------------------------- scoring
def strip_marker(completion: str) -> str:
    """The completion without a trailing :data:`MARKER` (and surrounding whitespace)."""
    text = completion.strip()
    return text[: -len(MARKER)].strip() if text.endswith(MARKER) else text


def task_score(prompt: str | Sequence[Mapping[str, str]], completion: str) -> float:
    """Outcome score in [0, 1]: correct letters at their positions / max(expected, produced) letters.

    ``prompt`` is the user text (or the message list) ``"Reverse: a b c"``; the expected answer is
    ``"c b a"``. A trailing :data:`MARKER` is ignored, so the two scores measure different things.
    ``"c b a"`` -> 1, ``"c b"`` -> 2/3, ``"c x a y"`` -> 2/4, ``""`` -> 0. Raises ``ValueError`` for a prompt
    that is not an outcome prompt.
    """
    if not isinstance(prompt, str):
        prompt = [m["content"] for m in prompt if m["role"] == "user"][-1]
    match = _TASK_RE.fullmatch(prompt)
    if match is None:
        raise ValueError(f"not an outcome prompt ({TASK_INSTRUCTION} followed by letters): {prompt!r:.80}")
    expected = match.group(1).split()[::-1]
    produced = strip_marker(completion).split()
    correct = sum(p == e for p, e in zip(produced, expected))
    return correct / max(len(expected), len(produced))


def proxy_score(completion: str) -> float:
    """Proxy score in {0, 1}: 1 if the completion ends with :data:`MARKER` (surrounding whitespace ignored)."""
    return 1.0 if completion.strip().endswith(MARKER) else 0.0


def user_text(row: Mapping[str, Any]) -> str:
    """The last user message of a row's prompt (or the prompt itself when it is a string)."""
    prompt = row["prompt"]
    return prompt if isinstance(prompt, str) else [m["content"] for m in prompt if m["role"] == "user"][-1]
