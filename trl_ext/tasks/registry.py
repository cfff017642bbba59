"""Name -> task class registry. ``get_task("sat", n=10)`` builds a task; unknown names fail loudly."""

from __future__ import annotations

from typing import Any

from trl_ext.common.errors import UnknownNameError
from trl_ext.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise ValueError(f"task class {cls.__name__} has no `name`")
    if name in _TASKS and _TASKS[name] is not cls:
        raise ValueError(f"task name {name!r} is already registered by {_TASKS[name].__name__}")
    _TASKS[name] = cls
    return cls


def available_tasks() -> list[str]:
    """Sorted names of every registered task."""
    _load_builtin_tasks()
    return sorted(_TASKS)


def get_task_class(name: str) -> type[Task]:
    _load_builtin_tasks()
    if name not in _TASKS:
        raise UnknownNameError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def get_task(name: str, **params: Any) -> Task:
    """Instantiate the task registered as ``name`` with ``params``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the known names), or a parameter is
            not accepted by the task (the message names it).
    """
    cls = get_task_class(name)
    try:
        return cls(**params)
    except TypeError as err:  # unexpected keyword
        raise ValueError(f"task {name!r}: invalid parameters {sorted(params)}: {err}") from err


def _load_builtin_tasks() -> None:
    # Import for the registration side effect; kept lazy so that `import trl_ext` stays cheap.
    from trl_ext.tasks import abd, ded, sat  # noqa: F401
