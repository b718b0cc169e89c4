"""The bootstrap with repeated texts, simulated: resampling texts keeps the nominal coverage."""

from __future__ import annotations

import numpy as np
from stats_helpers import lower_margin

from distil.evaluate.intervals import bootstrap, paired_intervals, resampled_accuracy
from distil.evaluate.scoring import reference


def _repeated(rng: np.random.Generator, texts: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``texts`` texts, each repeated 1 + Poisson(4) times; one answer (right w.p. ``p``) per text."""
    reps = 1 + rng.poisson(4.0, texts)
    ok_text = (rng.random(texts) < p).astype(np.float64)
    group = np.repeat(np.arange(texts), reps)
    return ok_text[group], group


def test_bootstrap_over_texts_covers_the_accuracy_at_the_nominal_level() -> None:
    rng = np.random.default_rng(0)
    reps, p = 200, 0.8
    by_text = by_row = 0
    for r in range(reps):
        ok, group = _repeated(rng, 200, p)

        def stats(draws: np.ndarray, ok: np.ndarray = ok) -> dict[str, np.ndarray]:
            return {"acc": resampled_accuracy(ok, draws)}

        lo, hi = bootstrap(stats, ok.size, n_resamples=400, seed=r, groups=group)["acc"]
        by_text += lo <= p <= hi
        lo, hi = bootstrap(stats, ok.size, n_resamples=400, seed=r)["acc"]
        by_row += lo <= p <= hi
    assert by_text / reps >= lower_margin(0.95, reps), by_text
    assert by_row / reps < 0.8  # rows as independent draws: intervals too narrow


def test_groups_without_repeats_are_the_row_bootstrap() -> None:
    rng = np.random.default_rng(1)
    n, k = 300, 7
    t_pred = rng.integers(0, k, n)
    s_pred = np.where(rng.random(n) < 0.8, t_pred, rng.integers(0, k, n))
    conf = rng.uniform(0.3, 1.0, n)
    gold = np.where(rng.random(n) < 0.9, t_pred, -1)
    ref = reference(gold, t_pred)
    plain = paired_intervals(s_pred, conf, t_pred, ref, k, n_resamples=200, seed=3)
    unique = paired_intervals(s_pred, conf, t_pred, ref, k, n_resamples=200, seed=3, groups=np.arange(n) * 2)
    assert plain == unique


def test_repeated_rows_move_together() -> None:
    # every text twice: the cluster interval equals the row interval of the distinct texts
    rng = np.random.default_rng(2)
    ok = (rng.random(400) < 0.7).astype(np.float64)
    doubled = np.repeat(ok, 2)

    def once(draws: np.ndarray) -> dict[str, np.ndarray]:
        return {"a": resampled_accuracy(ok, draws)}

    def twice(draws: np.ndarray) -> dict[str, np.ndarray]:
        return {"a": resampled_accuracy(doubled, draws)}

    a = bootstrap(once, 400, n_resamples=500, seed=9)["a"]
    b = bootstrap(twice, 800, n_resamples=500, seed=9, groups=np.repeat(np.arange(400), 2))["a"]
    assert np.allclose(a, b, atol=0.01)
