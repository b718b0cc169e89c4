"""Percentile-bootstrap confidence intervals: the generic engine and evaluate()'s paired figures.

:func:`bootstrap` draws seeded resamples in chunks and hands them to a statistics function; the
``resampled_*`` kernels compute one figure per resample in a vectorised pass.  :func:`paired_intervals`
is the set of intervals ``metrics.json`` reports (``ci``): the teacher and the student are resampled
together, so retention and both accuracies come from the same resamples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from distil.evaluate.metrics import N_BINS, bin_index
from distil.evaluate.scoring import Reference

StatFn = Callable[[np.ndarray], dict[str, np.ndarray]]

__all__ = [
    "StatFn",
    "bootstrap",
    "paired_intervals",
    "resampled_accuracy",
    "resampled_ece",
    "resampled_macro_f1",
]


def bootstrap(
    stats: StatFn,
    n: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals for several statistics computed on the same resamples.

    ``stats(idx)`` receives a (b, n) array of row indices (each row one resample drawn with
    replacement) and returns name → (b,) array of that statistic per resample.  Resamples
    are drawn from ``numpy.random.default_rng(seed)`` in chunks (to bound memory) and the
    interval is the (1−level)/2 and (1+level)/2 percentiles, ignoring nan resamples.
    """
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(n_resamples, 4_000_000 // max(n, 1)))
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        for name, vals in stats(idx).items():
            parts.setdefault(name, []).append(np.asarray(vals, dtype=np.float64))
        done += b
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, tuple[float, float]] = {}
    for name, chunks in parts.items():
        vals = np.concatenate(chunks)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, [lo_q, hi_q])
        out[name] = (float(lo), float(hi))
    return out


def resampled_accuracy(correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Accuracy of each resample: mean of ``correct`` over each row of ``idx``."""
    return np.asarray(np.asarray(correct, dtype=np.float64)[idx].mean(axis=1))


def resampled_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample (classes present in either array of that resample), vectorised."""
    b = idx.shape[0]
    t = np.asarray(y_true, dtype=np.int64)[idx]
    p = np.asarray(y_pred, dtype=np.int64)[idx]
    off = np.arange(b, dtype=np.int64)[:, None] * k
    tp = np.bincount((off + t)[t == p], minlength=b * k).reshape(b, k)
    support = np.bincount((off + t).ravel(), minlength=b * k).reshape(b, k)
    predicted = np.bincount((off + p).ravel(), minlength=b * k).reshape(b, k)
    denom = support + predicted
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
        return np.asarray(f1.sum(axis=1) / (denom > 0).sum(axis=1))


def resampled_ece(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """ECE of each resample, vectorised with one bincount per chunk."""
    b, n = idx.shape
    bins = bin_index(conf, n_bins)[idx]
    key = (np.arange(b, dtype=np.int64)[:, None] * n_bins + bins).ravel()
    c = np.asarray(conf, dtype=np.float64)[idx].ravel()
    ok = np.asarray(correct, dtype=np.float64)[idx].ravel()
    m = b * n_bins
    gap = np.bincount(key, weights=ok, minlength=m) - np.bincount(key, weights=c, minlength=m)
    return np.asarray(np.abs(gap.reshape(b, n_bins)).sum(axis=1) / n)


@dataclass(frozen=True)
class _Paired:
    """The chosen student's and the teacher's answers on the scored rows, ready to resample together."""

    agree: np.ndarray  # (m,) 1.0 where the student agrees with the teacher
    s_ok: np.ndarray  # (m,) 1.0 where the student matches the reference
    t_ok: np.ndarray  # (m,) 1.0 where the teacher matches the reference
    s_pred: np.ndarray  # (m,) the student's label
    t_pred: np.ndarray  # (m,) the teacher's label
    truth: np.ndarray  # (m,) the reference label
    s_conf: np.ndarray  # (m,) the student's confidence
    k: int

    def common(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Agreement and the student's ECE against the reference: reported with or without gold."""
        return {"agreement": resampled_accuracy(self.agree, idx), "ece": resampled_ece(self.s_conf, self.s_ok, idx)}

    def against_gold(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Both accuracies, their ratio (retention) and both macro-F1s, on the same resamples."""
        sa, ta = resampled_accuracy(self.s_ok, idx), resampled_accuracy(self.t_ok, idx)
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = sa / ta
        return {
            **self.common(idx),
            "student.accuracy": sa,
            "teacher.accuracy": ta,
            "retention": ret,
            "student.macro_f1": resampled_macro_f1(self.truth, self.s_pred, self.k, idx),
            "teacher.macro_f1": resampled_macro_f1(self.truth, self.t_pred, self.k, idx),
        }

    def against_teacher(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Without gold, retention is agreement and macro-F1 is the student's against the teacher."""
        out = self.common(idx)
        out["retention"] = out["agreement"]
        out["student.macro_f1_vs_teacher"] = resampled_macro_f1(self.truth, self.s_pred, self.k, idx)
        return out


def paired_intervals(
    s_pred: np.ndarray,
    s_conf: np.ndarray,
    t_pred: np.ndarray,
    ref: Reference,
    k: int,
    *,
    n_resamples: int,
    seed: int,
) -> dict[str, tuple[float, float]]:
    """metrics.json's ``ci``: 95% intervals of the headline figures, student and teacher resampled together.

    The figures are resampled over the rows ``ref`` scores (the rows with a gold label, or every row);
    when that leaves rows out, agreement (which needs no gold) gets its own interval over every row.
    """
    rows, truth = ref.rows, ref.labels
    agree = (s_pred == t_pred).astype(np.float64)
    sp, tp = s_pred[rows], t_pred[rows]
    paired = _Paired(agree=agree[rows], s_ok=(sp == truth).astype(np.float64), t_ok=(tp == truth).astype(np.float64),
                     s_pred=sp, t_pred=tp, truth=truth, s_conf=s_conf[rows], k=k)
    stats = paired.against_gold if ref.is_gold else paired.against_teacher
    ci = bootstrap(stats, int(rows.size), n_resamples=n_resamples, seed=seed)
    if rows.size < agree.size:
        ci["agreement"] = bootstrap(
            lambda idx: {"a": resampled_accuracy(agree, idx)}, int(agree.size), n_resamples=n_resamples, seed=seed
        )["a"]
    return ci
