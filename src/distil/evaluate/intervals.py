"""Percentile-bootstrap confidence intervals: the generic engine and evaluate()'s paired figures.

:func:`bootstrap` draws seeded resamples in chunks and hands them to a statistics function; the
``resampled_*`` kernels compute one figure per resample in a vectorised pass.  :func:`paired_intervals`
is the set of intervals ``metrics.json`` reports (``ci``): the teacher and the student are resampled
together, so retention and both accuracies come from the same resamples.

**Repeated texts.**  When a test file repeats a text, its rows share one answer from each model, so
they are not independent draws: resampling rows makes intervals too narrow.  With ``groups`` (one id
per row, e.g. the index of its text) the bootstrap resamples *groups* with replacement (a cluster
bootstrap) and each drawn group brings all of its rows; without repeats it is the row bootstrap.

**Draws.**  A statistics function receives a (b, n) array describing b resamples: either integer row
indices (the row bootstrap, each row one resample drawn with replacement) or float row
multiplicities (the cluster bootstrap: how many times each row is in each resample).  The
``resampled_*`` kernels accept both.

**ECE.**  The plug-in ECE is biased upward, and its bootstrap replicates more so, so its percentile
interval misses a calibrated model's true value almost always.  ``ci["ece"]`` is instead the
percentile interval of the replicates re-centred on the plug-in value, with its lower end lowered by
the noise floor (:func:`distil.calibrate.ece_noise_floor`): the plug-in's bias lies between 0 (grossly
miscalibrated) and the noise floor (calibrated), so the interval covers both cases; it is
conservative (coverage above the level in simulation, see ``benchmarks/bench_stats.py``) and holds
both the plug-in and the debiased ECE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from distil.calibrate import ece_noise_floor, group_codes, plugin_ece
from distil.evaluate.metrics import N_BINS, bin_index
from distil.evaluate.scoring import Reference

StatFn = Callable[[np.ndarray], dict[str, np.ndarray]]

__all__ = [
    "StatFn",
    "bootstrap",
    "paired_intervals",
    "resample_weights",
    "resampled_accuracy",
    "resampled_ece",
    "resampled_macro_f1",
]

_CELLS = 4_000_000  # elements of one chunk of draws (bounds memory)


def _group_codes(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int] | None:
    """Dense codes of ``groups`` and their count (:func:`distil.calibrate.group_codes`), or None when
    every row is its own group."""
    if groups is None:
        return None
    codes, n_groups = group_codes(groups, n)
    return (codes, n_groups) if n_groups < n else None


def _draw_chunk(rng: np.random.Generator, b: int, n: int, clusters: tuple[np.ndarray, int] | None) -> np.ndarray:
    """b resamples: (b, n) row indices, or with clusters (b, n) row multiplicities of b group resamples."""
    if clusters is None:
        return rng.integers(0, n, size=(b, n))
    codes, n_groups = clusters
    picks = rng.integers(0, n_groups, size=(b, n_groups))
    off = np.arange(b, dtype=np.int64)[:, None] * n_groups
    counts = np.bincount((off + picks).ravel(), minlength=b * n_groups).reshape(b, n_groups)
    return np.asarray(counts[:, codes], dtype=np.float64)


def _draws(
    stats: StatFn, n: int, *, n_resamples: int, seed: int, chunk: int | None, groups: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Every statistic on every resample: name → (n_resamples,) values."""
    rng = np.random.default_rng(seed)
    clusters = _group_codes(groups, n)
    chunk = chunk or max(1, min(n_resamples, _CELLS // max(n, 1)))
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        for name, vals in stats(_draw_chunk(rng, b, n, clusters)).items():
            parts.setdefault(name, []).append(np.asarray(vals, dtype=np.float64))
        done += b
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _percentile_interval(vals: np.ndarray, level: float) -> tuple[float, float] | None:
    """The (1−level)/2 and (1+level)/2 percentiles of the finite values (None if there are none)."""
    v = vals[np.isfinite(vals)]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap(
    stats: StatFn,
    n: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals for several statistics computed on the same resamples.

    ``stats(draws)`` receives b resamples at a time (see the module doc: (b, n) integer row
    indices, or with repeated ``groups`` (b, n) float row multiplicities of a cluster bootstrap
    that resamples groups) and returns name → (b,) array of that statistic per resample.  Resamples
    are drawn from ``numpy.random.default_rng(seed)`` in chunks (to bound memory) and the interval
    is the (1−level)/2 and (1+level)/2 percentiles, ignoring nan resamples.  ``groups`` with no
    repeated id is the row bootstrap (the same draws as without it).
    """
    if n <= 0:
        return {}
    vals = _draws(stats, n, n_resamples=n_resamples, seed=seed, chunk=chunk, groups=groups)
    out = {name: _percentile_interval(v, level) for name, v in vals.items()}
    return {name: iv for name, iv in out.items() if iv is not None}


def resample_weights(draws: np.ndarray, n: int) -> np.ndarray:
    """(b, n) float multiplicities of ``draws``: counted from row indices, or passed through."""
    d = np.asarray(draws)
    if not np.issubdtype(d.dtype, np.integer):
        return np.asarray(d, dtype=np.float64)
    b = d.shape[0]
    off = np.arange(b, dtype=np.int64)[:, None] * n
    return np.bincount((off + d).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _weighted_counts(labels: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """(b, k) weighted count of each label per resample."""
    b = w.shape[0]
    key = (np.arange(b, dtype=np.int64)[:, None] * k + np.asarray(labels, dtype=np.int64)[None, :]).ravel()
    return np.bincount(key, weights=w.ravel(), minlength=b * k).reshape(b, k)


def resampled_accuracy(correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Accuracy of each resample: the (weighted) mean of ``correct`` over each resample."""
    ok = np.asarray(correct, dtype=np.float64)
    w = resample_weights(idx, ok.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((w @ ok) / w.sum(axis=1))


def resampled_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample (classes present in either array of that resample), vectorised."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    w = resample_weights(idx, t.size)
    tp = _weighted_counts(t, w * (t == p)[None, :], k)
    denom = _weighted_counts(t, w, k) + _weighted_counts(p, w, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)
        return np.asarray(f1.sum(axis=1) / (denom > 0).sum(axis=1))


def resampled_ece(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Plug-in ECE of each resample, vectorised with one bincount per chunk."""
    c = np.asarray(conf, dtype=np.float64)
    gap = np.asarray(correct, dtype=np.float64) - c
    w = resample_weights(idx, c.size)
    per_bin = _weighted_counts(bin_index(c, n_bins), w * gap[None, :], n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.abs(per_bin).sum(axis=1) / w.sum(axis=1))


def _ece_interval(
    replicates: np.ndarray, conf: np.ndarray, correct: np.ndarray, groups: np.ndarray | None, level: float
) -> tuple[float, float] | None:
    """The bias-aware ECE interval (module doc): re-centred percentiles, lower end minus the noise floor."""
    point = plugin_ece(conf, correct)
    ok = replicates[np.isfinite(replicates)]
    if ok.size == 0:
        return None
    iv = _percentile_interval(ok - (ok.mean() - point), level)
    if iv is None:
        return None
    return iv[0] - ece_noise_floor(conf, groups=groups), iv[1]


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
        idx = resample_weights(idx, self.agree.size)  # once for every kernel
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
        idx = resample_weights(idx, self.agree.size)  # once for every kernel
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
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """metrics.json's ``ci``: 95% intervals of the headline figures, student and teacher resampled together.

    The figures are resampled over the rows ``ref`` scores (the rows with a gold label, or every row);
    when that leaves rows out, agreement (which needs no gold) gets its own interval over every row.
    ``groups`` (one id per row: the index of its text) makes repeated texts move together (a cluster
    bootstrap over texts); ``ci["ece"]`` is the bias-aware interval of the module doc.
    """
    rows, truth = ref.rows, ref.labels
    agree = (s_pred == t_pred).astype(np.float64)
    sp, tp = s_pred[rows], t_pred[rows]
    paired = _Paired(agree=agree[rows], s_ok=(sp == truth).astype(np.float64), t_ok=(tp == truth).astype(np.float64),
                     s_pred=sp, t_pred=tp, truth=truth, s_conf=s_conf[rows], k=k)
    stats = paired.against_gold if ref.is_gold else paired.against_teacher
    g_rows = None if groups is None else np.asarray(groups).reshape(-1)[rows]
    if rows.size == 0:
        return {}
    vals = _draws(stats, int(rows.size), n_resamples=n_resamples, seed=seed, chunk=None, groups=g_rows)
    ci = {name: iv for name, v in vals.items() if (iv := _percentile_interval(v, 0.95)) is not None}
    if (ece_iv := _ece_interval(vals["ece"], paired.s_conf, paired.s_ok, g_rows, 0.95)) is not None:
        ci["ece"] = ece_iv
    if rows.size < agree.size:
        ci["agreement"] = bootstrap(
            lambda idx: {"a": resampled_accuracy(agree, idx)}, int(agree.size), n_resamples=n_resamples, seed=seed,
            groups=groups,
        )["a"]
    return ci
