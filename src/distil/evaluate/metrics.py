"""Pure quality metrics on label indices (numpy only): confusion, accuracy, F1, calibration.

Every function takes integer label arrays (and, for calibration, the confidence of each prediction)
and returns plain floats or arrays; nothing here knows about teachers, students or files.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distil.calibrate import calibration_error, confidence_bins, debiased_ece, ece_noise_floor, plugin_ece

N_BINS = 15

__all__ = [
    "N_BINS",
    "accuracy",
    "bin_index",
    "calibration_error",
    "confusion_matrix",
    "debiased_ece",
    "ece_noise_floor",
    "expected_calibration_error",
    "macro_f1",
    "per_class_scores",
    "reliability_bins",
]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true (reference) class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of positions where the two label arrays agree (nan when empty)."""
    t = np.asarray(y_true)
    if t.size == 0:
        return float("nan")
    return float(np.mean(t == np.asarray(y_pred)))


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn does)."""
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
            "predicted": predicted.astype(np.int64)}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` or ``y_pred``.

    This equals ``sklearn.metrics.f1_score(y_true, y_pred, average="macro")`` (which
    also averages over the labels present in either array).
    """
    s = per_class_scores(y_true, y_pred, k)
    present = (s["support"] + s["predicted"]) > 0
    if not present.any():
        return float("nan")
    return float(s["f1"][present].mean())


def bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence: bins are (i/M, (i+1)/M], the first one also holds 0 (:func:`confidence_bins`)."""
    return confidence_bins(conf, n_bins)


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """The plug-in ECE = Σ_b |B_b|/n · |acc(B_b) − conf(B_b)| over ``n_bins`` equal-width bins (Guo et al. 2017).

    ``conf`` is the probability given to the predicted label; ``correct`` whether the
    prediction matched the reference.  Equivalently (1/n) Σ_b |Σ correct − Σ conf|.

    Biased upward: a perfectly calibrated model scores about 0.03–0.04 at n = 600.  Report
    :func:`debiased_ece` (this minus :func:`ece_noise_floor`, the expected plug-in ECE of a perfectly
    calibrated model with the same confidences), or :func:`calibration_error` for all three figures;
    see :mod:`distil.calibrate`.
    """
    if np.asarray(conf).size == 0:
        return float("nan")
    return plugin_ece(conf, correct, n_bins)


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Reliability-diagram data: per bin its bounds, count, mean confidence and accuracy (None if empty)."""
    c = np.asarray(conf, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    b = bin_index(c, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_c = np.bincount(b, weights=c, minlength=n_bins)
    sum_ok = np.bincount(b, weights=ok, minlength=n_bins)
    out = []
    for i in range(n_bins):
        n = int(count[i])
        out.append({
            "lo": i / n_bins,
            "hi": (i + 1) / n_bins,
            "count": n,
            "confidence": float(sum_c[i] / n) if n else None,
            "accuracy": float(sum_ok[i] / n) if n else None,
        })
    return out
