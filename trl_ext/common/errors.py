"""User errors and call-site warnings shared by every family (docs/architecture.md).

:class:`UserInputError` marks an error that names a mistake in the user's input (a config value, a dataset column,
a path, a name): the recipes and console scripts print its message as one line and exit with status 2
(:func:`trl_ext.common.recipes.run_main`), where any other exception is a bug and keeps its traceback. The
concrete errors subclass it together with the builtin a caller would catch (``ValueError``, ``TypeError``,
``FileNotFoundError``).

:func:`warn_at_caller` issues a warning attributed to the first frame outside trl_ext, TRL, transformers and the
dataclass machinery, i.e. the user's line that built the config or trainer.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

__all__ = [
    "ConfigError",
    "DataError",
    "InputTypeError",
    "MissingPathError",
    "ReturnValueError",
    "UnknownNameError",
    "UserInputError",
    "warn_at_caller",
]


class UserInputError(Exception):
    """Base of the errors that name a mistake in the user's input (printed as one line by the recipes)."""


class ConfigError(UserInputError, ValueError):
    """An invalid config value or combination of values."""


class DataError(UserInputError, ValueError):
    """A dataset or row that does not have the columns or values the trainer needs."""


class InputTypeError(UserInputError, TypeError):
    """An argument of the wrong type (a config of the wrong class, a reward function's return value, ...)."""


class ReturnValueError(UserInputError, ValueError):
    """A user function (a reward function, a scorer) returned a value of the wrong size or content."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A file or folder named by the user that does not exist."""


class UnknownNameError(UserInputError, ValueError):
    """A name (strategy, task, trainer, mode, ...) that is not registered; the message lists the known ones."""


def _library_roots() -> tuple[str, ...]:
    """Folders whose frames are library code: trl_ext, and TRL and transformers when loaded."""
    import dataclasses

    roots = [str(Path(__file__).resolve().parents[1]), dataclasses.__file__]
    for name in ("trl", "transformers"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            roots.append(str(Path(module.__file__).resolve().parent))
    return tuple(roots)


def _is_internal(filename: str, roots: tuple[str, ...]) -> bool:
    if filename.startswith("<"):
        return filename == "<string>"  # a dataclass-generated __init__; "<stdin>" and the like are the user's
    return str(Path(filename).resolve()).startswith(roots)


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` with the stack level of the first frame outside the library code."""
    roots = _library_roots()
    frame = sys._getframe(1)
    level = 2  # stacklevel 1 is this function, 2 the frame that called it
    while frame is not None and _is_internal(frame.f_code.co_filename, roots):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
