"""The cascade through the ladder: its guarantee simulated, its router fitted, saved, loaded and served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from stats.stats_helpers import upper_margin

from distil.errors import ConfigError
from distil.route import calibrate_threshold, certify_ladder

TARGET, LEVEL = 0.95, 0.95


def _draw(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two rungs: the second sees more (its confidence only loosely follows the first's), agrees more."""
    c1 = rng.random(n)
    c2 = np.clip(0.4 * c1 + 0.6 * rng.random(n), 0.0, 1.0)
    a1 = rng.random(n) < 0.86 + 0.139 * c1
    a2 = rng.random(n) < 0.90 + 0.099 * c2
    return [c1, c2], [a1, a2]


def _true_agreement(thresholds: list[float], conf: list[np.ndarray], agree: list[np.ndarray]) -> tuple[float, float]:
    """(agreement on what the cascade answers, share answered) on a large fresh sample."""
    answered = np.zeros(conf[0].size, dtype=bool)
    hits = 0
    for t, c, a in zip(thresholds, conf, agree, strict=True):
        mine = ~answered & (c >= t)
        hits += int(a[mine].sum())
        answered |= mine
    return (hits / answered.sum() if answered.any() else 1.0), float(answered.mean())


def test_the_cascades_guarantee_holds_in_simulation() -> None:
    rng = np.random.default_rng(0)
    big_conf, big_agree = _draw(rng, 400_000)
    reps, violations, shares = 300, 0, []
    for _ in range(reps):
        conf, agree = _draw(rng, 3000)
        thr = certify_ladder(conf, agree, target=TARGET, level=LEVEL)
        agreement, share = _true_agreement([thr.value, thr.value], big_conf, big_agree)
        violations += agreement < TARGET
        shares.append(share)
    assert violations / reps <= upper_margin(1 - LEVEL, reps), violations
    assert np.median(shares) > 0.3  # not vacuous: the cascade answers a real share locally


def test_the_second_rung_answers_what_the_first_cannot_certify() -> None:
    rng = np.random.default_rng(1)
    conf, agree = _draw(rng, 6000)
    one = certify_ladder(conf[:1], agree[:1], target=TARGET, level=LEVEL)
    two = certify_ladder(conf, agree, target=TARGET, level=LEVEL)
    assert one.value == calibrate_threshold(conf[0], agree[0], target=TARGET, level=LEVEL).value  # one rung
    big_conf, big_agree = _draw(rng, 200_000)
    _, share_one = _true_agreement([one.value], big_conf[:1], big_agree[:1])
    agreement, share_two = _true_agreement([two.value, two.value], big_conf, big_agree)
    assert share_two > share_one + 0.1 and agreement >= TARGET


def test_rungs_scored_on_different_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="same calibration inputs"):
        certify_ladder([np.ones(3), np.ones(4)], [np.ones(3, bool), np.ones(4, bool)], target=0.9)


@pytest.fixture(scope="module")
def ladder_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from _distil_helpers import small_banking, tiny_static_model

    from distil.train import train

    tmp = tmp_path_factory.mktemp("ladder")
    ls = small_banking(n_classes=6, per_class=40)
    params = {"ngram": {"bits": 13, "dim": 16, "epochs": 10},
              "static": {"base": str(tiny_static_model(tmp / "m2v", ls.texts)), "head": "linear", "epochs": 30}}
    train(ls, tmp / "art", students=("ngram", "static"), target=0.0, params=params, router_target=0.8,
          routing={"ladder": ("ngram",), "member": "static"})
    return tmp / "art", ls


def test_a_ladder_router_is_fitted_saved_and_served_rung_by_rung(ladder_artifact: tuple[Path, Any]) -> None:
    from distil.cascade import Cascade, rung_shares
    from distil.route import Router, ladder_answers, load_ladder_calibration

    art, ls = ladder_artifact
    router_json = json.loads((art / "router.json").read_text())
    assert router_json["ladder"] == ["ngram"] and router_json["member"] == "static"
    assert router_json["threshold"]["method"] == "ladder-ltt-fallback"
    members, conf, agree = load_ladder_calibration(art)
    assert members == ["ngram", "static"] and conf[0].size == conf[1].size == len(ls)  # cross-fitted, whole pool
    router = Router.load(art)
    thr = router.threshold
    answered, agreed = ladder_answers(conf, agree, thr)
    stored = router.config.threshold
    assert stored.answered == int(answered.sum()) and stored.agreed == int(agreed.sum())
    texts = ls.texts[:120]
    decisions = router.decide(texts)
    # each rung is routed on its acceptor's score; the second rung's acceptor reads the first rung's answer
    assert router_json["score"] == "acceptor" and router_json["acceptors"]["static"]["companions"] == ["ngram"]
    ngram_proba = router.ladder[0].predict_proba(texts)
    ngram_score = router.acceptors["ngram"].score(ngram_proba, texts)
    for d, c, p in zip(decisions, ngram_score, ngram_proba, strict=True):
        if d.member == "ngram":
            assert d.routing_score == pytest.approx(c) and d.confidence == pytest.approx(p.max())
        if d.member == "ngram" and d.source == "student":
            assert d.routing_score is not None and d.routing_score >= thr
        if d.member == "static":
            assert c < thr and not d.ood  # only what the first rung did not answer reaches the second
    served = Cascade(router).served_on(texts, [ls.labels[i] for i in ls.hard[:120]])
    shares = rung_shares(served, ["ngram", "static"])
    assert shares[0]["reached"] == 1.0 and shares[1]["reached"] <= 1.0 - shares[0]["answered"] + 1e-9
    # a new target is certified again from the stored scores of both rungs, nothing retrained
    again = Router.load(art, target_agreement=0.9)
    assert again.config.threshold.method == "ladder-ltt-fallback" and again.config.threshold.target == 0.9


