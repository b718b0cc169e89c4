"""Shared by the tests/stats simulations: the allowance for the number of repetitions."""

from __future__ import annotations

import math


def upper_margin(level: float, reps: int, z: float = 3.0) -> float:
    """The largest measured rate consistent with a true rate of ``level`` over ``reps``: level + z SE."""
    return level + z * math.sqrt(level * (1.0 - level) / reps)


def lower_margin(level: float, reps: int, z: float = 3.0) -> float:
    """The smallest measured rate consistent with a true rate of ``level`` over ``reps``: level − z SE."""
    return level - z * math.sqrt(level * (1.0 - level) / reps)
