"""Checks of the user's inputs that every family trainer runs before training starts (docs/architecture.md).

One place for each check, called by the trainers' ``__init__`` (and with them by the recipes, which build the same
trainers): each raises an error of :mod:`trl_ext.common.errors` that names the offending dataset, column, row,
function or path, instead of a bare ``KeyError`` from deep inside TRL at the first step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from trl_ext.common.errors import DataError, InputTypeError, MissingPathError, ReturnValueError

__all__ = [
    "PREFERENCE_FORMATS",
    "PREFERENCE_HINT",
    "PROMPT_FORMATS",
    "PROMPT_HINT",
    "SFT_FORMATS",
    "check_dataset_columns",
    "check_model_argument",
    "check_path_exists",
    "check_reward_output",
    "checked_reward_function",
    "sft_formats",
]

SFT_FORMATS: tuple[tuple[str, ...], ...] = (
    ("text",),
    ("messages",),
    ("prompt", "completion"),
    ("conversations",),
    ("input_ids",),
)
"""TRL ``SFTTrainer``'s dataset formats with the default ``dataset_text_field``: language modelling, conversational,
prompt-completion, ShareGPT ``conversations`` (converted by TRL) and tokenized; :func:`sft_formats` for a config."""
PREFERENCE_FORMATS: tuple[tuple[str, ...], ...] = (("prompt", "chosen", "rejected"), ("chosen", "rejected"))
"""TRL ``DPOTrainer``'s formats: explicit prompt, or implicit (prompt inside chosen/rejected)."""
PROMPT_FORMATS: tuple[tuple[str, ...], ...] = (("prompt",),)
"""Prompt-only datasets of the online trainers (GRPO, PPO)."""
PROMPT_HINT = "a 'prompt' column of strings or of chat messages [{'role': 'user', 'content': ...}]"
"""What a prompt-only dataset holds (the hint of its error)."""
PREFERENCE_HINT = "preference rows: 'chosen' and 'rejected' answers, with or without a 'prompt'"
"""What a preference dataset holds (the hint of its error)."""


def sft_formats(config: Any = None, formatting_func: Any = None) -> tuple[tuple[tuple[str, ...], ...], str] | None:
    """The column sets one of which TRL's ``SFTTrainer`` reads with ``config``, and a hint; None when it reads any.

    The ``dataset_text_field`` column (default ``text``), ``messages``, ``prompt`` + ``completion``,
    ``conversations`` or ``input_ids``; None (no check) with a ``formatting_func`` or
    ``dataset_kwargs={"skip_prepare_dataset": True}``.
    """
    if formatting_func is not None or (getattr(config, "dataset_kwargs", None) or {}).get("skip_prepare_dataset"):
        return None
    text = getattr(config, "dataset_text_field", None) or "text"
    hint = (
        f"TRL's SFT formats: language modelling ({text!r}, the dataset_text_field), conversational ('messages'), "
        "prompt-completion, ShareGPT 'conversations', or tokenized 'input_ids'; or pass a formatting_func"
    )
    return ((text,), *SFT_FORMATS[1:]), hint


def _formats_text(formats: Sequence[tuple[str, ...]]) -> str:
    return " | ".join(" + ".join(repr(c) for c in cols) for cols in formats)


def check_dataset_columns(
    dataset: Any, what: str, formats: Sequence[tuple[str, ...]], trainer: str, hint: str = ""
) -> None:
    """Raise :class:`DataError` unless ``dataset`` has all the columns of one of ``formats``.

    ``dataset`` may be a ``datasets.Dataset``, a dict of them (each checked, named ``what[key]``) or ``None``
    (nothing to check). A dataset whose columns are not known in advance (a streaming ``IterableDataset``) is
    checked on its first row. The message names ``what``, the columns the dataset has and the formats ``trainer``
    takes, plus ``hint``.
    """
    if dataset is None:
        return
    if isinstance(dataset, Mapping) and not hasattr(dataset, "column_names"):
        for key, part in dataset.items():
            check_dataset_columns(part, f"{what}[{key!r}]", formats, trainer, hint)
        return
    columns = getattr(dataset, "column_names", None)
    if columns is None:  # IterableDataset without features: look at the first row
        first = next(iter(dataset), None)
        if first is None:
            raise DataError(f"{what} is empty")
        columns = list(first)
    columns = list(columns)
    if any(all(c in columns for c in cols) for cols in formats):
        return
    raise DataError(
        f"{what} has the columns {columns}; {trainer} needs {_formats_text(formats)}{'. ' + hint if hint else ''}"
    )


def check_model_argument(model: Any, what: str = "model") -> Any:
    """A model given as a string or path: resolved like the recipes resolve ``model_name_or_path``.

    ``"tiny"`` becomes the embedded tiny model's folder, an existing folder its absolute path; a path-like string
    that does not exist raises :class:`~trl_ext.models.loading.ModelNotFoundError` (a ``FileNotFoundError``)
    naming it, before the hub is asked. Hub ids and model objects are returned unchanged.
    """
    if isinstance(model, str | os.PathLike):
        from trl_ext.models.loading import resolve_model_name_or_path

        return resolve_model_name_or_path(os.fspath(model))
    return model


def check_reward_output(function_name: str, output: Any, expected: int) -> None:
    """Raise :class:`InputTypeError` unless a reward function returned one number (or None) per completion."""
    if isinstance(output, str | bytes) or not isinstance(output, (Sequence, *_array_types())):
        raise InputTypeError(
            f"reward function {function_name!r} returned {type(output).__name__} {output!r:.60}; a reward function "
            f"returns a list with one float (or None) per completion ({expected} here)"
        )
    if len(output) != expected:
        raise ReturnValueError(
            f"reward function {function_name!r} returned {len(output)} rewards for {expected} completions; it must "
            "return one float (or None) per completion"
        )


def checked_reward_function(function: Any, name: str) -> Any:
    """``function`` wrapped to check that it returns one reward per completion (:func:`check_reward_output`).

    Reward models (``torch.nn.Module``), async functions and non-callables are returned unchanged (TRL scores
    them itself).
    """
    import functools
    import inspect

    from torch import nn

    if isinstance(function, nn.Module) or inspect.iscoroutinefunction(function) or not callable(function):
        return function

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        output = function(*args, **kwargs)
        check_reward_output(name, output, len(kwargs.get("completions", args[1] if len(args) > 1 else ())))
        return output

    return checked


def _array_types() -> tuple[type, ...]:
    import numpy as np
    import torch

    return (np.ndarray, torch.Tensor)


def check_path_exists(path: str | os.PathLike, what: str) -> None:
    """Raise :class:`MissingPathError` naming ``what`` when ``path`` does not exist."""
    if not os.path.exists(path):
        raise MissingPathError(f"{what}: {os.fspath(path)!r} does not exist")
