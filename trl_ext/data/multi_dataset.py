"""Load several datasets at once, each turned into a single ``text`` column (for an auto-curriculum).

An auto-curriculum trains on several datasets and samples them with weights. Each dataset is described by a
:class:`DatasetSpec`: a ``name`` (unique, used in logs and sampling weights), a ``source`` and how to turn a
row into one string, either a column (``text_field``) or a *formatter*. :func:`load_text_datasets` loads a list
of specs and returns an ordered ``{name: datasets.Dataset}`` with one string column ``text``.

Sources
-------
* a string: a ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file, a ``save_to_disk`` folder, a folder of data
  files or a hub id, loaded with :func:`trl_ext.data.loading.load_dataset_from` (``split`` applies, slices
  such as ``train[:100]`` too);
* a ``datasets.Dataset`` (``split`` is ignored) or a ``datasets.DatasetDict`` (its ``split`` is taken);
* a list of dicts, one per row (``split`` is ignored).

Formatters
----------
A formatter is a function ``(example: dict, **formatter_kwargs) -> str``. The built-ins (:data:`FORMATTERS`):

* ``field`` (the default when only ``text_field`` is given): ``example[field]``, ``field`` defaulting to
  ``text_field``;
* ``join_turns``: joins the turns in column ``field`` (default ``dialog``) with ``separator`` (default
  ``"\\n"``); a turn is a string or a ``{"role": ..., "content": ...}`` dict (its content is used);
* ``translation``: one language of a translation pair, ``example[field][language]`` (defaults
  ``translation`` and ``en``), e.g. EuroParl rows ``{"translation": {"en": "...", "fr": "..."}}``;
* ``template``: ``template.format(**example)``, e.g. ``formatter_kwargs: {template: "Q: {question} A: {answer}"}``.

Any other string of the form ``"package.module:function"`` is imported; a Python callable can be given directly.

YAML configs give the specs as dicts (:meth:`DatasetSpec.from_dict` rejects unknown keys)::

    curriculum_datasets:
      - {name: wiki, source: wikitext.jsonl, text_field: text}
      - {name: dialog, source: daily_dialog, formatter: join_turns, formatter_kwargs: {field: dialog}}
      - {name: europarl, source: europarl.jsonl, formatter: translation, formatter_kwargs: {language: en}}

Errors
------
Every problem raises :class:`~trl_ext.data.loading.DatasetLoadError` (a ``ValueError``) naming the dataset and
the offending item: duplicate names, unknown spec keys, an unknown formatter or formatter argument, a missing
column (the columns present are listed), a formatter that fails or returns a non-string (with the row index),
a dataset without rows (also after ``max_rows``) and rows whose text is empty (how many, and the first index);
rows are never skipped silently. A path-like ``source`` that does not exist raises ``FileNotFoundError``.
"""

from __future__ import annotations

import inspect
import logging
import os
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from trl_ext.common.imports import import_function
from trl_ext.data.loading import DatasetLoadError, load_dataset_from

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

__all__ = [
    "FORMATTERS",
    "DatasetLoadError",
    "DatasetSpec",
    "format_field",
    "format_join_turns",
    "format_template",
    "format_translation",
    "load_text_datasets",
    "resolve_formatter",
]


