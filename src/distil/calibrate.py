"""Temperature scaling and expected calibration error.

Guo et al. (2017), "On Calibration of Modern Neural Networks": one scalar ``T`` divides the
logits, fitted on held-out data to minimise the negative log-likelihood; it changes confidence,
never the argmax.  Here the targets are the teacher's probabilities (the student should be as
sure as the teacher), so the NLL is the cross-entropy against soft targets.
"""

from __future__ import annotations

import numpy as np


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


def ece(probs: np.ndarray, reference: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error with ``n_bins`` equal-width confidence bins.

    ECE = Σ_b (|B_b| / n) · |accuracy(B_b) − confidence(B_b)|, where confidence is the top
    probability and accuracy is whether the argmax equals ``reference`` (class indices).
    """
    p = np.asarray(probs, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(reference)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)
