"""One teacher per run: `distil run` builds it once, probes once, and closes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import write_csv, write_task

from distil.pipeline import run
from distil.task import Task
from distil.teachers.function import FunctionTeacher
from distil.workspace import Workspace


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"built": 0, "closed": 0}
    init, close = FunctionTeacher.__init__, FunctionTeacher.close

    def counting_init(self: Any, *a: Any, **kw: Any) -> None:
        counts["built"] += 1
        init(self, *a, **kw)

    def counting_close(self: Any) -> None:
        counts["closed"] += 1
        close(self)

    monkeypatch.setattr(FunctionTeacher, "__init__", counting_init)
    monkeypatch.setattr(FunctionTeacher, "close", counting_close)
    return counts


def test_a_workspace_builds_lazily_and_closes_what_it_built(tmp_path: Path, counted: dict[str, int]) -> None:
    task = Task.load(write_task(tmp_path / "t"))
    with Workspace(task) as ws:
        assert counted["built"] == 0
        assert ws.teacher is ws.teacher and ws.journal is ws.journal
    assert counted == {"built": 1, "closed": 1}
    with Workspace(task):
        pass
    assert counted == {"built": 1, "closed": 1}  # nothing built, nothing to close


def test_run_with_valid_and_test_builds_the_teacher_once(tmp_path: Path, counted: dict[str, int]) -> None:
    task = Task.load(write_task(tmp_path / "t"))
    words = ["card", "transfer", "cash", "atm", "hello"]
    gold = {"card": "card", "transfer": "transfer", "cash": "cash", "atm": "cash", "hello": "other"}
    pool = write_csv(tmp_path / "pool.csv", [{"text": f"{w} question {i}"} for i in range(30) for w in words])
    rows = [{"text": f"{w} case {i}", "label": gold[w]} for i in range(6) for w in words]
    valid = write_csv(tmp_path / "valid.csv", rows, columns=("text", "label"))
    test = write_csv(tmp_path / "test.csv", [{**r, "text": r["text"] + " again"} for r in rows],
                     columns=("text", "label"))
    metrics = run(
        task, pool, tmp_path / "run", test=test, valid=valid, label_column="label", students=("ngram",),
        params={"ngram": {"bits": 12, "dim": 8, "epochs": 3}},
    )
    assert metrics["n_test"] == 30
    assert counted == {"built": 1, "closed": 1}


def test_what_a_workspace_is_lent_stays_open(tmp_path: Path, counted: dict[str, int]) -> None:
    from distil.journal import Journal
    from distil.teachers import make_teacher

    task = Task.load(write_task(tmp_path / "t"))
    teacher = make_teacher(task)
    with Journal(task.journal_path) as journal:
        with Workspace(task, teacher=teacher, journal=journal) as ws:
            assert ws.teacher is teacher and ws.journal is journal
        assert counted == {"built": 1, "closed": 0}  # the lender's to close
        assert journal.counts() is not None  # still open
        with Workspace(task, journal=journal) as ws:
            assert ws.teacher is not teacher  # built here, closed here
        assert counted == {"built": 2, "closed": 1}
    teacher.close()
