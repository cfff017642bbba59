"""Convert an original selective-generalisation experiment ``config.json`` into a trl_ext recipe YAML.

The original code (seed 002) ran one experiment from a ``config.json`` with a top-level ``proxy_strategy``, data and
evaluation keys, and a nested ``finetune_config`` (its ``FinetuneConfig`` dataclass). :func:`convert_config` turns
such a config into the mapping that ``recipes/selective_generalisation.py`` reads (``--config out.yaml``); the
console script ``trl-ext-selective convert config.json [-o out.yaml]`` does the same from the command line.

Every original key is in :data:`KEY_MAPPING`, the one table behind the code and the docs (:func:`mapping_markdown`
renders it). A key is

* ``map``: converted to one or more trl_ext keys (the value converted where the meaning differs);
* ``ignore``: known and without effect on what is trained here (logging, hub checkpoints, the original's own
  evaluations, bookkeeping); dropped, with a note;
* ``unsupported``: it changes the experiment and trl_ext has no equivalent; dropped silently only when its value is
  neutral (e.g. ``null``, ``false``), otherwise an error.

Unknown keys, unsupported keys with a non-neutral value and values that cannot be converted are all reported
together in **one** :class:`~trl_ext.common.errors.ConfigError` that names every key; pass ``ignore=[...]``
(``--ignore KEY``) to drop such keys deliberately, and ``overrides={...}`` (``--set key=value``) to add or replace
trl_ext keys (e.g. a dataset path the original chose by name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl_ext.common.errors import ConfigError, MissingPathError
from trl_ext.selective.config import STRATEGIES

__all__ = [
    "KEY_MAPPING",
    "STRATEGY_ALIASES",
    "Conversion",
    "KeyRule",
    "convert",
    "convert_config",
    "load_original",
    "main",
    "mapping_markdown",
    "to_yaml",
    "write_converted",
]


from trl_ext.selective.convert_rules import (
    _REQUIRED_CUSTOM,
    _RULES,
    FT,
    KEY_MAPPING,
    STRATEGY_ALIASES,
    KeyRule,
    _Context,
    _Unmappable,
)

# --------------------------------------------------------------------------- conversion


@dataclass
class Conversion:
    """The result of :func:`convert`: the trl_ext mapping and what happened to every original key.

    Attributes:
        config: the trl_ext YAML mapping (recipe keys).
        source: where the original came from (a path, or ``"<dict>"``).
        mapped: original key -> the trl_ext keys it wrote.
        ignored: original key -> why it was dropped (``ignore`` rules, neutral ``unsupported`` values, keys given
            in ``ignore``).
        notes: remarks on value conversions the user should know (approximations).
    """

    config: dict[str, Any]
    source: str = "<dict>"
    mapped: dict[str, list[str]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_original(path: str | os.PathLike) -> dict[str, Any]:
    """Read an original ``config.json``.

    Raises:
        MissingPathError: the file does not exist.
        ConfigError: invalid JSON (naming the file, line and column) or a top level that is not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"original config {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    return data


