"""Journal shards: one SQLite journal per worker of a distributed run, merged into the central one.

A worker of ``--engine ray`` writes every answer to its own shard (a full journal, same schema, so
:func:`distil.label.label` runs on it unchanged) in ``<journal>.shards/``, the moment it arrives.
Shards are merged into the central journal (:meth:`distil.journal.Journal.merge`) at the end of a
run, and at the start of the next one, so a run after a crash pays only for what no shard recorded.
The folder must be one the driver can read: the local disk on one machine, a shared file system
across machines.  Keys are content addresses (teacher fingerprint + text), so a key means the same
input in every shard.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Answer columns copied from a shard (everything a row holds but its lease).
_ANSWER = ("status", "probs", "label", "method", "raw", "error", "latency_ms", "updated_at")
_ROW = ("key", "teacher", "text", *_ANSWER[:-1], "attempts", "tokens_in", "tokens_out", "cost", "created_at",
        "updated_at", "source")
_PROBE = ("teacher", "created_at", "calls", "attempts", "tokens_in", "tokens_out", "cost", "info")


@dataclass
class MergeStats:
    """What one merge took from a shard."""

    shard: str
    added: int = 0  # rows this journal did not have
    answered: int = 0  # answers for rows this journal had without one (pending or failed)
    duplicates: int = 0  # answers for rows this journal had answered already: paid twice, first answer kept
    failures: int = 0  # failed attempts added to rows that are still failed here
    probes: int = 0
    runs: int = 0
    kept: int = 0  # shards merged and kept (written to a moment ago: a worker may still be running)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)

    def add(self, other: MergeStats) -> None:
        """Add another merge's counts to these."""
        for name in ("added", "answered", "duplicates", "failures", "probes", "runs", "kept"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def shard_dir(journal_path: str | Path) -> Path:
    """The folder of a journal's shards: ``journal.sqlite.shards`` beside it."""
    path = Path(journal_path)
    return path.with_name(path.name + ".shards")


def new_shard_path(journal_path: str | Path) -> Path:
    """A fresh, unique shard file for one worker."""
    folder = shard_dir(journal_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:12]}.sqlite"


def shard_paths(journal_path: str | Path) -> list[Path]:
    """The shard files waiting beside a journal, oldest first."""
    folder = shard_dir(journal_path)
    return sorted(folder.glob("*.sqlite")) if folder.is_dir() else []


def answered_in(paths: Sequence[Path], keys: Sequence[str]) -> set[str]:
    """The ``keys`` some shard among ``paths`` holds an answer for (read-only; a shard being written is fine)."""
    found: set[str] = set()
    todo = list(keys)
    for path in paths:
        if not todo:
            break
        found |= _answered_one(path, todo)
        todo = [k for k in todo if k not in found]
    return found


def _answered_one(path: Path, keys: list[str]) -> set[str]:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return set()
    try:
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            sql = f"SELECT key FROM calls WHERE status IN ('done','invalid') AND key IN ({','.join('?' * len(chunk))})"
            out.update(k for (k,) in con.execute(sql, chunk))
        return out
    except sqlite3.Error:  # a shard created a moment ago may not have its tables yet
        return set()
    finally:
        con.close()


