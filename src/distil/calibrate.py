"""Temperature scaling and the expected calibration error, measured honestly.

Guo et al. (2017), "On Calibration of Modern Neural Networks": one scalar ``T`` divides the
logits, fitted on held-out data to minimise the negative log-likelihood; it changes confidence,
never the argmax.  Here the targets are the teacher's probabilities (the student should be as
sure as the teacher), so the NLL is the cross-entropy against soft targets.

**ECE and its bias.**  The plug-in binned ECE ``(1/n) Σ_b |Σ_{i∈b} correct_i − Σ_{i∈b} conf_i|``
is biased upward: a perfectly calibrated model scores about 0.03–0.04 at n = 600 because each
bin's accuracy is itself noisy and ``|·|`` turns noise into error.  :func:`ece_noise_floor` is that
bias at a given set of confidences: the expected plug-in ECE of a *perfectly calibrated* model with
exactly these confidences (``correct_i ~ Bernoulli(conf_i)``), estimated by seeded simulation.
:func:`debiased_ece` is the plug-in minus the noise floor: unbiased when the model is calibrated
(so a calibrated model scores ≈ 0, and a small negative value means "indistinguishable from
calibrated"); for a clearly miscalibrated model it under-states the error by at most the noise
floor, which :func:`calibration_error` reports next to it.  :func:`ece` (the name train.py and the
tests use) returns the debiased figure unless ``debiased=False``.

**After calibration on unseen data.**  A temperature fitted and scored on the same rows flatters
itself; :func:`crossfit_ece` fits ``T`` on ``folds − 1`` folds, scores the remaining fold, and pools
the out-of-fold confidences, so "after" is measured on rows the temperature never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BINS = 15
NOISE_SIMS = 200

__all__ = [
    "N_BINS",
    "CalibrationError",
    "CrossfitECE",
    "calibration_error",
    "confidence_bins",
    "crossfit_ece",
    "debiased_ece",
    "ece",
    "ece_noise_floor",
    "fit_temperature",
    "group_codes",
    "plugin_ece",
]


def _nll(logits: np.ndarray, targets: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(targets * logq).sum(axis=1).mean())


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, *, lo: float = 0.05, hi: float = 20.0, iters: int = 60
) -> float:
    """The ``T`` in [lo, hi] minimising cross-entropy of ``softmax(logits/T)`` against ``targets``.

    ``targets`` are probabilities (n, k) — the teacher's soft labels, or one-hot labels.  Golden-
    section search on log T (the NLL is unimodal in T for a fixed argmax).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if len(z) == 0:
        return 1.0
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _nll(z, y, float(np.exp(c))), _nll(z, y, float(np.exp(d)))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _nll(z, y, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _nll(z, y, float(np.exp(d)))
    return float(np.exp((a + b) / 2.0))


# ---------------------------------------------------------------------------------------------
# ECE on (confidence, correct) pairs


def confidence_bins(conf: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence: bins are (i/M, (i+1)/M], the first one also holds 0."""
    c = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0)
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.asarray(np.searchsorted(inner, c, side="left"), dtype=np.int64)


def plugin_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """The plug-in ECE ``Σ_b |B_b|/n · |acc(B_b) − conf(B_b)|`` (biased upward; see the module doc).

    Equivalently ``(1/n) Σ_b |Σ correct − Σ conf|``; 0.0 for no rows.
    """
    c = np.asarray(conf, dtype=np.float64)
    if c.size == 0:
        return 0.0
    b = confidence_bins(c, n_bins)
    gap = np.bincount(b, weights=np.asarray(correct, dtype=np.float64) - c, minlength=n_bins)
    return float(np.abs(gap).sum() / c.size)


def group_codes(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """Dense codes 0..G-1 of ``groups`` (one per row; each row its own group when None) and G."""
    if groups is None:
        return np.arange(n, dtype=np.int64), n
    g = np.asarray(groups).reshape(-1)
    if g.size != n:
        raise ValueError(f"groups has {g.size} entries for {n} rows")
    _, codes = np.unique(g, return_inverse=True)
    codes = np.asarray(codes, dtype=np.int64).reshape(-1)
    return codes, int(codes.max()) + 1 if codes.size else 0


def ece_noise_floor(
    conf: np.ndarray,
    n_bins: int = N_BINS,
    *,
    groups: np.ndarray | None = None,
    sims: int = NOISE_SIMS,
    seed: int = 0,
) -> float:
    """The plug-in ECE a perfectly calibrated model with these confidences scores on average.

    Simulation: ``sims`` seeded draws of ``correct_i ~ Bernoulli(conf_i)``, the plug-in ECE of each,
    averaged (its Monte Carlo error is about ``sd / sqrt(sims)``, ≈ 0.001 at n = 600).  ``groups``
    (one id per row, e.g. the text) makes rows of one group share one draw, as repeated texts share
    one answer.
    """
    c = np.asarray(conf, dtype=np.float64)
    n = c.size
    if n == 0:
        return 0.0
    codes, n_groups = group_codes(groups, n)
    bins = confidence_bins(c, n_bins)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(sims, 2_000_000 // n))
    total, done = 0.0, 0
    while done < sims:
        s = min(chunk, sims - done)
        ok = (rng.random((s, n_groups))[:, codes] < c[None, :]).astype(np.float64)
        key = (np.arange(s, dtype=np.int64)[:, None] * n_bins + bins[None, :]).ravel()
        gap = np.bincount(key, weights=(ok - c[None, :]).ravel(), minlength=s * n_bins)
        total += float(np.abs(gap).sum()) / n
        done += s
    return total / sims


@dataclass(frozen=True)
class CalibrationError:
    """The plug-in ECE, what a perfectly calibrated model would score at this n, and their difference."""

    plugin: float
    noise_floor: float
    n: int

    @property
    def debiased(self) -> float:
        """Plug-in minus noise floor: ≈ 0 (possibly < 0) for a calibrated model."""
        return self.plugin - self.noise_floor


def calibration_error(
    conf: np.ndarray,
    correct: np.ndarray,
    n_bins: int = N_BINS,
    *,
    groups: np.ndarray | None = None,
    sims: int = NOISE_SIMS,
    seed: int = 0,
) -> CalibrationError:
    """Plug-in ECE and its noise floor (:func:`ece_noise_floor`) on the same rows."""
    c = np.asarray(conf, dtype=np.float64)
    return CalibrationError(
        plugin=plugin_ece(c, correct, n_bins),
        noise_floor=ece_noise_floor(c, n_bins, groups=groups, sims=sims, seed=seed),
        n=int(c.size),
    )


def debiased_ece(
    conf: np.ndarray,
    correct: np.ndarray,
    n_bins: int = N_BINS,
    *,
    groups: np.ndarray | None = None,
    sims: int = NOISE_SIMS,
    seed: int = 0,
) -> float:
    """Debiased ECE: the plug-in ECE minus the noise floor of a perfectly calibrated model.

    Unbiased when the model is calibrated (mean ≈ 0 at any n); under-states a real miscalibration
    by at most the noise floor.  Deterministic for a ``seed``.  0.0 for no rows.
    """
    return calibration_error(conf, correct, n_bins, groups=groups, sims=sims, seed=seed).debiased


def ece(probs: np.ndarray, reference: np.ndarray, *, n_bins: int = N_BINS, debiased: bool = True) -> float:
    """ECE of ``probs`` (n, k) against ``reference`` class indices, ``n_bins`` equal-width bins.

    Confidence is the top probability, correct whether the argmax equals ``reference``.  By default
    the debiased figure (:func:`debiased_ece`: plug-in minus the noise floor of a perfectly
    calibrated model at this n); ``debiased=False`` gives the plug-in
    ``Σ_b (|B_b| / n) · |accuracy(B_b) − confidence(B_b)|``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(reference)).astype(np.float64)
    return debiased_ece(conf, correct, n_bins) if debiased else plugin_ece(conf, correct, n_bins)


# ---------------------------------------------------------------------------------------------
# "After calibration" on rows the temperature never saw


@dataclass(frozen=True)
class CrossfitECE:
    """ECE before and after temperature scaling, "after" measured out of fold."""

    before: float  # debiased ECE of softmax(logits)
    after: float  # debiased ECE of softmax(logits / T_fold) on each fold, T_fold fitted on the other folds
    temperature: float  # T fitted on every row (the one to keep)
    folds: int


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def crossfit_ece(
    logits: np.ndarray,
    targets: np.ndarray,
    reference: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    n_bins: int = N_BINS,
) -> CrossfitECE:
    """ECE before and after temperature scaling with "after" measured on rows ``T`` never saw.

    The rows are split into ``folds`` seeded folds; for each fold ``T`` is fitted (against
    ``targets``, as :func:`fit_temperature`) on the other folds and applied to it; the debiased ECE
    of the pooled out-of-fold probabilities against ``reference`` is "after".  ``temperature`` is
    fitted on every row.  With fewer than 2 rows per fold, ``after`` is measured in sample.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n = len(z)
    temp = fit_temperature(z, y)
    k = min(folds, n // 2)
    before = ece(_softmax(z), reference, n_bins=n_bins)
    if k < 2:
        return CrossfitECE(before, ece(_softmax(z / temp), reference, n_bins=n_bins), temp, 1)
    fold = np.random.default_rng(seed).permutation(n) % k
    out = np.empty_like(z)
    for f in range(k):
        test = fold == f
        t_f = fit_temperature(z[~test], y[~test])
        out[test] = _softmax(z[test] / t_f)
    return CrossfitECE(before, ece(out, reference, n_bins=n_bins), temp, k)
