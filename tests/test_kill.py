"""Kill -9 a labeling process mid-run; the next run pays only for what was not answered."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_csv, write_task

from distil.journal import Journal

TESTS = Path(__file__).resolve().parent


def _done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM calls WHERE status='done'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill_9_then_resume_pays_each_input_once(tmp_path: Path) -> None:
    n = 150
    texts = [{"text": f"card question number {i}"} for i in range(n)]
    texts += texts[:30]  # duplicates: still one call each
    inputs = write_csv(tmp_path / "in.csv", texts)
    task = write_task(tmp_path / "t", fn="slow_counting", batch=5)
    counter = tmp_path / "calls.txt"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "DISTIL_TEST_COUNTER": str(counter)}
    cmd = [sys.executable, "-m", "distil", "label", str(task), str(inputs)]
    db = tmp_path / "t" / ".distil" / "journal.sqlite"

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while _done(db) < 40 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    answered_before = _done(db)
    calls_before = len(counter.read_text().splitlines())
    assert 40 <= answered_before < n
    # Calls answered by the teacher but lost with the process: at most the batch in flight.
    assert 0 <= calls_before - answered_before <= 5

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls_after = len(counter.read_text().splitlines())
    # The resumed run asks exactly the inputs that had no answer: no done row is paid twice.
    assert calls_after - calls_before == n - answered_before
    assert calls_after == n + (calls_before - answered_before)
    with Journal(db) as j:
        c = j.counts()
    assert c["done"] == n and c["pending"] == 0

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "teacher calls this run: 0" in again.stderr
    assert len(counter.read_text().splitlines()) == calls_after
