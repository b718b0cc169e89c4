"""The SQLite journal: states, keys, migrations, refusal of newer schemas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from distil.errors import JournalError
from distil.journal import MIGRATIONS, SCHEMA_VERSION, Journal, call_key
from distil.teachers.base import Answer


def test_pending_then_done_and_counts(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.register_teacher("t1", "function", {"callable": "m:f"}, ["a", "b"])
        k = call_key("t1", "hello")
        j.mark_pending([(k, "t1", "hello")])
        assert j.lookup([k])[k].status == "pending"
        j.record([(k, Answer("done", [0.25, 0.75], "function", tokens_in=3, cost=0.5), "b")])
        row = j.lookup([k])[k]
        assert (row.status, row.label, row.probs, row.tokens_in, row.cost) == ("done", "b", [0.25, 0.75], 3, 0.5)
        # a done row is never put back to pending
        j.mark_pending([(k, "t1", "hello")])
        assert j.lookup([k])[k].status == "done"
        c = j.counts("t1")
        assert c["done"] == 1 and c["pending"] == 0 and c["cost"] == 0.5


def test_failed_rows_go_back_to_pending_and_keep_attempts(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.register_teacher("t", "f", {}, ["a", "b"])
        k = call_key("t", "x")
        j.mark_pending([(k, "t", "x")])
        j.record([(k, Answer("failed", error="boom", attempts=3), None)])
        j.mark_pending([(k, "t", "x")])
        row = j.lookup([k])[k]
        assert row.status == "pending" and row.attempts == 3 and row.error == "boom"


def test_key_depends_on_teacher_and_text_only() -> None:
    assert call_key("t", "a") == call_key("t", "a")
    assert call_key("t", "a") != call_key("t", "b")
    assert call_key("t", "a") != call_key("u", "a")


def test_migration_from_version_1_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO teachers VALUES ('t','function','{}','[\"a\",\"b\"]',0)")
    db.execute(
        "INSERT INTO calls(key,teacher,text,status,probs,label,created_at,updated_at) "
        "VALUES ('k','t','old text','done','[1.0,0.0]','a',0,0)"
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        row = j.lookup(["k"])["k"]
        assert row.text == "old text" and row.source == "label" and row.probs == [1.0, 0.0]


def test_newer_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(path)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="not a usable distil journal"):
        Journal(path)


def test_migration_from_version_3_adds_leases_and_probes_and_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    db.execute("INSERT INTO teachers VALUES ('t','function','{}','[\"a\",\"b\"]',0)")
    db.execute(
        "INSERT INTO calls(key,teacher,text,status,probs,label,created_at,updated_at) "
        "VALUES ('k','t','old text','pending',NULL,NULL,0,0)"
    )
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION
        got = j.lease([("k", "t", "old text")], "me|1|0|x")  # an old pending row has no lease: granted
        assert got.granted == ["k"]
        j.record([("k", Answer("done", [1.0, 0.0], "function"), "a")])
        assert j.lookup(["k"])["k"].status == "done"
        assert j.counts()["probes"] == 0


def test_leases_grant_hold_and_report_answered(tmp_path: Path) -> None:
    me, other = "here|1|0|me", "otherhost|2|0|other"
    with Journal(tmp_path / "j.sqlite") as j:
        j.register_teacher("t", "f", {}, ["a", "b"])
        items = [(call_key("t", x), "t", x) for x in ("x", "y", "z")]
        assert j.lease(items[:2], other).granted == [items[0][0], items[1][0]]
        j.record([(items[0][0], Answer("done", [1.0, 0.0], "function"), "a")])
        got = j.lease(items, me)
        assert got.answered == [items[0][0]] and got.held == {items[1][0]: other} and got.granted == [items[2][0]]
        assert j.renew(me) == 1
        j.release(other)  # the other run is over: its unasked row is free
        assert j.lease(items[1:2], me).granted == [items[1][0]]


def test_a_dead_owners_lease_on_this_host_is_free_at_once(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that is gone
    dead = f"{socket.gethostname()}|{child.pid}|0|gone"
    with Journal(tmp_path / "j.sqlite") as j:
        j.register_teacher("t", "f", {}, ["a", "b"])
        item = [(call_key("t", "x"), "t", "x")]
        j.lease(item, dead)
        assert j.lease(item, "here|1|0|me").granted == [item[0][0]]


def test_a_second_answer_never_replaces_the_first(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.register_teacher("t", "f", {}, ["a", "b"])
        k = call_key("t", "x")
        j.mark_pending([(k, "t", "x")])
        j.record([(k, Answer("done", [1.0, 0.0], "function"), "a")])
        j.record([(k, Answer("invalid", raw="late"), None)])  # e.g. a run whose lease was taken over
        row = j.lookup([k])[k]
        assert (row.status, row.label, row.raw) == ("done", "a", None)


def test_probe_spend_is_journaled_and_counted(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as j:
        j.register_teacher("t", "openai", {}, ["a", "b"])
        spend = {"calls": 2, "attempts": 3, "tokens_in": 40, "tokens_out": 6, "cost": 0.01, "mode": "samples"}
        j.record_probe("t", spend)
        c = j.counts("t")
        assert (c["probes"], c["probe_attempts"], c["probe_cost"]) == (1, 3, 0.01)
