"""Routing: Clopper–Pearson thresholds (golden values), fixed-sequence calibration, OOD, drift."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import fixtures_serve as fx
import numpy as np
import pytest
from scipy.stats import beta, binom

from distil.drift import drift, psi, total_variation, tv_null
from distil.errors import ArtifactError, ConfigError, DataError
from distil.route import (
    OODDetector,
    Router,
    RoutingWarning,
    Threshold,
    calibrate_threshold,
    clopper_pearson_lower,
    default_grid,
    evaluate_threshold,
    fit_router,
    min_answered,
    roc_auc,
)

# ---------------------------------------------------------------------------------------------
# Clopper–Pearson


@pytest.mark.parametrize(("k", "n"), [(1, 1), (8, 10), (95, 100), (297, 300), (990, 1000), (4990, 5000)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_the_beta_quantile_and_inverts_the_binomial_tail(
    k: int, n: int, level: float
) -> None:
    lb = float(clopper_pearson_lower(k, n, level))
    assert lb == pytest.approx(beta.ppf(1 - level, k, n - k + 1), rel=1e-12)
    # the defining property: at p = bound, seeing k or more successes has probability 1 - level
    assert binom.sf(k - 1, n, lb) == pytest.approx(1 - level, rel=1e-6)


def test_clopper_pearson_golden_values() -> None:
    # all successes: the bound has the closed form (1 - level)^(1/n)
    assert float(clopper_pearson_lower(10, 10, 0.95)) == pytest.approx(0.05 ** (1 / 10), rel=1e-12)
    assert float(clopper_pearson_lower(10, 10, 0.95)) == pytest.approx(0.741134, abs=1e-6)
    assert float(clopper_pearson_lower(298, 298, 0.95)) == pytest.approx(0.98999757, abs=1e-8)
    assert float(clopper_pearson_lower(0, 50, 0.95)) == 0.0
    # vectorised
    got = clopper_pearson_lower(np.array([0, 5, 10]), np.array([10, 10, 10]), 0.95)
    assert got.shape == (3,) and got[0] == 0.0 and got[1] < got[2]
    with pytest.raises(DataError):
        clopper_pearson_lower(11, 10)
    with pytest.raises(ConfigError):
        clopper_pearson_lower(5, 10, level=1.0)


def test_min_answered_is_where_perfect_agreement_first_passes() -> None:
    need = min_answered(0.99, 0.95)
    assert need == 299
    assert float(clopper_pearson_lower(need, need, 0.95)) >= 0.99
    assert float(clopper_pearson_lower(need - 1, need - 1, 0.95)) < 0.99
    assert min_answered(0.9, 0.95) == 29


# ---------------------------------------------------------------------------------------------
# calibration


def _blocks(blocks: list[tuple[float, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs at confidence c: n of them, d disagreeing."""
    conf, agree = [], []
    for c, n, d in blocks:
        conf += [c] * n
        agree += [False] * d + [True] * (n - d)
    return np.array(conf), np.array(agree)


def test_fixed_sequence_stops_at_the_first_failure() -> None:
    # grid 0.9 > 0.8 > 0.7 > 0.6; target 0.9
    conf, agree = _blocks([(0.95, 100, 0), (0.85, 100, 2), (0.75, 100, 30), (0.65, 2000, 0)])
    grid = np.array([0.9, 0.8, 0.7, 0.6])
    th = calibrate_threshold(conf, agree, target=0.9, level=0.95, method="sequence", grid=grid, start=0.0)
    # 0.9: 100/100 passes; 0.8: 198/200 passes; 0.7: 268/300 fails -> stop.
    assert th.value == 0.8 and th.qualified and th.tested == 3
    assert (th.answered, th.agreed, th.n) == (200, 198, 2300)
    assert th.lower_bound == pytest.approx(beta.ppf(0.05, 198, 3))
    assert th.coverage == pytest.approx(200 / 2300) and th.teacher_share == pytest.approx(1 - 200 / 2300)
    # 0.6 alone would pass (2268/2300) — a plain scan for the lowest passing threshold would take it
    assert float(clopper_pearson_lower(2268, 2300, 0.95)) >= 0.9


