"""Evaluation: hand-computed golden metrics, bootstrap, ECE, cascade, cost, bad input, end to end."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from distil.cost import (
    DEFAULT_PRICES,
    Price,
    cpu_cost_per_1m,
    load_prices,
    lookup_price,
    token_cost_per_1m,
)
from distil.errors import ArtifactError, ConfigError, DataError
from distil.evaluate import (
    _read_test,
    accuracy,
    bootstrap,
    cascade_curve,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    per_class_scores,
    reliability_bins,
    resampled_accuracy,
    resampled_ece,
    resampled_macro_f1,
    time_predictor,
    verdict,
)
from distil.task import Task
from distil.teachers.base import Answer, Teacher

# ---------------------------------------------------------------------------------------------
# Classification metrics — golden values worked out by hand.

Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_confusion_and_accuracy_by_hand() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)


def test_per_class_and_macro_f1_by_hand() -> None:
    # class 0: tp 1, support 2, predicted 2 -> F1 2/4; class 1: tp 2, 2, 3 -> 4/5; class 2: tp 1, 2, 1 -> 2/3
    s = per_class_scores(Y_TRUE, Y_PRED, 3)
    assert s["f1"].tolist() == pytest.approx([0.5, 0.8, 2 / 3])
    assert s["precision"].tolist() == pytest.approx([0.5, 2 / 3, 1.0])
    assert s["recall"].tolist() == pytest.approx([0.5, 1.0, 0.5])
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # A class absent from both arrays does not count (as in scikit-learn).
    assert macro_f1(Y_TRUE, Y_PRED, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # A class only predicted counts with F1 0.
    assert macro_f1(np.array([0, 0]), np.array([0, 1]), 2) == pytest.approx((2 / 3 + 0.0) / 2)


def test_macro_f1_matches_scikit_learn_on_random_labels() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(5):
        t = rng.integers(0, 7, 300)
        p = np.where(rng.random(300) < 0.6, t, rng.integers(0, 9, 300))
        assert macro_f1(t, p, 9) == pytest.approx(sklearn_metrics.f1_score(t, p, average="macro"))
        expected = sklearn_metrics.confusion_matrix(t, p, labels=range(9)).tolist()
        assert confusion_matrix(t, p, 9).tolist() == expected


# ---------------------------------------------------------------------------------------------
# Calibration.


def test_ece_by_hand() -> None:
    # Four predictions in four different bins: ECE = mean |correct - conf|.
    conf = np.array([0.95, 0.9, 0.3, 0.55])
    ok = np.array([1, 0, 1, 1])
    assert expected_calibration_error(conf, ok) == pytest.approx((0.05 + 0.9 + 0.7 + 0.45) / 4)
    # Two predictions in one bin (0.8667, 0.9333]: |0.5 - 0.915| weighted 2/2.
    assert expected_calibration_error(np.array([0.91, 0.92]), np.array([1, 0])) == pytest.approx(0.415)
    # Perfectly calibrated bins give 0.
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.0)


def _naive_ece(conf: np.ndarray, ok: np.ndarray, m: int = 15) -> float:
    total = 0.0
    for i in range(m):
        lo, hi = i / m, (i + 1) / m
        sel = [(c, o) for c, o in zip(conf, ok, strict=True) if (lo < c <= hi) or (i == 0 and c == 0)]
        if sel:
            acc = sum(o for _, o in sel) / len(sel)
            cf = sum(c for c, _ in sel) / len(sel)
            total += len(sel) / len(conf) * abs(acc - cf)
    return total


def test_ece_and_reliability_match_a_naive_loop() -> None:
    rng = np.random.default_rng(5)
    conf = rng.uniform(0.05, 1.0, 500)
    ok = (rng.random(500) < conf**1.5).astype(int)
    assert expected_calibration_error(conf, ok) == pytest.approx(_naive_ece(conf, ok))
    bins = reliability_bins(conf, ok)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 500
    first = [c for c in conf if c <= 1 / 15]
    assert bins[0]["count"] == len(first)
    full = [b for b in bins if b["count"]]
    assert all(b["lo"] <= b["confidence"] <= b["hi"] for b in full)


# ---------------------------------------------------------------------------------------------
# Bootstrap.


def test_vectorised_resampled_statistics_equal_per_resample_loops() -> None:
    rng = np.random.default_rng(11)
    n, k = 120, 5
    t = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.7, t, rng.integers(0, k, n))
    conf = rng.uniform(0.2, 1.0, n)
    idx = rng.integers(0, n, size=(40, n))
    f1 = resampled_macro_f1(t, p, k, idx)
    ece = resampled_ece(conf, t == p, idx)
    acc = resampled_accuracy(t == p, idx)
    for b in range(40):
        assert f1[b] == pytest.approx(macro_f1(t[idx[b]], p[idx[b]], k))
        assert ece[b] == pytest.approx(expected_calibration_error(conf[idx[b]], (t == p)[idx[b]]))
        assert acc[b] == pytest.approx(accuracy(t[idx[b]], p[idx[b]]))


def test_bootstrap_is_seeded_and_has_the_textbook_width() -> None:
    rng = np.random.default_rng(0)
    ok = (rng.random(400) < 0.8).astype(float)

    def stats(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"acc": resampled_accuracy(ok, idx)}

    a = bootstrap(stats, 400, n_resamples=1000, seed=7)
    b = bootstrap(stats, 400, n_resamples=1000, seed=7, chunk=37)  # chunking does not change the draw count
    c = bootstrap(stats, 400, n_resamples=1000, seed=8)
    assert a == bootstrap(stats, 400, n_resamples=1000, seed=7)
    assert a != c
    lo, hi = a["acc"]
    mean = ok.mean()
    assert lo < mean < hi
    # Normal approximation: half-width 1.96 * sqrt(p(1-p)/n).
    half = 1.96 * np.sqrt(mean * (1 - mean) / 400)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)
    assert b["acc"][0] == pytest.approx(lo, abs=0.03)
    # A constant statistic has a zero-width interval.
    const = bootstrap(lambda idx: {"x": resampled_accuracy(np.ones(50), idx)}, 50, n_resamples=200)
    assert const["x"] == (1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Cascade.


def test_cascade_curve_by_hand() -> None:
    conf = np.array([0.9, 0.8, 0.6, 0.4])
    s = np.array([0, 1, 1, 2])
    t = np.array([0, 1, 0, 0])
    g = np.array([0, 1, 0, 2])
    pts = cascade_curve(conf, s, t, g, n_points=4, student_cost_per_1m=1.0, teacher_cost_per_1m=100.0)
    got = [(p["threshold"], p["coverage"], p["agreement"], p["accuracy"], p["cost_per_1m"]) for p in pts]
    assert [x[0] for x in got[:4]] == pytest.approx([0.4, 0.6, 0.8, 0.9])
    assert got[0][1:] == pytest.approx((1.0, 0.5, 0.75, 1.0))
    assert got[1][1:] == pytest.approx((0.75, 0.75, 0.5, 26.0))
    assert got[2][1:] == pytest.approx((0.5, 1.0, 0.75, 51.0))
    assert got[3][1:] == pytest.approx((0.25, 1.0, 0.75, 76.0))
    # Above the maximum confidence the teacher answers everything.
    assert got[4][0] > 0.9 and got[4][1:] == pytest.approx((0.0, 1.0, 0.75, 101.0))


def test_cascade_without_gold_or_costs() -> None:
    pts = cascade_curve(np.array([0.7, 0.7, 0.2]), np.array([1, 0, 0]), np.array([1, 1, 0]))
    assert [p["coverage"] for p in pts] == pytest.approx([1.0, 2 / 3, 0.0])
    assert [p["agreement"] for p in pts] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert all(p["accuracy"] is None and p["cost_per_1m"] is None for p in pts)


# ---------------------------------------------------------------------------------------------
# Cost model.


def test_token_and_cpu_cost() -> None:
    # 200 tokens in, 3 out per prediction at $0.15 / $0.60 per 1M tokens: 200*0.15 + 3*0.60 dollars per 1M.
    assert token_cost_per_1m(200, 3, Price(0.15, 0.60)) == pytest.approx(31.8)
    # 1 ms of CPU per prediction at $0.05 per core-hour: 1000 core-seconds per 1M = 0.2778 h -> $0.01389.
    assert cpu_cost_per_1m(0.001, 0.05) == pytest.approx(1000 / 3600 * 0.05)
    with pytest.raises(ValueError):
        cpu_cost_per_1m(-1, 0.05)


def test_price_lookup_and_user_table(tmp_path: Path) -> None:
    table = load_prices()
    assert lookup_price("gpt-4o-mini-2024-07-18", table) == DEFAULT_PRICES["gpt-4o-mini"]
    assert lookup_price("openai/gpt-4o", table) == DEFAULT_PRICES["gpt-4o"]
    assert lookup_price("my-local-llm", table) is None
    task_price = lookup_price("gpt-4o", table, price_in_per_1m=1.0, price_out_per_1m=2.0)
    assert task_price is not None and (task_price.in_per_1m, task_price.source) == (1.0, "task file")
    f = tmp_path / "prices.toml"
    f.write_text('[my-local-llm]\nin_per_1m = 0.5\nout_per_1m = 1.5\n', encoding="utf-8")
    user = load_prices(f)
    found = lookup_price("my-local-llm", user)
    assert found is not None and (found.in_per_1m, found.out_per_1m) == (0.5, 1.5)
    assert load_prices({"x": [1, 2]})["x"].out_per_1m == 2.0
    with pytest.raises(ConfigError, match="'bad'"):
        load_prices({"bad": {"in_per_1m": 1}})
    with pytest.raises(ConfigError, match="not found"):
        load_prices(tmp_path / "nope.json")


def test_time_predictor_measures_a_numpy_function() -> None:
    w = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)

    def predict(texts: list[str]) -> np.ndarray:
        x = np.array([[len(t) % 7, t.count("a")] * 32 for t in texts], dtype=np.float32)
        return x @ w

    tim = time_predictor(predict, ["a banana", "apple pie", "x"], single_calls=20, budget_s=0.5)
    assert tim.batch_size == 256 and tim.single_calls == 20
    assert 0 < tim.ms_per_pred < 1000 and tim.preds_per_s > 0 and tim.cpu_s_per_pred_batch >= 0
    # The batch input alone is 256 x 64 float32 = 65 kB, so the traced peak is at least that.
    assert tim.peak_mem_mb is not None and tim.peak_mem_mb >= 0.06


def test_verdict_sentences() -> None:
    m = {
        "student": {"name": "ngram", "accuracy": 0.90},
        "teacher": {"accuracy": 0.924},
        "reference": "gold",
        "retention": 0.974,
        "agreement": 0.93,
        "cost_ratio": 321.7,
        "speedup": 55.2,
        "target": {"min_retention": 0.95, "met": True},
    }
    assert verdict(m) == (
        "The ngram student keeps 97.4% of the teacher's accuracy (90.0% vs 92.4%) at 1/320 of its cost "
        "per prediction, 55× faster; it meets the 95% retention target."
    )
    m2 = {**m, "reference": "teacher", "cost_ratio": 0.5, "speedup": 0.5, "target": {"met": False,
                                                                                    "min_retention": 0.95}}
    assert verdict(m2) == (
        "The ngram student agrees with the teacher on 93.0% of test inputs at 2.0× its cost per prediction, "
        "2.0× slower; it misses the 95% retention target."
    )
    assert "unknown" in verdict({**m, "cost_ratio": None})


def test_the_verdict_states_the_cascades_cost_next_to_the_students() -> None:
    m = {
        "student": {"name": "static", "accuracy": 0.90}, "teacher": {"accuracy": 0.92}, "reference": "gold",
        "retention": 0.978, "agreement": 0.93, "cost_ratio": 240.0, "speedup": 55.0,
        "served": {"coverage": 0.0, "threshold": None, "cost_per_1m": 10.04, "teacher_cost_per_1m": 10.0},
    }
    text = verdict(m)
    assert "at 1/240 of its cost per prediction" in text
    # every input goes to the teacher: the team pays the teacher's cost and the student's on top
    assert text.endswith("served as a cascade at the stored router (the teacher answers 100.0% of inputs) "
                         "it costs 1.0× the teacher's cost.")
    m["served"] = {**m["served"], "coverage": 0.8, "cost_per_1m": 0.2 * 10.0 + 0.04}
    assert "(the teacher answers 20.0% of inputs) it costs 1/4.9 of the teacher's cost." in verdict(m)
    assert "served as" not in verdict({**m, "served": None})


def test_the_target_is_decided_by_the_interval_and_a_straddle_says_so() -> None:
    from distil.evaluate import _target_decision

    assert _target_decision(0.95, 0.97, [0.955, 0.99])["met"] is True
    assert _target_decision(0.95, 0.93, [0.91, 0.945])["met"] is False
    straddle = _target_decision(0.95, 0.962, [0.931, 0.99])
    assert straddle["met"] is None and straddle["decided_by"] == "95% interval"
    m = {
        "student": {"name": "static", "accuracy": 0.74},
        "teacher": {"accuracy": 0.769},
        "reference": "gold",
        "retention": 0.962,
        "agreement": 0.9,
        "cost_ratio": 400.0,
        "speedup": 300.0,
        "ci": {"retention": [0.931, 0.99]},
        "target": straddle,
    }
    text = verdict(m)
    assert "; it meets" not in text and "misses" not in text
    assert "whether it meets the 95% retention target is not settled (95% CI 93.1%–99.0%)" in text
    assert "a larger test set" in text
    m["target"] = _target_decision(0.95, 0.962, [0.951, 0.99])
    m["ci"] = {"retention": [0.951, 0.99]}
    assert verdict(m).endswith("it meets the 95% retention target (95% CI 95.1%–99.0%).")
    assert _target_decision(0.95, float("nan"), None)["met"] is None


# ---------------------------------------------------------------------------------------------
# Bad input in the test file.

LABELS = ["card", "loan", "other"]


def _task(tmp_path: Path) -> Task:
    return Task.from_dict({"name": "t", "labels": LABELS}, base_dir=tmp_path)


def _csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header or list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_read_test_gold_label_outside_the_task(tmp_path: Path) -> None:
    f = _csv(tmp_path / "test.csv", [{"text": "a", "product": "card"}, {"text": "b", "product": "Mortgage"}])
    with pytest.raises(DataError) as info:
        _read_test(f, _task(tmp_path), text_column="text", label_column="product")
    msg = str(info.value)
    assert "test.csv" in msg and "row 2" in msg and "'product'" in msg and "'Mortgage'" in msg


def test_read_test_missing_columns_and_empty_file(tmp_path: Path) -> None:
    f = _csv(tmp_path / "test.csv", [{"body": "a", "product": "card"}])
    with pytest.raises(DataError, match="input column 'text' not found"):
        _read_test(f, _task(tmp_path), text_column="text", label_column=None)
    g = _csv(tmp_path / "test2.csv", [{"text": "a", "product": "card"}])
    with pytest.raises(DataError, match="gold label column 'label' not found"):
        _read_test(g, _task(tmp_path), text_column="text", label_column="label")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        _read_test(empty, _task(tmp_path), text_column="text", label_column=None)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,product\n", encoding="utf-8")
    with pytest.raises(DataError, match="no data rows"):
        _read_test(header_only, _task(tmp_path), text_column="text", label_column=None)


def test_read_test_keeps_duplicate_rows_and_skips_empty(tmp_path: Path) -> None:
    f = _csv(tmp_path / "t.csv", [
        {"text": "a", "y": "card"}, {"text": "", "y": "loan"},
        {"text": "a", "y": "loan"}, {"text": "b", "y": ""},
    ])
    ts = _read_test(f, _task(tmp_path), text_column="text", label_column="y")
    assert ts.uniques == ["a", "b"]
    assert ts.rows.tolist() == [0, 0, 1] and ts.row_numbers == [1, 3, 4]
    assert ts.gold is not None and ts.gold.tolist() == [0, 1, -1]
    assert ts.skipped_rows == 1


# ---------------------------------------------------------------------------------------------
# End to end: a tiny ngram artifact on banking77, a function teacher, metrics.json and the report.


def _have_training() -> bool:
    try:
        import distil.artifact
        import distil.students.ngram
        import distil.train  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Train a tiny ngram-only artifact on 8 banking77 intents with a gold-lookup function teacher."""
    if not _have_training():
        pytest.skip("distil.train / distil.artifact / ngram student not available yet")
    from conftest import banking77

    from distil.label import label
    from distil.train import train

    tmp = tmp_path_factory.mktemp("eval")
    train_rows, test_rows = banking77("train"), banking77("test")
    intents = sorted({lab for _, lab in train_rows})[:8]
    tr = [r for lab in intents for r in [x for x in train_rows if x[1] == lab][:60]]
    te = [r for lab in intents for r in [x for x in test_rows if x[1] == lab][:25]]
    table = {t: lab for t, lab in tr + te}
    (tmp / "gold_table.json").write_text(json.dumps(table), encoding="utf-8")
    task = Task.from_dict(
        {
            "name": "bank8",
            "labels": intents,
            "teacher": {"kind": "function", "callable": "fixtures_eval:gold_teacher"},
            "targets": {"min_retention": 0.8},
        },
        base_dir=tmp,
    )
    test_csv = _csv(tmp / "test.csv", [{"text": t, "intent": lab} for t, lab in te])
    os.environ["DISTIL_EVAL_GOLD"] = str(tmp / "gold_table.json")
    labeled = label(task, [t for t, _ in tr]).labeled
    small = {"ngram": {"bits": 14, "dim": 16, "epochs": 6, "batch_size": 64}}  # seconds, not minutes
    art = train(labeled, tmp / "students", students=["ngram"], target=0.8, seed=0, params=small,
                task_fingerprint=task.fingerprint())
    return {"task": task, "art": art, "test": test_csv, "tmp": tmp}


