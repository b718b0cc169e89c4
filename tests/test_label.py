"""label(): every input once, through the journal, within the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import load_task

from distil.journal import Journal
from distil.label import label, labeled_set
from distil.teachers import make_teacher

TEXTS = [
    "my card has not arrived",
    "how do I transfer money abroad",
    "the atm kept my cash",
    "what is my pin",
    "close my account please",
    "card payment declined",
    "transfer is pending for days",
    "cash withdrawal fee",
]


def test_labels_once_then_everything_from_journal(tmp_path: Path) -> None:
    task = load_task(tmp_path)
    first = label(task, TEXTS + TEXTS[:3])  # duplicates are asked once
    assert first.stats.total == len(TEXTS)
    assert first.stats.calls == len(TEXTS) and first.stats.from_journal == 0
    assert len(first.labeled) == len(TEXTS)
    np.testing.assert_allclose(first.labeled.probs.sum(axis=1), 1.0, atol=1e-6)
    assert first.labeled.teacher_labels[0] == "card"
    assert first.labeled.teacher_labels[2] == "cash"

    second = label(task, TEXTS)
    assert second.stats.calls == 0 and second.stats.from_journal == len(TEXTS)
    np.testing.assert_allclose(second.labeled.probs, first.labeled.probs, atol=1e-6)

    with Journal(task.journal_path) as j:
        rows = list(j.rows())
        assert len(rows) == len(TEXTS)
        assert {r.status for r in rows} == {"done"}
        assert all(r.method == "function" and r.attempts == 1 for r in rows)


def test_out_of_set_answers_are_invalid_kept_and_not_asked_again(tmp_path: Path) -> None:
    task = load_task(tmp_path, fn="with_invalid")
    res = label(task, TEXTS)
    assert res.stats.invalid == 1 and res.stats.done == len(TEXTS) - 1
    row = res.row_for("what is my pin")
    assert row is not None and row.status == "invalid" and row.raw is not None and "ERROR?" in row.raw
    assert "what is my pin" not in res.labeled.texts
    again = label(task, TEXTS)
    assert again.stats.calls == 0


def test_max_calls_is_a_hard_stop_and_the_rest_follows(tmp_path: Path) -> None:
    task = load_task(tmp_path, batch=3)
    res = label(task, TEXTS, max_calls=5)
    assert res.stats.calls == 5 and res.stats.stopped == "max_calls" and res.stats.skipped == 3
    rest = label(task, TEXTS)
    assert rest.stats.calls == 3 and rest.stats.from_journal == 5 and rest.stats.stopped is None


def test_declined_estimate_sends_nothing(tmp_path: Path) -> None:
    task = load_task(tmp_path)
    res = label(task, TEXTS, confirm=lambda s: False)
    assert res.stats.calls == 0 and res.stats.stopped == "declined"
    with Journal(task.journal_path) as j:
        assert list(j.rows()) == []


def test_labeled_set_reads_the_journal_without_inputs(tmp_path: Path) -> None:
    task = load_task(tmp_path)
    label(task, TEXTS)
    ls = labeled_set(task)
    assert sorted(ls.texts) == sorted(TEXTS)
    assert ls.teacher == make_teacher(task).fingerprint()


def test_a_changed_teacher_is_a_new_key(tmp_path: Path) -> None:
    task = load_task(tmp_path)
    label(task, TEXTS)
    other = load_task(tmp_path, fn="with_invalid")
    res = label(other, TEXTS)
    assert res.stats.calls == len(TEXTS)


def test_empty_text_is_refused(tmp_path: Path) -> None:
    from distil.errors import DataError

    task = load_task(tmp_path)
    with pytest.raises(DataError, match="empty"):
        label(task, ["ok", "  "])
