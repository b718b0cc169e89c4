"""Selection weighs the cost target: ``max_cost_ratio`` changes which ladder member train() chooses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _distil_helpers import small_banking, tiny_static_model

from distil.cost import cpu_cost_per_1m, load_prices, lookup_price, token_cost_per_1m
from distil.data import LabeledSet
from distil.journal import Journal, call_key
from distil.students.base import Student
from distil.task import Task
from distil.teachers.base import Answer
from distil.train import (
    CORE_HOUR_USD,
    Latency,
    measure_latency,
    select_member,
    teacher_cost_per_1m,
    train,
    train_task,
)

NGRAM = {"bits": 12, "dim": 8, "epochs": 3}


def _rec(name: str, agreement: float, ms: float, cost: float) -> dict[str, Any]:
    return {"name": name, "agreement": agreement, "ms_per_pred": ms, "cost_per_1m": cost, "chosen": False}


LADDER = [_rec("ngram", 0.80, 0.1, 1.0), _rec("static", 0.90, 0.5, 5.0), _rec("finetune", 0.97, 20.0, 50.0)]


def test_both_targets_met_picks_the_cheapest() -> None:
    sel = select_member(LADDER, target=0.85, max_cost_ratio=0.1, teacher_cost_per_1m=100.0)
    assert sel.chosen == "static" and sel.warning is None
    assert "0.05 of the teacher's cost" in sel.reason


def test_no_member_within_the_cost_target_keeps_the_cheapest_qualifying_and_says_so() -> None:
    sel = select_member(LADDER, target=0.85, max_cost_ratio=0.01, teacher_cost_per_1m=100.0)
    assert sel.chosen == "static"
    assert sel.warning is not None and "none of those meets the cost target" in sel.reason


def test_below_the_quality_target_max_cost_ratio_changes_the_choice() -> None:
    loose = select_member(LADDER, target=0.99, max_cost_ratio=1.0, teacher_cost_per_1m=100.0)
    tight = select_member(LADDER, target=0.99, max_cost_ratio=0.02, teacher_cost_per_1m=100.0)
    assert loose.chosen == "finetune" and tight.chosen == "ngram"
    assert "no student reached the target" in (tight.warning or "") and "within the cost target" in tight.reason


def test_without_a_teacher_cost_the_cost_target_is_not_applied() -> None:
    sel = select_member(LADDER, target=0.99, max_cost_ratio=0.02, teacher_cost_per_1m=None)
    assert sel.chosen == "finetune"  # today's rule: the most agreeing
    assert "not applied" in sel.reason
    plain = select_member(LADDER, target=0.0)
    assert plain.chosen == "ngram" and "cost" not in plain.reason


@pytest.fixture(scope="module")
def banking() -> LabeledSet:
    return small_banking(n_classes=4, per_class=15)


def _fake_timing(monkeypatch: pytest.MonkeyPatch, timings: dict[str, Latency]) -> None:
    """Fixed timings per student name instead of measured ones."""
    monkeypatch.setattr("distil.train._time_member", lambda student, texts: timings[student.name])


def test_max_cost_ratio_changes_the_member_train_chooses(
    tmp_path: Path, banking: LabeledSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ngram is the quickest at batch 1 but (here) the costlier per prediction at batch 256
    _fake_timing(monkeypatch, {"ngram": Latency(0.05, 2000.0, 2e-3), "static": Latency(0.10, 9000.0, 1e-4)})
    base = tiny_static_model(tmp_path / "m2v", banking.texts)
    params: dict[str, dict[str, Any]] = {"ngram": NGRAM, "static": {"base": str(base), "head": "linear", "epochs": 5}}
    teacher = 0.1  # $ per 1M predictions; ngram costs 28% of it, static 1.4%
    chosen = {}
    for limit in (0.5, 0.05):
        res = train(banking, tmp_path / f"art{limit}", students=("ngram", "static"), target=0.0, params=params,
                    max_cost_ratio=limit, teacher_cost_per_1m=teacher)
        chosen[limit] = res.chosen
        cfg = json.loads((tmp_path / f"art{limit}" / "distil_config.json").read_text())
        assert cfg["chosen"] == res.chosen and cfg["selection_reason"] == res.selection_reason
        assert cfg["max_cost_ratio"] == limit and cfg["teacher_cost_per_1m"] == teacher
        costs = {r["name"]: r["cost_per_1m"] for r in res.ladder}
        assert costs["ngram"] == pytest.approx(cpu_cost_per_1m(2e-3, CORE_HOUR_USD), rel=1e-3)
    assert chosen == {0.5: "ngram", 0.05: "static"}


def test_train_task_takes_the_cost_target_and_teacher_cost_from_the_task(
    tmp_path: Path, banking: LabeledSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distil.label

    task = Task.from_dict({"name": "t", "labels": banking.labels,
                           "targets": {"min_retention": 0.01, "max_cost_ratio": 0.2}}, base_dir=tmp_path)
    monkeypatch.setattr(distil.label, "labeled_set", lambda t, **kw: banking)
    res = train_task(task, students=("ngram",), params={"ngram": NGRAM})
    cfg = json.loads((res.out / "distil_config.json").read_text())
    assert cfg["max_cost_ratio"] == 0.2 and cfg["teacher_cost_per_1m"] is None  # no journal: cost unknown
    assert "not applied" in cfg["selection_reason"] and cfg["selection_reason"] in (res.out / "README.md").read_text()
    res = train_task(task, tmp_path / "priced", students=("ngram",), params={"ngram": NGRAM}, teacher_cost_per_1m=1e6)
    cfg = json.loads((res.out / "distil_config.json").read_text())
    assert cfg["teacher_cost_per_1m"] == 1e6 and "of the teacher's cost" in cfg["selection_reason"]


def _journal_with(path: Path, fp: str, answers: list[Answer]) -> Journal:
    jr = Journal(path)
    jr.register_teacher(fp, "test", {}, ["a", "b"])
    keys = [call_key(fp, f"text {i}") for i in range(len(answers))]
    jr.mark_pending([(k, fp, f"text {i}") for i, k in enumerate(keys)])
    jr.record((k, a, "a") for k, a in zip(keys, answers, strict=True))
    return jr


def test_teacher_cost_from_the_journal_uses_the_verdicts_cost_model(tmp_path: Path) -> None:
    hosted = Task.from_dict({"name": "t", "labels": ["a", "b"],
                             "teacher": {"kind": "openai", "model": "gpt-4o-mini"}}, base_dir=tmp_path)
    answers = [Answer("done", probs=[1.0, 0.0], tokens_in=100 + 20 * i, tokens_out=5) for i in range(3)]
    with _journal_with(tmp_path / "j1.sqlite", "fp1", answers) as jr:
        got = teacher_cost_per_1m(hosted, "fp1", journal=jr)
    price = lookup_price("gpt-4o-mini", load_prices())
    assert price is not None and got == pytest.approx(token_cost_per_1m(120.0, 5.0, price))

    function = Task.from_dict({"name": "t", "labels": ["a", "b"],
                               "teacher": {"kind": "function", "callable": "m:f"}}, base_dir=tmp_path)
    answers = [Answer("done", probs=[1.0, 0.0], latency_ms=ms) for ms in (2.0, 4.0, 9.0)]
    with _journal_with(tmp_path / "j2.sqlite", "fp2", answers) as jr:
        assert teacher_cost_per_1m(function, "fp2", journal=jr) == pytest.approx(cpu_cost_per_1m(4e-3, CORE_HOUR_USD))
        assert teacher_cost_per_1m(function, "other", journal=jr) is None
    assert teacher_cost_per_1m(function, "fp2") is None  # the task's own journal does not exist


def test_latency_record_has_cpu_time_at_batch(banking: LabeledSet) -> None:
    from distil.students.ngram import NgramStudent

    student: Student = NgramStudent(**NGRAM).fit(banking.texts, banking.probs, labels=banking.labels)
    lat = measure_latency(student, banking.texts[:20], calls=3)
    assert lat.ms_per_pred > 0 and lat.preds_per_s > 0 and lat.cpu_s_per_pred_batch > 0
