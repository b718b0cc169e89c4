"""The journal under failure: a full disk, two processes creating it at once, a live run's leases.

A full disk is simulated with SQLite's ``max_page_count`` (the same SQLITE_FULL a full disk gives).
Before this change the failure surfaced as "internal error: cannot rollback - no transaction is
active" (exit 70) and the batch in hand was lost.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import load_task

from distil.errors import JournalError
from distil.journal import Journal, call_key
from distil.label import label
from distil.teachers import make_teacher
from distil.teachers.base import Answer

ROOT = Path(__file__).resolve().parents[1]


def test_a_full_disk_is_a_clear_error_and_keeps_every_committed_answer(tmp_path: Path) -> None:
    task = load_task(tmp_path, batch=16)
    texts = [f"card question {i} " + "x" * 3000 for i in range(200)]
    journal = Journal(task.journal_path)
    first = label(task, texts[:8], journal=journal)
    assert first.stats.done == 8
    pages = int(journal._db.execute("PRAGMA page_count").fetchone()[0])
    journal._db.execute(f"PRAGMA max_page_count={pages + 60}")  # room for a few more chunks
    with pytest.raises(JournalError) as exc:
        label(task, texts, journal=journal)
    message = str(exc.value)
    assert "cannot write to the journal" in message and "full" in message
    assert "rollback" not in message and "free disk space" in message
    assert exc.value.exit_code == 5
    found = re.search(r"the (\d+) answers this run committed before it are kept", message)
    assert found is not None, message
    kept = int(found.group(1))
    assert kept > 0  # answers committed before the disk filled up
    journal.close()
    with Journal(task.journal_path) as j:  # nothing committed is lost, and the journal is usable
        assert j.counts()["done"] == 8 + kept
    again = label(task, texts)
    assert again.stats.from_journal == 8 + kept and again.stats.done == len(texts) - 8 - kept


def test_processes_creating_one_journal_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "journal.sqlite"
    start = time.time() + 1.5
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[3]); from distil.journal import Journal\n"
        "time.sleep(max(float(sys.argv[2]) - time.time(), 0)); j = Journal(sys.argv[1]); print(j.schema_version)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(start), str(ROOT / "src")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1] for o in outs]
    with Journal(path) as j:
        assert {o[0].strip() for o in outs} == {str(j.schema_version)}


def test_inputs_a_live_run_holds_are_waited_for_not_asked(tmp_path: Path) -> None:
    task = load_task(tmp_path)
    texts = [f"lease question {i}" for i in range(6)]
    fp = make_teacher(task).fingerprint()
    other = "otherhost|4242|1.0|abcd"  # a live run elsewhere (another host: only its lease's time counts)
    held = texts[:2]
    with Journal(task.journal_path) as j:
        j.register_teacher(fp, "function", {}, task.label_names)
        got = j.lease([(call_key(fp, t), fp, t) for t in held], other)
        assert len(got.granted) == 2

        def the_other_run_answers() -> None:
            time.sleep(1.0)
            j.record([(call_key(fp, t), Answer("done", [1.0, 0.0, 0.0, 0.0], "function"), "card") for t in held])

        thread = threading.Thread(target=the_other_run_answers)
        thread.start()
        res = label(task, texts, journal=j)
        thread.join()
    assert res.stats.calls == 4 and res.stats.from_journal == 2 and res.stats.from_others == 2
    assert len(res.labeled) == 6


def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    task = load_task(tmp_path)
    texts = [f"expired question {i}" for i in range(3)]
    fp = make_teacher(task).fingerprint()
    with Journal(task.journal_path) as j:
        j.register_teacher(fp, "function", {}, task.label_names)
        j.lease([(call_key(fp, t), fp, t) for t in texts], "otherhost|1|1.0|x", seconds=-1.0)  # already expired
        res = label(task, texts, journal=j)
    assert res.stats.calls == 3 and res.stats.from_others == 0
