"""Derived fields of a sweep (docs/sweep.md, "Derived fields"): ``${key}`` references in a run's config to other
keys of the same merged config, resolved per run when the plan is built."""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any

from trl_ext.sweep.plan import SweepError, _key_path, config_keys

__all__ = ["REFERENCE_PATTERN", "has_references", "resolve_references"]


REFERENCE_PATTERN = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
"""``$${`` (a literal ``${``), ``${name}`` / ``${name:spec}`` (a reference), or an unterminated ``${``."""


def _parse_template(text: str) -> list[str | tuple[str, str]]:
    """Split ``text`` into literal pieces (``str``) and references ``(name, format_spec)``; ``[text]`` for none.

    Raises:
        ValueError: an unterminated ``${`` or an empty name (the message quotes the piece at fault).
    """
    pieces: list[str | tuple[str, str]] = []
    literal, pos = [], 0
    for match in REFERENCE_PATTERN.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token == "$${":
            literal.append("${")
            continue
        if match.group(1) is None:
            raise ValueError(f"'${{' without a closing '}}' in {text!r} (write '$${{' for a literal '${{')")
        name, _, spec = match.group(1).partition(":")
        if not name.strip():
            raise ValueError(f"empty reference '{token}' in {text!r}")
        pieces.extend(["".join(literal), (name.strip(), spec)])
        literal = []
    literal.append(text[pos:])
    pieces.append("".join(literal))
    return [p for p in pieces if p != ""] or [""]


def has_references(value: Any) -> bool:
    """Whether ``value`` (or a string anywhere inside it) holds a ``${...}`` reference or a ``$${`` escape."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(has_references(v) for v in value.values())
    if isinstance(value, list):
        return any(has_references(v) for v in value)
    return False


class _Resolver:
    """Resolves the derived fields of one config, each key at most once, in dependency order (depth first)."""

    def __init__(self, config: dict[str, Any], where: str) -> None:
        self.config = config
        self.where = where
        self.done: set[tuple[str, ...]] = set()
        self.stack: list[tuple[str, ...]] = []  # the keys being resolved, outermost first: a repeat is a cycle

    def error(self, key: tuple[str, ...], message: str) -> SweepError:
        """A :class:`SweepError` naming the run (``where``) and the field ``key``."""
        return SweepError(f"{self.where}: field '{'.'.join(map(str, key))}' {message}")

    def lookup(self, name: str, referrer: tuple[str, ...]) -> Any:
        """The resolved value of the key ``name`` (top-level, or a dotted path), referred to from ``referrer``."""
        path = _key_path(self.config, name)
        if path is None:
            known = config_keys(self.config)
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(close)}?" if close else " (write '$${' for a literal '${')"
            raise self.error(referrer, f"refers to '${{{name}}}', which is not a key of the run's config{hint}")
        key = tuple(path)
        if key in self.stack:
            cycle = " -> ".join(".".join(map(str, k)) for k in [*self.stack[self.stack.index(key) :], key])
            raise self.error(referrer, f"refers to '${{{name}}}': a cycle of references ({cycle})")
        self.resolve_key(key)
        node: Any = self.config
        for part in key:
            node = node[part]
        return node

    def resolve_key(self, key: tuple[str, ...]) -> None:
        """Resolve every reference in the value at ``key`` (in place), after the values it refers to."""
        if key in self.done:
            return
        parent: Any = self.config
        for part in key[:-1]:
            parent = parent[part]
        self.stack.append(key)
        parent[key[-1]] = self.resolve_value(parent[key[-1]], key)
        self.stack.pop()
        self.done.add(key)

    def resolve_value(self, value: Any, key: tuple[str, ...], in_list: bool = False) -> Any:
        """``value`` (at ``key``, or inside a list at ``key`` with ``in_list``) with its references replaced; a
        mapping resolves key by key (each a field of its own, unless inside a list), a list item by item."""
        if isinstance(value, dict):
            for sub in list(value):
                if in_list:  # not a key path of the config: a field of the list's key
                    value[sub] = self.resolve_value(value[sub], key, in_list=True)
                else:
                    self.resolve_key((*key, sub))
            return value
        if isinstance(value, list):
            return [self.resolve_value(item, key, in_list=True) for item in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        try:
            pieces = _parse_template(value)
        except ValueError as err:
            raise self.error(key, f"has a bad reference: {err}") from None
        if len(pieces) == 1 and isinstance(pieces[0], tuple) and not pieces[0][1]:
            return copy.deepcopy(self.lookup(pieces[0][0], key))  # the whole value: the referred value, as is
        text = []
        for piece in pieces:
            if isinstance(piece, str):
                text.append(piece)
                continue
            name, spec = piece
            referred = self.lookup(name, key)
            if isinstance(referred, (Mapping, list)):
                raise self.error(
                    key,
                    f"refers to '${{{name}}}', a {type(referred).__name__}, inside a string: only a value that is "
                    f"the reference alone ('${{{name}}}') can take a list or mapping",
                )
            try:
                text.append(format(referred, spec))
            except (ValueError, TypeError) as err:
                raise self.error(
                    key, f"refers to '${{{name}:{spec}}}': bad format spec for {referred!r}: {err}"
                ) from None
        return "".join(text)


def resolve_references(config: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """A copy of ``config`` with its derived fields resolved: every ``${name}`` in a string value (anywhere, nested
    mappings and lists included) replaced by the value of the key ``name`` of the same config.

    ``name`` is a top-level key or a dotted path into nested mappings (``${peft.r}``); ``${name:spec}`` formats the
    value with Python's ``format(value, spec)`` (``${seed:03d}``); ``$${`` is a literal ``${``. A string that is a
    single ``${name}`` and nothing else takes the referred value itself (a number stays a number, a list a list);
    elsewhere the value is formatted into the string (``format(value, "")``, so ``True``, ``None``, ``0.001``).
    Referred values that hold references are resolved first (any depth); plain braces (``{x}``, Jinja's ``{{ }}``,
    a ``str.format`` template) are left alone.

    Raises:
        SweepError: a reference to a key the config does not have, a cycle (``a`` -> ``b`` -> ``a``), a list or
            mapping inside a longer string, a bad format spec or an unterminated ``${``; the message names
            ``where``, the field and the reference.
    """
    resolved = copy.deepcopy(dict(config))
    if has_references(resolved):
        resolver = _Resolver(resolved, where)
        for key in list(resolved):
            resolver.resolve_key((key,))
    return resolved
