"""A team's 'existing code' used as a function teacher in tests: deterministic keyword rules.

These are real callables run through distil's function teacher (not canned replies): they read
the text and decide.  ``slow_counting`` also appends one line per text it answers to the file
named by $DISTIL_TEST_COUNTER, so tests can count teacher calls from outside the process.
"""

from __future__ import annotations

import os
import time

LABELS = ["card", "transfer", "cash", "other"]
_RULES = [("card", "card"), ("transfer", "transfer"), ("cash", "cash"), ("atm", "cash")]


def keyword(texts: list[str]) -> list[dict[str, float]]:
    """Soft keyword vote: each matching rule adds weight; 'other' keeps a floor."""
    out = []
    for t in texts:
        low = t.lower()
        scores = {lab: 0.0 for lab in LABELS}
        scores["other"] = 0.5
        for word, lab in _RULES:
            if word in low:
                scores[lab] += 2.0
        out.append(scores)
    return out


def with_invalid(texts: list[str]) -> list[str]:
    """Answers a label, except 'ERROR?' for texts that mention 'pin' (outside the label set)."""
    res = []
    for t, s in zip(texts, keyword(texts), strict=True):
        res.append("ERROR?" if "pin" in t.lower() else max(s, key=s.__getitem__))
    return res


def slow_counting(texts: list[str]) -> list[dict[str, float]]:
    """Like ``keyword`` but 20 ms per text, counting every answered text in $DISTIL_TEST_COUNTER."""
    path = os.environ["DISTIL_TEST_COUNTER"]
    out = []
    for t in texts:
        time.sleep(0.02)
        out.append(keyword([t])[0])
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("1\n")
    return out


def _banking_gold() -> dict[str, str]:
    import csv
    from pathlib import Path

    root = Path(os.environ.get("DISTIL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    with (root / "banking77" / "train.csv").open(encoding="utf-8") as fh:
        return {r["text"]: r["category"] for r in csv.DictReader(fh)}


_GOLD: dict[str, str] = {}


def banking_gold(texts: list[str]) -> list[str]:
    """An oracle teacher for banking77 texts: the gold intent (a stand-in for a perfect LLM)."""
    if not _GOLD:
        _GOLD.update(_banking_gold())
    return [_GOLD.get(t, "unknown") for t in texts]