def _test_rows(path: Path) -> list[tuple[str, str]]:
    import csv

    with path.open(encoding="utf-8") as fh:
        return [(r["text"], r["intent"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_evaluate_end_to_end_with_gold(e2e: dict[str, object]) -> None:
    from distil.evaluate import evaluate

    tmp = Path(str(e2e["tmp"]))
    out = tmp / "eval"
    m = evaluate(tmp / "students", Path(str(e2e["test"])), task=e2e["task"], label_column="intent", out=out,
                 n_resamples=300, timing_budget_s=0.3)
    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == m
    for key in ("teacher", "student", "agreement", "retention", "speedup", "ece", "cascade", "n_test",
                "dataset_fingerprint", "schema_version", "ladder", "per_class", "confusion", "ci", "verdict",
                "warnings"):
        assert key in m, key
    for side in ("teacher", "student"):
        for key in ("accuracy", "macro_f1", "ms_per_pred", "preds_per_s", "size_mb", "cost_per_1m"):
            assert key in m[side], (side, key)
    assert m["n_test"] == 200 and m["reference"] == "gold"
    # The gold-lookup teacher is perfect on the test set, so retention = student accuracy.
    assert m["teacher"]["accuracy"] == 1.0
    assert m["retention"] == pytest.approx(m["student"]["accuracy"])
    assert m["agreement"] == pytest.approx(m["student"]["accuracy"])
    lo, hi = m["ci"]["student.accuracy"]
    assert lo <= m["student"]["accuracy"] <= hi
    assert m["cascade"][0]["coverage"] == 1.0 and m["cascade"][-1]["coverage"] == 0.0
    assert m["cascade"][-1]["agreement"] == 1.0
    assert len(m["ladder"]) >= 1 and m["ladder"][0]["chosen"]
    assert m["student"]["size_mb"] > 0 and m["student"]["ms_per_pred"] > 0
    assert sum(sum(r) for r in m["confusion"]["matrix"]) == 200
    assert m["verdict"].startswith("The ngram student keeps")
    assert (out / "report.html").exists() and (out / "disagreements.json").exists()
    # What the served system does, by the same rule as the server (router.json's threshold + guard).
    from distil.cascade import Cascade

    served = m["served"]
    decisions = Cascade.load(tmp / "students").decide([t for t, _ in _test_rows(Path(str(e2e["test"])))])
    local = [d.source == "student" for d in decisions]
    assert served["n"] == 200 and served["ood_guard"] is True
    assert served["coverage"] == pytest.approx(sum(local) / len(local))
    assert served["ood_share"] == pytest.approx(sum(d.ood for d in decisions) / len(decisions))
    # the teacher is perfect here, so the served system is right wherever the teacher answers
    assert served["accuracy"] >= m["student"]["accuracy"] - 1e-9
    assert served["agreement"] == pytest.approx(served["accuracy"])
    if served["local_agreement"] is not None:
        lo, hi = served["local_agreement_ci"]
        assert lo <= served["local_agreement"] <= hi
    if served["cost_per_1m"] is not None:  # the student on every input, the teacher on the rest
        assert served["cost_per_1m"] <= served["teacher_cost_per_1m"] * (1 - served["coverage"]) + m["student"][
            "cost_per_1m"
        ] + 1e-9
    # Evaluating again asks the teacher nothing new: every test text is in the journal.
    from distil.journal import Journal

    task = e2e["task"]
    assert isinstance(task, Task)
    with Journal(task.journal_path) as j:
        n_rows = sum(1 for _ in j.rows())
    evaluate(tmp / "students", Path(str(e2e["test"])), task=task, n_resamples=50, timing_budget_s=0.1,
             report=False)
    with Journal(task.journal_path) as j:
        assert sum(1 for _ in j.rows()) == n_rows


@pytest.mark.slow
def test_evaluate_without_gold_leads_with_agreement(e2e: dict[str, object]) -> None:
    from distil.evaluate import evaluate

    tmp = Path(str(e2e["tmp"]))
    m = evaluate(tmp / "students", Path(str(e2e["test"])), task=e2e["task"], n_resamples=100,
                 timing_budget_s=0.1, report=False)
    assert m["reference"] == "teacher"
    assert m["teacher"]["accuracy"] is None and m["student"]["accuracy"] is None
    assert m["retention"] == m["agreement"]
    assert "agreement" in m["retention_definition"]
    assert m["verdict"].startswith("The ngram student agrees with the teacher on")


@pytest.mark.slow
def test_evaluate_rejects_mismatched_task_and_bad_gold(e2e: dict[str, object]) -> None:
    from distil.evaluate import evaluate

    tmp = Path(str(e2e["tmp"]))
    task = e2e["task"]
    assert isinstance(task, Task)
    other = Task.from_dict(
        {"name": "x", "labels": [*task.label_names[:-1], "not_a_trained_label"],
         "teacher": {"kind": "function", "callable": "fixtures_eval:gold_teacher"}},
        base_dir=tmp,
    )
    with pytest.raises((ArtifactError, ConfigError), match="labels"):
        evaluate(tmp / "students", Path(str(e2e["test"])), task=other, report=False)
    bad = _csv(tmp / "bad.csv", [{"text": "hello", "intent": "no_such_intent"}])
    with pytest.raises(DataError, match="row 1, column 'intent'"):
        evaluate(tmp / "students", bad, task=task, label_column="intent", report=False)


class _FakeHostedTeacher(Teacher):
    """Stands in for an OpenAI-compatible teacher: gold answers with token counts and latency, no network."""

    kind = "openai"

    def __init__(self, labels: list[str]) -> None:
        from fixtures_eval import gold_teacher

        super().__init__(labels)
        self._answer = gold_teacher
        self.calls = 0

    def identity(self) -> dict[str, object]:
        return {"model": "gpt-4o-mini-2024-07-18", "fake": True}

    def fingerprint(self) -> str:
        return "fake-hosted-teacher"

    def describe(self) -> str:
        return "openai:gpt-4o-mini (fake)"

    def estimate_cost(self, texts: list[str]) -> float:
        return 0.0

    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        self.calls += len(texts)
        out = []
        for t, d in zip(texts, self._answer(list(texts)), strict=True):
            probs = [d[lab] for lab in self.labels]
            out.append(Answer(status="done", probs=probs, method="logprobs", tokens_in=100 + len(t) % 41,
                              tokens_out=2, latency_ms=350.0))
        return out


@pytest.mark.slow
def test_evaluate_prices_a_hosted_teacher_from_journal_tokens(e2e: dict[str, object]) -> None:
    from distil.evaluate import evaluate

    tmp = Path(str(e2e["tmp"]))
    base = e2e["task"]
    assert isinstance(base, Task)
    raw = {"name": "bank8", "labels": base.label_names, "work_dir": "hosted",
           "teacher": {"kind": "openai", "model": "gpt-4o-mini-2024-07-18"}}
    task = Task.from_dict(raw, base_dir=tmp)
    fake = _FakeHostedTeacher(task.label_names)
    test_csv = Path(str(e2e["test"]))
    m = evaluate(tmp / "students", test_csv, task=task, teacher=fake, n_resamples=50,  # type: ignore[arg-type]
                 timing_budget_s=0.1, report=False)
    texts = [r["text"] for r in csv.DictReader(test_csv.open(encoding="utf-8"))]
    mean_in = float(np.mean([100 + len(t) % 41 for t in dict.fromkeys(x.strip() for x in texts)]))
    t = m["teacher"]
    assert t["mean_tokens_in"] == pytest.approx(mean_in) and t["mean_tokens_out"] == 2
    # Default table: gpt-4o-mini at $0.15 / $0.60 per 1M tokens (matched by prefix).
    assert t["cost_per_1m"] == pytest.approx(mean_in * 0.15 + 2 * 0.60)
    assert t["price"]["in_per_1m"] == 0.15 and t["ms_per_pred"] == 350.0
    assert m["speedup"] == pytest.approx(350.0 / m["student"]["ms_per_pred"])
    assert m["cost_ratio"] == pytest.approx(t["cost_per_1m"] / m["student"]["cost_per_1m"])
    assert "of its cost per prediction" in m["verdict"]
    # The task's own prices win over the table; the journal answers again without new calls.
    calls = fake.calls
    spec = {**raw["teacher"], "price_in_per_1m": 1.0, "price_out_per_1m": 4.0}
    priced = Task.from_dict({**raw, "teacher": spec}, base_dir=tmp)
    m2 = evaluate(tmp / "students", test_csv, task=priced, teacher=fake, n_resamples=50,  # type: ignore[arg-type]
                  timing_budget_s=0.1, report=False)
    assert fake.calls == calls
    assert m2["teacher"]["cost_per_1m"] == pytest.approx(mean_in * 1.0 + 2 * 4.0)
    assert m2["teacher"]["price"]["source"] == "task file"


@pytest.mark.slow
def test_evaluate_finds_the_task_file_next_to_the_artifact(e2e: dict[str, object]) -> None:
    from distil.evaluate import evaluate

    tmp = Path(str(e2e["tmp"]))
    task = e2e["task"]
    assert isinstance(task, Task)
    test_csv = Path(str(e2e["test"]))
    with pytest.raises(ConfigError, match=r"no task\.toml matching this artifact"):
        evaluate(tmp / "students", test_csv, report=False)
    labels = ", ".join(json.dumps(x) for x in task.label_names)
    (tmp / "task.toml").write_text(
        f'name = "bank8"\nlabels = [{labels}]\n[teacher]\nkind = "function"\n'
        'callable = "fixtures_eval:gold_teacher"\n[targets]\nmin_retention = 0.8\n',
        encoding="utf-8",
    )
    try:
        m = evaluate(tmp / "students", test_csv, n_resamples=50, timing_budget_s=0.1, report=False)
    finally:
        (tmp / "task.toml").unlink()
    assert m["task"] == "bank8" and m["n_test"] == 200 and not any("fingerprint" in w for w in m["warnings"])


def test_the_cost_target_is_part_of_the_verdict() -> None:
    m = {
        "student": {"name": "encoder", "accuracy": 0.718},
        "teacher": {"accuracy": 0.725},
        "reference": "gold",
        "retention": 0.991,
        "agreement": 0.9,
        "cost_ratio": 5.5,
        "speedup": 4.3,
        "ci": {"retention": [0.959, 1.024]},
        "target": {"min_retention": 0.95, "met": True, "max_cost_ratio": 0.01, "cost_met": False},
    }
    assert verdict(m).endswith(
        "it meets the 95% retention target (95% CI 95.9%–102.4%); at more than 1/100 of the teacher's cost "
        "it misses the cost target."
    )
    m["cost_ratio"], m["target"]["cost_met"] = 250.0, True
    assert verdict(m).endswith("(95% CI 95.9%–102.4%), within the 1/100 cost target.")


def test_one_rule_for_gold_cells_in_every_reader() -> None:
    import inspect

    from distil import data, pipeline, teacher_fit
    from distil.cli import inputs
    from distil.evaluate import testset

    for module in (pipeline, teacher_fit, testset, inputs):  # every command's file reading
        source = inspect.getsource(module)
        assert "read_inputs(" in source and "read_table(" not in source, module.__name__
    cells = (3.0, 3, " 3 ", 2.5, True, None, [1])
    assert [data.gold_text(v) for v in cells] == ["3", "3", "3", "2.5", "True", None, None]


@pytest.mark.slow
def test_an_off_topic_file_reports_the_share_the_student_answers_alone(e2e: dict[str, object]) -> None:
    from conftest import banking77

    from distil.cascade import Cascade
    from distil.evaluate import evaluate
    from distil.journal import Journal

    tmp = Path(str(e2e["tmp"]))
    task = e2e["task"]
    assert isinstance(task, Task)
    known = set(task.label_names)
    others = [*[t for t, lab in banking77("test") if lab not in known][:120], "what is the weather in Paris"]
    off = _csv(tmp / "off.csv", [{"text": t} for t in others])
    m = evaluate(tmp / "students", Path(str(e2e["test"])), task=task, n_resamples=50, timing_budget_s=0.1,
                 report=False, off_topic=off)
    with Journal(task.journal_path) as j:
        asked = {r.text for r in j.rows()}
    assert not asked & set(others)  # the teacher is asked nothing about off-topic texts
    got = m["served"]["off_topic"]
    decisions = Cascade.load(tmp / "students").decide(others)
    assert got["n"] == len(others) and got["source"] == str(off)
    assert got["answered_locally"] == pytest.approx(sum(d.source == "student" for d in decisions) / len(others))
    lo, hi = got["answered_locally_ci"]
    assert lo <= got["answered_locally"] <= hi
    from distil.evaluate.decision import served_line

    assert f"of {len(others)} off-topic texts alone" in served_line(m)
