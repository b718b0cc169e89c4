"""Drift: is recent traffic still like the data the student was trained and calibrated on?

:func:`drift` compares a sample of recent inputs with the artifact's held-out set on three signals
and says, in plain words, whether to retrain:

1. **Out-of-distribution share.**  The OOD guard (``router.json`` + ``ood.npz``) flags about
   ``1 − quantile`` (≈ 1 %) of in-distribution inputs by construction.  A one-sided binomial test
   asks whether the recent share is above that; a significant excess that is also at least twice
   the expected share means new kinds of inputs are arriving.
2. **Label shift.**  The student's predicted label distribution on recent traffic against its
   predicted distribution on the held-out set (the same model on both sides, so the student's own
   errors cancel).  Reported as total variation ``TV = ½ Σ|p − q|`` and the population stability
   index ``PSI = Σ (p − q) ln(p / q)`` (smoothed).  With many labels and few texts both are large by
   chance alone, so the noise floor is simulated: multinomial samples of the same size drawn from
   the held-out distribution give the TV expected without drift; the p-value is the share of
   simulated TVs at least as large as the observed one.  TV against the *teacher's* held-out labels
   is reported too, for reference.
3. **Teacher share.**  The share of recent inputs the router sends to the teacher against the
   expected share from calibration: more fallbacks cost more and hint at drift.

The recommendation is to retrain when signal 1 or 2 is significant (p < ``alpha``) and large
(OOD share ≥ 2× expected; TV ≥ ``min_tv``).  Retraining means: label the recent inputs (the
teacher's answers to served fallbacks are already in the journal) and run ``distil train`` again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.cascade import Cascade
from distil.errors import DataError
from distil.route import Router


@dataclass
class DriftReport:
    """What :func:`drift` found; :meth:`summary` is the text the CLI prints."""

    n: int
    ood_share: float | None
    expected_ood_share: float | None
    ood_pvalue: float | None
    teacher_share: float
    expected_teacher_share: float | None
    tv: float
    tv_noise_floor: float
    label_pvalue: float
    psi: float
    tv_vs_teacher: float
    top_shifts: list[dict[str, Any]] = field(default_factory=list)
    retrain: bool = False
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """A few plain lines: the numbers and the recommendation."""

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1%}"

        lines = [f"recent inputs: {self.n}"]
        if self.ood_share is not None:
            lines.append(
                f"out of distribution: {pct(self.ood_share)} (expected ~{pct(self.expected_ood_share)}, "
                f"p = {self.ood_pvalue:.3g})"
            )
        lines.append(
            f"label shift vs held-out (student predictions): TV {self.tv:.3f} "
            f"(noise floor {self.tv_noise_floor:.3f} at this sample size, p = {self.label_pvalue:.3g}), "
            f"PSI {self.psi:.3f}; TV vs teacher labels {self.tv_vs_teacher:.3f}"
        )
        lines.append(
            f"routed to the teacher: {pct(self.teacher_share)} (expected {pct(self.expected_teacher_share)})"
        )
        if self.top_shifts:
            moves = ", ".join(
                f"{s['label']} {s['reference']:.1%}→{s['recent']:.1%}" for s in self.top_shifts[:5]
            )
            lines.append(f"largest label moves: {moves}")
        lines.extend(f"note: {n}" for n in self.notes)
        if self.retrain:
            lines.append("recommendation: RETRAIN — " + "; ".join(self.reasons))
            lines.append(
                "  label the recent inputs (`distil label`; served fallbacks are already in the journal), "
                "then `distil train` again"
            )
        else:
            lines.append("recommendation: no retraining needed — recent traffic looks like the training data")
        return "\n".join(lines)


def _dist(idx: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(idx, minlength=k).astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """``½ Σ |p − q|`` of two distributions over the same labels."""
    return float(0.5 * np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).sum())


def psi(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> float:
    """Population stability index ``Σ (p − q) ln(p / q)`` with ``eps`` added to empty bins."""
    pp = np.asarray(p, np.float64) + eps
    qq = np.asarray(q, np.float64) + eps
    pp, qq = pp / pp.sum(), qq / qq.sum()
    return float(((pp - qq) * np.log(pp / qq)).sum())


def tv_null(q: np.ndarray, n: int, *, sims: int = 1000, seed: int = 0) -> np.ndarray:
    """Total variations between ``q`` and ``sims`` samples of size ``n`` drawn from ``q`` (no drift)."""
    rng = np.random.default_rng(seed)
    qq = np.asarray(q, np.float64)
    qq = qq / qq.sum()
    draws = rng.multinomial(n, qq, size=sims) / float(n)
    return np.asarray(0.5 * np.abs(draws - qq[None, :]).sum(axis=1))


def drift(
    artifact_dir: str | Path,
    recent_texts: Sequence[str],
    *,
    router: Router | None = None,
    alpha: float = 0.01,
    min_tv: float = 0.1,
    sims: int = 1000,
    seed: int = 0,
) -> DriftReport:
    """Compare ``recent_texts`` with the artifact's held-out data; say whether to retrain.

    ``router`` reuses a loaded router (else ``Router.load(artifact_dir)``).  ``alpha`` is the
    significance level of both tests, ``min_tv`` the smallest label shift worth retraining for.
    """
    from scipy.stats import binom

    from distil.artifact import load_artifact

    texts = [t for t in recent_texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(
            f"drift: no usable recent texts (got {len(recent_texts)} rows, all empty)",
            hint="pass a file of recent inputs with a text column",
        )
    art = load_artifact(artifact_dir)
    router = router or Router.load(art)
    labels = router.labels
    k = len(labels)
    heldout = art.heldout()
    if len(heldout) == 0:
        raise DataError(f"{art.path}: the held-out set is empty; nothing to compare with")

    notes: list[str] = []
    if len(texts) < len(recent_texts):
        notes.append(f"{len(recent_texts) - len(texts)} empty texts skipped")
    decisions = Cascade(router).decide(texts)  # who would answer each recent input when served
    n = len(decisions)
    pred = np.array([labels.index(d.label) for d in decisions], dtype=np.int64)
    p_recent = _dist(pred, k)
    q_student = _dist(np.asarray(router.student.predict_proba(heldout.texts).argmax(axis=1)), k)
    order = [labels.index(name) for name in heldout.labels]  # heldout column → router label index
    q_teacher = _dist(np.array([order[i] for i in heldout.hard], dtype=np.int64), k)

    tv = total_variation(p_recent, q_student)
    null = tv_null(q_student, n, sims=sims, seed=seed)
    floor = float(np.quantile(null, 1.0 - alpha))
    label_p = float((1 + np.sum(null >= tv)) / (1 + sims))
    teacher_share = float(np.mean([d.source == "teacher" for d in decisions]))
    thr = router.config.threshold
    expected_teacher = thr.teacher_share if thr.n > 0 else None

    ood_share = expected_ood = ood_p = None
    if router.ood is not None:
        flagged = int(sum(d.ood for d in decisions))
        ood_share = flagged / n
        rate = router.ood.heldout_flag_rate_
        expected_ood = rate if not math.isnan(rate) and rate > 0 else 1.0 - router.ood.quantile
        ood_p = float(binom.sf(flagged - 1, n, expected_ood)) if flagged else 1.0
    else:
        notes.append("the artifact has no OOD guard (router.json/ood.npz): OOD share not measured")

    reasons: list[str] = []
    if ood_share is not None and ood_p is not None and expected_ood is not None and (
        ood_p < alpha and ood_share >= 2 * expected_ood
    ):
        reasons.append(
            f"{ood_share:.1%} of recent inputs are unlike the training data (expected ~{expected_ood:.1%})"
        )
    if label_p < alpha and tv >= min_tv:
        reasons.append(f"the predicted label mix moved (TV {tv:.3f}, noise floor {floor:.3f})")
    if n < 200:
        notes.append(f"only {n} recent inputs: the tests have little power; collect more for a firmer answer")

    diffs = p_recent - q_student
    top = np.argsort(-np.abs(diffs))[:10]
    shifts = [
        {"label": labels[i], "recent": float(p_recent[i]), "reference": float(q_student[i])}
        for i in top if abs(diffs[i]) > 0
    ]
    return DriftReport(
        n=n, ood_share=ood_share, expected_ood_share=expected_ood, ood_pvalue=ood_p,
        teacher_share=teacher_share, expected_teacher_share=expected_teacher, tv=tv, tv_noise_floor=floor,
        label_pvalue=label_p, psi=psi(p_recent, q_student),
        tv_vs_teacher=total_variation(p_recent, q_teacher),
        top_shifts=shifts, retrain=bool(reasons), reasons=reasons, notes=notes,
    )
