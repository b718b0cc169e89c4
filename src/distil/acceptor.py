"""The learned acceptor: a score made for routing, the probability that the student agrees with the teacher.

The student's top probability ranks its own errors imperfectly: a confident answer on a short,
ambiguous text, or one where a cheaper rung of the ladder answered differently, is wrong more often
than its probability says.  The acceptor is a logistic regression on a few numbers the router has
for free when it routes an input:

* ``log_odds`` of the student's top probability;
* ``log_chars``, the length of the text;
* for each *companion* (a rung of the ladder that ran before it, or a cheap member named to run
  beside it): whether its answer is the same (``agrees_<m>``), the probability it gives the
  student's answer (``prob_<m>``) and its own top probability (``conf_<m>``).

It is fitted on the calibration inputs' out-of-fold scores (who agreed with the teacher there), and
its own calibration scores are out-of-fold too (:func:`crossfit_acceptor`: each input scored by an
acceptor that did not see it), so the certificate of :mod:`distil.route` tests the acceptor's
scores exactly as it tests confidences.  The router then answers locally where the acceptor's
score is at least the certified threshold.

The margin to the runner-up and the entropy were tried and left out: on clinc150 they let the
acceptor answer 6 points more in-scope traffic at target 0.99, but they reward the flat tail of
the distribution that off-topic text has too, and doubled the share of the 1,000 out-of-scope
queries answered locally (3.3% → 7.4% with the static student).

Fitting needs scikit-learn (``distil[train]``); scoring is numpy only (the coefficients are a few
numbers in ``router.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distil.errors import ArtifactError

log = logging.getLogger(__name__)

OWN_FEATURES = ("log_odds", "log_chars")
COMPANION_FEATURES = ("agrees", "prob", "conf")
DEFAULT_C = 1.0  # inverse L2 strength of the logistic regression (on standardised features)
_EPS = 1e-12


def feature_names(companions: Sequence[str]) -> list[str]:
    """The acceptor's feature names, in column order, for the given companions."""
    return [*OWN_FEATURES, *(f"{f}_{m}" for m in companions for f in COMPANION_FEATURES)]


def features(proba: np.ndarray, texts: Sequence[str], companions: Sequence[np.ndarray] = ()) -> np.ndarray:
    """The acceptor's features of one member's probabilities (rows = inputs) and its companions' (same rows)."""
    p = np.asarray(proba, dtype=np.float64)
    top_i = p.argmax(axis=1)
    rows = np.arange(p.shape[0])
    top = np.clip(p[rows, top_i], _EPS, 1 - 1e-9)
    cols = [np.log(top / (1 - top)), np.log1p(np.array([len(t) for t in texts], dtype=np.float64))]
    for c in companions:
        q = np.asarray(c, dtype=np.float64)
        if q.shape != p.shape:
            raise ArtifactError(f"a companion's probabilities have shape {q.shape}, the student's {p.shape}")
        cols += [(q.argmax(axis=1) == top_i).astype(np.float64), q[rows, top_i], q.max(axis=1)]
    return np.column_stack(cols)


@dataclass(frozen=True)
class Acceptor:
    """A fitted logistic regression from :func:`features` to the probability of agreeing with the teacher."""

    companions: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def score(self, proba: np.ndarray, texts: Sequence[str], companions: Sequence[np.ndarray] = ()) -> np.ndarray:
        """P(agree with the teacher) for each input (numpy only)."""
        if len(companions) != len(self.companions):
            raise ArtifactError(
                f"the acceptor reads {len(self.companions)} companions ({list(self.companions)}), "
                f"{len(companions)} given"
            )
        return self.score_features(features(proba, texts, companions))

    def score_features(self, x: np.ndarray) -> np.ndarray:
        """P(agree) from a feature matrix built by :func:`features`."""
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -500, 500))), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: companions, feature names and the coefficients."""
        return {
            "companions": list(self.companions), "features": feature_names(self.companions),
            "mean": self.mean.tolist(), "scale": self.scale.tolist(), "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "router.json") -> Acceptor:
        """Inverse of :meth:`to_dict`; :class:`ArtifactError` when the numbers do not fit the feature names."""
        try:
            companions = tuple(str(m) for m in d["companions"])
            mean, scale, coef = (np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
            out = cls(companions, mean, scale, coef, float(d["intercept"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: not a valid acceptor ({exc!r})",
                                hint="retrain with distil train (it refits the router)") from None
        names = feature_names(companions)
        if list(d.get("features", [])) != names or any(a.shape != (len(names),) for a in (mean, scale, coef)):
            raise ArtifactError(f"{source}: the acceptor's coefficients do not match its features {names}",
                                hint="retrain with distil train (it refits the router)")
        return out


def fit_acceptor(
    x: np.ndarray, agree: np.ndarray, companions: Sequence[str] = (), *, c: float = DEFAULT_C
) -> Acceptor | None:
    """The acceptor fitted on ``x`` (:func:`features`) and who agreed; None when ``agree`` is all one value."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(agree, dtype=bool)
    if y.all() or not y.any():
        return None
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit((x - mean) / scale, y)
    return Acceptor(tuple(companions), mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def crossfit_acceptor(
    x: np.ndarray, agree: np.ndarray, companions: Sequence[str] = (), *, folds: int = 5, seed: int = 0,
    usable: np.ndarray | None = None,
) -> tuple[np.ndarray, Acceptor | None]:
    """(out-of-fold acceptor scores of every row, the acceptor fitted on all usable rows).

    Each row's score comes from an acceptor fitted on the other folds, so the scores can be certified
    like confidences.  ``usable``: rows to fit on (the others, e.g. inputs the OOD guard flags, get a
    score but teach nothing).  ``(None scores, None)`` stand-ins: when the rows agree everywhere (or
    nowhere) there is nothing to learn and the caller keeps the confidence.
    """
    y = np.asarray(agree, dtype=bool)
    ok = np.ones(y.size, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    whole = fit_acceptor(x[ok], y[ok], companions)
    if whole is None:
        return np.full(y.size, np.nan), None
    fold_of = np.random.default_rng(seed).permutation(y.size) % folds
    scores = np.zeros(y.size, dtype=np.float64)
    for f in range(folds):
        part = fold_of == f
        model = fit_acceptor(x[~part & ok], y[~part & ok], companions) or whole
        scores[part] = model.score_features(x[part])
    return scores, whole
