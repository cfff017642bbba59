"""Load a dataset named by a recipe argument (a local file, a ``save_to_disk`` folder or a hub id) with clear errors.

Recipes take datasets as strings in YAML or on the command line; :func:`load_dataset_from` turns one into a
``datasets.Dataset`` and, when anything goes wrong, raises an error that names the argument (e.g.
``proxy_dataset``) and the offending path, id, split or column instead of a traceback from inside ``datasets``.
:func:`check_sft_format` checks that a dataset has the columns of one of TRL's SFT formats.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_ext.common.errors import MissingPathError, UnknownNameError

__all__ = [
    "FILE_BUILDERS",
    "SFT_FORMATS",
    "DatasetLoadError",
    "check_sft_format",
    "load_dataset_from",
]

FILE_BUILDERS: dict[str, str] = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
"""File suffix -> ``datasets`` builder for single data files."""

SFT_FORMATS: dict[str, tuple[str, ...]] = {
    "prompt-completion": ("prompt", "completion"),
    "conversational": ("messages",),
    "language modeling": ("text",),
}
"""TRL's SFT dataset formats and the columns each needs (checked in this order)."""

_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class DatasetLoadError(ValueError):
    """A dataset argument could not be loaded (bad split, unknown suffix, unreachable hub id, wrong columns)."""


def _looks_like_path(source: str) -> bool:
    # hub ids are "name" or "org/name"; a leading ./ ~ /, several separators or a data-file suffix mean a path
    return (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or (os.sep != "/" and os.sep in source)
        or Path(source).suffix.lower() in FILE_BUILDERS
    )


def _pick_split(data: Mapping[str, Any], split: str, what: str, source: str):
    if split in data:
        return data[split]
    raise DatasetLoadError(f"{what}: {source!r} has no split {split!r}; available splits: {', '.join(data) or 'none'}")


def load_dataset_from(
    source: str | os.PathLike, split: str = "train", *, what: str = "dataset", name: str | None = None
):
    """Load one split of a dataset given as a string; returns a ``datasets.Dataset``.

    ``source`` is, in this order:

    * a ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file: loaded with the matching ``datasets`` builder, whose
      only split is ``train`` (slices such as ``train[:100]`` work);
    * a folder written by ``save_to_disk``: a saved ``Dataset`` is returned whatever ``split`` says, a saved
      ``DatasetDict`` gives its ``split``;
    * any other folder: ``datasets.load_dataset(folder, split=split)`` (a folder of data files);
    * otherwise a hub id: ``datasets.load_dataset(source, split=split)`` (offline rules apply).

    ``name`` is the configuration of a hub dataset (or of a folder loaded with ``load_dataset``); it is refused for
    files and ``save_to_disk`` folders, which have none. ``what`` names the argument in error messages. Raises
    ``FileNotFoundError`` for a path-like ``source`` that does not exist, :class:`DatasetLoadError` for an unknown
    file suffix, a missing split, an unreachable hub id, an unreadable or empty file, or a dataset without rows.
    """
    import datasets

    if source is None or str(source).strip() == "":
        raise DatasetLoadError(f"{what} is not set: give a data file, a save_to_disk folder or a hub id")
    source = str(source)
    path = Path(source).expanduser()
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetLoadError(
                f"{what}: cannot read {source!r}: unknown file type {path.suffix!r} "
                f"(known: {', '.join(sorted(FILE_BUILDERS))})"
            )
        if path.stat().st_size == 0:
            raise DatasetLoadError(f"{what}: {source!r} is an empty file")
        if name is not None:
            raise DatasetLoadError(f"{what}: {source!r} is a file; a configuration name ({name!r}) needs a hub id")
        args, kwargs = (builder,), {"data_files": str(path), "split": split}
    elif path.is_dir() and any((path / m).is_file() for m in _SAVED_MARKERS):
        if name is not None:
            raise DatasetLoadError(f"{what}: {source!r} is a save_to_disk folder; it has no configuration {name!r}")
        args, kwargs = (), {}
    elif path.is_dir():
        args, kwargs = (str(path), name), {"split": split}
    elif _looks_like_path(source):
        where = "" if path.is_absolute() else f" (resolved to {path.absolute()})"
        raise MissingPathError(f"{what}: {source!r} does not exist{where}")
    else:
        args, kwargs = (source, name), {"split": split}
    try:
        dataset = datasets.load_dataset(*args, **kwargs) if args else datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises many unrelated types (ValueError, ConnectionError, ArrowInvalid, ...)
        raise DatasetLoadError(_describe_failure(what, source, split, path, err)) from err
    if isinstance(dataset, datasets.DatasetDict):
        dataset = _pick_split(dataset, split, what, source)
    if isinstance(dataset, datasets.IterableDataset):
        raise DatasetLoadError(f"{what}: {source!r} loaded as a streaming dataset; a map-style dataset is needed")
    if len(dataset) == 0:
        raise DatasetLoadError(f"{what}: {source!r} (split {split!r}) has no rows")
    return dataset


def _describe_failure(what: str, source: str, split: str, path: Path, err: Exception) -> str:
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if path.exists():
        return f"{what}: could not read {source!r} (split {split!r}): {type(err).__name__}: {first_line}"
    offline = os.environ.get("HF_DATASETS_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
    return (
        f"{what}: {source!r} is not a local file or folder and could not be loaded as a hub dataset "
        f"(split {split!r}, offline={offline}): {type(err).__name__}: {first_line}"
    )


def check_sft_format(dataset, what: str = "dataset", formats: Sequence[str] | None = None) -> str:
    """The SFT format of ``dataset`` (a key of :data:`SFT_FORMATS`), or :class:`DatasetLoadError` naming the
    missing columns, the columns present and the formats accepted.

    ``formats`` restricts the accepted formats (default: all of them).
    """
    accepted = list(formats) if formats is not None else list(SFT_FORMATS)
    unknown = [f for f in accepted if f not in SFT_FORMATS]
    if unknown:
        raise UnknownNameError(f"unknown SFT format(s) {unknown}; known: {', '.join(SFT_FORMATS)}")
    columns = list(dataset.column_names)
    for name in accepted:
        if all(c in columns for c in SFT_FORMATS[name]):
            return name
    wanted = "; ".join(f"{' + '.join(SFT_FORMATS[f])} ({f})" for f in accepted)
    present = set(columns)
    closest = min(accepted, key=lambda f: sum(c not in present for c in SFT_FORMATS[f]))
    missing = [c for c in SFT_FORMATS[closest] if c not in present]
    raise DatasetLoadError(
        f"{what}: missing column(s) {missing} for the {closest} format; it has columns {columns}, "
        f"an SFT dataset needs {wanted}"
    )
