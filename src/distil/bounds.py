"""Lower confidence bounds that student selection is decided by.

A ladder member is chosen only when the *lower bound* of its measured figure meets the target,
so a member whose true figure is below the target is chosen with probability at most ``alpha``
— for the whole ladder, not per member: each bound is taken at level ``1 − alpha / m`` for a
ladder of ``m`` members (Bonferroni), so the chance that *any* member below its target clears it
is at most ``alpha``.

* :func:`agreement_lower` — held-out agreement with the teacher is a binomial proportion: the
  one-sided Clopper–Pearson bound (exact, conservative).
* :func:`retention_lower` — retention is a ratio of two accuracies on the same validation rows
  (student / teacher); its bound is the paired percentile bootstrap of the ratio (rows resampled
  together, seeded), since the two accuracies are correlated and no exact interval exists.

``tests/stats/test_selection_stats.py`` measures the selection error these give.
"""

from __future__ import annotations

import numpy as np

from distil.route import clopper_pearson_lower

#: Family-wise error of selection: the chance of choosing a member whose true figure misses its target.
SELECTION_ALPHA = 0.05
BOOTSTRAP_DRAWS = 2000

__all__ = ["BOOTSTRAP_DRAWS", "SELECTION_ALPHA", "agreement_lower", "member_level", "retention_lower"]


def member_level(m: int, alpha: float = SELECTION_ALPHA) -> float:
    """The one-sided confidence level of each member's bound in a ladder of ``m`` (Bonferroni)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, found {alpha}")
    return 1.0 - alpha / max(1, int(m))


def agreement_lower(agree: np.ndarray, m: int, alpha: float = SELECTION_ALPHA) -> float:
    """Lower bound of the agreement rate from per-row matches ``agree`` (bool), ladder of ``m``."""
    a = np.asarray(agree, dtype=bool)
    if a.size == 0:
        return 0.0
    return float(clopper_pearson_lower(int(a.sum()), int(a.size), member_level(m, alpha)))


def retention_lower(
    student_correct: np.ndarray,
    teacher_correct: np.ndarray,
    m: int,
    alpha: float = SELECTION_ALPHA,
    *,
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> float:
    """Lower bound of ``mean(student_correct) / mean(teacher_correct)`` (paired bootstrap), ladder of ``m``.

    Resamples in which the teacher gets nothing right are dropped (the ratio is undefined there).
    """
    s = np.asarray(student_correct, dtype=np.float64)
    t = np.asarray(teacher_correct, dtype=np.float64)
    if s.shape != t.shape:
        raise ValueError(f"student and teacher rows differ: {s.shape} vs {t.shape}")
    if s.size == 0 or t.sum() == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    ratios: list[np.ndarray] = []
    chunk = max(1, min(draws, 4_000_000 // s.size))
    done = 0
    while done < draws:
        b = min(chunk, draws - done)
        idx = rng.integers(0, s.size, size=(b, s.size))
        ts, ss = t[idx].sum(axis=1), s[idx].sum(axis=1)
        ratios.append(ss[ts > 0] / ts[ts > 0])
        done += b
    r = np.concatenate(ratios)
    return float(np.quantile(r, 1.0 - member_level(m, alpha))) if r.size else 0.0
