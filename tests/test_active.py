"""Active labeling: rounds, budget, no self-training, resume from the journal."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import banking77

from distil.active import (
    balanced_order,
    cheap_embed,
    k_center,
    label_active,
    margin,
    round_student,
    typical_seed,
)
from distil.journal import Journal
from distil.task import Task


def _task(tmp_path: Path, labels: list[str]) -> Task:
    lab = ", ".join(f'"{x}"' for x in labels)
    p = tmp_path / "task.toml"
    p.write_text(
        f'name="bank"\nlabels=[{lab}]\n[teacher]\nkind="function"\ncallable="teacher_fns:banking_gold"\n'
        "batch_size=64\n",
        encoding="utf-8",
    )
    return Task.load(p)


def _pool(n_classes: int = 8, per_class: int = 40) -> tuple[list[str], list[str]]:
    rows = banking77("train")
    counts: Counter[str] = Counter()
    labels = sorted({lab for _, lab in rows})[:n_classes]
    texts = []
    for t, lab in rows:
        if lab in labels and counts[lab] < per_class:
            counts[lab] += 1
            texts.append(t)
    return texts, labels


def test_k_center_spreads_out() -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 16))
    pts = np.concatenate([c + 0.01 * rng.standard_normal((50, 16)) for c in centers])
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    picked = k_center(pts.astype(np.float32), 4, seed=1)
    assert sorted({i // 50 for i in picked}) == [0, 1, 2, 3]


def test_typical_seed_picks_dense_regions_where_k_center_picks_outliers() -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 16))
    dense = np.concatenate([c + 0.05 * rng.standard_normal((50, 16)) for c in centers])
    outliers = 3.0 * rng.standard_normal((3, 16))
    pts = np.concatenate([dense, outliers]).astype(np.float32)
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    typical = typical_seed(pts, 4, seed=0)
    assert len(typical) == 4 and len(set(typical)) == 4
    assert sorted({i // 50 for i in typical}) == [0, 1, 2, 3]  # one per dense cluster, no outlier
    # each pick is a typical member: nearer its cluster's mean than most members are
    for i in typical:
        members = pts[(i // 50) * 50 : (i // 50 + 1) * 50]
        d = ((members - members.mean(0)) ** 2).sum(1)
        assert d[i % 50] < np.quantile(d, 0.25)
    assert any(i >= 200 for i in k_center(pts, 4, seed=0))  # farthest-first reaches the outliers
    assert typical_seed(pts, 0) == [] and sorted(typical_seed(pts[:5], 5)) == [0, 1, 2, 3, 4]


def test_balanced_order_takes_classes_in_turn() -> None:
    probs = np.array([
        [0.50, 0.45, 0.05],  # class 0, margin 0.05
        [0.55, 0.40, 0.05],  # class 0, margin 0.15
        [0.52, 0.46, 0.02],  # class 0, margin 0.06
        [0.10, 0.80, 0.10],  # class 1, margin 0.70
        [0.30, 0.60, 0.10],  # class 1, margin 0.30
        [0.05, 0.05, 0.90],  # class 2, margin 0.85
    ])
    order = balanced_order(probs).tolist()
    # turn 1: each class's least sure, classes by that margin; turn 2: the second of each; ...
    assert order == [0, 4, 5, 2, 3, 1]
    assert np.argsort(margin(probs), kind="stable").tolist()[:3] == [0, 2, 1]  # pure margin stays in class 0
    assert sorted(balanced_order(np.full((4, 3), 1 / 3)).tolist()) == [0, 1, 2, 3]


def test_round_student_choices() -> None:
    from distil.errors import ConfigError

    name, make, embed = round_student("ngram", ["a", "b"])
    assert name == "ngram" and embed is None and make(0).__class__.__name__ == "QuickStudent"
    with pytest.raises(ConfigError, match="unknown round student"):
        round_student("bert", ["a"])


@pytest.mark.slow
def test_static_round_student_ranks_in_static_space() -> None:
    texts, labels = _pool(n_classes=4, per_class=10)
    name, make, embed = round_student("static", texts)
    assert name == "static" and embed is not None
    e = embed(texts[:3])
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    probs = np.eye(4, dtype=np.float32)[[i // 10 for i in range(40)]] * 0.9 + 0.025
    st = make(0).fit(texts, probs, labels=labels)
    assert float(np.mean(st.predict_proba(texts).argmax(1) == probs.argmax(1))) > 0.9


def test_margin_and_cheap_embed() -> None:
    np.testing.assert_allclose(margin(np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])), [0.5, 0.0], atol=1e-6)
    e = cheap_embed(["my card is lost", "my card is lost!", "exchange rates for euros"])
    assert e.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["active", "random"])
def test_rounds_stay_in_budget_and_resume_from_journal(tmp_path: Path, strategy: str) -> None:
    texts, labels = _pool()
    task = _task(tmp_path, labels)
    res = label_active(task, texts, strategy=strategy, max_calls=120, seed=0, patience=100)
    assert res.stats.calls == 120 and res.stats.calls + res.stats.from_journal <= 120
    assert len(res.labeled) == 120  # only teacher answers: no self-training on the rest
    assert res.stats.skipped == len(texts) - 120
    assert res.rounds[0].kind == "heldout" and len(res.rounds) >= 3
    assert res.rounds[-1].agreement is not None
    with Journal(task.journal_path) as j:
        assert j.counts()["done"] == 120
    again = label_active(task, texts, strategy=strategy, max_calls=120, seed=0, patience=100)
    assert again.stats.calls == 0 and again.stats.from_journal == 120
    assert [r.asked for r in again.rounds] == [r.asked for r in res.rounds]


@pytest.mark.slow
def test_cli_active_stores_strategy_and_rounds_with_the_labeled_set(tmp_path: Path) -> None:
    from helpers import write_csv

    from distil.cli import main
    from distil.data import read_labeled

    texts, labels = _pool(n_classes=6, per_class=30)
    task = _task(tmp_path, labels)
    inputs = write_csv(tmp_path / "pool.csv", [{"text": t} for t in texts])
    out = tmp_path / "labeled.parquet"
    code = main(["label", str(tmp_path / "task.toml"), str(inputs), "--strategy", "active", "--max-calls", "60",
                 "--out", str(out)])
    assert code == 0
    ls = read_labeled(out)
    assert 24 < len(ls) <= 60  # stops at the budget, or earlier when held-out agreement stops improving
    assert ls.info is not None and ls.info["strategy"] == "active"
    assert ls.info["round_student"] in ("static", "ngram")
    assert [r["kind"] for r in ls.info["rounds"]][:2] == ["heldout", "seed"]
    assert ls.info["rounds"][-1]["calls_total"] == len(ls)
    with Journal(task.journal_path) as j:
        assert j.counts()["done"] == len(ls)


def test_linear_probe_fits_soft_targets() -> None:
    from distil.active import LinearProbe

    rng = np.random.default_rng(0)
    centers = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    x = np.concatenate([c + 0.3 * rng.standard_normal((20, 2)) for c in centers])
    texts = [str(i) for i in range(len(x))]
    probs = np.repeat(np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]), 20, axis=0)
    probe = LinearProbe(lambda ts: x[[int(t) for t in ts]], lam=1e-3).fit(texts, probs, labels=["a", "b", "c"])
    out = probe.predict_proba(texts)
    assert out.shape == (60, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert (out.argmax(1) == probs.argmax(1)).all()
    # soft targets: it learns the teacher's 0.8, not a hard 1.0
    assert 0.6 < float(out.max(1).mean()) < 0.95


@pytest.mark.slow
def test_distil_run_with_active_labeling_trains_on_the_rounds_answers_only(tmp_path: Path) -> None:
    from helpers import write_csv

    from distil.data import read_labeled
    from distil.pipeline import run

    texts, labels = _pool(n_classes=6, per_class=60)
    gold = dict(banking77("train"))
    test_rows = [(t, gold[t]) for t in texts[::3]]  # the oracle teacher knows train texts only
    texts = [t for i, t in enumerate(texts) if i % 3]
    task = _task(tmp_path, labels)
    inputs = write_csv(tmp_path / "pool.csv", [{"text": t} for t in texts])
    test = write_csv(tmp_path / "test.csv", [{"text": t, "category": lab} for t, lab in test_rows],
                     columns=("text", "category"))
    metrics = run(task, inputs, tmp_path / "run", test=test, label_column="category", max_calls=120,
                  strategy="active", students=("ngram",))
    ls = read_labeled(tmp_path / "run" / "labeled.parquet")
    assert ls.info is not None and ls.info["strategy"] == "active" and ls.info["round_student"] in ("static", "ngram")
    assert len(ls) <= 120 and ls.info["rounds"][-1]["calls_total"] == len(ls)
    with Journal(task.journal_path) as j:
        assert j.counts()["done"] == len(ls) + len(test_rows)  # the pool's rounds + the test set, nothing else
    assert metrics["verdict"] and 0.0 < metrics["student"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_flat_held_out_agreement_stops_only_once_predictions_settle(tmp_path: Path) -> None:
    texts, labels = _pool()
    runs = {}
    for name, stable_at in (("any", 0.0), ("never", 1.01)):
        (tmp_path / name).mkdir()
        task = _task(tmp_path / name, labels)
        runs[name] = label_active(task, texts, max_calls=200, seed=0, patience=1, stable_at=stable_at)
    early = runs["any"]
    assert early.stats.calls < 200 and early.stats.stopped is None  # held-out agreement alone stopped it
    assert runs["never"].stats.calls == 200 and runs["never"].stats.stopped == "max_calls"
    assert all(r.stability is None or 0.0 <= r.stability <= 1.0 for r in runs["never"].rounds)
    assert any(r.stability is not None for r in runs["never"].rounds)


def test_the_held_out_figures_come_from_the_random_sample_the_active_run_kept(tmp_path: Path) -> None:
    from distil.label import labeled_set
    from distil.train import train

    texts, labels = _pool(n_classes=6, per_class=40)
    task = _task(tmp_path, labels)
    res = label_active(task, texts, strategy="active", max_calls=150, seed=0, heldout_size=30, patience=100)
    assert len(res.heldout) == 30
    # the journal knows which answers were the random sample, so a later `distil train` finds them too
    ls = labeled_set(task)
    assert ls.info is not None and {ls.texts[i] for i in ls.info["random_heldout"]} == set(res.heldout)
    out = train(ls, tmp_path / "student", students=("ngram",), params={"ngram": {"bits": 13, "dim": 16,
                                                                                  "epochs": 5}})
    config = json.loads((out.out / "distil_config.json").read_text())
    assert config["heldout_kind"] == "random sample" and config["n_heldout"] == 30
    from distil.artifact import load_artifact

    assert set(load_artifact(out.out).heldout().texts) == set(res.heldout)  # never the actively picked inputs
    router = json.loads((out.out / "router.json").read_text())
    assert router["info"]["calibration"] == "heldout" and router["info"]["calibration_n"] == 30