def test_untestable_prefix_is_skipped_not_failed() -> None:
    # at 0.99 only 5 inputs: too few to ever pass at target 0.9 (needs 29) — skipped, scan goes on
    conf, agree = _blocks([(0.995, 5, 1), (0.95, 200, 0)])
    th = calibrate_threshold(conf, agree, target=0.9, method="sequence", grid=np.array([0.99, 0.9]), start=0.0)
    assert th.value == 0.9 and th.answered == 205 and th.agreed == 204


def test_start_skips_small_prefixes_and_gives_the_first_test_more_power() -> None:
    conf, agree = _blocks([(0.99, 300, 1), (0.95, 1000, 3)])
    grid = np.array([0.98, 0.9])
    with pytest.warns(RoutingWarning):  # 299/300 cannot show 0.99; the scan stops there
        assert math.isinf(calibrate_threshold(conf, agree, target=0.99, method="sequence", grid=grid, start=0.0).value)
    th = calibrate_threshold(conf, agree, target=0.99, method="sequence", grid=grid, start=0.5)
    assert th.value == 0.9 and th.tested == 1 and (th.answered, th.agreed) == (1300, 1296)
    assert th.lower_bound == pytest.approx(beta.ppf(0.05, 1296, 5)) and th.lower_bound >= 0.99
    with pytest.raises(ConfigError, match="start"):
        calibrate_threshold(conf, agree, target=0.99, method="sequence", start=1.0)


def test_nothing_qualifies_routes_everything_to_the_teacher_with_a_warning() -> None:
    conf, agree = _blocks([(0.99, 100, 10), (0.5, 100, 50)])
    with pytest.warns(RoutingWarning, match="every input will go to the teacher"):
        th = calibrate_threshold(conf, agree, target=0.99)
    assert math.isinf(th.value) and not th.qualified
    assert th.teacher_share == 1.0 and th.coverage == 0.0
    assert "everything goes to the teacher" in th.describe()


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="one agreement flag per confidence"):
        calibrate_threshold(np.ones(3), np.ones(4, dtype=bool), target=0.9)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        calibrate_threshold(np.ones(3), np.ones(3, dtype=bool), target=1.0)
    with pytest.raises(DataError, match="NaN"):
        calibrate_threshold(np.array([np.nan, 1.0]), np.ones(2, dtype=bool), target=0.9)


def test_guarantee_holds_in_simulation() -> None:
    """Confidence ~ U(0,1), P(agree | c) = 1 - 0.2 (1 - c): agreement above t is 1 - 0.1 (1 - t),
    so target 0.97 holds exactly for t >= 0.7.  The chosen threshold may be below 0.7 in at most
    ~5 % of draws (level 0.95)."""
    rng = np.random.default_rng(0)
    reps, n, bad, chosen = 300, 3000, 0, 0
    for _ in range(reps):
        c = rng.random(n)
        a = rng.random(n) < 1 - 0.2 * (1 - c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RoutingWarning)
            th = calibrate_threshold(c, a, target=0.97, level=0.95, method="sequence")
        if math.isfinite(th.value):
            chosen += 1
            bad += th.value < 0.7 - 1e-9
    assert chosen > reps * 0.5  # it usually finds one (a disagreement among the first testable few stops it)
    assert bad / reps <= 0.075, f"violations {bad}/{reps}"


