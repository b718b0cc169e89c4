"""Routing: when may the student answer alone, and when must the teacher answer?

The student answers an input when two things hold:

1. **Its routing score is high enough**: the score is at least a threshold ``t`` chosen on
   teacher-labeled calibration data so that, on the inputs it would answer, its agreement with the
   teacher is at least a target (say 0.99) *with a finite-sample guarantee* (below).  The score is
   the learned acceptor's probability that the student agrees with the teacher
   (:mod:`distil.acceptor`: confidence, text length and the answers of cheaper rungs),
   or, with ``score="confidence"``, the student's calibrated top probability.
2. **The input looks like its training data**: an out-of-distribution (OOD) detector fitted on a
   member's :meth:`~distil.students.base.Student.features` of the training texts (a semantic member
   when the artifact has one) does not flag it.  A confident student can be confidently wrong on
   inputs unlike anything it has seen; the OOD guard sends those to the teacher.

Everything else goes to the teacher.

The guarantee
-------------
*With probability at least ``level`` (0.95) over the calibration data, the student's agreement with
the teacher on the traffic it answers alone is at least the target* — for traffic drawn like the
labeled pool, which the OOD guard and :mod:`distil.drift` watch.

Calibration data: out-of-fold scores over the whole labeled pool (:func:`crossfit_scores`: five
copies of the student, each scoring the fifth it did not learn; the acceptor is cross-fitted the
same way on top), or the artifact's held-out split.  Candidates: the thresholds at which the student
answers ``1/20, 2/20, …`` of the calibration inputs, fixed by the scores alone before any agreement is
looked at.  Each candidate ``t`` answering ``n_t`` inputs, ``k_t`` of them in agreement, is tested for
``H_t: agreement < target`` with the one-sided Clopper–Pearson bound
``Beta.ppf(1 − α_t; k_t, n_t − k_t + 1) ≥ target``, by the fallback procedure of Learn-then-Test
(Angelopoulos et al., 2021; Wiens & Dmitrienko): the family-wise error ``1 − level`` is spread over
the candidates from the narrowest up, a candidate that passes hands its share on to the next, one that
fails does not — so a few confident teacher errors at the top cannot zero the certificate — and the
widest candidate that passes is kept.  ``method="sequence"`` keeps the older fixed-sequence scan
(test from the most confident down, stop at the first failure).  If nothing passes, the threshold
is ``inf``: every input goes to the teacher, and a :class:`RoutingWarning` says so.

A cascade through the ladder (``ngram → static → teacher``) has one threshold for every rung, and
the same test is run on what the whole cascade answers (:func:`certify_ladder`).

Caveats: the out-of-fold scores come from copies, not the served student (trained on all of the
pool), and the acceptor scored on calibration inputs is the fold's, not the final one; both are
low-variance refits, and the simulations in ``tests/test_route.py``, ``tests/test_ladder_cascade.py``
and ``tests/test_acceptor.py`` measure the violation rate that results.

The OOD threshold is the ``quantile`` (default 0.99) of the detector's in-distribution scores
(held-out inputs, and for k-NN every reference row scored leave-one-out), so about 1 % of normal
traffic is flagged.  Calibration inputs the detector flags are never answered by the student, so
the threshold is certified on the inputs that pass the OOD guard — the same set the student answers
when serving.

Files in the artifact: ``router.json`` (threshold, its numbers, OOD settings, the acceptors'
coefficients), ``ood.npz`` (reference features or Mahalanobis statistics) and ``calibration.npz`` /
``ladder_calibration.npz`` (the calibration scores, so a new target is certified without
retraining).  All plain JSON / ``.npz`` loaded with ``allow_pickle=False``.  Serving needs numpy
only; calibrating needs scipy, fitting the acceptor scikit-learn.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from distil.errors import ArtifactError, ConfigError, DataError

if TYPE_CHECKING:
    from distil.acceptor import Acceptor
    from distil.artifact import Artifact
    from distil.data import LabeledSet
    from distil.students.base import Student

log = logging.getLogger(__name__)

ROUTER_FILE = "router.json"
OOD_FILE = "ood.npz"
ROUTER_FORMAT_VERSION = 2  # 2: the routing score may be the acceptor's (router.json "score")

OODMethod = Literal["knn", "mahalanobis"]


class RoutingWarning(UserWarning):
    """No threshold meets the target: every input goes to the teacher."""


# ---------------------------------------------------------------------------------------------
# Clopper–Pearson and threshold calibration


def clopper_pearson_lower(k: int | np.ndarray, n: int | np.ndarray, level: float = 0.95) -> np.ndarray:
    """One-sided Clopper–Pearson lower confidence bound for a binomial proportion.

    ``P(p ≥ bound) ≥ level`` for ``k`` successes out of ``n``: the bound is
    ``Beta.ppf(1 − level; k, n − k + 1)``, and 0 when ``k == 0`` (or ``n == 0``).
    Vectorised over ``k`` and ``n``.
    """
    from scipy.stats import beta

    _check_level(level)
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise DataError(f"Clopper–Pearson bound: expected 0 <= k <= n, found k={k}, n={n}")
    out = np.zeros(np.broadcast(k_arr, n_arr).shape, dtype=np.float64)
    ok = np.broadcast_to(k_arr > 0, out.shape)
    if np.any(ok):
        kk = np.broadcast_to(k_arr, out.shape)[ok]
        nn = np.broadcast_to(n_arr, out.shape)[ok]
        out[ok] = beta.ppf(1.0 - level, kk, nn - kk + 1.0)
    return np.asarray(out)


def min_answered(target: float, level: float) -> int:
    """Fewest answered inputs for which perfect agreement can pass the Clopper–Pearson test.

    With ``n`` answered and all of them agreeing the bound is ``(1 − level)^(1/n)``; it reaches
    ``target`` once ``n ≥ log(1 − level) / log(target)``.
    """
    _check_target(target)
    _check_level(level)
    return math.ceil(math.log(1.0 - level) / math.log(target) - 1e-12)


def default_grid() -> np.ndarray:
    """The fixed, data-independent candidate thresholds, from high to low confidence.

    1.0, then 600 points with ``1 − t`` spaced geometrically from 1e-6 to 1 (so finely spaced
    near 1, where calibrated confidences crowd), ending at 0 (answer everything).
    """
    return np.concatenate([[1.0], 1.0 - np.geomspace(1e-6, 1.0, 600)])


@dataclass(frozen=True)
class Threshold:
    """A threshold on the routing score and what it does on the calibration data it was chosen on.

    The student answers when ``confidence >= value``; ``value = inf`` sends everything to the
    teacher.  ``lower_bound`` is the one-sided Clopper–Pearson bound at ``level`` of the agreement
    on the answered inputs; ``teacher_share = 1 − coverage`` is the expected share of traffic
    routed to the teacher.
    """

    value: float
    target: float
    level: float
    n: int
    answered: int
    agreed: int
    coverage: float
    teacher_share: float
    agreement: float | None
    lower_bound: float
    qualified: bool
    method: str = "fixed-sequence clopper-pearson"
    tested: int = 0
    bound_level: float | None = None  # the level of ``lower_bound`` after the multiple-testing correction

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``inf`` written as the string ``"inf"``)."""
        d = asdict(self)
        if math.isinf(self.value):
            d["value"] = "inf"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["value"] = math.inf if d.get("value") == "inf" else float(d["value"])
        return cls(**d)

    def describe(self) -> str:
        """One line for logs and the CLI."""
        if math.isinf(self.value):
            return (
                f"no threshold meets agreement >= {self.target} at {self.level:.0%} confidence "
                f"on {self.n} held-out inputs: everything goes to the teacher"
            )
        agr = f"{self.agreement:.4f}" if self.agreement is not None else "n/a"
        return (
            f"threshold {self.value:.6g}: student answers {self.coverage:.1%} of held-out inputs "
            f"({self.answered}/{self.n}), agreement {agr}, {self.level:.0%} lower bound "
            f"{self.lower_bound:.4f} (target {self.target}); teacher share {self.teacher_share:.1%}"
        )


def _check_target(target: float) -> None:
    if not (0.0 < target < 1.0):
        raise ConfigError(
            f"the router's target agreement (--router-target / --target-agreement / [targets].routing_agreement) "
            f"must be strictly between 0 and 1, found {target}",
            hint="e.g. 0.99",
        )


