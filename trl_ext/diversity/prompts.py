"""The prompts of a diversity run: stable keys, the prompts of a dataset, a dataset from ``args.prompts``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from trl_ext.common.errors import DataError

__all__ = ["check_prompt_lengths", "prompt_dataset", "prompt_key", "prompt_keys", "prompts_of"]


def prompt_key(prompt: Any) -> str:
    """A stable key of a dataset prompt (a string, or chat messages as JSON)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def prompts_of(dataset) -> list:
    """The ``prompt`` column of a dataset (or of a dict of them); [] for None or a streaming dataset."""
    if dataset is None:
        return []
    if isinstance(dataset, dict) and not hasattr(dataset, "column_names"):
        return [p for part in dataset.values() for p in prompts_of(part)]
    if getattr(dataset, "column_names", None) is None:
        return []  # streaming: prompts are seen as they come
    return list(dataset["prompt"])


def prompt_keys(dataset) -> list[str]:
    return [prompt_key(p) for p in prompts_of(dataset)]


def prompt_dataset(args):
    """``args.prompts`` as a dataset, each prompt repeated so that a generation batch can draw its distinct
    prompts (``generation_batch_size / num_generations``) from it."""
    from datasets import Dataset

    distinct = max(1, args.generation_batch_size // args.num_generations)
    repeats = math.ceil(distinct / len(args.prompts))
    return Dataset.from_dict({"prompt": [p for p in args.prompts for _ in range(repeats)]})


def check_prompt_lengths(
    tokenize: Callable[[list], tuple], datasets: Sequence[Any], context: int | None, max_completion_length: int
) -> None:
    """Every prompt of ``datasets`` must leave room for ``max_completion_length`` tokens in a context of ``context``
    tokens; ``tokenize(prompts)`` returns ``(prompt_ids, …)`` as GRPO's ``_tokenize_prompts`` does.

    Raises:
        DataError: the first prompt that does not fit, named.
    """
    if context is None:
        return
    for data in datasets:
        unique = list({prompt_key(p): p for p in prompts_of(data)}.values())
        if not unique:
            continue
        ids = tokenize(unique)[0]
        for prompt, row in zip(unique, ids):
            if len(row) > context - max_completion_length:
                raise DataError(
                    f"prompt {prompt_key(prompt)[:80]!r} has {len(row)} tokens: with max_completion_length="
                    f"{max_completion_length} it does not fit the model's context of {context} tokens"
                )