def merge_attached(db: sqlite3.Connection, name: str) -> MergeStats:
    """Merge the database attached as ``shard`` into ``main`` inside the caller's transaction."""
    stats = MergeStats(shard=name)
    marks = db.execute("SELECT calls_upto, probes_upto, runs_upto FROM merges WHERE shard=?", (name,)).fetchone()
    calls_upto, probes_upto, runs_upto = marks or (-1.0, 0, 0)
    db.execute("DROP TABLE IF EXISTS temp.taken")
    db.execute(
        "CREATE TEMP TABLE taken AS SELECT * FROM shard.calls "
        "WHERE status IN ('done','invalid','failed') AND updated_at > ?", (calls_upto,),
    )
    db.execute("INSERT OR IGNORE INTO main.teachers SELECT * FROM shard.teachers")
    stats.duplicates = _count(db, "SELECT COUNT(*) FROM temp.taken t JOIN main.calls c ON c.key = t.key "
                                  "WHERE c.status IN ('done','invalid') AND t.status IN ('done','invalid')")
    stats.answered = _take_answers(db)
    stats.failures = _add_failures(db)
    stats.added = _insert_new(db)
    db.execute("INSERT OR IGNORE INTO main.uses(key, source) SELECT key, source FROM shard.uses")
    stats.probes = _copy_probes(db, probes_upto)
    stats.runs = _copy_runs(db, runs_upto)
    _record_marks(db, name, calls_upto)
    db.execute("DROP TABLE temp.taken")
    return stats


def _count(db: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> int:
    return int(db.execute(sql, args).fetchone()[0] or 0)


def _take_answers(db: sqlite3.Connection) -> int:
    """A shard's answer fills a row here that has none; the attempts and cost add up."""
    sets = ", ".join(f"{c}=t.{c}" for c in _ANSWER)
    cur = db.execute(
        f"UPDATE main.calls SET {sets}, attempts=calls.attempts+t.attempts, tokens_in=calls.tokens_in+t.tokens_in, "
        "tokens_out=calls.tokens_out+t.tokens_out, cost=calls.cost+t.cost, lease_owner=NULL, lease_until=NULL "
        "FROM temp.taken t WHERE calls.key = t.key AND calls.status IN ('pending','failed') "
        "AND t.status IN ('done','invalid')"
    )
    return int(cur.rowcount)


def _add_failures(db: sqlite3.Connection) -> int:
    """A failure in the shard for a row still failed here: its attempts were paid, so they are counted."""
    cur = db.execute(
        "UPDATE main.calls SET attempts=calls.attempts+t.attempts, cost=calls.cost+t.cost, error=t.error, "
        "updated_at=t.updated_at FROM temp.taken t WHERE calls.key = t.key AND calls.status = 'failed' "
        "AND t.status = 'failed'"
    )
    return int(cur.rowcount)


def _insert_new(db: sqlite3.Connection) -> int:
    cols = ", ".join(_ROW)
    before = _count(db, "SELECT total_changes()")
    db.execute(f"INSERT OR IGNORE INTO main.calls({cols}) SELECT {cols} FROM temp.taken")
    return _count(db, "SELECT total_changes()") - before


def _copy_probes(db: sqlite3.Connection, upto: int) -> int:
    cols = ", ".join(_PROBE)
    cur = db.execute(f"INSERT INTO main.probes({cols}) SELECT {cols} FROM shard.probes WHERE id > ? ORDER BY id",
                     (upto,))
    return int(cur.rowcount)


def _copy_runs(db: sqlite3.Connection, upto: int) -> int:
    cur = db.execute(
        "INSERT INTO main.runs(teacher, kind, started_at, finished_at, info) "
        "SELECT teacher, kind, started_at, finished_at, info FROM shard.runs WHERE id > ? ORDER BY id", (upto,),
    )
    return int(cur.rowcount)


def _record_marks(db: sqlite3.Connection, name: str, calls_upto: float) -> None:
    upto = db.execute("SELECT MAX(updated_at) FROM temp.taken").fetchone()[0]
    probes = _count(db, "SELECT MAX(id) FROM shard.probes")
    runs = _count(db, "SELECT MAX(id) FROM shard.runs")
    db.execute(
        "INSERT INTO main.merges(shard, calls_upto, probes_upto, runs_upto, merged_at) VALUES (?,?,?,?,?) "
        "ON CONFLICT(shard) DO UPDATE SET calls_upto=excluded.calls_upto, probes_upto=excluded.probes_upto, "
        "runs_upto=excluded.runs_upto, merged_at=excluded.merged_at",
        (name, max(float(upto if upto is not None else -1.0), calls_upto), probes, runs, time.time()),
    )
