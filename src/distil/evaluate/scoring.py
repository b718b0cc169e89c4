"""Scoring answers against the reference: gold labels where the test file has them, else the teacher.

:func:`reference` decides once what the figures are measured against; every function below takes
that :class:`Reference` instead of asking again whether there is gold.  The figures that exist only
with gold (the teacher's own quality) come back as one optional :class:`GoldFigures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from distil.evaluate.metrics import (
    accuracy,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_scores,
    reliability_bins,
)
from distil.evaluate.schema import ClassScore, Confusion, GoldFigures, Quality, Reliability, Retention

__all__ = [
    "Reference",
    "confusion",
    "disagreements",
    "gold_figures",
    "per_class",
    "quality",
    "reference",
    "reliability",
    "retention",
]

TOP_CONFUSED = 20


@dataclass(frozen=True)
class Reference:
    """What the figures are scored against, and on which rows."""

    kind: str  # "gold" or "teacher"
    rows: np.ndarray  # positions scored: the rows with a gold label, or every row
    labels: np.ndarray  # the reference label at each of those positions
    gold: np.ndarray | None  # (n,) gold label per row, -1 where none; None without gold

    @property
    def is_gold(self) -> bool:
        """Whether the reference is gold labels."""
        return self.gold is not None


def reference(gold: np.ndarray | None, t_pred: np.ndarray) -> Reference:
    """Gold labels on the rows that have one; without gold, the teacher's labels on every row."""
    if gold is None:
        return Reference("teacher", np.arange(t_pred.size), t_pred, None)
    rows = np.flatnonzero(gold >= 0)
    return Reference("gold", rows, gold[rows], gold)


def quality(probs: np.ndarray, t_pred: np.ndarray, ref: Reference, k: int) -> Quality:
    """Agreement with the teacher, accuracy and macro-F1 against gold (if any), ECE against the reference."""
    pred, conf = probs.argmax(axis=1), probs.max(axis=1)
    scored = pred[ref.rows]
    return Quality(
        agreement=accuracy(t_pred, pred),
        accuracy=accuracy(ref.labels, scored) if ref.is_gold else None,
        macro_f1=macro_f1(ref.labels, scored, k) if ref.is_gold else None,
        ece=expected_calibration_error(conf[ref.rows], scored == ref.labels),
    )


def gold_figures(t_pred: np.ndarray, t_conf: np.ndarray, ref: Reference, k: int) -> GoldFigures | None:
    """The teacher against gold (accuracy, macro-F1, ECE, per-class F1, reliability); None without gold."""
    if not ref.is_gold:
        return None
    scored, conf, truth = t_pred[ref.rows], t_conf[ref.rows], ref.labels
    return GoldFigures(
        accuracy=accuracy(truth, scored),
        macro_f1=macro_f1(truth, scored, k),
        ece=expected_calibration_error(conf, scored == truth),
        per_class_f1=per_class_scores(truth, scored, k)["f1"],
        reliability=reliability_bins(conf, scored == truth),
    )


def retention(student: Quality, gold: GoldFigures | None) -> Retention:
    """Student accuracy ÷ teacher accuracy with gold; without gold, retention is agreement."""
    if gold is None or student.accuracy is None:
        return Retention(student.agreement, "agreement with the teacher (no gold labels given)")
    value = student.accuracy / gold.accuracy if gold.accuracy else float("nan")
    return Retention(value, "student accuracy / teacher accuracy (gold labels)")


def per_class(
    s_pred: np.ndarray, ref: Reference, labels: list[str], gold: GoldFigures | None
) -> list[ClassScore]:
    """Precision, recall, F1 and support of the student per label (and the teacher's F1 with gold)."""
    pcs = per_class_scores(ref.labels, s_pred[ref.rows], len(labels))
    return [
        ClassScore(
            label=name,
            support=int(pcs["support"][j]),
            precision=float(pcs["precision"][j]),
            recall=float(pcs["recall"][j]),
            f1=float(pcs["f1"][j]),
            teacher_f1=float(gold.per_class_f1[j]) if gold is not None else None,
        )
        for j, name in enumerate(labels)
    ]


def confusion(s_pred: np.ndarray, ref: Reference, labels: list[str]) -> Confusion:
    """The student's confusion matrix against the reference and its largest off-diagonal cells."""
    k = len(labels)
    cm = confusion_matrix(ref.labels, s_pred[ref.rows], k)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:TOP_CONFUSED]
    top = [
        {"reference": labels[int(i) // k], "predicted": labels[int(i) % k], "count": int(off.flat[int(i)])}
        for i in order if off.flat[int(i)] > 0
    ]
    return Confusion(reference=ref.kind, labels=labels, matrix=cm, top_confused=top)


def reliability(s_pred: np.ndarray, s_conf: np.ndarray, ref: Reference, gold: GoldFigures | None) -> Reliability:
    """Reliability-diagram data of the student against the reference (the teacher's with gold)."""
    student = reliability_bins(s_conf[ref.rows], s_pred[ref.rows] == ref.labels)
    return Reliability(reference=ref.kind, student=student, teacher=gold.reliability if gold else None)


def disagreements(
    uniques: list[str],
    rows: np.ndarray,
    row_numbers: list[int],
    t_probs: np.ndarray,
    s_probs: np.ndarray,
    gold: np.ndarray | None,
    labels: list[str],
    limit: int = 30,
) -> list[dict[str, Any]]:
    """disagreements.json: the student's most confident answers that differ from the teacher's, one per text."""
    s_pred, t_pred = s_probs.argmax(1), t_probs.argmax(1)
    idx = np.flatnonzero(s_pred != t_pred)
    idx = idx[np.argsort(-s_probs[idx, s_pred[idx]], kind="stable")]
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i in idx:
        u = int(rows[i])
        if u in seen:
            continue
        seen.add(u)
        out.append({
            "row": row_numbers[i],
            "text": uniques[u],
            "teacher": labels[int(t_pred[i])],
            "teacher_conf": float(t_probs[i, t_pred[i]]),
            "student": labels[int(s_pred[i])],
            "student_conf": float(s_probs[i, s_pred[i]]),
            "gold": labels[int(gold[i])] if gold is not None and gold[i] >= 0 else None,
        })
        if len(out) >= limit:
            break
    return out