@dataclass
class DatasetSpec:
    """One dataset of a multi-dataset (curriculum) configuration; see the module docstring for the format."""

    name: str
    """Unique name of the dataset (the key of the result of :func:`load_text_datasets`, used in logs and weights)."""

    source: str | os.PathLike | datasets.Dataset | datasets.DatasetDict | list[dict[str, Any]]
    """A data file, ``save_to_disk`` folder or hub id (string), a ``datasets.Dataset`` / ``DatasetDict`` or a
    list of dicts (one per row)."""

    split: str = "train"
    """Split to load for string sources and ``DatasetDict`` (slices such as ``train[:100]`` work for strings)."""

    text_field: str | None = "text"
    """Column holding the text, used when ``formatter`` is ``None`` or ``"field"`` (without a ``field`` kwarg)."""

    formatter: str | Callable[..., str] | None = None
    """A built-in formatter name (:data:`FORMATTERS`), ``"package.module:function"`` or a callable
    ``(example, **formatter_kwargs) -> str``; ``None`` takes the ``text_field`` column."""

    formatter_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the formatter with every row (e.g. ``{"field": "dialog", "separator": " "}``)."""

    max_rows: int | None = None
    """Keep only the first ``max_rows`` rows after loading (``None``: all of them)."""

    subset: str | None = None
    """Configuration name of a hub dataset (e.g. ``wikitext-103-raw-v1`` of ``Salesforce/wikitext``)."""

    min_chars: int = 0
    """Drop rows whose formatted text has fewer than ``min_chars`` non-blank characters (e.g. Wikitext's blank lines);
    the number dropped is logged. With 0 (default) an empty text is an error, never skipped."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetSpec:
        """Build a spec from a mapping (a YAML entry); unknown or missing keys raise :class:`DatasetLoadError`."""
        if isinstance(data, DatasetSpec):
            return data
        if not isinstance(data, Mapping):
            raise DatasetLoadError(f"a dataset spec must be a mapping, got {type(data).__name__}: {data!r}")
        known = [f.name for f in fields(cls)]
        label = f"dataset {data['name']!r}" if "name" in data else "dataset spec"
        unknown = [key for key in data if key not in known]
        if unknown:
            raise DatasetLoadError(f"{label}: unknown key(s) {unknown}; known keys: {', '.join(known)}")
        missing = [key for key in ("name", "source") if key not in data]
        if missing:
            raise DatasetLoadError(f"{label}: missing required key(s) {missing}; known keys: {', '.join(known)}")
        kwargs = dict(data)
        if kwargs.get("formatter_kwargs") is None:
            kwargs["formatter_kwargs"] = {}
        return cls(**kwargs)


# ----------------------------------------------------------------------------------------------------- formatters


def format_field(example: Mapping[str, Any], *, field: str = "text") -> str:
    """``example[field]`` (the default formatter, with ``field`` set to the spec's ``text_field``)."""
    return example[field]


def format_join_turns(example: Mapping[str, Any], *, field: str = "dialog", separator: str = "\n") -> str:
    """Join the turns in ``example[field]`` with ``separator``; a turn is a string or a ``{"role", "content"}``
    dict (whose content is used), e.g. DailyDialog's ``dialog`` column or a ``messages`` column."""
    turns = example[field]
    if isinstance(turns, str) or not isinstance(turns, Sequence):
        raise TypeError(f"column {field!r} must hold a list of turns, got {type(turns).__name__}")
    texts = []
    for i, turn in enumerate(turns):
        if isinstance(turn, Mapping):
            turn = turn["content"]
        if not isinstance(turn, str):
            raise TypeError(f"turn {i} of column {field!r} is {type(turn).__name__}, not a string or a message dict")
        texts.append(turn)
    return separator.join(texts)


def format_translation(example: Mapping[str, Any], *, field: str = "translation", language: str = "en") -> str:
    """One language of a translation pair: ``example[field][language]`` (e.g. EuroParl, WMT)."""
    pair = example[field]
    if not isinstance(pair, Mapping):
        raise TypeError(f"column {field!r} must hold a {{language: text}} dict, got {type(pair).__name__}")
    value = pair.get(language)
    if value is None:  # Arrow fills a language missing from a row with None
        available = [lang for lang, text in pair.items() if text is not None]
        raise KeyError(f"{field}[{language!r}] (languages in this row: {', '.join(available) or 'none'})")
    return value


def format_template(example: Mapping[str, Any], *, template: str) -> str:
    """``template.format(**example)``, e.g. ``"Question: {question}\\nAnswer: {answer}"``."""
    return template.format(**example)


FORMATTERS: dict[str, Callable[..., str]] = {
    "field": format_field,
    "join_turns": format_join_turns,
    "translation": format_translation,
    "template": format_template,
}
"""Built-in formatters by name; each is ``(example: dict, **kwargs) -> str``."""


def resolve_formatter(formatter: str | Callable[..., str], what: str = "dataset") -> Callable[..., str]:
    """The formatter function for a built-in name, a ``"package.module:function"`` string or a callable."""
    if callable(formatter):
        return formatter
    if not isinstance(formatter, str):
        raise DatasetLoadError(f"{what}: formatter must be a name or a callable, got {type(formatter).__name__}")
    if formatter in FORMATTERS:
        return FORMATTERS[formatter]
    builtins = ", ".join(FORMATTERS)
    if ":" not in formatter:
        raise DatasetLoadError(
            f"{what}: unknown formatter {formatter!r}; built-in formatters: {builtins}, "
            f"or give an importable 'package.module:function'"
        )
    return import_function(formatter, f"{what}: formatter {formatter!r}", error=DatasetLoadError)


def _formatter_label(formatter: str | Callable[..., str]) -> str:
    return formatter if isinstance(formatter, str) else getattr(formatter, "__qualname__", repr(formatter))


# ---------------------------------------------------------------------------------------------------------- loading


def _to_dataset(spec: DatasetSpec, what: str):
    """The spec's source as a ``datasets.Dataset`` (first ``max_rows`` rows), or :class:`DatasetLoadError`."""
    import datasets

    source = spec.source
    if isinstance(source, (str, os.PathLike)):
        dataset = load_dataset_from(source, spec.split, what=what, name=spec.subset)
    elif spec.subset is not None:
        raise DatasetLoadError(f"{what}: subset {spec.subset!r} needs a hub id as source, got {type(source).__name__}")
    elif isinstance(source, datasets.DatasetDict):
        if spec.split not in source:
            raise DatasetLoadError(
                f"{what}: the DatasetDict has no split {spec.split!r}; available splits: {', '.join(source) or 'none'}"
            )
        dataset = source[spec.split]
    elif isinstance(source, datasets.Dataset):
        dataset = source
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        dataset = _rows_to_dataset(list(source), what)
    else:
        raise DatasetLoadError(
            f"{what}: unsupported source type {type(source).__name__}; give a path or hub id, "
            "a datasets.Dataset or a list of dicts"
        )
    if spec.max_rows is not None:
        if isinstance(spec.max_rows, bool) or not isinstance(spec.max_rows, int) or spec.max_rows < 0:
            raise DatasetLoadError(f"{what}: max_rows must be a non-negative integer or None, got {spec.max_rows!r}")
        dataset = dataset.select(range(min(spec.max_rows, len(dataset))))
    if len(dataset) == 0:
        after = f" after max_rows={spec.max_rows}" if spec.max_rows is not None else ""
        raise DatasetLoadError(f"{what}: the dataset has no rows{after}")
    return dataset


def _rows_to_dataset(rows: list, what: str):
    import datasets

    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DatasetLoadError(f"{what}: row {i} of the list is a {type(row).__name__}, not a dict")
    columns = list(dict.fromkeys(key for row in rows for key in row))  # union of keys, first-seen order
    try:
        return datasets.Dataset.from_dict({c: [row.get(c) for row in rows] for c in columns})
    except Exception as err:  # pyarrow raises ArrowInvalid / ArrowTypeError for mixed types
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DatasetLoadError(f"{what}: cannot build a dataset from the list of dicts: {first_line}") from err


def _required_columns(formatter: str | Callable[..., str], kwargs: Mapping[str, Any], what: str) -> list[str]:
    """Columns a built-in formatter needs (checked before formatting, for a clear message)."""
    if formatter == "template":
        if not isinstance(kwargs["template"], str):
            raise DatasetLoadError(f"{what}: template must be a string, got {type(kwargs['template']).__name__}")
        names = []
        for _, name, _, _ in string.Formatter().parse(kwargs["template"]):
            if name is None:
                continue
            top = name.split(".")[0].split("[")[0]
            if top == "" or top.isdigit():
                raise DatasetLoadError(f"{what}: template fields must be named (got '{{{name}}}')")
            names.append(top)
        return list(dict.fromkeys(names))
    if formatter in FORMATTERS:
        default = inspect.signature(FORMATTERS[formatter]).parameters["field"].default
        return [kwargs.get("field", default)]
    return []


def _check_kwargs(fn: Callable[..., str], kwargs: Mapping[str, Any], label: str, what: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some callables (C functions) have no signature; nothing to check
        return
    try:
        signature.bind({}, **kwargs)
    except TypeError as err:
        params = list(signature.parameters.values())[1:]
        accepted = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise DatasetLoadError(
            f"{what}: bad formatter_kwargs {dict(kwargs)} for formatter {label!r} ({err}); "
            f"it accepts: {', '.join(accepted) or 'nothing'}"
        ) from err


def _format_rows(dataset, fn: Callable[..., str], kwargs: Mapping[str, Any], label: str, what: str) -> list[str]:
    texts: list[str] = []
    for i, example in enumerate(dataset):
        try:
            text = fn(example, **kwargs)
        except KeyError as err:
            raise DatasetLoadError(
                f"{what}: formatter {label!r} failed on row {i}: missing key {err}; row keys: {list(example)}"
            ) from err
        except Exception as err:
            raise DatasetLoadError(
                f"{what}: formatter {label!r} failed on row {i}: {type(err).__name__}: {err}"
            ) from err
        if not isinstance(text, str):
            raise DatasetLoadError(
                f"{what}: formatter {label!r} returned {type(text).__name__} for row {i}, not a string: {text!r:.80}"
            )
        texts.append(text)
    return texts


def _load_one(spec: DatasetSpec, text_column: str, keep_columns: bool):
    import datasets

    what = f"dataset {spec.name!r}"
    formatter = spec.formatter
    kwargs = dict(spec.formatter_kwargs or {})
    if formatter is None:
        if spec.text_field is None:
            raise DatasetLoadError(f"{what}: give a text_field or a formatter (built-ins: {', '.join(FORMATTERS)})")
        formatter = "field"
    if formatter == "field" and "field" not in kwargs:
        if spec.text_field is None:
            raise DatasetLoadError(f"{what}: the 'field' formatter needs text_field or formatter_kwargs['field']")
        kwargs["field"] = spec.text_field
    fn = resolve_formatter(formatter, what)
    label = _formatter_label(formatter)
    _check_kwargs(fn, kwargs, label, what)

    dataset = _to_dataset(spec, what)
    columns = list(dataset.column_names)
    for column in _required_columns(formatter, kwargs, what):
        if column not in columns:
            role = "the text field" if formatter == "field" else f"needed by formatter {label!r}"
            raise DatasetLoadError(f"{what}: no column {column!r} ({role}); its columns: {columns}")

    texts = _format_rows(dataset, fn, kwargs, label, what)
    if spec.min_chars:
        if isinstance(spec.min_chars, bool) or not isinstance(spec.min_chars, int) or spec.min_chars < 0:
            raise DatasetLoadError(f"{what}: min_chars must be a non-negative integer, got {spec.min_chars!r}")
        keep = [i for i, text in enumerate(texts) if len(text.strip()) >= spec.min_chars]
        if not keep:
            raise DatasetLoadError(f"{what}: no row has at least min_chars={spec.min_chars} characters of text")
        if len(keep) < len(texts):
            logger.info("%s: dropped %d of %d rows shorter than min_chars=%d", what, len(texts) - len(keep),
                        len(texts), spec.min_chars)  # fmt: skip
            dataset, texts = dataset.select(keep), [texts[i] for i in keep]
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty:
        raise DatasetLoadError(
            f"{what}: {len(empty)} of {len(texts)} row(s) have empty text after formatting "
            f"(first: row {empty[0]}); fix or filter the data (rows are never skipped silently)"
        )
    features = datasets.Features({text_column: datasets.Value("string")})
    if not keep_columns:
        return datasets.Dataset.from_dict({text_column: texts}, features=features)
    if text_column in columns:
        dataset = dataset.remove_columns(text_column)
    return dataset.add_column(text_column, texts, feature=features[text_column])


def load_text_datasets(
    specs: Sequence[DatasetSpec | Mapping[str, Any]],
    *,
    text_column: str = "text",
    keep_columns: bool = False,
) -> dict[str, datasets.Dataset]:
    """Load every spec and return ``{name: datasets.Dataset}`` in the order given, each with a string column
    ``text_column`` (the other columns are dropped unless ``keep_columns``; a clashing column is replaced).

    ``specs`` are :class:`DatasetSpec` objects or dicts with the same keys. Raises
    :class:`~trl_ext.data.loading.DatasetLoadError` naming the dataset and the offending item (see the module
    docstring), and ``FileNotFoundError`` for a path-like source that does not exist. Names are checked (unique,
    non-empty) before anything is loaded.
    """
    if isinstance(specs, (Mapping, str)) or not isinstance(specs, Sequence):
        raise DatasetLoadError(f"specs must be a list of dataset specs, got {type(specs).__name__}")
    if len(specs) == 0:
        raise DatasetLoadError("no datasets given: specs is empty")
    parsed = [DatasetSpec.from_dict(spec) for spec in specs]
    seen: set[str] = set()
    for i, spec in enumerate(parsed):
        if not isinstance(spec.name, str) or not spec.name.strip():
            raise DatasetLoadError(f"dataset spec {i}: name must be a non-empty string, got {spec.name!r}")
        if spec.name in seen:
            raise DatasetLoadError(f"dataset {spec.name!r}: duplicate name (spec {i}); names must be unique")
        seen.add(spec.name)
    return {spec.name: _load_one(spec, text_column, keep_columns) for spec in parsed}
