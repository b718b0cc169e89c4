"""label(): every input once, through the journal, within the budget."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import load_task

from distil.journal import Journal
from distil.label import LabelInterrupted, label, labeled_set
from distil.teachers import make_teacher
from distil.teachers.base import Answer, Teacher

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


class _Flaky(Teacher):
    """The task's function teacher, with Ctrl-C arriving during its ``fail_at``-th batch."""

    kind = "function"

    def __init__(self, inner: Teacher, fail_at: int) -> None:
        super().__init__(inner.labels)
        self.inner, self.fail_at, self.batches = inner, fail_at, 0

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def prices_known(self) -> bool:
        return True

    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        self.batches += 1
        if self.batches == self.fail_at:
            raise KeyboardInterrupt
        return self.inner.predict_batch(texts)


def test_ctrl_c_keeps_every_answer_and_the_stats_say_how_many(tmp_path: Path) -> None:
    task = load_task(tmp_path, batch=3)
    flaky = _Flaky(make_teacher(task), fail_at=3)
    assert flaky.fingerprint() == make_teacher(task).fingerprint()
    with pytest.raises(LabelInterrupted) as exc:
        label(task, TEXTS, teacher=flaky, batch_size=3)
    stats = exc.value.stats
    assert stats.calls == stats.done == 6 and stats.stopped == "interrupted"
    with Journal(task.journal_path) as j:
        assert j.counts()["done"] == 6
        assert j.counts()["pending"] == 2  # the batch in hand: asked again next time (its lease released)
    rest = label(task, TEXTS)
    assert rest.stats.calls == 2 and rest.stats.from_journal == 6


def test_max_cost_needs_a_known_price(tmp_path: Path) -> None:
    from distil.errors import ConfigError

    task = load_task(tmp_path)
    with pytest.raises(ConfigError, match="no known price"):
        label(task, TEXTS, max_cost=1.0)
    with Journal(task.journal_path) as j:
        assert list(j.rows()) == []


def test_requests_are_counted_for_every_teacher(tmp_path: Path) -> None:
    task = load_task(tmp_path, batch=3)
    res = label(task, TEXTS, max_calls=4)
    assert res.stats.requests == 4 == res.stats.calls and res.stats.stopped == "max_calls"