def _check_level(level: float) -> None:
    if not (0.5 < level < 1.0):
        raise ConfigError(
            f"the guarantee's confidence level (--level) must be strictly between 0.5 and 1, found {level}",
            hint="e.g. --level 0.95",
        )


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse router settings outside their range before anything is trained (each named as its flag).

    Reads the :func:`fit_router` keywords present in ``settings``: ``target_agreement``, ``level``,
    ``folds``, ``grid_size``, ``ood_quantile``, ``k`` and ``score``.
    """
    if settings.get("target_agreement") is not None:
        _check_target(float(settings["target_agreement"]))
    if settings.get("level") is not None:
        _check_level(float(settings["level"]))
    if settings.get("grid_size") is not None:
        coverage_grid(int(settings["grid_size"]))
    folds = settings.get("folds")
    if folds is not None and not 2 <= int(folds) <= 20:
        raise ConfigError(f"calibration folds (--folds) must be between 2 and 20, found {folds}", hint="e.g. --folds 5")
    q, k = settings.get("ood_quantile"), settings.get("k")
    if q is not None and not 0.0 < float(q) < 1.0:
        raise ConfigError(f"the OOD quantile (--ood-quantile) must be strictly between 0 and 1, found {q}",
                          hint="0.99 flags about 1% of normal traffic, 0.95 about 5%")
    if k is not None and int(k) < 1:
        raise ConfigError(f"the OOD guard's k (--ood-k) must be at least 1, found {k}", hint="e.g. --ood-k 3")
    if settings.get("score") is not None:
        _check_score(str(settings["score"]))


def _as_inputs(confidence: np.ndarray, agree: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    agr = np.asarray(agree).reshape(-1)
    if conf.shape != agr.shape:
        raise DataError(
            f"calibration: expected one agreement flag per confidence, found {agr.size} flags "
            f"for {conf.size} confidences"
        )
    if np.any(np.isnan(conf)):
        raise DataError("calibration: confidences contain NaN", hint="check the student's probabilities")
    if agr.dtype != np.bool_:
        if not np.all(np.isin(agr, (0, 1))):
            raise DataError("calibration: agreement flags must be 0/1 or booleans")
        agr = agr.astype(bool)
    return conf, agr


def _answered_counts(conf: np.ndarray, agr: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_t, k_t) for every grid threshold t: answered inputs (conf >= t) and how many agree."""
    order = np.argsort(-conf, kind="stable")
    sorted_desc = conf[order]
    cum_agree = np.concatenate([[0], np.cumsum(agr[order].astype(np.int64))])
    # number of confidences >= t == position of t in the ascending array, counted from the end
    asc = sorted_desc[::-1]
    n_t = conf.size - np.searchsorted(asc, grid, side="left")
    k_t = cum_agree[n_t]
    return n_t.astype(np.int64), k_t.astype(np.int64)


Certificate = Literal["ltt", "sequence"]
CERTIFICATES: tuple[str, ...] = ("ltt", "sequence")
DEFAULT_GRID_SIZE = 20


def coverage_grid(size: int = DEFAULT_GRID_SIZE) -> np.ndarray:
    """The candidate answered shares ``1/size, 2/size, …, 1``, fixed before any data is seen."""
    if not 1 <= size <= 1000:
        raise ConfigError(
            f"the calibration grid (--grid-size) must have 1 to 1000 points, found {size}", hint="e.g. 20"
        )
    return np.arange(1, size + 1, dtype=np.float64) / size


def calibrate_threshold(
    confidence: np.ndarray,
    agree: np.ndarray,
    *,
    target: float,
    level: float = 0.95,
    method: Certificate = "ltt",
    grid_size: int = DEFAULT_GRID_SIZE,
    grid: np.ndarray | None = None,
    start: float = 0.1,
) -> Threshold:
    """Lowest score threshold whose answered agreement is ≥ ``target`` with probability ``level``.

    ``confidence`` holds the routing score on calibration inputs (the student's calibrated top
    probability, or its acceptor's out-of-fold probability of agreeing), ``agree``
    whether its label equals the teacher's; inputs that must never be answered (flagged OOD) can
    be given confidence ``-inf``.  If nothing qualifies, returns ``value = inf`` and warns with
    :class:`RoutingWarning`.

    ``method="ltt"`` (the default; Learn-then-Test by the fallback procedure): the candidates are
    the thresholds that answer ``1/grid_size, 2/grid_size, …`` of the calibration inputs (set by the
    scores alone, before the agreements are looked at); each is tested with the one-sided
    Clopper–Pearson bound at its share ``(1 − level) / m`` of the error plus what the candidate before
    it passed on (:func:`_fallback_levels`), and the one answering the most inputs among those that
    pass is chosen.  A few confident teacher errors lower the bound of a candidate a little; they
    cannot stop the search.

    ``method="sequence"`` is the earlier fixed-sequence scan over ``grid`` (default
    :func:`default_grid`) from high to low confidence, stopping at the first failure, after skipping
    the points answering fewer than ``start`` of the inputs (see the module docstring).
    """
    _check_target(target)
    _check_level(level)
    conf, agr = _as_inputs(confidence, agree)
    if method == "ltt":
        return _calibrate_ltt(conf, agr, target=target, level=level, grid_size=grid_size)
    if method != "sequence":
        raise ConfigError(f"unknown certificate {method!r}; expected one of {list(CERTIFICATES)}")
    return _calibrate_sequence(conf, agr, target=target, level=level, grid=grid, start=start)


def _calibrate_ltt(conf: np.ndarray, agr: np.ndarray, *, target: float, level: float, grid_size: int) -> Threshold:
    """Learn-then-Test over a fixed coverage grid with the fallback procedure; the widest that passes."""
    candidates = _coverage_thresholds(conf, coverage_grid(grid_size))
    n_t, k_t = _answered_counts(conf, agr, candidates)
    return _widest_passing(int(conf.size), candidates, n_t, k_t, target=target, level=level, method="ltt-fallback")


def _widest_passing(
    n: int, candidates: np.ndarray, n_t: np.ndarray, k_t: np.ndarray, *, target: float, level: float, method: str
) -> Threshold:
    """The fallback procedure over ``candidates`` (answered ``n_t``, agreed ``k_t``); the widest that passes."""
    levels = _fallback_levels(n_t, k_t, target=target, alpha=1.0 - level)
    passed = np.flatnonzero(levels > 0)
    if passed.size == 0:
        return _nothing_qualifies(n, target, level, tested=int(candidates.size), method=method)
    best = int(passed[np.argmax(n_t[passed])])
    nt, kt = int(n_t[best]), int(k_t[best])
    return Threshold(
        value=float(candidates[best]), target=target, level=level, n=n, answered=nt, agreed=kt,
        coverage=nt / n, teacher_share=1.0 - nt / n, agreement=kt / nt,
        lower_bound=float(clopper_pearson_lower(kt, nt, 1.0 - levels[best])), qualified=True,
        method=method, tested=int(candidates.size), bound_level=float(1.0 - levels[best]),
    )


def _fallback_levels(n_t: np.ndarray, k_t: np.ndarray, *, target: float, alpha: float) -> np.ndarray:
    """The fallback procedure (Wiens 2003) over candidates ordered from high to low confidence.

    Each candidate owns ``alpha / m``; a candidate is tested at its own share plus the level of the
    candidate before it when that one passed (a failure passes nothing on, but the tests go on).
    The family-wise error is at most ``alpha``.  Returns the level each candidate passed at (0 = failed).
    """
    m = max(1, n_t.size)
    out = np.zeros(n_t.size, dtype=np.float64)
    carried = 0.0
    for j in range(n_t.size):
        a = alpha / m + carried
        ok = n_t[j] > 0 and float(clopper_pearson_lower(int(k_t[j]), int(n_t[j]), 1.0 - a)) >= target
        out[j] = a if ok else 0.0
        carried = a if ok else 0.0
    return out


