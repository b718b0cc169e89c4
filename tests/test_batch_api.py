"""``distil label --via batch``: the Batch API path against a stand-in that follows OpenAI's reference.

What is counted is what the stand-in billed: every request line it answered, per ``custom_id``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from batch_standin import BatchStandIn
from helpers import write_csv
from test_reliability_standin import openai_task

from distil.errors import TeacherError
from distil.journal import Journal
from distil.label import label
from distil.task import Task
from distil.teachers.batch import BatchRunner, BatchSettings

TESTS = Path(__file__).resolve().parent
FAST = BatchSettings(poll_s=0.01)


def _texts(n: int, tag: str = "batch") -> list[str]:
    return [f"{tag} {i}: my card payment at the shop" for i in range(n)]


PRICES = {"price_in_per_1m": 1.0, "price_out_per_1m": 2.0}  # the stand-in's own chat prices


def _task(tmp_path: Path, s: BatchStandIn, **teacher: Any) -> Task:
    return Task.load(openai_task(tmp_path / "t", s.base_url, **PRICES, **teacher))


def test_a_pool_is_labeled_through_one_batch_at_half_price(tmp_path: Path) -> None:
    texts = _texts(60)
    with BatchStandIn() as s:
        task = _task(tmp_path, s)
        res = label(task, texts, via="batch", batch=FAST)
    assert res.stats.done == 60 and res.stats.failed == 0
    assert len(s.batches) == 1 and len(s.answered_lines) == 60 and max(s.answered_lines.values()) == 1
    assert {r.method for r in res.rows.values()} == {"logprobs"}
    assert s.requests <= 3  # only the capability probe went to /chat/completions
    assert res.stats.spent == pytest.approx(s.billed, rel=0.02)  # what the server billed, at the batch price
    probe_cost = s.billed - s.batch_billed
    assert s.batch_billed == pytest.approx(res.stats.spent - probe_cost, rel=0.02)
    with Journal(task.journal_path) as j:
        (b,) = j.batches()
    assert b["status"] == "collected" and b["remote_id"] == "batch_0001" and len(b["keys"]) == 60
    # asked again: everything comes from the journal, nothing is sent
    with BatchStandIn() as s2:
        again = label(_task(tmp_path, s2), texts, via="batch", batch=FAST)
    assert again.stats.from_journal == 60 and not s2.batches


def test_an_interrupted_run_polls_the_same_batch_and_sync_runs_leave_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _texts(30)
    with BatchStandIn(polls_to_finish=3) as s:
        task = _task(tmp_path, s)
        real_wait = BatchRunner._wait

        def interrupted(self: BatchRunner, local: str, remote: str) -> dict[str, Any]:
            raise KeyboardInterrupt

        monkeypatch.setattr(BatchRunner, "_wait", interrupted)
        from distil.label import LabelInterrupted

        with pytest.raises(LabelInterrupted):
            label(task, texts, via="batch", batch=FAST)
        monkeypatch.setattr(BatchRunner, "_wait", real_wait)
        before = s.requests
        sync = label(task, texts)  # a synchronous run does not ask what the open batch holds
        assert sync.stats.in_batches == 30 and sync.stats.calls == 0 and s.requests == before
        resumed = label(task, texts, via="batch", batch=FAST)
    assert resumed.stats.done == 30
    assert len(s.batches) == 1 and max(s.answered_lines.values()) == 1 and len(s.answered_lines) == 30


def test_a_batch_whose_id_was_never_journaled_is_found_by_its_metadata(tmp_path: Path) -> None:
    texts = _texts(20)
    with BatchStandIn(polls_to_finish=10_000) as s:
        task = _task(tmp_path, s)
        runner_wait = BatchRunner._wait
        try:
            BatchRunner._wait = lambda self, local, remote: (_ for _ in ()).throw(KeyboardInterrupt)  # type: ignore
            with pytest.raises(KeyboardInterrupt):
                label(task, texts, via="batch", batch=FAST)
        finally:
            BatchRunner._wait = runner_wait  # type: ignore[method-assign]
        with Journal(task.journal_path) as j:
            (b,) = j.batches()
            j._db.execute("UPDATE batches SET remote_id=NULL, status='uploaded' WHERE id=?", (b["id"],))
            j._db.commit()
        s.polls_to_finish = 1
        res = label(task, texts, via="batch", batch=FAST)
    assert res.stats.done == 20 and len(s.batches) == 1 and max(s.answered_lines.values()) == 1


def test_an_expired_batch_keeps_what_it_answered_and_the_rest_is_asked_again(tmp_path: Path) -> None:
    texts = _texts(30)
    with BatchStandIn(expire_after=10) as s:
        task = _task(tmp_path, s)
        first = label(task, texts, via="batch", batch=FAST)
        assert first.stats.done == 10 and first.stats.skipped == 20
        s.expire_after = None
        second = label(task, texts, via="batch", batch=FAST)
    assert second.stats.done == 20 and second.stats.from_journal == 10
    assert len(s.batches) == 2 and len(s.answered_lines) == 30 and max(s.answered_lines.values()) == 1


def test_failed_lines_are_journaled_failed_and_asked_again(tmp_path: Path) -> None:
    texts = _texts(12)
    with BatchStandIn() as s:
        task = _task(tmp_path, s)
        from distil.journal import call_key

        res = label(task, texts[:1], via="batch", batch=FAST)  # learn the fingerprint
        bad = {call_key(res.teacher, t) for t in texts[1:4]}
        s.fail_keys = bad
        second = label(task, texts, via="batch", batch=FAST)
        assert second.stats.failed == 3 and second.stats.done == 8
        s.fail_keys = set()
        third = label(task, texts, via="batch", batch=FAST)
    assert third.stats.done == 3 and all(s.answered_lines[k] == 2 for k in bad)


def test_the_budget_holds_for_a_batch(tmp_path: Path) -> None:
    texts = _texts(50)
    with BatchStandIn() as s:
        task = _task(tmp_path, s)
        res = label(task, texts, via="batch", batch=FAST, max_calls=25)
    assert res.stats.stopped == "max_calls" and res.stats.requests <= 25
    assert len(s.answered_lines) + s.requests <= 25  # batch lines plus the probe's requests


def test_a_batch_that_fails_validation_stops_with_the_reason(tmp_path: Path) -> None:
    with BatchStandIn(invalid=True) as s:
        task = _task(tmp_path, s)
        with pytest.raises(TeacherError, match="failed validation: line 1: bad body"):
            label(task, _texts(5), via="batch", batch=FAST)
    assert s.batch_billed == 0


def _distil(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "distil", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_9_while_a_batch_runs_then_run_again_pays_once(tmp_path: Path) -> None:
    texts = _texts(40, "kill")
    inputs = write_csv(tmp_path / "in.csv", [{"text": t} for t in texts])
    with BatchStandIn(polls_to_finish=10_000) as s:
        task = openai_task(tmp_path / "t", s.base_url)
        proc = _distil("label", str(task), str(inputs), "--via", "batch", "--poll-s", "0.05", cwd=tmp_path)
        deadline = time.time() + 60
        while not s.polls and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert s.polls, proc.communicate()[1] if proc.poll() is not None else "no batch was polled"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        journal = _distil("journal", str(task), cwd=tmp_path)
        said, _ = journal.communicate(timeout=60)
        assert "batch batch_0001 in flight" in said
        s.polls_to_finish = 1
        again = _distil("label", str(task), str(inputs), "--via", "batch", "--poll-s", "0.05", cwd=tmp_path)
        out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    said = " ".join((out + err).split())
    assert "(batch price)" in said and "per input answered (through the Batch API)" in said
    assert len(s.batches) == 1 and len(s.answered_lines) == 40 and max(s.answered_lines.values()) == 1
    with Journal(Task.load(task).journal_path) as j:
        assert j.counts()["done"] >= 40
