"""distil: distil a big teacher into a small, measured student for one task.

Public API (imported lazily so that ``import distil`` stays light)::

    from distil import Task, label, train, evaluate, load
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Task", "__version__", "evaluate", "label", "labeled_set", "load", "train"]

if TYPE_CHECKING:
    from distil.artifact import load
    from distil.evaluate import evaluate
    from distil.label import label, labeled_set
    from distil.task import Task
    from distil.train import train

_LAZY = {
    "Task": ("distil.task", "Task"),
    "label": ("distil.label", "label"),
    "labeled_set": ("distil.label", "labeled_set"),
    "train": ("distil.train", "train"),
    "evaluate": ("distil.evaluate", "evaluate"),
    "load": ("distil.artifact", "load"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'distil' has no attribute {name!r}")