def _noisy_teacher_stream(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A strong student against a teacher that answers 2 % of inputs at random (10 labels): even its
    most confident answers disagree with the teacher about 1.8 % of the time."""
    c = rng.beta(5, 1, n)
    return c, rng.random(n) < 0.982 * (1 - 0.3 * (1 - c) ** 1.5)


def _true_agreement_above() -> Callable[[float], float]:
    """Exact-enough answered agreement of the noisy stream above a threshold (2M draws)."""
    c, _ = _noisy_teacher_stream(np.random.default_rng(123), 2_000_000)
    p = 0.982 * (1 - 0.3 * (1 - c) ** 1.5)
    order = np.argsort(-c)
    cum = np.cumsum(p[order]) / np.arange(1, c.size + 1)
    ranked = c[order]

    def truth(t: float) -> float:
        m = int(np.searchsorted(-ranked, -t, side="right"))
        return float(cum[m - 1]) if m else 1.0

    return truth


@pytest.mark.parametrize("n", [450, 3000])
def test_ltt_certificate_holds_and_a_few_confident_teacher_errors_cannot_zero_it(n: int) -> None:
    """Many calibration sets from a known model: how often the true answered agreement of the chosen
    threshold is below the target (the promise: at most 5 %), and how much the student answers."""
    truth = _true_agreement_above()
    rng = np.random.default_rng(7)
    reps, violations, found, cov_ltt, cov_seq = 200, 0, 0, 0.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        for _ in range(reps):
            c, a = _noisy_teacher_stream(rng, n)
            th = calibrate_threshold(c, a, target=0.95, level=0.95)
            seq = calibrate_threshold(c, a, target=0.95, level=0.95, method="sequence")
            cov_seq += seq.coverage
            if math.isfinite(th.value):
                found += 1
                cov_ltt += th.coverage
                violations += truth(th.value) < 0.95
    assert violations / reps <= 0.05 + 0.03, f"violations {violations}/{reps}"
    assert cov_ltt >= cov_seq, (cov_ltt / reps, cov_seq / reps)  # never less power than the old scan here
    if n == 3000:  # the whole-traffic agreement is 0.957: a big calibration set certifies almost all of it
        assert found == reps and cov_ltt / reps >= 0.9


def test_ltt_thresholds_come_from_a_fixed_coverage_grid() -> None:
    conf = np.linspace(0.01, 1.0, 100)
    th = calibrate_threshold(conf, np.ones(100, dtype=bool), target=0.9, grid_size=4)
    assert th.method == "ltt-fallback" and th.value == pytest.approx(0.01) and th.answered == 100
    assert th.tested == 4 and th.lower_bound >= 0.9
    with pytest.raises(ConfigError, match="1 to 1000 points"):
        calibrate_threshold(conf, np.ones(100, dtype=bool), target=0.9, grid_size=0)
    with pytest.raises(ConfigError, match="unknown certificate"):
        calibrate_threshold(conf, np.ones(100, dtype=bool), target=0.9, method="best")  # type: ignore[arg-type]


def test_evaluate_threshold_and_json_roundtrip() -> None:
    conf, agree = _blocks([(0.9, 300, 0), (0.5, 100, 40)])
    th = evaluate_threshold(conf, agree, 0.8, target=0.99)
    assert th.method == "given" and th.answered == 300 and th.qualified
    assert Threshold.from_dict(json.loads(json.dumps(th.to_dict()))) == th
    with pytest.warns(RoutingWarning):
        none = calibrate_threshold(conf[:10], agree[:10], target=0.99)
    back = Threshold.from_dict(json.loads(json.dumps(none.to_dict())))
    assert math.isinf(back.value)


def test_default_grid_is_fixed_and_descending() -> None:
    g = default_grid()
    assert g[0] == 1.0 and g[-1] == pytest.approx(0.0) and np.all(np.diff(g) < 0)
    np.testing.assert_array_equal(g, default_grid())


# ---------------------------------------------------------------------------------------------
# OOD


def _clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    d = 16
    centres = rng.normal(size=(4, d)) * 3
    far = rng.normal(size=(1, d)) * 3

    def sample(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        lab = rng.integers(0, len(c), n)
        return (c[lab] + rng.normal(size=(n, d))).astype(np.float32), lab

    train, lab = sample(centres, 2000)
    held, _ = sample(centres, 1000)
    test_in, _ = sample(centres, 500)
    test_out, _ = sample(far, 500)
    return train, lab, held, test_in, test_out


def test_a_small_held_out_set_does_not_put_the_knn_threshold_at_its_maximum() -> None:
    # 30 held-out rows alone: their 0.99 quantile is their maximum, and the guard lets most of a
    # nearby cluster through; with the reference's leave-one-out scores the quantile rests on 2,030
    rng = np.random.default_rng(5)
    d = 16
    centre, near = rng.normal(size=(1, d)) * 3, rng.normal(size=(1, d)) * 3
    train = (centre + rng.normal(size=(2000, d))).astype(np.float32)
    held = (centre + rng.normal(size=(30, d))).astype(np.float32)
    fresh = (centre + rng.normal(size=(2000, d))).astype(np.float32)
    det = OODDetector(k=10, quantile=0.99, max_reference=5000).fit(train, held)
    assert det.n_calibration_ == 2030
    assert det.threshold_ <= float(det.score(held).max())
    assert det.predict(fresh).mean() == pytest.approx(0.01, abs=0.01)
    halfway = (0.6 * centre + 0.4 * near + rng.normal(size=(500, d))).astype(np.float32)
    held_only = float(np.quantile(det.score(held), 0.99, method="higher"))
    assert det.predict(halfway).mean() >= float((det.score(halfway) > held_only).mean())


@pytest.mark.parametrize("method", ["knn", "mahalanobis"])
def test_ood_separates_a_new_cluster_and_flags_about_one_percent(method: str, tmp_path: Path) -> None:
    train, lab, held, test_in, test_out = _clusters()
    det = OODDetector(method=method, k=10, quantile=0.99, max_reference=1000)  # type: ignore[arg-type]
    det.fit(train, held, train_labels=lab if method == "mahalanobis" else None)
    auroc = roc_auc(det.score(test_in), det.score(test_out))
    assert auroc > 0.99
    # the quantile of held-out (and, for knn, leave-one-out reference) scores: about 1% flagged
    assert det.heldout_flag_rate_ <= (0.011 if method == "mahalanobis" else 0.02)
    assert 0.0 <= det.predict(test_in).mean() <= 0.04  # ~1% on fresh in-distribution data
    assert det.predict(test_out).mean() > 0.95
    if method == "knn":
        assert det.reference_ is not None and det.reference_.shape[0] == 1000  # capped
    # save/load: identical scores, no pickle
    det.save(tmp_path)
    with np.load(tmp_path / "ood.npz", allow_pickle=False) as z:
        assert "threshold" in z
    back = OODDetector.load(tmp_path, json.loads(json.dumps(det.params())))
    np.testing.assert_allclose(back.score(test_out), det.score(test_out), rtol=1e-6)
    assert back.threshold_ == det.threshold_


def test_ood_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="knn' or 'mahalanobis"):
        OODDetector(method="lof")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="before fit"):
        OODDetector().predict(np.zeros((2, 3), np.float32))
    train, _, held, *_ = _clusters()
    det = OODDetector().fit(train, held)
    with pytest.raises(DataError, match="dimensions"):
        det.score(np.zeros((2, 5), np.float32))
    with pytest.raises(ArtifactError, match="missing"):
        OODDetector.load(tmp_path, det.params())


def test_roc_auc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    neg = rng.normal(size=300).round(1)
    pos = (rng.normal(size=200) + 0.7).round(1)
    want = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[neg, pos])
    assert roc_auc(neg, pos) == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# the router on a numpy student (fast)


@pytest.fixture(scope="module")
def centroid_router() -> Router:
    router: Router = fx.centroid_router()
    return router


def test_router_sends_unfamiliar_and_unsure_inputs_to_the_teacher(centroid_router: Router) -> None:
    r = centroid_router
    assert math.isfinite(r.threshold)
    inside = fx.make_texts(1200, seed=7)[-100:]
    dec = r.decide(inside + fx.FOREIGN)
    foreign = dec[len(inside):]
    assert all(d.ood and d.source == "teacher" for d in foreign)
    home = dec[: len(inside)]
    answered = [d for d in home if d.source == "student"]
    assert len(answered) > 60
    assert all(d.confidence >= r.threshold and not d.ood for d in answered)
    assert all(d.source == "teacher" for d in home if d.confidence < r.threshold)
    assert r.decide([]) == []


# ---------------------------------------------------------------------------------------------
# drift helpers


def test_drift_statistics() -> None:
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    assert total_variation(p, q) == pytest.approx(0.5)
    assert psi(p, p) == pytest.approx(0.0, abs=1e-12)
    assert psi(p, q) > 0.25
    null = tv_null(q, 1000, sims=200, seed=0)
    assert null.shape == (200,) and np.all(null < 0.1)
    np.testing.assert_array_equal(null, tv_null(q, 1000, sims=200, seed=0))


# ---------------------------------------------------------------------------------------------
# a real ngram artifact on a banking77 subset (slow: trains with torch once per session)


@pytest.mark.slow
def test_fit_router_writes_router_json_and_ood_npz(
    banking_artifact: tuple[Path, Path, list[str], list[str]],
) -> None:
    art, _task, pool, test = banking_artifact
    cfg = fit_router(art, pool, target_agreement=0.9)
    data = json.loads((art / "router.json").read_text())
    assert data["format_version"] == 2 and data["member"] == "ngram"
    assert data["ood"]["method"] == "knn" and (art / "ood.npz").exists()
    # routed on the learned acceptor's score: the ngram alone has no companion
    assert data["score"] == "acceptor" and data["companions"] == []
    assert data["acceptors"]["ngram"]["features"] == ["log_odds", "log_chars"]
    th = cfg.threshold
    assert th.n > 0 and 0 <= th.teacher_share <= 1
    if th.qualified:
        assert th.lower_bound >= 0.9
        assert th.bound_level is not None and th.bound_level >= 0.95
        assert th.lower_bound == pytest.approx(
            float(beta.ppf(1 - th.bound_level, th.agreed, th.answered - th.agreed + 1))
        )
    router = Router.load(art)
    assert router.ood is not None and router.threshold == cfg.threshold.value
    # the OOD guard flags clinc150-style foreign queries far more often than banking test queries
    dec_in = router.decide(test)
    dec_out = router.decide(fx.FOREIGN * 3)
    assert np.mean([d.ood for d in dec_out]) > np.mean([d.ood for d in dec_in]) + 0.3
    # a threshold given directly is kept and reported
    given = Router.load(art, threshold=0.5)
    assert given.threshold == 0.5 and given.config.threshold.method == "given"
    stricter = Router.load(art, target_agreement=0.95)
    assert stricter.config.threshold.target == 0.95


@pytest.mark.slow
def test_drift_says_no_on_fresh_same_domain_data_and_retrain_on_foreign_data(
    banking_artifact: tuple[Path, Path, list[str], list[str]],
) -> None:
    art, _task, pool, test = banking_artifact
    if not (art / "router.json").exists():
        fit_router(art, pool, target_agreement=0.9)
    same = drift(art, test)
    assert same.n == len(test) and same.ood_share is not None
    assert not same.retrain, same.summary()
    assert "no retraining needed" in same.summary()
    foreign = fx.make_texts(300, seed=3) + fx.FOREIGN * 5  # other intents, other domains
    moved = drift(art, foreign)
    assert moved.retrain, moved.summary()
    assert moved.ood_share is not None and moved.ood_share > 0.1
    assert "RETRAIN" in moved.summary()
    with pytest.raises(DataError, match="no usable recent texts"):
        drift(art, ["", "  "])
