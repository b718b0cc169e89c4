"""Journal overhead per teacher call with 100k answered rows already in the journal.

Per call distil does: look the key up, write the row as pending (committed before the call is
sent), record the answer (committed).  Baseline in the same run: the same two commits as raw
SQLite statements on an equally filled table, and a lookup-only cache hit.

    .venv/bin/python benchmarks/bench_journal.py [--rows 100000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from distil.journal import Journal, call_key
from distil.teachers.base import Answer


def fill(j: Journal, fp: str, n: int) -> None:
    """n answered rows, written in batches of 1000 (as label() does per batch)."""
    probs = [0.1] * 10
    for start in range(0, n, 1000):
        items = [(call_key(fp, f"filler text {i}"), fp, f"filler text {i}") for i in range(start, start + 1000)]
        j.mark_pending(items)
        j.record((k, Answer("done", probs, "logprobs", tokens_in=50, tokens_out=3), "a") for k, _, _ in items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=2000)
    a = ap.parse_args()
    labels = [f"l{i}" for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        j = Journal(Path(tmp) / "j.sqlite")
        fp = "bench-teacher"
        j.register_teacher(fp, "openai", {"model": "m"}, labels)
        t0 = time.perf_counter()
        fill(j, fp, a.rows)
        fill_s = time.perf_counter() - t0

        per_call, hits = [], []
        answer = Answer("done", [0.1] * 10, "logprobs", tokens_in=50, tokens_out=3)
        for i in range(a.calls):
            text = f"new input {i}"
            k = call_key(fp, text)
            t = time.perf_counter_ns()
            j.lookup([k])
            j.mark_pending([(k, fp, text)])
            j.record([(k, answer, "a")])
            per_call.append((time.perf_counter_ns() - t) / 1000)
        for i in range(a.calls):
            k = call_key(fp, f"filler text {i * 37 % a.rows}")
            t = time.perf_counter_ns()
            j.lookup([k])
            hits.append((time.perf_counter_ns() - t) / 1000)
        j.close()

        # Baseline: the same two commits per call as bare SQL on an equally filled table.
        db = sqlite3.connect(Path(tmp) / "raw.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE c(key TEXT PRIMARY KEY, text TEXT, status TEXT, probs TEXT)")
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO c VALUES (?,?,?,?)", ((f"k{i}", f"filler {i}", "done", "[0.1]") for i in range(a.rows))
        )
        db.execute("COMMIT")
        raw = []
        for i in range(a.calls):
            t = time.perf_counter_ns()
            db.execute("INSERT INTO c VALUES (?,?,'pending',NULL)", (f"n{i}", f"new {i}"))
            db.execute("UPDATE c SET status='done', probs='[0.1]' WHERE key=?", (f"n{i}",))
            raw.append((time.perf_counter_ns() - t) / 1000)
        db.close()

    med = statistics.median
    print(f"journal with {a.rows:,} answered rows (filled in {fill_s:.1f} s), {a.calls:,} calls each")
    print(f"{'operation':<52} {'median µs':>10} {'p99 µs':>10}")
    rows = [
        ("distil: lookup + pending commit + answer commit", per_call),
        ("distil: cache hit (lookup only)", hits),
        ("baseline: bare SQLite insert + update (autocommit)", raw),
    ]
    for name, xs in rows:
        xs = sorted(xs)
        print(f"{name:<52} {med(xs):>10.1f} {xs[int(len(xs) * 0.99) - 1]:>10.1f}")
    print(f"ratio distil / bare SQLite (median): {med(per_call) / med(raw):.2f}x")


if __name__ == "__main__":
    main()