def _flatten(original: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in original.items():
        if key == FT and isinstance(value, Mapping):
            for sub, sub_value in value.items():
                flat[f"{FT}.{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


def _resolve_strategy(original: Mapping[str, Any]) -> tuple[str, str | None]:
    """The trl_ext strategy and, if the name cannot be converted, the reason."""
    name = original.get("proxy_strategy", "naive")  # the original's default
    name = STRATEGY_ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in STRATEGIES:
        return "naive", f"unknown strategy {original.get('proxy_strategy')!r} (known: {', '.join(STRATEGIES)})"
    return name, None


def convert(
    original: Mapping[str, Any] | str | os.PathLike,
    *,
    ignore: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Conversion:
    """Convert an original experiment config (a mapping or the path of its ``config.json``) to trl_ext.

    Args:
        original: the original config, with a top-level ``proxy_strategy`` and a nested ``finetune_config``
            (an ``experiment_config`` wrapper, as in the original's ``results.json``, is unwrapped).
        ignore: original keys (``name`` or ``finetune_config.name``) to drop even though they cannot be mapped.
        overrides: trl_ext keys to add or replace after the conversion (e.g. a dataset path).

    Raises:
        ConfigError: one error naming every key that cannot be mapped (unknown keys, unsupported keys with a
            non-neutral value, values that cannot be converted, two keys that convert to different values of one
            trl_ext key), and the recipe keys still missing for ``data: custom``.
        MissingPathError: ``original`` is a path that does not exist.
    """
    source = "<dict>"
    if isinstance(original, (str, os.PathLike)):
        source = str(original)
        original = load_original(original)
    if not isinstance(original, Mapping):
        raise ConfigError(f"the original config must be a mapping or a path, got {type(original).__name__}")
    if "experiment_config" in original and isinstance(original["experiment_config"], Mapping):
        original = original["experiment_config"]  # a results.json
    if FT in original and not isinstance(original[FT], Mapping):
        raise ConfigError(f"{source}: {FT} must be an object, got {type(original[FT]).__name__}")

    ignore_set = set(ignore)
    strategy, strategy_problem = _resolve_strategy(original)
    ctx = _Context(strategy, original, original.get(FT) or {})
    flat = _flatten(original)
    result = Conversion({}, source)
    problems: dict[str, str] = {}
    written: dict[str, tuple[Any, int, str]] = {}  # trl_ext key -> (value, priority, original key)

    for key, value in flat.items():
        rule = _RULES.get(key)
        if key in ignore_set:
            result.ignored[key] = "dropped on request (ignore)"
            continue
        if rule is None:
            problems[key] = "unknown key"
            continue
        if rule.kind == "ignore":
            result.ignored[key] = rule.note
            continue
        if rule.kind == "unsupported":
            if any(value is n or (value == n and type(value) is type(n)) for n in rule.neutral):
                result.ignored[key] = f"neutral value {value!r}"
            else:
                problems[key] = f"no trl_ext equivalent ({rule.note}); value {value!r}"
            continue
        if key == "proxy_strategy" and strategy_problem:
            problems[key] = strategy_problem
            continue
        try:
            out = rule.convert(value, ctx) if rule.convert is not None else {}
        except _Unmappable as err:
            problems[key] = f"{err} (value {value!r})"
            continue
        result.mapped[key] = list(out)
        if not out and value is not None:
            result.ignored[key] = f"{value!r} writes nothing here ({rule.note or 'no trl_ext key'})"
        for target, new in out.items():
            if target in written:
                old, old_priority, old_key = written[target]
                if rule.priority < old_priority:
                    continue
                if rule.priority == old_priority and old != new:
                    problems[key] = f"gives {target}={new!r} but {old_key} gives {target}={old!r}"
                    continue
            written[target] = (new, rule.priority, key)

    if "proxy_strategy" not in flat:
        written["strategy"] = (strategy, 0, "proxy_strategy")
        result.notes.append("no proxy_strategy: the original's default 'naive'")
    elif strategy != original.get("proxy_strategy") and not strategy_problem:
        result.notes.append(f"proxy_strategy {original.get('proxy_strategy')!r} → {strategy!r}")
    config = {target: value for target, (value, _, _) in written.items()}
    config.update(overrides or {})
    if config.get("data") == "custom":
        missing = [name for name in _REQUIRED_CUSTOM if not config.get(name)]
        for name in missing:
            problems[f"<{name}>"] = f"data: custom needs {name}; give it with --set {name}=PATH (overrides)"
    if strategy == "safe_lora" and "safelora_base_model" in config:
        result.notes.append(
            "safe_lora: model_name_or_path must be the aligned model (proxy LoRA merged into the base); "
            "safelora_base_model is the original's base model"
        )
    if problems:
        lines = "\n".join(f"  - {key}: {why}" for key, why in problems.items())
        raise ConfigError(
            f"cannot convert {source}: {len(problems)} key(s) cannot be mapped:\n{lines}\n"
            "(drop a key deliberately with ignore=[...] / --ignore KEY)"
        )
    result.config = _ordered(config)
    return result


def convert_config(
    original: Mapping[str, Any] | str | os.PathLike,
    *,
    ignore: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The trl_ext YAML mapping of an original config (``convert(...).config``; arguments and errors there)."""
    return convert(original, ignore=ignore, overrides=overrides).config


_ORDER = (
    "strategy",
    "data",
    "outcome_dataset",
    "outcome_split",
    "outcome_eval_dataset",
    "outcome_eval_split",
    "proxy_dataset",
    "proxy_split",
    "negative_proxy_dataset",
    "negative_proxy_split",
    "proxy_eval_dataset",
    "model_name_or_path",
)


def _ordered(config: Mapping[str, Any]) -> dict[str, Any]:
    head = {k: config[k] for k in _ORDER if k in config}
    return {**head, **{k: v for k, v in config.items() if k not in head}}


def to_yaml(conversion: Conversion) -> str:
    """The YAML text of a conversion: a comment header (source, ignored keys, notes), then the mapping."""
    import yaml

    header = [
        f"# Converted by trl-ext-selective convert from {conversion.source}",
        "# Run:",
        ("#   python recipes/selective_generalisation.py --config THIS_FILE"),
    ]
    if conversion.notes:
        header += ["# Notes:"] + [f"#   - {note}" for note in conversion.notes]
    if conversion.ignored:
        header += ["# Ignored original keys:"] + [f"#   - {k}: {why}" for k, why in conversion.ignored.items()]
    body = yaml.safe_dump(conversion.config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def write_converted(
    original: Mapping[str, Any] | str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    ignore: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Convert ``original`` and write the YAML to ``output`` (parent folders created); returns the YAML text.

    With ``output=None`` nothing is written. Errors as :func:`convert`.
    """
    text = to_yaml(convert(original, ignore=ignore, overrides=overrides))
    if output is not None:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return text


def mapping_markdown() -> str:
    """:data:`KEY_MAPPING` as a Markdown table (original key | kind | trl_ext key | conversion / note)."""
    rows = ["| original key | kind | trl_ext key | conversion / note |", "|---|---|---|---|"]
    for rule in KEY_MAPPING:
        target = ", ".join(f"`{t.strip()}`" for t in rule.target.split(",")) if rule.target else "—"
        note = rule.note.replace("|", "\\|")
        if rule.kind == "unsupported":
            neutral = ", ".join("null" if n is None else json.dumps(n) for n in rule.neutral)
            note = f"{note} (allowed: {neutral})"
        rows.append(f"| `{rule.key}` | {rule.kind} | {target} | {note} |")
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- command line


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value else None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``trl-ext-selective`` (subcommands ``convert`` and ``mapping``)."""
    parser = argparse.ArgumentParser(prog="trl-ext-selective", description="Selective-generalisation tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert an original config.json to a trl_ext recipe YAML")
    conv.add_argument("config", help="the original experiment config.json")
    conv.add_argument("-o", "--output", help="write the YAML here (default: print it)")
    conv.add_argument(
        "--ignore", action="append", default=[], metavar="KEY", help="drop an original key that cannot be mapped"
    )
    conv.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="add or replace a trl_ext key (YAML value)"
    )
    sub.add_parser("mapping", help="print the key mapping as a Markdown table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``trl-ext-selective``: ``convert config.json [-o out.yaml] [--ignore KEY] [--set K=V]`` or
    ``mapping``. Returns the exit status; a user error prints one line to stderr and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "mapping":
            sys.stdout.write(mapping_markdown())
            return 0
        text = write_converted(args.config, args.output, ignore=args.ignore, overrides=_parse_set(args.set))
    except (ConfigError, MissingPathError) as err:
        print(f"trl-ext-selective: error: {err}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"[trl_ext] wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