def _coverage_thresholds(conf: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """The confidence thresholds answering each share of the answerable inputs, high to low, distinct."""
    ranked = np.sort(conf[np.isfinite(conf)])[::-1]
    if ranked.size == 0:
        return np.empty(0, dtype=np.float64)
    positions = np.clip(np.ceil(shares * conf.size).astype(np.int64), 1, ranked.size) - 1
    return np.unique(ranked[positions])[::-1]


def _nothing_qualifies(n: int, target: float, level: float, *, tested: int, method: str) -> Threshold:
    """The threshold that sends everything to the teacher, with the warning that says so."""
    warnings.warn(
        f"no threshold reaches agreement >= {target} with {level:.0%} confidence on "
        f"{n} calibration inputs (at least {min_answered(target, level)} answered inputs are needed even at "
        "perfect agreement): every input will go to the teacher. Label more data, lower the target, "
        "or train a stronger student.",
        RoutingWarning,
        stacklevel=3,
    )
    return Threshold(
        value=math.inf, target=target, level=level, n=n, answered=0, agreed=0, coverage=0.0,
        teacher_share=1.0, agreement=None, lower_bound=0.0, qualified=False, tested=tested, method=method,
    )


def _calibrate_sequence(
    conf: np.ndarray, agr: np.ndarray, *, target: float, level: float, grid: np.ndarray | None, start: float
) -> Threshold:
    """The fixed-sequence scan: test from high to low confidence, stop at the first failure."""
    g = default_grid() if grid is None else np.asarray(grid, dtype=np.float64).reshape(-1)
    if g.size == 0 or np.any(np.diff(g) > 0):
        raise ConfigError("calibration grid must be non-empty and sorted from high to low")
    if not 0.0 <= start < 1.0:
        raise ConfigError(f"calibration start must be a share in [0, 1), found {start}")
    n = int(conf.size)
    n_t, k_t = _answered_counts(conf, agr, g)
    testable = np.flatnonzero(n_t >= max(min_answered(target, level), math.ceil(start * n)))
    chosen: int | None = None
    tested = 0
    if testable.size:  # a prefix is skipped (n_t grows as t falls), the rest is tested in order
        bounds = clopper_pearson_lower(k_t[testable], n_t[testable], level)
        fails = np.flatnonzero(bounds < target)
        stop = int(fails[0]) if fails.size else testable.size
        tested = min(stop + 1, testable.size)
        if stop > 0:
            chosen = int(testable[stop - 1])
    if chosen is None:
        return _nothing_qualifies(n, target, level, tested=tested, method="fixed-sequence clopper-pearson")
    nt, kt = int(n_t[chosen]), int(k_t[chosen])
    return Threshold(
        value=float(g[chosen]), target=target, level=level, n=n, answered=nt, agreed=kt,
        coverage=nt / n, teacher_share=1.0 - nt / n, agreement=kt / nt,
        lower_bound=float(clopper_pearson_lower(kt, nt, level)), qualified=True, tested=tested,
        bound_level=level,
    )


def evaluate_threshold(
    confidence: np.ndarray, agree: np.ndarray, value: float, *, target: float = 0.99, level: float = 0.95
) -> Threshold:
    """The numbers of a threshold given directly (``method="given"``); nothing is chosen.

    ``qualified`` says whether its Clopper–Pearson bound reaches ``target`` (a single test,
    so the bound is valid for this one threshold).
    """
    _check_target(target)
    _check_level(level)
    conf, agr = _as_inputs(confidence, agree)
    n = int(conf.size)
    mask = conf >= value
    nt, kt = int(mask.sum()), int(agr[mask].sum())
    lb = float(clopper_pearson_lower(kt, nt, level)) if nt else 0.0
    return Threshold(
        value=float(value), target=target, level=level, n=n, answered=nt, agreed=kt,
        coverage=nt / n if n else 0.0, teacher_share=1.0 - (nt / n if n else 0.0),
        agreement=kt / nt if nt else None, lower_bound=lb, qualified=lb >= target, method="given",
        tested=1,
    )


# ---------------------------------------------------------------------------------------------
# Out-of-distribution detection


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"OOD detector: expected a 2-D feature matrix, found shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit–Wolf shrunk covariance of centred rows ``x`` and the shrinkage used (numpy only).

    Shrinks the sample covariance ``S`` towards ``mu·I`` (``mu = trace(S)/d``) with the
    intensity of Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional
    covariance matrices".
    """
    n, d = x.shape
    s = (x.T @ x) / n
    mu = float(np.trace(s)) / d
    delta = float(((s - mu * np.eye(d)) ** 2).sum()) / d
    x2 = x**2
    beta_bar = float(((x2.T @ x2) / n - s**2).sum()) / (d * n)
    beta = min(beta_bar, delta)
    shrink = beta / delta if delta > 0 else 1.0
    cov = (1.0 - shrink) * s + shrink * mu * np.eye(d)
    return cov, shrink


#: How a user refits the router: distil train writes router.json and ood.npz after training.
REFIT_HINT = (
    "retrain with distil train (it refits the router), or call distil.route.fit_router(artifact_dir, texts)"
)


def _check_dims(x: np.ndarray, fitted: int) -> None:
    if x.shape[1] != fitted:
        raise DataError(
            f"OOD detector: features have {x.shape[1]} dimensions, the detector was fitted on {fitted}",
            hint=REFIT_HINT,
        )


@dataclass
class OODDetector:
    """Out-of-distribution score on a student's features; high score = unlike the training data.

    ``method="knn"``: cosine distance to the ``k``-th nearest neighbour among (at most
    ``max_reference``) L2-normalised training features (Sun et al., 2022, "Out-of-distribution
    detection with deep nearest neighbors").  ``method="mahalanobis"``: smallest Mahalanobis
    distance to a class mean (class = the teacher's label when given, else one mean) with a tied,
    Ledoit–Wolf-shrunk covariance (Lee et al., 2018).  The flagging threshold is the ``quantile``
    of in-distribution scores, so about ``1 − quantile`` of normal traffic is flagged.  For
    ``knn`` those are the held-out features' scores *and* each reference row's leave-one-out score
    (its k-th nearest neighbour among the other rows): a threshold set on a few hundred held-out
    rows alone sits at their maximum and lets most near-domain off-topic text through; the
    leave-one-out scores make the quantile rest on thousands of rows, each scored on data it is not
    part of.  ``heldout_flag_rate_`` is the share of held-out rows flagged.
    """

    method: OODMethod = "knn"
    # k = 3: off-topic text separates better than at 10, and the guard stays steadier than at 1 on
    # traffic slightly unlike the training split (benchmarks/bench_ood.py)
    k: int = 3
    quantile: float = 0.99
    max_reference: int = 5000
    seed: int = 0
    space: str | None = None  # the ladder member whose features the guard scores (None: the routed one)
    # fitted state
    threshold_: float = math.nan
    reference_: np.ndarray | None = field(default=None, repr=False)
    whiten_: np.ndarray | None = field(default=None, repr=False)
    means_: np.ndarray | None = field(default=None, repr=False)
    shrinkage_: float | None = None
    n_fit_: int = 0
    heldout_flag_rate_: float = math.nan
    n_calibration_: int = 0  # in-distribution scores the threshold is the quantile of

    def __post_init__(self) -> None:
        if self.method not in ("knn", "mahalanobis"):
            raise ConfigError(f"OOD method must be 'knn' or 'mahalanobis', found {self.method!r}")
        if self.k < 1:
            raise ConfigError(f"OOD k must be >= 1, found {self.k}")
        if not (0.0 < self.quantile < 1.0):
            raise ConfigError(f"OOD quantile must be strictly between 0 and 1, found {self.quantile}")

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` (or :meth:`load`) set the threshold."""
        return not math.isnan(self.threshold_)

    def fit(
        self,
        train_features: np.ndarray,
        heldout_features: np.ndarray,
        *,
        train_labels: Sequence[int] | np.ndarray | None = None,
    ) -> OODDetector:
        """Fit on training features; set the threshold from held-out in-distribution features."""
        x = _normalise(train_features)
        if x.shape[0] == 0:
            raise DataError("OOD detector: no training features to fit on")
        rng = np.random.default_rng(self.seed)
        self.n_fit_ = int(x.shape[0])
        if self.method == "knn":
            if x.shape[0] > self.max_reference:
                x = x[np.sort(rng.choice(x.shape[0], self.max_reference, replace=False))]
            self.reference_ = np.ascontiguousarray(x, dtype=np.float32)
        else:
            self._fit_mahalanobis(x, train_labels)
        h = self.score(heldout_features)
        if h.size == 0:
            raise DataError("OOD detector: no held-out features to set the threshold from")
        calib = np.concatenate([h, self._leave_one_out()]) if self.method == "knn" else h
        self.threshold_ = float(np.quantile(calib, self.quantile, method="higher"))
        self.heldout_flag_rate_ = float(np.mean(h > self.threshold_))
        self.n_calibration_ = int(calib.size)
        return self

    def _leave_one_out(self, chunk: int = 1024) -> np.ndarray:
        """Each reference row's k-NN score among the other reference rows (empty with fewer than k + 1)."""
        ref = self._need(self.reference_, "reference_")
        n = ref.shape[0]
        if n <= self.k:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(n, dtype=np.float32)
        for i in range(0, n, chunk):
            sims = ref[i : i + chunk] @ ref.T
            rows = np.arange(sims.shape[0])
            sims[rows, i + rows] = -np.inf  # not its own neighbour
            out[i : i + chunk] = 1.0 - np.partition(sims, n - self.k, axis=1)[:, n - self.k]
        return out

    def _fit_mahalanobis(self, x: np.ndarray, labels: Sequence[int] | np.ndarray | None) -> None:
        x64 = x.astype(np.float64)
        if labels is None:
            lab = np.zeros(x64.shape[0], dtype=np.int64)
        else:
            lab = np.asarray(labels, dtype=np.int64).reshape(-1)
            if lab.size != x64.shape[0]:
                raise DataError(f"OOD detector: {lab.size} labels for {x64.shape[0]} feature rows")
        classes = np.unique(lab)
        means = np.stack([x64[lab == c].mean(axis=0) for c in classes])
        centred = x64 - means[np.searchsorted(classes, lab)]
        cov, shrink = _ledoit_wolf(centred)
        # precision = W W^T with W = inv(chol(cov))^T, so d(x, m)^2 = ||(x - m) W||^2
        chol = np.linalg.cholesky(cov)
        whiten = np.linalg.inv(chol).T
        self.whiten_ = whiten.astype(np.float32)
        self.means_ = (means @ whiten).astype(np.float32)
        self.shrinkage_ = float(shrink)

    def score(self, features: np.ndarray, *, chunk: int = 1024) -> np.ndarray:
        """OOD score of each row (float32; higher = more unusual)."""
        x = _normalise(features)
        if self.method == "knn":
            ref = self._need(self.reference_, "reference_")
            _check_dims(x, ref.shape[1])
            k = min(self.k, ref.shape[0])
            out = np.empty(x.shape[0], dtype=np.float32)
            for i in range(0, x.shape[0], chunk):
                sims = x[i : i + chunk] @ ref.T
                # k-th largest similarity = k-th nearest neighbour
                kth = np.partition(sims, ref.shape[0] - k, axis=1)[:, ref.shape[0] - k]
                out[i : i + chunk] = 1.0 - kth
            return out
        whiten = self._need(self.whiten_, "whiten_")
        means = self._need(self.means_, "means_")
        _check_dims(x, whiten.shape[0])
        out = np.empty(x.shape[0], dtype=np.float32)
        m2 = (means**2).sum(axis=1)
        for i in range(0, x.shape[0], chunk):
            z = x[i : i + chunk] @ whiten
            d2 = (z**2).sum(axis=1, keepdims=True) - 2.0 * (z @ means.T) + m2[None, :]
            out[i : i + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Boolean array: True where the input is flagged out of distribution."""
        if not self.fitted:
            raise ConfigError("OOD detector used before fit() or load()")
        return self.score(features) > self.threshold_

    @staticmethod
    def _need(arr: np.ndarray | None, name: str) -> np.ndarray:
        if arr is None:
            raise ConfigError(f"OOD detector used before fit() or load() ({name} missing)")
        return arr

    def params(self) -> dict[str, Any]:
        """Settings and fitted scalars (what ``router.json`` keeps under ``"ood"``)."""
        return {
            "method": self.method, "k": self.k, "quantile": self.quantile,
            "max_reference": self.max_reference, "seed": self.seed, "threshold": self.threshold_,
            "shrinkage": self.shrinkage_, "n_fit": self.n_fit_,
            "heldout_flag_rate": self.heldout_flag_rate_, "space": self.space,
            "n_calibration": self.n_calibration_,
        }

    def save(self, folder: str | Path) -> Path:
        """Write the arrays to ``folder/ood.npz`` (no pickle); the scalars go in :meth:`params`."""
        p = Path(folder) / OOD_FILE
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"threshold": np.array([self.threshold_], dtype=np.float64)}
        if self.reference_ is not None:
            arrays["reference"] = self.reference_
        if self.whiten_ is not None and self.means_ is not None:
            arrays["whiten"] = self.whiten_
            arrays["means"] = self.means_
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, folder: str | Path, params: dict[str, Any]) -> OODDetector:
        """Read ``folder/ood.npz`` with the settings from ``router.json``."""
        p = Path(folder) / OOD_FILE
        if not p.exists():
            raise ArtifactError(
                f"{p}: missing (router.json names an OOD detector)",
                hint=REFIT_HINT,
            )
        det = cls(
            method=params["method"], k=int(params["k"]), quantile=float(params["quantile"]),
            max_reference=int(params["max_reference"]), seed=int(params["seed"]), space=params.get("space"),
        )
        try:
            with np.load(p, allow_pickle=False) as z:
                det.threshold_ = float(z["threshold"][0])
                det.reference_ = z["reference"].astype(np.float32) if "reference" in z else None
                det.whiten_ = z["whiten"].astype(np.float32) if "whiten" in z else None
                det.means_ = z["means"].astype(np.float32) if "means" in z else None
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{p}: not a readable OOD file ({exc})", hint=REFIT_HINT) from None
        det.shrinkage_ = params.get("shrinkage")
        det.n_fit_ = int(params.get("n_fit", 0))
        det.heldout_flag_rate_ = float(params.get("heldout_flag_rate", math.nan))
        det.n_calibration_ = int(params.get("n_calibration", 0))
        needed = det.reference_ if det.method == "knn" else det.whiten_
        if needed is None:
            raise ArtifactError(f"{p}: has no arrays for method {det.method!r}", hint=REFIT_HINT)
        return det


def roc_auc(scores_neg: np.ndarray, scores_pos: np.ndarray) -> float:
    """Area under the ROC curve for telling positives (higher scores) from negatives; ties count 1/2.

    Equals the probability that a random positive scores above a random negative
    (Mann–Whitney U / (n_pos · n_neg)).
    """
    neg = np.asarray(scores_neg, dtype=np.float64).reshape(-1)
    pos = np.asarray(scores_pos, dtype=np.float64).reshape(-1)
    if neg.size == 0 or pos.size == 0:
        raise DataError("AUROC needs at least one positive and one negative score")
    allv = np.concatenate([neg, pos])
    _, inverse, counts = np.unique(allv, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # mean 1-based rank of each tied group
    ranks = avg_rank[inverse]
    u = ranks[neg.size :].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


# ---------------------------------------------------------------------------------------------
# The router: student + threshold + OOD guard


@dataclass(frozen=True)
class Decision:
    """What the router decided for one input.

    ``label``/``score`` are the student's answer and its probability; ``source`` is
    ``"student"`` when the student may answer alone, ``"teacher"`` when the input must go to the
    teacher (confidence below the threshold, or ``ood``).
    """

    label: str
    score: float
    confidence: float
    ood: bool
    source: Literal["student", "teacher"]
    ood_score: float | None = None
    member: str | None = None  # the ladder member whose answer ``label`` is (the one that answered, if any)
    routing_score: float | None = None  # what the threshold was compared with (acceptor's P(agree) or confidence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class RouterConfig:
    """What ``router.json`` holds: the member routed, its threshold, and the OOD settings."""

    member: str
    labels: list[str]
    threshold: Threshold
    ood: dict[str, Any] | None
    format_version: int = ROUTER_FORMAT_VERSION
    created_at: float = field(default_factory=time.time)
    info: dict[str, Any] = field(default_factory=dict)
    ladder: list[str] = field(default_factory=list)  # cheaper members that answer first, in order
    score: str = "confidence"  # what the threshold applies to: "confidence", or "acceptor" (P(agree))
    acceptors: dict[str, Any] = field(default_factory=dict)  # rung -> its acceptor's parameters (None: confidence)
    companions: list[str] = field(default_factory=list)  # run beside a lone routed student; its acceptor reads them

    @property
    def rungs(self) -> list[str]:
        """Every member that may answer, cheapest first: the ladder, then ``member``."""
        return [*self.ladder, self.member]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "format_version": self.format_version, "member": self.member, "labels": self.labels,
            "threshold": self.threshold.to_dict(), "ood": self.ood, "created_at": self.created_at,
            "info": self.info, "ladder": self.ladder, "score": self.score, "acceptors": self.acceptors,
            "companions": self.companions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "router.json") -> RouterConfig:
        """Parse ``router.json``; :class:`ArtifactError` on a newer format or missing keys."""
        version = int(d.get("format_version", 0))
        if version > ROUTER_FORMAT_VERSION:
            raise ArtifactError(
                f"{source}: router format {version} is newer than this distil understands "
                f"({ROUTER_FORMAT_VERSION})",
                hint="upgrade distil, or " + REFIT_HINT,
            )
        try:
            return cls(
                member=str(d["member"]), labels=list(d["labels"]),
                threshold=Threshold.from_dict(d["threshold"]), ood=d.get("ood"),
                format_version=version, created_at=float(d.get("created_at", 0.0)),
                info=dict(d.get("info", {})), ladder=[str(m) for m in d.get("ladder", [])],
                score=str(d.get("score", "confidence")), acceptors=dict(d.get("acceptors") or {}),
                companions=[str(m) for m in d.get("companions", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{source}: not a valid router file ({exc!r})", hint=REFIT_HINT
            ) from None

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/router.json`` atomically."""
        p = Path(folder) / ROUTER_FILE
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n", encoding="utf-8")
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, folder: str | Path) -> RouterConfig:
        """Read ``folder/router.json``."""
        p = Path(folder) / ROUTER_FILE
        if not p.exists():
            raise ArtifactError(
                f"{p}: no router file", hint="fit one: distil.route.fit_router(artifact_dir, train_texts)"
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{p}: not valid JSON ({exc})", hint=REFIT_HINT) from None
        return cls.from_dict(data, source=str(p))


def _teacher_agreement(student: Student, heldout_labels: list[str], heldout_hard: np.ndarray,
                       proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, agree) of the student against the teacher's argmax on held-out data."""
    return _agreement_of(list(student.classes_), heldout_labels, heldout_hard, proba)


def _agreement_of(classes: list[str], heldout_labels: list[str], heldout_hard: np.ndarray,
                  proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, agree) of probabilities over ``classes`` against the teacher's argmax."""
    if sorted(classes) != sorted(heldout_labels):
        raise ArtifactError(
            f"student labels {classes[:5]}… differ from the held-out set's {heldout_labels[:5]}…",
            hint="the artifact is inconsistent; retrain it",
        )
    teacher_names = [heldout_labels[i] for i in heldout_hard]
    pred = proba.argmax(axis=1)
    agree = np.array([classes[p] == t for p, t in zip(pred, teacher_names, strict=True)], dtype=bool)
    return proba.max(axis=1).astype(np.float64), agree


Calibration = Literal["crossfit", "heldout"]
RouteScore = Literal["acceptor", "confidence"]
ROUTE_SCORES = ("acceptor", "confidence")
AUTO_COMPANIONS = ("ngram",)  # a routed student's acceptor reads the cheapest member's answer when it has one
CALIBRATION_FILE = "calibration.npz"
DEFAULT_FOLDS = 5
_NO_CROSSFIT = ("finetune",)  # refitting these per fold costs a full fine-tune each
_SEMANTIC_SPACES = ("static", "tuned", "encoder")  # preferred OOD spaces, cheapest first


def crossfit_scores(
    student: Student, labeled: LabeledSet, *, folds: int = DEFAULT_FOLDS, hard: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (confidence, agreement with the teacher) of fresh copies of ``student``.

    The labeled pool is split into ``folds`` parts stratified by the teacher's label; for each, a
    copy with the same parameters is trained on the others (a tenth of them kept aside for early
    stopping and the temperature) and scores the part it never saw.  Every labeled text then has a
    confidence from a student that did not learn it: a calibration set as large as the pool.
    """
    proba = crossfit_proba(student, labeled, folds=folds, hard=hard, seed=seed)
    return _agreement_of(_class_order(student, labeled), labeled.labels, labeled.hard, proba)


def _class_order(student: Student, labeled: LabeledSet) -> list[str]:
    """The student's column order (the labeled set's when it is not fitted yet)."""
    return list(student.classes_) if hasattr(student, "classes_") else list(labeled.labels)


def crossfit_proba(
    student: Student, labeled: LabeledSet, *, folds: int = DEFAULT_FOLDS, hard: bool = False, seed: int = 0
) -> np.ndarray:
    """Out-of-fold probabilities (columns in ``student.classes_`` order) of fresh copies of ``student``.

    The folds depend on ``seed`` and the teacher's labels only, so two members cross-fitted with the
    same seed score every text from copies that left out the same texts.  ``student`` need not be
    fitted (its columns are then the labeled set's label order).
    """
    check_settings({"folds": folds})
    rng = np.random.default_rng(seed)
    fold_of = _stratified_folds(labeled.hard, folds, rng)
    order = _class_order(student, labeled)
    proba = np.zeros((len(labeled), len(order)), dtype=np.float64)
    for f in range(folds):
        test = np.flatnonzero(fold_of == f)
        rest = np.flatnonzero(fold_of != f)
        proba[test] = _fold_proba(student, labeled, rest, test, hard=hard, rng=rng, order=order)
    return proba


def _stratified_folds(hard: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number per row, each teacher label dealt round-robin over the folds in random order."""
    fold_of = np.zeros(hard.size, dtype=np.int64)
    offset = 0
    for label in np.unique(hard):
        rows = rng.permutation(np.flatnonzero(hard == label))
        fold_of[rows] = (np.arange(rows.size) + offset) % folds
        offset += rows.size
    return fold_of


def _fold_proba(
    student: Student, labeled: LabeledSet, rest: np.ndarray, test: np.ndarray, *, hard: bool,
    rng: np.random.Generator, order: list[str],
) -> np.ndarray:
    """Train a copy on ``rest`` (early stopping and temperature on a tenth of it); its probabilities on ``test``."""
    from distil.calibrate import fit_temperature
    from distil.students.base import softmax

    rest = rng.permutation(rest)
    n_val = max(1, rest.size // 10)
    val, train = rest[:n_val], rest[n_val:]
    texts = labeled.texts
    copy = type(student)(**student.config_params())  # not the transient ones: no reused members, no checkpoints
    copy.fit(
        [texts[i] for i in train], labeled.probs[train], labels=labeled.labels,
        val_texts=[texts[i] for i in val], val_probs=labeled.probs[val], hard=hard,
    )
    temperature = fit_temperature(copy.predict_logits([texts[i] for i in val]), labeled.probs[val])
    proba = np.asarray(softmax(copy.predict_logits([texts[i] for i in test]) / temperature), dtype=np.float64)
    columns = [list(copy.classes_).index(c) for c in order]  # the student's column order
    return proba[:, columns]


def save_calibration(folder: Path, confidence: np.ndarray, agree: np.ndarray, kind: str) -> Path:
    """Write the calibration scores (no texts) so that a new target can be certified without retraining."""
    path = folder / CALIBRATION_FILE
    tmp = folder / (CALIBRATION_FILE + ".tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, confidence=confidence.astype(np.float64), agree=agree.astype(bool), kind=np.array(kind))
    tmp.replace(path)
    return path


def load_calibration(folder: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The stored calibration scores, or None when the artifact has none."""
    path = folder / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["confidence"]), np.asarray(data["agree"], dtype=bool), str(data["kind"])
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable calibration file ({exc})", hint=REFIT_HINT) from None


# ---------------------------------------------------------------------------------------------
# A cascade through the ladder

LADDER_CALIBRATION_FILE = "ladder_calibration.npz"


def ladder_answers(
    conf: Sequence[np.ndarray], agree: Sequence[np.ndarray], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(answered, agreed) per input when every rung, cheapest first, answers at ``confidence >= threshold``.

    An input is answered by the first rung confident enough; ``agreed`` is that rung's agreement.
    """
    answered = np.zeros(np.asarray(conf[0]).size, dtype=bool)
    agreed = np.zeros_like(answered)
    for c, a in zip(conf, agree, strict=True):
        mine = ~answered & (np.asarray(c) >= threshold)
        agreed |= mine & np.asarray(a, dtype=bool)
        answered |= mine
    return answered, agreed


def certify_ladder(
    conf: Sequence[np.ndarray],
    agree: Sequence[np.ndarray],
    *,
    target: float,
    level: float = 0.95,
    grid_size: int = DEFAULT_GRID_SIZE,
) -> Threshold:
    """The score threshold of a cascade through the ladder, certified for the whole cascade.

    ``ngram → static → teacher``: the cheapest rung answers the inputs on which its confidence is at
    least the threshold, the next rung sees the rest, and what no rung answers goes to the teacher.
    One threshold for every rung: a rung's score is its acceptor's probability of agreeing with the
    teacher (or its temperature-calibrated confidence), so a score means about the same on each, and
    one threshold keeps the certificate one-dimensional (full power, no correction across rungs).
    The OOD guard is shared: ``conf[r]`` is ``-inf`` on flagged inputs.

    **The guarantee.**  The candidates are the thresholds at which the cascade answers ``1/grid_size,
    2/grid_size, …`` of the calibration inputs (set by the rungs' confidences alone, before any
    agreement is looked at); at each, the cascade's answered inputs and their agreement with the
    teacher (each input's agreement is that of the rung that answers it) are tested with the one-sided
    Clopper–Pearson bound by the fallback procedure, as for one student
    (:func:`calibrate_threshold`), and the widest candidate that passes is kept.  So, with
    probability at least ``level``, the agreement with the teacher on everything the cascade answers
    locally is at least ``target``.  ``tests/test_ladder_cascade.py`` measures the violation rate.

    ``conf[r]`` and ``agree[r]``: rung ``r``'s confidence and agreement on the same calibration inputs.
    """
    _check_target(target)
    _check_level(level)
    if not conf or len(conf) != len(agree):
        raise ConfigError(f"a ladder needs one score array per rung, found {len(conf)} and {len(agree)}")
    n = int(np.asarray(conf[0]).size)
    if any(np.asarray(c).size != n for c in (*conf, *agree)):
        raise ConfigError("every rung must be scored on the same calibration inputs")
    top = np.max(np.stack([np.asarray(c, dtype=np.float64) for c in conf]), axis=0)
    candidates = _coverage_thresholds(top, coverage_grid(grid_size))
    counts = [ladder_answers(conf, agree, float(t)) for t in candidates]
    n_t = np.array([int(a.sum()) for a, _ in counts], dtype=np.int64)
    k_t = np.array([int(g.sum()) for _, g in counts], dtype=np.int64)
    return _widest_passing(n, candidates, n_t, k_t, target=target, level=level, method="ladder-ltt-fallback")


def save_ladder_calibration(folder: Path, members: Sequence[str], conf: Sequence[np.ndarray],
                            agree: Sequence[np.ndarray]) -> Path:
    """Write every rung's calibration scores (no texts), so that a new target can be certified later."""
    path = folder / LADDER_CALIBRATION_FILE
    arrays: dict[str, np.ndarray] = {"members": np.array(list(members))}
    for r, (c, a) in enumerate(zip(conf, agree, strict=True)):
        arrays[f"conf_{r}"] = np.asarray(c, dtype=np.float64)
        arrays[f"agree_{r}"] = np.asarray(a, dtype=bool)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)
    return path


def load_ladder_calibration(folder: Path) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """(members, confidences, agreements) as :func:`save_ladder_calibration` wrote them."""
    path = folder / LADDER_CALIBRATION_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            members = [str(m) for m in data["members"]]
            conf = [np.asarray(data[f"conf_{r}"]) for r in range(len(members))]
            agree = [np.asarray(data[f"agree_{r}"], dtype=bool) for r in range(len(members))]
            return members, conf, agree
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: missing or not a readable ladder calibration file ({exc})",
                            hint=REFIT_HINT) from None


def fit_router(
    artifact_dir: str | Path,
    train_texts: Sequence[str] | None,
    *,
    target_agreement: float = 0.99,
    level: float = 0.95,
    threshold: float | None = None,
    member: str | None = None,
    ood_method: OODMethod = "knn",
    k: int = 3,
    ood_quantile: float = 0.99,
    max_reference: int = 5000,
    seed: int = 0,
    start: float = 0.1,
    labeled: LabeledSet | None = None,
    calibration: Calibration = "crossfit",
    folds: int = DEFAULT_FOLDS,
    certificate: Certificate = "ltt",
    grid_size: int = DEFAULT_GRID_SIZE,
    ood_space: str = "auto",
    ladder: Sequence[str] = (),
    score: RouteScore = "acceptor",
    acceptor_with: Sequence[str] | None = None,
    calibration_cache: dict[Any, np.ndarray] | None = None,
) -> RouterConfig:
    """Fit the router of an artifact and write ``router.json`` (+ ``ood.npz``, ``calibration.npz``).

    The OOD detector is fitted on the student's features of ``train_texts`` (a random sample of
    at most ``max_reference``; ``None`` or empty skips the OOD guard with a warning) and its
    threshold set at ``ood_quantile`` of the held-out scores.  ``ood_space`` names the ladder member whose
    features it scores: ``"auto"`` takes a semantic one when the artifact has it (static, else encoder),
    so that an n-gram student is guarded by meaning rather than by shared words.

    The threshold on the routing score is certified (``certificate``, ``level``, ``grid_size``: see
    :func:`calibrate_threshold`) on calibration scores: with ``calibration="crossfit"`` and the
    whole ``labeled`` pool, out-of-fold scores of ``folds`` copies of the member
    (:func:`crossfit_scores`); otherwise the member's own scores on ``artifact.heldout()``.  Held-out
    inputs the OOD guard flags are never answered.  ``threshold`` given: its numbers are only reported.

    ``ladder``: cheaper members that answer first, in order, before ``member`` (a cascade through the
    ladder, e.g. ``ladder=("ngram",), member="static"``); each is scored on the same calibration inputs
    and one threshold is certified for the whole cascade (:func:`certify_ladder`); every rung's scores
    go to ``ladder_calibration.npz``.

    ``score``: what the threshold applies to.  ``"acceptor"`` (the default): each rung's learned
    acceptor (:mod:`distil.acceptor`), its probability that the rung agrees with the teacher, fitted
    and scored out-of-fold on the same calibration inputs; rung ``r`` reads the answers of the rungs
    before it, and a lone member reads those of ``acceptor_with`` (None: the ngram when the artifact
    has it; ``()``: none), which then run beside it.  ``"confidence"``: the top probability.
    ``calibration_cache``: a dict kept between calls on one artifact and pool (the benchmarks fit
    several routers in turn), so that each member is cross-fitted once.
    """
    from distil.artifact import load_artifact

    _check_target(target_agreement)
    _check_level(level)
    art = load_artifact(artifact_dir)
    name = member or art.chosen
    heldout = art.heldout()
    if len(heldout) == 0:
        raise ArtifactError(f"{art.path}: the held-out set is empty; the router cannot be calibrated")
    space = _ood_space(art, name, ood_space)
    ood, h_flag = _fit_ood(
        art.student(space), train_texts, heldout.texts,
        OODDetector(
            method=ood_method, k=k, quantile=ood_quantile, max_reference=max_reference, seed=seed, space=space
        ),
    )
    rungs = _check_ladder(art, name, ladder, certificate)
    _check_score(score)
    companions = _companions(art, name, rungs, score, acceptor_with)
    cals = [_member_calibration(art, m, heldout, h_flag, labeled, calibration=calibration, folds=folds, seed=seed,
                                cache=calibration_cache) for m in [*rungs, name]]
    _check_kinds([*rungs, name], cals)
    # companions are scored on the routed member's calibration inputs (held-out when it cannot be cross-fitted)
    comp_cals = [_member_calibration(art, m, heldout, h_flag, labeled, calibration=cast(Calibration, cals[-1].kind),
                                     folds=folds, seed=seed, cache=calibration_cache) for m in companions]
    scores, acceptors = _routing_scores([*rungs, name], cals, companions, comp_cals, score=score, folds=folds,
                                        seed=seed)
    conf, agree, kind = scores[-1], cals[-1].agree, cals[-1].kind
    thr = _certify(art.path, [*rungs, name], scores, [c.agree for c in cals], target=target_agreement, level=level,
                   threshold=threshold, certificate=certificate, grid_size=grid_size, start=start)
    cfg = RouterConfig(
        member=name, labels=list(art.student(name).classes_), threshold=thr,
        ood=ood.params() if ood is not None else None,
        info={"heldout": len(heldout), "heldout_ood_flagged": int(h_flag.sum()),
              "calibration": kind, "calibration_n": int(conf.size), "folds": folds if kind == "crossfit" else 0,
              "calibration_agreement_all": float(agree.mean())},
        ladder=rungs, score=score if any(acceptors.values()) else "confidence", acceptors=acceptors,
        companions=companions if acceptors.get(name) else [],
    )
    if not rungs:
        (art.path / LADDER_CALIBRATION_FILE).unlink(missing_ok=True)
    _save_router(art.path, cfg, ood, conf, agree, kind)
    log.info("router for %s: %s", art.path, thr.describe())
    return cfg


def _certify(
    folder: Path, members: list[str], scores: list[np.ndarray], agree: list[np.ndarray], *, target: float,
    level: float, threshold: float | None, certificate: Certificate, grid_size: int, start: float,
) -> Threshold:
    """The threshold: certified for the cascade of ``members`` (or the one member), or a given one's numbers."""
    if len(members) > 1:
        return _ladder_threshold(folder, members, scores, agree, target, level, threshold, grid_size)
    if threshold is not None:
        return evaluate_threshold(scores[0], agree[0], threshold, target=target, level=level)
    return calibrate_threshold(scores[0], agree[0], target=target, level=level, method=certificate,
                               grid_size=grid_size, start=start)


def _check_ladder(art: Artifact, routed: str, ladder: Sequence[str], certificate: Certificate) -> list[str]:
    """The ladder's members, checked: trained members of the artifact, distinct, not the routed one."""
    rungs = list(ladder)
    if not rungs:
        return []
    bad = [m for m in rungs if m not in art.members() or m == routed] + [m for m in set(rungs) if rungs.count(m) > 1]
    if bad:
        raise ConfigError(
            f"the cascade's rungs {[*rungs, routed]} must be distinct trained members of the artifact "
            f"(it has {art.members()}); not usable: {sorted(set(bad))}",
            hint="e.g. --cascade ngram,static, with both in --students",
        )
    if certificate != "ltt":
        raise ConfigError("a cascade through the ladder is certified by Learn-then-Test only (certificate 'ltt')")
    return rungs


def _ladder_threshold(
    folder: Path, members: list[str], conf: list[np.ndarray], agree: list[np.ndarray], target: float,
    level: float, threshold: float | None, grid_size: int,
) -> Threshold:
    """The cascade's certified (or given) threshold from every rung's calibration scores; the scores saved."""
    save_ladder_calibration(folder, members, conf, agree)
    if threshold is not None:
        return _given_ladder_threshold(conf, agree, threshold, target, level)
    return certify_ladder(conf, agree, target=target, level=level, grid_size=grid_size)


def _check_kinds(members: Sequence[str], cals: Sequence[_Cal]) -> None:
    """Every rung and companion must be scored on the same calibration inputs."""
    kinds = {c.kind for c in cals}
    if len(kinds) > 1:
        raise ConfigError(
            f"the router's members {list(members)} were calibrated differently ({sorted(kinds)}): one of them "
            "cannot be cross-fitted", hint="use --calibration heldout, or leave finetune out of the cascade",
        )


def _check_score(score: str) -> None:
    if score not in ROUTE_SCORES:
        raise ConfigError(f"the routing score (--route-score) must be one of {', '.join(ROUTE_SCORES)}, "
                          f"found {score!r}",
                          hint="acceptor (the default) learns who agrees with the teacher; confidence is the "
                          "student's top probability")


def _ood_space(art: Artifact, routed: str, wanted: str) -> str:
    """The member whose features the OOD guard scores: a semantic one for ``"auto"``, else the one named."""
    members = art.members()
    if wanted == "auto":
        return next((m for m in _SEMANTIC_SPACES if m in members), routed)
    if wanted not in members:
        raise ConfigError(
            f"OOD space {wanted!r} is not a member of this artifact (it has {members})",
            hint="name a trained member, or 'auto'",
        )
    return wanted


def _fit_ood(
    student: Student, train_texts: Sequence[str] | None, heldout_texts: Sequence[str], ood: OODDetector
) -> tuple[OODDetector | None, np.ndarray]:
    """The OOD guard fitted on (a sample of) the training texts, and its flags on the held-out texts."""
    if not train_texts:
        warnings.warn(
            "no training texts given: the router has no out-of-distribution guard "
            "(confident answers on unfamiliar inputs will not go to the teacher)",
            RoutingWarning,
            stacklevel=3,
        )
        return None, np.zeros(len(heldout_texts), dtype=bool)
    texts = list(dict.fromkeys(train_texts))
    cap = ood.max_reference if ood.method == "knn" else max(ood.max_reference, 20000)
    if len(texts) > cap:
        rng = np.random.default_rng(ood.seed)
        texts = [texts[i] for i in np.sort(rng.choice(len(texts), cap, replace=False))]
    labels = np.asarray(student.predict_proba(texts).argmax(axis=1)) if ood.method == "mahalanobis" else None
    heldout_feats = student.features(heldout_texts)
    ood.fit(student.features(texts), heldout_feats, train_labels=labels)
    return ood, ood.predict(heldout_feats)


@dataclass
class _Cal:
    """One member's calibration inputs: probabilities, agreement with the teacher, the guard's flags."""

    proba: np.ndarray
    agree: np.ndarray
    flagged: np.ndarray
    kind: str
    texts: list[str]

    def confidence(self) -> np.ndarray:
        """The top probability, ``-inf`` where the OOD guard flags (never answered)."""
        return np.where(self.flagged, -np.inf, self.proba.max(axis=1))


def _member_calibration(
    art: Artifact, name: str, heldout: LabeledSet, h_flag: np.ndarray,
    labeled: LabeledSet | None, *, calibration: Calibration, folds: int, seed: int,
    cache: dict[Any, np.ndarray] | None = None,
) -> _Cal:
    """A member's calibration inputs: out-of-fold over the whole pool (crossfit), else its held-out scores.

    ``cache``: out-of-fold probabilities kept between calls on the same artifact and pool (by member,
    folds and seed), so that routers fitted in turn cross-fit each member once.
    """
    if calibration not in ("crossfit", "heldout"):
        raise ConfigError(f"unknown calibration {calibration!r}; expected 'crossfit' or 'heldout'")
    student = art.student(name)
    if calibration == "crossfit" and labeled is not None and len(labeled) >= 2 * folds and name not in _NO_CROSSFIT:
        record = next((r for r in art.ladder if r.get("name") == name), {})
        key = (str(art.path), name, folds, seed, len(labeled))
        proba = (cache or {}).get(key)
        if proba is None:
            proba = crossfit_proba(student, labeled, folds=folds, hard=not record.get("soft", True), seed=seed)
        if cache is not None:
            cache[key] = proba
        _, agree = _teacher_agreement(student, labeled.labels, labeled.hard, proba)
        flagged = set(np.asarray(heldout.texts, dtype=object)[h_flag].tolist())
        # held-out texts are outside the OOD reference, so their flags are real; the others are in it
        flags = np.array([t in flagged for t in labeled.texts], dtype=bool)
        return _Cal(proba, agree, flags, "crossfit", list(labeled.texts))
    proba = np.asarray(student.predict_proba(heldout.texts), dtype=np.float64)
    _, agree = _teacher_agreement(student, heldout.labels, heldout.hard, proba)
    return _Cal(proba, agree, np.asarray(h_flag, dtype=bool), "heldout", list(heldout.texts))


def _companions(
    art: Artifact, routed: str, rungs: Sequence[str], score: RouteScore, wanted: Sequence[str] | None
) -> list[str]:
    """The members whose answers the routed member's acceptor reads (none for a ladder: its rungs do)."""
    if score != "acceptor" or rungs:
        if wanted:
            raise ConfigError("--acceptor-with: companions are for one routed student scored by the acceptor; "
                              "a cascade's rungs already read the rungs before them",
                              hint="drop --acceptor-with, or --cascade")
        return []
    if wanted is None:
        return [m for m in AUTO_COMPANIONS if m in art.members() and m != routed][:1]
    bad = [m for m in wanted if m not in art.members() or m == routed]
    if bad or len(set(wanted)) != len(wanted):
        raise ConfigError(
            f"--acceptor-with: companions must be distinct trained members other than the routed {routed!r} "
            f"(the artifact has {art.members()}); not usable: {sorted(set(bad)) or list(wanted)}",
            hint="e.g. --acceptor-with ngram, or --acceptor-with none",
        )
    return list(wanted)


def _routing_scores(
    members: Sequence[str], cals: Sequence[_Cal], companions: Sequence[str], comp_cals: Sequence[_Cal],
    *, score: RouteScore, folds: int, seed: int,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Each rung's calibration scores (``-inf`` where flagged) and its acceptor's parameters (None: confidence).

    With ``score="acceptor"`` rung ``r`` reads the rungs before it (or, alone, its companions); its
    scores are out-of-fold acceptor scores (:func:`distil.acceptor.crossfit_acceptor`).
    """
    if score == "confidence":
        return [c.confidence() for c in cals], {}
    from distil.acceptor import crossfit_acceptor, features

    out: list[np.ndarray] = []
    params: dict[str, Any] = {}
    for r, (name, cal) in enumerate(zip(members, cals, strict=True)):
        names, priors = (list(members[:r]), cals[:r]) if r else (list(companions), comp_cals)
        x = features(cal.proba, cal.texts, [p.proba for p in priors])
        oof, acceptor = crossfit_acceptor(x, cal.agree, names, folds=folds, seed=seed, usable=~cal.flagged)
        params[name] = acceptor.to_dict() if acceptor is not None else None
        out.append(np.where(cal.flagged, -np.inf, oof) if acceptor is not None else cal.confidence())
    return out, params


def _save_router(
    folder: Path, cfg: RouterConfig, ood: OODDetector | None, conf: np.ndarray, agree: np.ndarray, kind: str
) -> None:
    """Write ood.npz (or remove a stale one), calibration.npz and router.json (last, so it names files that exist)."""
    if ood is not None:
        ood.save(folder)
    else:
        (folder / OOD_FILE).unlink(missing_ok=True)
    save_calibration(folder, conf, agree, kind)
    cfg.save(folder)


class Router:
    """A student (or a ladder of them), the threshold on its routing score and the OOD guard: who answers each input.

    ``ladder``: the students of ``config.ladder``, cheaper than ``student``; each answers, in order,
    the inputs it scores high enough on, and ``student`` sees the rest (:func:`certify_ladder`).
    ``acceptors``: per rung, the learned acceptor whose score the threshold applies to (a rung without
    one is routed on its confidence); ``companions``: the students of ``config.companions``, run
    beside a lone ``student`` so that its acceptor can read their answers.
    """

    def __init__(
        self, student: Student, config: RouterConfig, ood: OODDetector | None = None,
        ood_student: Student | None = None, ladder: Sequence[Student] = (),
        acceptors: Mapping[str, Acceptor] | None = None, companions: Sequence[Student] = (),
    ) -> None:
        self.student = student
        self.config = config
        self.ood = ood
        self.ood_student = ood_student or student  # whose features the guard scores
        self.labels = list(student.classes_)
        self.ladder = list(ladder)
        self.acceptors = dict(acceptors or {})
        self.companions = list(companions)
        if len(self.ladder) != len(config.ladder):
            raise ArtifactError(f"router: {len(config.ladder)} ladder members named, {len(self.ladder)} given")
        if len(self.companions) != len(config.companions):
            raise ArtifactError(f"router: {len(config.companions)} companions named, {len(self.companions)} given")

    @property
    def threshold(self) -> float:
        """The routing-score threshold in force (``inf`` = everything to the teacher)."""
        return self.config.threshold.value

    @classmethod
    def load(
        cls,
        artifact_dir: str | Path | Artifact,
        *,
        target_agreement: float | None = None,
        threshold: float | None = None,
        level: float | None = None,
    ) -> Router:
        """Load the artifact's student and ``router.json`` / ``ood.npz``.

        ``threshold`` overrides the stored threshold; ``target_agreement`` recalibrates it on the
        held-out set (keeping the stored OOD guard).  Without a ``router.json`` the threshold is
        calibrated on the held-out set now (target 0.99 unless given) and there is no OOD guard.
        """
        from distil.artifact import Artifact, load_artifact

        art = artifact_dir if isinstance(artifact_dir, Artifact) else load_artifact(artifact_dir)
        has_router = (art.path / ROUTER_FILE).exists()
        if has_router:
            cfg = RouterConfig.load(art.path)
            if cfg.member not in art.members():
                raise ArtifactError(
                    f"{art.path / ROUTER_FILE}: routes member {cfg.member!r}, which the artifact does not "
                    f"hold (it has {art.members()})",
                    hint=REFIT_HINT,
                )
            student = art.student(cfg.member)
            ladder = [art.student(m) for m in _ladder_members(art, cfg)]
            ood = OODDetector.load(art.path, cfg.ood) if cfg.ood else None
            space = (cfg.ood or {}).get("space") or cfg.member
            ood_student = art.student(space) if space != cfg.member else student
            acceptors = _load_acceptors(art, cfg)
            companions = [art.student(m) for m in _members_named(art, cfg.companions, "companions")]
        else:
            student = art.student()
            cfg = RouterConfig(
                member=art.chosen, labels=list(student.classes_),
                threshold=Threshold(
                    value=math.inf, target=target_agreement or 0.99, level=level or 0.95, n=0, answered=0,
                    agreed=0, coverage=0.0, teacher_share=1.0, agreement=None, lower_bound=0.0,
                    qualified=False, method="none",
                ),
                ood=None,
            )
            ood = None
            ood_student = student
            ladder, acceptors, companions = [], {}, []
            log.warning(
                "%s has no %s: calibrating the threshold now, without an OOD guard", art.path, ROUTER_FILE
            )
        if any(list(s.classes_) != list(cfg.labels) for s in (student, *ladder, *companions)):
            raise ArtifactError(
                f"{art.path / ROUTER_FILE}: label order differs from the student's",
                hint=REFIT_HINT,
            )
        router = cls(student, cfg, ood, ood_student, ladder, acceptors, companions)
        recalibrate = threshold is not None or not has_router or (
            target_agreement is not None and target_agreement != cfg.threshold.target
        ) or (level is not None and level != cfg.threshold.level)
        if recalibrate:
            router._recalibrate(
                art, target=target_agreement or cfg.threshold.target, level=level or cfg.threshold.level,
                threshold=threshold,
            )
        return router

    def _recalibrate(self, art: Artifact, *, target: float, level: float, threshold: float | None) -> None:
        if self.config.ladder:
            self.config.threshold = _recertify_ladder(art.path, self.config, target, level, threshold)
            return
        stored = load_calibration(art.path) if (art.path / ROUTER_FILE).exists() else None
        if stored is not None:
            conf, agree, _ = stored
        else:
            heldout = art.heldout()
            proba = self.student.predict_proba(heldout.texts)
            conf, agree = _teacher_agreement(self.student, heldout.labels, heldout.hard, proba)
            if self.ood is not None:
                conf = np.where(self.ood.predict(self.ood_student.features(heldout.texts)), -np.inf, conf)
        if threshold is not None:
            thr = evaluate_threshold(conf, agree, threshold, target=target, level=level)
        else:
            certificate: Certificate = "sequence" if self.config.threshold.method.startswith("fixed") else "ltt"
            thr = calibrate_threshold(conf, agree, target=target, level=level, method=certificate)
        self.config.threshold = thr

    def decide(self, texts: Sequence[str]) -> list[Decision]:
        """Route each text: the answer, its routing score and confidence, the OOD flag, who should answer.

        The ladder's members run first, each on the inputs the ones before it did not answer; an input
        the guard flags stops at the first member (its answer is only a fallback for a failed teacher).
        A rung answers where its routing score (its acceptor's, else its confidence) is at least the
        threshold; its acceptor reads the answers of the rungs before it (or of the companions).
        """
        texts = list(texts)
        if not texts:
            return []
        flags, oscore = self._ood_flags(texts)
        n, thr = len(texts), self.threshold
        top, conf, score = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.float64)
        member: list[str | None] = [None] * n
        answered = np.zeros(n, dtype=bool)
        pending = np.arange(n)
        earlier = [self._proba(c, texts) for c in self.companions]  # whole-batch probabilities read by acceptors
        for r, (name, student) in enumerate(zip(self.config.rungs, [*self.ladder, self.student], strict=True)):
            if pending.size == 0:
                break
            sub = [texts[i] for i in pending]
            proba = self._proba(student, sub)
            top[pending] = proba.argmax(axis=1)
            conf[pending] = proba[np.arange(pending.size), top[pending]]
            score[pending] = self._score(name, proba, sub, [q[pending] for q in earlier])
            for i in pending:
                member[i] = name
            ok = ~flags[pending] & (score[pending] >= thr)
            answered[pending[ok]] = True
            full = np.zeros((n, proba.shape[1]))
            full[pending] = proba
            earlier = earlier if r == 0 and self.companions else [*earlier, full]
            pending = pending[~ok & ~flags[pending]]
        return [
            Decision(
                label=self.labels[int(top[i])], score=float(conf[i]), confidence=float(conf[i]),
                ood=bool(flags[i]), source="student" if answered[i] else "teacher",
                ood_score=float(oscore[i]) if oscore is not None else None, member=member[i],
                routing_score=float(score[i]),
            )
            for i in range(n)
        ]

    def _score(self, name: str, proba: np.ndarray, texts: list[str], earlier: list[np.ndarray]) -> np.ndarray:
        """A rung's routing score: its acceptor's P(agree), else its top probability."""
        acceptor = self.acceptors.get(name)
        if acceptor is None:
            return np.asarray(proba.max(axis=1), dtype=np.float64)
        return acceptor.score(proba, texts, earlier[: len(acceptor.companions)])

    def _ood_flags(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(flagged, OOD score) per text; nothing flagged without a guard."""
        if self.ood is None:
            return np.zeros(len(texts), dtype=bool), None
        oscore = self.ood.score(self.ood_student.features(texts))
        return oscore > self.ood.threshold_, oscore

    def _proba(self, student: Student, texts: list[str]) -> np.ndarray:
        proba = np.asarray(student.predict_proba(texts), dtype=np.float64)
        if proba.shape != (len(texts), len(self.labels)):
            raise ArtifactError(
                f"student returned probabilities of shape {proba.shape} for {len(texts)} texts and "
                f"{len(self.labels)} labels"
            )
        return proba


def _ladder_members(art: Artifact, cfg: RouterConfig) -> list[str]:
    """``cfg.ladder``, each checked to be a member of the artifact."""
    return _members_named(art, cfg.ladder, "ladder")


def _members_named(art: Artifact, names: Sequence[str], what: str) -> list[str]:
    """``names`` (router.json's ``what``), each checked to be a member of the artifact."""
    missing = [m for m in names if m not in art.members()]
    if missing:
        raise ArtifactError(
            f"{art.path / ROUTER_FILE}: its {what} names {missing}, which the artifact does not hold "
            f"(it has {art.members()})",
            hint=REFIT_HINT,
        )
    return list(names)


def _load_acceptors(art: Artifact, cfg: RouterConfig) -> dict[str, Acceptor]:
    """The rungs' acceptors from router.json (a rung without one is routed on its confidence)."""
    from distil.acceptor import Acceptor

    source = str(art.path / ROUTER_FILE)
    out = {m: Acceptor.from_dict(p, source=source) for m, p in cfg.acceptors.items() if p is not None}
    unknown = sorted(set(out) - set(cfg.rungs))
    if unknown:
        raise ArtifactError(f"{source}: acceptors for {unknown}, which the router does not route", hint=REFIT_HINT)
    return out


def _recertify_ladder(
    folder: Path, cfg: RouterConfig, target: float, level: float, threshold: float | None
) -> Threshold:
    """A ladder router's threshold for a new target or level (or a given threshold's numbers), from stored scores."""
    members, conf, agree = load_ladder_calibration(folder)
    if members != cfg.rungs:
        raise ArtifactError(
            f"{folder / LADDER_CALIBRATION_FILE}: scores for {members}, but the router routes {cfg.rungs}",
            hint=REFIT_HINT,
        )
    if threshold is None:
        return certify_ladder(conf, agree, target=target, level=level)
    return _given_ladder_threshold(conf, agree, threshold, target, level)


def _given_ladder_threshold(
    conf: list[np.ndarray], agree: list[np.ndarray], threshold: float, target: float, level: float
) -> Threshold:
    """The numbers of a given threshold on the cascade (a single test, as :func:`evaluate_threshold`)."""
    answered, agreed = ladder_answers(conf, agree, threshold)
    return evaluate_threshold(np.where(answered, threshold, -np.inf), agreed, threshold, target=target, level=level)
