"""Drift: is recent traffic still like the data the student was trained and calibrated on?

:func:`drift` compares a sample of recent inputs with the artifact's held-out set (the *reference*
sample) on three signals and says, in plain words, whether to retrain.  Both samples are noisy, and
both tests account for it:

1. **Label shift** (:func:`label_shift_test`).  The student's predicted labels on recent traffic
   against its predicted labels on the held-out texts (the same model on both sides, so its own
   errors cancel), as a 2 × k table of counts.  Under no drift both rows are draws from one label
   distribution, so the test is a two-sample test of homogeneity: Pearson's chi-square statistic
   with a *permutation* null (tables with the same margins, drawn from the multivariate
   hypergeometric distribution), exact however sparse the cells.  The p-value is
   ``(1 + #{null ≥ observed}) / (1 + sims)``.  Reported with the total variation
   ``TV = ½ Σ|p − q|`` between the two samples, its noise floor (the TV the same permutations give at
   the test's level: what no drift looks like at these sample sizes), the population stability index
   ``PSI = Σ (p − q) ln(p / q)`` (smoothed), and TV against the teacher's held-out labels.
2. **Out-of-distribution share** (:func:`ood_share_test`).  The OOD guard flags held-out scores
   above an order statistic of those scores, so the true flag rate of in-distribution traffic is
   itself uncertain: with ``f`` of ``m`` held-out texts flagged, it is ``Beta(f + 1, m − f)``
   (exchangeability of continuous scores), and the number of flagged recent inputs is
   Beta-binomial ``(n, f + 1, m − f)`` under no drift.  The p-value is its upper tail.
3. **Teacher share.**  The share of recent inputs the router sends to the teacher against the
   expected share from calibration: more fallbacks cost more and hint at drift (reported, not tested).

**The decision.**  RETRAIN when a test is significant and large: label shift with p < ``alpha / t``
and TV ≥ ``min_tv``; OOD share with p < ``alpha / t`` and at least twice the expected share, where
``t`` is the number of tests run (2, or 1 without an OOD guard).  By Bonferroni, the probability of a
false RETRAIN when nothing drifted is at most ``alpha`` (the family-wise level; default 1 %); the
practical floors only lower it.  ``benchmarks/bench_stats.py`` measures it.  Both tests assume the
recent inputs are independent draws; a sample that repeats texts many times overstates its size.
Retraining means: label the recent inputs (the teacher's answers to served fallbacks are already in
the journal) and run ``distil train`` again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.cascade import Cascade
from distil.errors import DataError
from distil.route import Decision, OODDetector, Router

if TYPE_CHECKING:
    from distil.data import LabeledSet

__all__ = [
    "DriftReport",
    "LabelShift",
    "drift",
    "expected_ood_share",
    "label_shift_test",
    "ood_share_test",
    "psi",
    "total_variation",
    "tv_null",
]


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
    alpha: float = 0.01  # family-wise level of the RETRAIN decision
    test_level: float = 0.005  # level of each test (alpha / number of tests, Bonferroni)
    reference_n: int = 0  # held-out texts compared against
    chi2: float = 0.0  # the label test's Pearson statistic
    reference_ood_flagged: int | None = None  # held-out texts the OOD guard flags

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """A few plain lines: the numbers and the recommendation."""

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1%}"

        lines = [f"recent inputs: {self.n}; held-out reference: {self.reference_n}"]
        if self.ood_share is not None:
            lines.append(
                f"out of distribution: {pct(self.ood_share)} (expected ~{pct(self.expected_ood_share)}, "
                f"p = {self.ood_pvalue:.3g}, Beta-binomial null)"
            )
        lines.append(
            f"label shift vs held-out (student predictions): TV {self.tv:.3f} "
            f"(noise floor {self.tv_noise_floor:.3f} at these sample sizes, two-sample p = {self.label_pvalue:.3g}), "
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
        lines.append(
            f"decision at family-wise level {self.alpha:.3g} (each test at {self.test_level:.3g}, Bonferroni)"
        )
        if self.retrain:
            lines.append("recommendation: RETRAIN — " + "; ".join(self.reasons))
            lines.append(
                "  label the recent inputs (`distil label`; served fallbacks are already in the journal), "
                "then `distil train` again"
            )
        else:
            lines.append("recommendation: no retraining needed — recent traffic looks like the training data")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The statistics (pure functions of counts)


def _dist(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    return np.asarray(np.divide(c, total, out=np.zeros_like(c), where=total > 0))


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
    """Total variations between a *known* ``q`` and ``sims`` samples of size ``n`` drawn from it.

    A one-sample null: right only when ``q`` is exact.  :func:`drift` compares two samples, so it
    uses :func:`label_shift_test` (whose noise floor includes the reference sample's noise).
    """
    rng = np.random.default_rng(seed)
    qq = np.asarray(q, np.float64)
    qq = qq / qq.sum()
    draws = rng.multinomial(n, qq, size=sims) / float(n)
    return np.asarray(0.5 * np.abs(draws - qq[None, :]).sum(axis=1))


@dataclass(frozen=True)
class LabelShift:
    """The two-sample label-shift test: statistics, permutation p-value, TV noise floor."""

    tv: float
    chi2: float
    pvalue: float
    tv_noise_floor: float  # the (1 − level) quantile of TV under the permutation null
    n: int
    m: int


def _chi2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's homogeneity statistic of 2 × k tables with rows ``a`` (…, k) and ``b`` (…, k)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    tot = a + b
    n, m = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    big_n = n + m
    ea, eb = n * tot / big_n, m * tot / big_n
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = np.where(tot > 0, (a - ea) ** 2 / ea + (b - eb) ** 2 / eb, 0.0)
    return np.asarray(cells.sum(axis=-1))


def _tv_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * np.abs(_dist(a) - _dist(b)).sum(axis=-1))


def label_shift_test(
    recent: np.ndarray, reference: np.ndarray, *, level: float = 0.005, sims: int = 1000, seed: int = 0
) -> LabelShift:
    """Two-sample test that ``recent`` and ``reference`` label counts come from one distribution.

    Pearson's chi-square statistic of the 2 × k table, with the permutation null (``sims`` tables
    with the same margins: the recent row drawn from the multivariate hypergeometric distribution
    of the pooled counts, seeded).  Exact at any sparsity: the false-alarm rate at ``level`` is at
    most ``level`` when nothing drifted.  ``tv_noise_floor`` is the TV the same permutations exceed
    with probability ``level``.
    """
    a = np.asarray(recent, dtype=np.int64)
    b = np.asarray(reference, dtype=np.int64)
    n, m = int(a.sum()), int(b.sum())
    tv = float(_tv_rows(a, b))
    chi2 = float(_chi2(a, b))
    if n == 0 or m == 0:
        return LabelShift(tv=tv, chi2=chi2, pvalue=1.0, tv_noise_floor=float("nan"), n=n, m=m)
    pooled = a + b
    rng = np.random.default_rng(seed)
    null_a = rng.multivariate_hypergeometric(pooled, n, size=sims, method="count")
    null_b = pooled[None, :] - null_a
    null_chi2 = _chi2(null_a, null_b)
    pvalue = float((1 + np.sum(null_chi2 >= chi2 * (1 - 1e-12))) / (1 + sims))
    floor = float(np.quantile(_tv_rows(null_a, null_b), 1.0 - level))
    return LabelShift(tv=tv, chi2=chi2, pvalue=pvalue, tv_noise_floor=floor, n=n, m=m)


def expected_ood_share(reference_flagged: int, reference_n: int) -> float:
    """Mean of the in-distribution flag rate given ``f`` of ``m`` held-out texts flagged: ``(f+1)/(m+1)``."""
    return (reference_flagged + 1) / (reference_n + 1)


def ood_share_test(flagged: int, n: int, reference_flagged: int, reference_n: int) -> float:
    """P-value of ``flagged`` of ``n`` recent inputs flagged OOD when nothing drifted.

    The guard's threshold is an order statistic of the ``reference_n`` held-out scores, of which
    ``reference_flagged`` lie above it; the flag rate of new in-distribution inputs is then
    ``Beta(f + 1, m − f)`` and the recent count Beta-binomial ``(n, f + 1, m − f)``.  Upper tail
    ``P(X ≥ flagged)``; 1.0 when nothing is flagged.
    """
    from scipy.stats import betabinom

    if flagged <= 0 or n <= 0:
        return 1.0
    f, m = int(reference_flagged), int(reference_n)
    return float(betabinom.sf(flagged - 1, n, f + 1, max(m - f, 1)))


# ---------------------------------------------------------------------------------------------
# drift(): the artifact, the recent texts, the report


@dataclass(frozen=True)
class _Samples:
    """The student's predicted-label counts on both samples and the teacher's on the reference."""

    recent: np.ndarray
    reference: np.ndarray
    teacher: np.ndarray


@dataclass(frozen=True)
class _OOD:
    share: float
    expected: float
    pvalue: float
    reference_flagged: int


def _usable(recent_texts: Sequence[str]) -> list[str]:
    texts = [t for t in recent_texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(
            f"drift: no usable recent texts (got {len(recent_texts)} rows, all empty)",
            hint="pass a file of recent inputs with a text column",
        )
    return texts


def _samples(router: Router, decisions: Sequence[Decision], heldout: LabeledSet) -> _Samples:
    labels = router.labels
    k = len(labels)
    pred = np.array([labels.index(d.label) for d in decisions], dtype=np.int64)
    ref = np.asarray(router.student.predict_proba(heldout.texts)).argmax(axis=1)
    order = [labels.index(name) for name in heldout.labels]  # heldout column → router label index
    teacher = np.array([order[i] for i in heldout.hard], dtype=np.int64)
    return _Samples(
        recent=np.bincount(pred, minlength=k), reference=np.bincount(ref, minlength=k),
        teacher=np.bincount(teacher, minlength=k),
    )


def _reference_flagged(router: Router, guard: OODDetector, heldout: LabeledSet) -> int:
    """Held-out texts the OOD guard flags: from router.json when it counted this held-out set, else scored."""
    info = router.config.info
    if info.get("heldout") == len(heldout) and isinstance(info.get("heldout_ood_flagged"), int):
        return int(info["heldout_ood_flagged"])
    return int(guard.predict(router.ood_student.features(heldout.texts)).sum())


def _ood(router: Router, decisions: Sequence[Decision], heldout: LabeledSet) -> _OOD | None:
    if router.ood is None:
        return None
    flagged = int(sum(d.ood for d in decisions))
    n, m = len(decisions), len(heldout)
    f = _reference_flagged(router, router.ood, heldout)
    return _OOD(share=flagged / n, expected=expected_ood_share(f, m), pvalue=ood_share_test(flagged, n, f, m),
                reference_flagged=f)


def _reasons(label: LabelShift, ood: _OOD | None, *, level: float, min_tv: float) -> list[str]:
    reasons: list[str] = []
    if ood is not None and ood.pvalue < level and ood.share >= 2 * ood.expected:
        reasons.append(
            f"{ood.share:.1%} of recent inputs are unlike the training data (expected ~{ood.expected:.1%})"
        )
    if label.pvalue < level and label.tv >= min_tv:
        reasons.append(f"the predicted label mix moved (TV {label.tv:.3f}, noise floor {label.tv_noise_floor:.3f})")
    return reasons


def _top_shifts(labels: list[str], p: np.ndarray, q: np.ndarray) -> list[dict[str, Any]]:
    diffs = p - q
    top = np.argsort(-np.abs(diffs))[:10]
    return [
        {"label": labels[i], "recent": float(p[i]), "reference": float(q[i])}
        for i in top if abs(diffs[i]) > 0
    ]


def _notes(n_given: int, n_used: int, ood: _OOD | None) -> list[str]:
    notes: list[str] = []
    if n_used < n_given:
        notes.append(f"{n_given - n_used} empty texts skipped")
    if ood is None:
        notes.append("the artifact has no OOD guard (router.json/ood.npz): OOD share not measured")
    if n_used < 200:
        notes.append(f"only {n_used} recent inputs: the tests have little power; collect more for a firmer answer")
    return notes


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
    family-wise level of the RETRAIN decision (each of the two tests runs at ``alpha / 2``);
    ``min_tv`` the smallest label shift worth retraining for; ``sims`` the permutations of the
    label test (seeded by ``seed``).  See the module doc for the tests.
    """
    from distil.artifact import load_artifact

    texts = _usable(recent_texts)
    art = load_artifact(artifact_dir)
    router = router or Router.load(art)
    heldout = art.heldout()
    if len(heldout) == 0:
        raise DataError(f"{art.path}: the held-out set is empty; nothing to compare with")
    decisions = Cascade(router).decide(texts)  # who would answer each recent input when served
    counts = _samples(router, decisions, heldout)
    ood = _ood(router, decisions, heldout)
    level = alpha / (2 if ood is not None else 1)
    label = label_shift_test(counts.recent, counts.reference, level=level, sims=sims, seed=seed)
    p_recent, q_student = _dist(counts.recent), _dist(counts.reference)
    thr = router.config.threshold
    reasons = _reasons(label, ood, level=level, min_tv=min_tv)
    return DriftReport(
        n=len(decisions), ood_share=ood.share if ood else None, expected_ood_share=ood.expected if ood else None,
        ood_pvalue=ood.pvalue if ood else None,
        teacher_share=float(np.mean([d.source == "teacher" for d in decisions])),
        expected_teacher_share=thr.teacher_share if thr.n > 0 else None,
        tv=label.tv, tv_noise_floor=label.tv_noise_floor, label_pvalue=label.pvalue,
        psi=psi(p_recent, q_student), tv_vs_teacher=total_variation(p_recent, _dist(counts.teacher)),
        top_shifts=_top_shifts(router.labels, p_recent, q_student), retrain=bool(reasons), reasons=reasons,
        notes=_notes(len(recent_texts), len(texts), ood), alpha=alpha, test_level=level,
        reference_n=len(heldout), chi2=label.chi2, reference_ood_flagged=ood.reference_flagged if ood else None,
    )
