"""Tasks as plug-ins: one module per task, found by name.

A task module defines a :class:`~tfn.tasks.base.Task` subclass and decorates it with
:func:`register`. Every module of this package is imported on the first lookup; other packages
register theirs through the ``tfn.tasks`` entry-point group (``[project.entry-points."tfn.tasks"]
mytask = "mypackage.mytask"``). ``tfn train`` selects a task by ``data.name``.

Example:
    >>> "tetris" in available_tasks()
    True
    >>> get_task("gravity").monitor
    'rel_error'
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TYPE_CHECKING

from tfn.tasks.base import Task, TaskData

if TYPE_CHECKING:  # pragma: no cover
    from tfn.train.config import Config

__all__ = ["Task", "TaskData", "register", "get_task", "available_tasks", "make_task"]

_REGISTRY: dict[str, type[Task]] = {}
_discovered = False


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``data.name = cls.name``."""
    if not cls.name:
        raise ValueError(f"task {cls.__name__} has no name")
    data_name = cls.Data.model_fields["name"].annotation
    if getattr(data_name, "__args__", None) != (cls.name,):
        raise ValueError(
            f"task {cls.name!r}: {cls.Data.__name__}.name must be Literal[{cls.name!r}]"
        )
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"two tasks are named {cls.name!r}: {other} and {cls}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    from importlib.metadata import entry_points

    for entry in entry_points(group="tfn.tasks"):
        entry.load()


def available_tasks() -> list[str]:
    """Names of all registered tasks."""
    _discover()
    return sorted(_REGISTRY)


def get_task(name: str) -> type[Task]:
    """The task class named ``name``; ``KeyError`` with suggestions when unknown."""
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {name!r} (known: {', '.join(sorted(_REGISTRY))}){hint}")
    return _REGISTRY[name]


def make_task(cfg: Config) -> Task:
    """The task of a config, ready to give data and build its model."""
    return get_task(cfg.data.name)(cfg)
