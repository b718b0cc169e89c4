"""Callables for the function-teacher tests, imported as ``fixtures_teachers:NAME``.

Labels used by the tests: ``["billing", "delivery", "other"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CALLS: list[int] = []  # batch sizes seen by ``counting``


def by_keyword(texts: Sequence[str]) -> list[str]:
    """A label string per text."""
    out = []
    for t in texts:
        if "invoice" in t or "charge" in t:
            out.append("billing")
        elif "parcel" in t:
            out.append("delivery")
        else:
            out.append("other")
    return out


def as_dicts(texts: Sequence[str]) -> list[dict[str, float]]:
    """{label: score} dicts that do not sum to 1 and leave a label out."""
    return [{"billing": 3.0, "delivery": 1.0} if "invoice" in t else {"other": 0.5} for t in texts]


def as_lists(texts: Sequence[str]) -> list[list[float]]:
    """Probabilities in label order."""
    return [[0.2, 0.7, 0.1] if "parcel" in t else [0.6, 0.2, 0.2] for t in texts]


def mixed_bad(texts: Sequence[str]) -> list[Any]:
    """One good answer, then things outside the contract, by text."""
    table: dict[str, Any] = {
        "ok": "billing",
        "unknown label": "refunds",
        "unknown key": {"refunds": 1.0},
        "short list": [0.5, 0.5],
        "negative": [1.0, -0.5, 0.5],
        "zeros": [0, 0, 0],
        "none": None,
        "int": 2,
    }
    return [table[t] for t in texts]


def fails_on_boom(texts: Sequence[str]) -> list[str]:
    """Raises for any batch holding 'boom'; so a batch is retried per item."""
    CALLS.append(len(texts))
    for t in texts:
        if "boom" in t:
            raise RuntimeError(f"cannot handle {t!r}")
    return ["other" for _ in texts]


def wrong_length(texts: Sequence[str]) -> list[str]:
    """Always one result short."""
    return ["other"] * (len(texts) - 1)


class Model:
    """An object with a predict method, to test ``module:obj.method``."""

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Every text is delivery."""
        return ["delivery" for _ in texts]


model = Model()
NOT_CALLABLE = 42
