"""Functions named in configs: ``"package.module:function"`` or ``"path/to/file.py:function"``.

Recipes take reward functions, scorers and formatters as strings (YAML and the command line cannot hold a Python
object); :func:`import_function` turns one into the function, with errors that name the config key.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trl_ext.common.errors import MissingPathError

__all__ = ["import_function"]


def import_function(spec: str, what: str = "function", error: type[Exception] = ValueError) -> Callable[..., Any]:
    """The callable named by ``spec``: ``"package.module:function"``, ``"path/to/file.py:function"`` (loaded from
    the file) or ``"package.module.function"``. Modules beside the launch directory are importable (as in TRL's
    scripts). ``what`` starts every error message; ``error`` is the exception type raised (``FileNotFoundError`` for a
    missing ``.py`` file)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise error(f"{what}: expected 'package.module:function' or 'file.py:function', got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise MissingPathError(f"{what}: file {module_name!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise error(f"{what}: cannot import module {module_name!r}: {err}") from err
    function = getattr(module, attr, None)
    if function is None:
        raise error(f"{what}: {module_name!r} has no function {attr!r}")
    if not callable(function):
        raise error(f"{what}: {spec!r} is a {type(function).__name__}, not a function")
    return function
