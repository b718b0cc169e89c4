"""The learned acceptor: its features, its file form, and the guarantee when the certificate tests its scores."""

from __future__ import annotations

import numpy as np
import pytest

from distil.acceptor import Acceptor, crossfit_acceptor, feature_names, features, fit_acceptor
from distil.errors import ArtifactError
from distil.route import calibrate_threshold


def _proba(rng: np.random.Generator, n: int, labels: int = 5, sharp: float = 3.0) -> np.ndarray:
    z = rng.normal(size=(n, labels)) * sharp
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_features_read_the_student_the_text_and_each_companion() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    q = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])  # agrees on the first input only
    x = features(p, ["short", "a longer text"], [q])
    assert x.shape == (2, len(feature_names(["ngram"])))
    assert feature_names(["ngram"]) == ["log_odds", "log_chars", "agrees_ngram", "prob_ngram", "conf_ngram"]
    assert x[0, 0] == pytest.approx(np.log(0.7 / 0.3))
    assert x[0, 1] == pytest.approx(np.log1p(5)) and x[1, 1] > x[0, 1]  # log length
    assert list(x[:, 2]) == [1.0, 0.0] and list(x[:, 3]) == pytest.approx([0.6, 0.1])
    assert list(x[:, 4]) == pytest.approx([0.6, 0.8])
    with pytest.raises(ArtifactError, match="shape"):
        features(p, ["a", "b"], [q[:, :2]])


def test_an_acceptor_round_trips_through_json_and_refuses_coefficients_that_do_not_fit() -> None:
    rng = np.random.default_rng(0)
    p = _proba(rng, 400)
    agree = rng.random(400) < p.max(axis=1)
    texts = ["x" * int(k) for k in rng.integers(1, 80, 400)]
    acc = fit_acceptor(features(p, texts), agree)
    assert acc is not None
    back = Acceptor.from_dict(acc.to_dict())
    assert np.allclose(back.score(p, texts), acc.score(p, texts))
    broken = acc.to_dict() | {"coef": acc.coef.tolist()[:-1]}
    with pytest.raises(ArtifactError, match="do not match"):
        Acceptor.from_dict(broken)
    with pytest.raises(ArtifactError, match="companions"):
        acc.score(p, texts, [p])


def test_nothing_to_learn_when_every_input_agrees() -> None:
    x = np.random.default_rng(1).normal(size=(50, 4))
    assert fit_acceptor(x, np.ones(50, dtype=bool)) is None
    scores, acc = crossfit_acceptor(x, np.ones(50, dtype=bool))
    assert acc is None and np.isnan(scores).all()


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A known model: the student's confidence is honest on short texts and too high on long ones.

    Returns (confidence, features for the acceptor, agreed with the teacher).
    """
    conf = rng.beta(5, 1.2, n)
    long = rng.random(n) < 0.4
    p_agree = np.where(long, conf**4, conf)  # long texts: confident but often wrong
    agree = rng.random(n) < p_agree
    logit = np.log(np.clip(conf, 1e-9, 1 - 1e-9) / np.clip(1 - conf, 1e-9, 1))
    x = np.column_stack([logit, long.astype(float), logit * long])
    return conf, x, agree


def _true_agreement(acc: Acceptor, threshold: float, rng: np.random.Generator) -> tuple[float, float]:
    """(agreement, share answered) of the acceptor's threshold on 100,000 fresh draws of the model."""
    _, x, agree = _draw(rng, 100_000)
    answered = acc.score_features(x) >= threshold
    return float(agree[answered].mean()) if answered.any() else 1.0, float(answered.mean())


def test_the_certificate_on_cross_fitted_acceptor_scores_holds_and_answers_more_than_confidence() -> None:
    """Many calibration sets from the known model: how often does the true answered agreement fall below target?

    The promise: at most 1 − level (5%) of the time.  Each draw fits the acceptor out-of-fold,
    certifies its threshold by Learn-then-Test, and measures the true agreement of that threshold
    with the acceptor fitted on the whole draw, as the router serves it.
    """
    target, level, draws = 0.9, 0.95, 120
    rng = np.random.default_rng(11)
    violations, acc_share, conf_share = 0, [], []
    for _ in range(draws):
        conf, x, agree = _draw(rng, 3000)
        scores, acc = crossfit_acceptor(x, agree, seed=int(rng.integers(1 << 30)))
        assert acc is not None
        thr = calibrate_threshold(scores, agree, target=target, level=level)
        if thr.qualified:
            agreement, share = _true_agreement(acc, thr.value, rng)
            violations += agreement < target
            acc_share.append(share)
        else:
            acc_share.append(0.0)
        conf_share.append(calibrate_threshold(conf, agree, target=target, level=level).coverage)
    rate = violations / draws
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / draws), f"violation rate {rate:.3f}"
    # the acceptor learns that long texts are less sure than they say, so it can answer more at the same target
    assert np.mean(acc_share) > np.mean(conf_share) + 0.05
