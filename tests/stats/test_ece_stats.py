"""ECE, simulated: a perfectly calibrated model scores about 0; the ECE interval covers the true value."""

from __future__ import annotations

import numpy as np
from stats_helpers import lower_margin

from distil.calibrate import calibration_error, crossfit_ece, plugin_ece
from distil.evaluate.intervals import paired_intervals
from distil.evaluate.scoring import reference


def _confidences(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.beta(5.0, 1.5, n), 0.05, 1.0)


def test_debiased_ece_of_a_perfectly_calibrated_model_is_about_zero_at_n_600() -> None:
    rng = np.random.default_rng(0)
    reps = 200
    plug, deb = np.empty(reps), np.empty(reps)
    for r in range(reps):
        conf = _confidences(rng, 600)
        ce = calibration_error(conf, rng.random(600) < conf, seed=r)
        plug[r], deb[r] = ce.plugin, ce.debiased
    assert plug.mean() > 0.02  # the plug-in's bias the debiasing removes
    se = deb.std() / np.sqrt(reps)
    assert abs(deb.mean()) <= 3 * se + 0.002, (deb.mean(), se)


def test_debiased_ece_keeps_a_real_miscalibration() -> None:
    rng = np.random.default_rng(1)
    conf = _confidences(rng, 5000)
    ok = rng.random(5000) < conf - 0.1  # 10 points overconfident
    ce = calibration_error(conf, ok)
    assert 0.08 < ce.debiased < 0.11 and ce.plugin >= ce.debiased


def _ece_case(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Student predictions with confidence ``conf`` and true accuracy ``conf − shift``; the true binned ECE."""
    k = 20
    conf = _confidences(rng, n)
    p_true = np.clip(conf - shift, 0.0, 1.0)
    ok = rng.random(n) < p_true
    t_pred = rng.integers(0, k, n)
    s_pred = np.where(ok, t_pred, (t_pred + 1) % k)
    truth = plugin_ece(conf, p_true)  # the binned ECE with the true accuracies
    return s_pred, conf, t_pred, truth


def test_ece_interval_covers_the_true_value_calibrated_or_not() -> None:
    rng = np.random.default_rng(2)
    reps = 80
    for shift in (0.0, 0.1):
        covered = 0
        for r in range(reps):
            s_pred, conf, t_pred, truth = _ece_case(rng, 600, shift)
            ci = paired_intervals(s_pred, conf, t_pred, reference(None, t_pred), 20, n_resamples=300, seed=r)
            covered += ci["ece"][0] <= truth <= ci["ece"][1]
        assert covered / reps >= lower_margin(0.95, reps), (shift, covered)


def test_after_calibration_is_measured_on_rows_the_temperature_never_saw() -> None:
    rng = np.random.default_rng(4)
    n, k = 1500, 5
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    res = crossfit_ece(logits * 3.0, np.eye(k)[y], y)  # overconfident by 3x
    assert res.folds == 5 and abs(res.temperature - 3.0) < 0.5
    assert res.before > 0.1 and abs(res.after) < 0.03