def test_a_ladder_routed_on_confidence_compares_the_top_probability(
    ladder_artifact: tuple[Path, Any], tmp_path: Path
) -> None:
    import shutil

    from distil.route import Router, fit_router

    src, ls = ladder_artifact
    art = tmp_path / "art"
    shutil.copytree(src, art)
    cfg = fit_router(art, ls.texts, labeled=ls, ladder=("ngram",), member="static", score="confidence",
                     target_agreement=0.8)
    assert cfg.score == "confidence" and cfg.acceptors == {}
    router = Router.load(art)
    for d in router.decide(ls.texts[:60]):
        assert d.routing_score == d.confidence == d.score
        assert (d.source == "student") == (d.routing_score >= router.threshold and not d.ood)


def test_a_lone_student_reads_its_companion_and_the_served_cost_counts_it(
    ladder_artifact: tuple[Path, Any], tmp_path: Path
) -> None:
    import shutil

    from distil.cascade import Cascade, rung_shares
    from distil.route import Router, fit_router

    src, ls = ladder_artifact
    art = tmp_path / "art"
    shutil.copytree(src, art)
    cfg = fit_router(art, ls.texts, labeled=ls, member="static", target_agreement=0.8)  # companion: auto
    assert cfg.score == "acceptor" and cfg.companions == ["ngram"] and not cfg.ladder
    router = Router.load(art)
    texts = ls.texts[:50]
    ngram_p, static_p = router.companions[0].predict_proba(texts), router.student.predict_proba(texts)
    expected = router.acceptors["static"].score(static_p, texts, [ngram_p])
    decisions = router.decide(texts)
    assert [d.routing_score for d in decisions] == pytest.approx(list(expected))
    assert all(d.member == "static" for d in decisions)
    shares = rung_shares(Cascade(router).served_on(texts, [ls.labels[i] for i in ls.hard[:50]]),
                         router.config.rungs, router.config.companions)
    assert shares[0] == {"member": "ngram", "answered": 0.0, "reached": 1.0, "companion": True}
    # an older router.json (format 1, no routing score) still loads and routes on the confidence
    data = json.loads((art / "router.json").read_text())
    for key in ("score", "acceptors", "companions"):
        data.pop(key)
    (art / "router.json").write_text(json.dumps({**data, "format_version": 1}))
    old = Router.load(art)
    assert old.config.score == "confidence" and not old.acceptors and not old.companions
    assert all(d.routing_score == d.confidence for d in old.decide(texts))
    # a member certified on the held-out split (finetune cannot be cross-fitted) has its companion scored there too
    held = fit_router(art, ls.texts, labeled=ls, member="static", calibration="heldout", target_agreement=0.8)
    assert held.companions == ["ngram"] and held.info["calibration"] == "heldout"
    # a companion that is the routed member, or not trained, is refused
    for bad in (("static",), ("encoder",)):
        with pytest.raises(ConfigError, match="--acceptor-with"):
            fit_router(art, ls.texts, labeled=ls, member="static", acceptor_with=bad)


def test_a_cascade_of_members_the_artifact_lacks_is_refused(ladder_artifact: tuple[Path, Any]) -> None:
    from distil.route import fit_router

    art, ls = ladder_artifact
    with pytest.raises(ConfigError, match="distinct trained members"):
        fit_router(art, ls.texts, labeled=ls, ladder=("encoder",), member="static")
    with pytest.raises(ConfigError, match="distinct trained members"):
        fit_router(art, ls.texts, labeled=ls, ladder=("static",), member="static")


def test_the_server_answers_through_the_ladder(ladder_artifact: tuple[Path, Any]) -> None:
    from fastapi.testclient import TestClient

    from distil.serving.app import create_app

    art, ls = ladder_artifact
    with TestClient(create_app(art)) as c:  # no teacher: what no rung answers comes back degraded
        ready = c.get("/readyz").json()
        assert ready["rungs"] == ["ngram", "static"]
        r = c.post("/v1/classify", json={"inputs": ls.texts[:40]})
        assert r.status_code == 200, r.text
        answers = r.json()
        metrics = c.get("/metrics").text
    local = [a for a in answers if not a["degraded"]]
    assert local and all(a["member"] in ("ngram", "static") for a in local)
    for member in ("ngram", "static"):  # one counter per rung, as many as it answered
        n = sum(a["member"] == member for a in local)
        line = f'distil_rung_answers_total{{member="{member}"}} {n}'
        assert (line in metrics) if n else ("member=\"" + member not in metrics), metrics
