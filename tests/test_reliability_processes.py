"""Real ``distil label`` processes against the counting stand-in: kill -9, Ctrl-C, two runs at once.

What the stand-in received is what a provider would bill.  The bounds checked:

* kill -9 at random points: requests received <= unique inputs + (requests in flight at each
  kill, at most ``concurrency``) + the capability-probe requests the journal counts;
* Ctrl-C: the closing message says how many answers were kept, and the journal holds exactly those;
* two runs on one journal at once (fresh or existing): no input paid twice, both finish;
* a run killed while holding leases: the next run takes them over at once (its pid is gone).
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_reliability_standin import StandIn, openai_task

from distil.data import read_labeled
from distil.journal import Journal

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "DISTIL_DEBUG": ""}
CONCURRENCY = 4


def _inputs(path: Path, n: int, prefix: str) -> tuple[Path, list[str]]:
    texts = [f"{prefix} {i} about my card and a transfer" for i in range(n)]
    path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    return path, texts


def _cmd(task: Path, inputs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "distil", "label", str(task), str(inputs), *extra]


def _query(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute(sql).fetchone()[0] or 0)
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _answered(db: Path) -> int:
    return _query(db, "SELECT COUNT(*) FROM calls WHERE status IN ('done','invalid')")


def _probe_requests(db: Path) -> int:
    return _query(db, "SELECT SUM(attempts) FROM probes")


@pytest.mark.slow
def test_kill_9_loop_pays_each_input_once_plus_what_was_in_flight(tmp_path: Path) -> None:
    kills, n = 12, 300
    rng = random.Random(12)
    inputs, texts = _inputs(tmp_path / "in.csv", n, "kill question")
    with StandIn(delay=(0.005, 0.03)) as s:
        task = openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY)
        db = tmp_path / "t" / ".distil" / "journal.sqlite"
        for _ in range(kills):
            proc = subprocess.Popen(_cmd(task, inputs), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start, target = s.requests, rng.randint(3, 40)
            deadline = time.time() + 30
            while s.requests - start < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.002)
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        final = subprocess.run(_cmd(task, inputs), env=ENV, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        received, probes = s.requests, _probe_requests(db)
        assert probes == sum(c for t, c in s.by_text.items() if t not in texts)  # every probe request journaled
        assert received <= n + kills * CONCURRENCY + probes
        assert s.paid_twice() <= kills * CONCURRENCY
    with Journal(db) as j:
        c = j.counts()
    assert (c["done"], c["pending"], c["failed"]) == (n, 0, 0)
    assert len(read_labeled(tmp_path / "t" / ".distil" / "labeled.parquet")) == n


def test_ctrl_c_keeps_every_answer_and_says_how_many(tmp_path: Path) -> None:
    inputs, texts = _inputs(tmp_path / "in.csv", 200, "interrupt question")
    with StandIn(delay=(0.05, 0.15)) as s:
        task = openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY)
        db = tmp_path / "t" / ".distil" / "journal.sqlite"
        proc = subprocess.Popen(_cmd(task, inputs), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while _answered(db) < 12 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        m = re.search(r"interrupted: (\d+) answers received in this run are in the journal", err)
        assert m is not None, err
        kept = int(m.group(1))
        abandoned = re.search(r"requests abandoned on the wire \(the server may bill them\): (\d+)", err)
        lost = int(abandoned.group(1)) if abandoned else 0
        assert _answered(db) == kept >= 12
        assert s.requests <= kept + lost + _probe_requests(db)  # nothing that arrived was thrown away
        again = subprocess.run(_cmd(task, inputs), env=ENV, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert s.paid_twice() <= lost
        assert _answered(db) == len(texts)


@pytest.mark.parametrize("fresh", [True, False])
def test_two_runs_at_once_pay_no_input_twice(tmp_path: Path, fresh: bool) -> None:
    inputs, texts = _inputs(tmp_path / "in.csv", 200, "concurrent question")
    with StandIn(delay=(0.005, 0.02)) as s:
        task = openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY)
        if not fresh:  # an existing journal
            warm, _ = _inputs(tmp_path / "warm.csv", 3, "warm up")
            assert subprocess.run(_cmd(task, warm), env=ENV, capture_output=True, timeout=120).returncode == 0
        outs = [tmp_path / f"out{i}.jsonl" for i in range(2)]
        procs = [
            subprocess.Popen(_cmd(task, inputs, "--out", str(o)), env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for o in outs
        ]
        errs = [p.communicate(timeout=180)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errs
        assert "move the file away" not in "".join(errs)
        assert sum(1 for t in texts if s.by_text[t] > 1) == 0  # no input paid twice
        assert sum(s.by_text[t] for t in texts) == len(texts)
    for o in outs:  # both runs end with every answer, whichever of them asked it
        assert len(o.read_text(encoding="utf-8").splitlines()) == len(texts)


def test_a_killed_runs_leases_are_taken_over_at_once(tmp_path: Path) -> None:
    inputs, texts = _inputs(tmp_path / "in.csv", 60, "stale lease question")
    with StandIn(delay=(0.2, 0.3)) as s:
        task = openai_task(tmp_path / "t", s.base_url, concurrency=CONCURRENCY)
        db = tmp_path / "t" / ".distil" / "journal.sqlite"
        proc = subprocess.Popen(_cmd(task, inputs), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while _query(db, "SELECT COUNT(*) FROM calls WHERE lease_owner IS NOT NULL") == 0 and time.time() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _query(db, "SELECT COUNT(*) FROM calls WHERE status='pending' AND lease_owner IS NOT NULL") > 0
        started = time.time()
        done = subprocess.run(_cmd(task, inputs), env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert time.time() - started < 60  # not the 120 s a lease lasts: the dead owner's leases are free
        assert "waiting for" not in done.stderr
        assert s.paid_twice() <= CONCURRENCY
        assert _answered(db) == len(texts)
