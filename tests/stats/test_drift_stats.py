"""Drift's two tests, simulated: false alarms with no drift within their level, power with a real shift."""

from __future__ import annotations

import numpy as np
import pytest
from stats_helpers import lower_margin, upper_margin

from distil.drift import label_shift_test, ood_share_test

REPS = 300


def _label_mix(k: int, rng: np.random.Generator) -> np.ndarray:
    """An imbalanced label distribution like banking77's (shares spread about 3x)."""
    return rng.dirichlet(np.full(k, 5.0))


@pytest.mark.parametrize("k", [77, 150])
def test_label_shift_false_alarms_with_no_drift_stay_within_the_level(k: int) -> None:
    rng = np.random.default_rng(k)
    q = _label_mix(k, rng)
    level = 0.05
    alarms = 0
    for r in range(REPS):
        recent, reference = rng.multinomial(1000, q), rng.multinomial(300, q)
        alarms += label_shift_test(recent, reference, level=level, sims=400, seed=r).pvalue < level
    assert alarms / REPS <= upper_margin(level, REPS), alarms


def test_label_shift_noise_floor_includes_the_reference_noise() -> None:
    # with no drift the observed TV sits below the floor about (1 - level) of the time
    rng = np.random.default_rng(3)
    q = _label_mix(77, rng)
    above = 0
    for r in range(100):
        res = label_shift_test(rng.multinomial(1000, q), rng.multinomial(300, q), level=0.05, sims=400, seed=r)
        above += res.tv > res.tv_noise_floor
    assert above / 100 <= upper_margin(0.05, 100)


def test_label_shift_finds_a_removed_label_and_30_percent_of_traffic_moved() -> None:
    rng = np.random.default_rng(11)
    k, level, min_tv = 77, 0.005, 0.1  # drift()'s defaults: alpha 0.01 over two tests
    q = _label_mix(k, rng)
    shifted = q.copy()
    shifted[0] = 0.0  # a removed label
    shifted = 0.7 * shifted / shifted.sum()
    shifted[1:6] += 0.3 / 5  # 30% of traffic moved onto five labels
    found = 0
    reps = 100
    for r in range(reps):
        res = label_shift_test(rng.multinomial(1000, shifted), rng.multinomial(300, q), level=level, seed=r)
        found += res.pvalue < level and res.tv >= min_tv
    assert found / reps >= lower_margin(0.9, reps), found


def _ood_counts(rng: np.random.Generator, m: int, n: int, quantile: float) -> tuple[int, int]:
    """The guard's construction: threshold at the held-out quantile; flags of n new in-distribution inputs."""
    held = rng.standard_normal(m)
    thr = np.quantile(held, quantile, method="higher")
    return int((held > thr).sum()), int((rng.standard_normal(n) > thr).sum())


@pytest.mark.parametrize("m", [300, 1500])
def test_ood_share_false_alarms_with_no_drift_stay_within_the_level(m: int) -> None:
    rng = np.random.default_rng(m)
    reps = 2000
    pvalues = np.empty(reps)
    for r in range(reps):
        f, flagged = _ood_counts(rng, m, 1000, 0.99)
        pvalues[r] = ood_share_test(flagged, 1000, f, m)
    for level in (0.01, 0.05):
        assert np.mean(pvalues < level) <= upper_margin(level, reps), (level, np.mean(pvalues < level))


def test_ood_share_test_finds_a_tripled_ood_share() -> None:
    rng = np.random.default_rng(5)
    found = 0
    for _ in range(100):
        held = rng.standard_normal(1500)
        thr = np.quantile(held, 0.99, method="higher")
        f = int((held > thr).sum())
        recent = np.concatenate([rng.standard_normal(980), rng.standard_normal(20) + 10.0])  # +2% foreign
        found += ood_share_test(int((recent > thr).sum()), 1000, f, 1500) < 0.005
    assert found / 100 >= lower_margin(0.9, 100)
