"""The journal: every teacher call, in SQLite, written before it is sent.

Rows are keyed by a content address: the hash of the canonical JSON of the
teacher's fingerprint (kind, model, prompt version, label set, sampling
parameters — never the API key or the base URL) and the input text.  A row
moves ``pending → done | failed | invalid``; ``done`` and ``invalid`` were paid
for and are never asked again, ``pending`` (a crash mid-call) and ``failed``
are asked again on the next run.

The schema version is SQLite's ``user_version``; :data:`MIGRATIONS` brings an
older journal up to date and a newer one is refused.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.errors import JournalError
from distil.task import canonical_json
from distil.teachers.base import Answer

STATUSES = ("pending", "done", "failed", "invalid")

MIGRATIONS: list[str] = [
    # 1: calls and teachers
    """
    CREATE TABLE teachers (
        fingerprint TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,
        identity    TEXT NOT NULL,
        labels      TEXT NOT NULL,
        created_at  REAL NOT NULL
    );
    CREATE TABLE calls (
        key         TEXT PRIMARY KEY,
        teacher     TEXT NOT NULL REFERENCES teachers(fingerprint),
        text        TEXT NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ('pending','done','failed','invalid')),
        probs       TEXT,
        label       TEXT,
        method      TEXT,
        raw         TEXT,
        error       TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0,
        tokens_in   INTEGER NOT NULL DEFAULT 0,
        tokens_out  INTEGER NOT NULL DEFAULT 0,
        latency_ms  REAL NOT NULL DEFAULT 0,
        cost        REAL NOT NULL DEFAULT 0,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX calls_teacher_status ON calls(teacher, status);
    """,
    # 2: where a call came from (label run, serving fallback) and labeling rounds
    """
    ALTER TABLE calls ADD COLUMN source TEXT NOT NULL DEFAULT 'label';
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        teacher     TEXT NOT NULL,
        kind        TEXT NOT NULL,
        started_at  REAL NOT NULL,
        finished_at REAL,
        info        TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 3: every purpose a text was asked for (a text labeled for training and later in a test file
    # has both); calls.source keeps the first
    """
    CREATE TABLE uses (
        key    TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (key, source)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO uses(key, source) SELECT key, source FROM calls;
    """,
]
#: Sources whose answers a student may learn from: labeling runs, active-labeling rounds
#: (``active:<round kind>``) and the server's teacher fallbacks.  ``eval`` (test files) and
#: ``valid`` (validation files) are measured on, never trained on.
TRAINING_SOURCES = ("label", "serve", "active:*")


def is_training_source(source: str) -> bool:
    """Whether answers asked for ``source`` may be trained on (see :data:`TRAINING_SOURCES`)."""
    return any(source == s or (s.endswith("*") and source.startswith(s[:-1])) for s in TRAINING_SOURCES)

SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Row:
    """One journaled call."""

    key: str
    teacher: str
    text: str
    status: str
    probs: list[float] | None
    label: str | None
    method: str | None
    raw: str | None
    error: str | None
    attempts: int
    tokens_in: int
    tokens_out: int
    latency_ms: float
    cost: float
    source: str


_COLUMNS = (
    "key, teacher, text, status, probs, label, method, raw, error, attempts, "
    "tokens_in, tokens_out, latency_ms, cost, source"
)


def _row(r: Sequence[Any]) -> Row:
    return Row(
        key=r[0], teacher=r[1], text=r[2], status=r[3],
        probs=json.loads(r[4]) if r[4] else None,
        label=r[5], method=r[6], raw=r[7], error=r[8], attempts=int(r[9]),
        tokens_in=int(r[10]), tokens_out=int(r[11]), latency_ms=float(r[12]), cost=float(r[13]),
        source=r[14],
    )


def call_key(teacher_fingerprint: str, text: str) -> str:
    """Content address of one call: hash of the canonical JSON of (teacher, text)."""
    blob = canonical_json({"teacher": teacher_fingerprint, "text": text})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Journal:
    """SQLite (WAL) journal of teacher calls.  Safe to share between threads of one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"{self.path}: not a usable distil journal ({exc})",
                hint="move the file away to start a new journal, or point work_dir elsewhere",
            ) from None

    # -- schema --------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: journal schema version {version} is newer than this distil "
                    f"understands ({SCHEMA_VERSION})",
                    hint="upgrade distil: pip install -U distil",
                )
            for target in range(version, SCHEMA_VERSION):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _split_sql(MIGRATIONS[target]):
                        self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={target + 1}")
                    self._db.execute("COMMIT")
                except Exception:
                    self._db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        """The journal's schema version (SQLite ``user_version``)."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- teachers ------------------------------------------------------------------
    def register_teacher(self, fingerprint: str, kind: str, identity: dict[str, Any], labels: list[str]) -> None:
        """Remember what a teacher fingerprint stands for (idempotent)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO teachers(fingerprint, kind, identity, labels, created_at) "
                "VALUES (?,?,?,?,?)",
                (fingerprint, kind, canonical_json(identity), json.dumps(labels), time.time()),
            )

    def teacher_labels(self, fingerprint: str) -> list[str] | None:
        """The label order a teacher's probability vectors use, or None if unknown."""
        with self._lock:
            r = self._db.execute("SELECT labels FROM teachers WHERE fingerprint=?", (fingerprint,)).fetchone()
        return json.loads(r[0]) if r else None

    def teachers(self) -> list[dict[str, Any]]:
        """All teachers seen by this journal, with their identity."""
        with self._lock:
            rows = self._db.execute(
                "SELECT fingerprint, kind, identity, labels, created_at FROM teachers ORDER BY created_at"
            ).fetchall()
        return [
            {"fingerprint": r[0], "kind": r[1], "identity": json.loads(r[2]), "labels": json.loads(r[3])}
            for r in rows
        ]

    # -- calls ---------------------------------------------------------------------
    def lookup(self, keys: Sequence[str]) -> dict[str, Row]:
        """Rows for the given keys (missing keys are absent from the result)."""
        out: dict[str, Row] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for r in self._db.execute(f"SELECT {_COLUMNS} FROM calls WHERE key IN ({marks})", chunk):
                    row = _row(r)
                    out[row.key] = row
        return out

    def mark_pending(self, items: Iterable[tuple[str, str, str]], *, source: str = "label") -> None:
        """Write (key, teacher, text) rows as pending before their calls are sent (one transaction)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO calls(key, teacher, text, status, created_at, updated_at, source) "
                    "VALUES (?,?,?,'pending',?,?,?) "
                    "ON CONFLICT(key) DO UPDATE SET status='pending', updated_at=excluded.updated_at "
                    "WHERE calls.status IN ('pending','failed')",
                    [(k, t, x, now, now, source) for k, t, x in items],
                )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def note_uses(self, keys: Iterable[str], source: str) -> None:
        """Record that these keys were asked for ``source`` (whether answered now or from the journal)."""
        rows = [(k, source) for k in keys]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO uses(key, source) VALUES (?,?)", rows)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def uses(self, teacher: str | None = None) -> dict[str, set[str]]:
        """key → every source it was asked for (for one teacher or all)."""
        sql = "SELECT u.key, u.source FROM uses u"
        args: tuple[str, ...] = ()
        if teacher is not None:
            sql += " JOIN calls c ON c.key = u.key WHERE c.teacher=?"
            args = (teacher,)
        out: dict[str, set[str]] = {}
        with self._lock:
            for key, source in self._db.execute(sql, args).fetchall():
                out.setdefault(key, set()).add(source)
        return out

    def record(self, results: Iterable[tuple[str, Answer, str | None]]) -> None:
        """Store answers: (key, answer, label name or None).  One transaction for the batch."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE calls SET status=?, probs=?, label=?, method=?, raw=?, error=?, "
                    "attempts=attempts+?, tokens_in=tokens_in+?, tokens_out=tokens_out+?, "
                    "latency_ms=?, cost=cost+?, updated_at=? WHERE key=?",
                    [
                        (
                            a.status,
                            json.dumps([round(p, 7) for p in a.probs]) if a.probs is not None else None,
                            label, a.method, a.raw, a.error, a.attempts, a.tokens_in, a.tokens_out,
                            a.latency_ms, a.cost, now, key,
                        )
                        for key, a, label in results
                    ],
                )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def rows(self, teacher: str | None = None, status: str | None = None) -> Iterator[Row]:
        """Iterate rows, optionally for one teacher and one status, in insertion order."""
        sql = f"SELECT {_COLUMNS} FROM calls"
        cond, args = [], []
        if teacher is not None:
            cond.append("teacher=?")
            args.append(teacher)
        if status is not None:
            cond.append("status=?")
            args.append(status)
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        sql += " ORDER BY rowid"
        with self._lock:
            fetched = self._db.execute(sql, args).fetchall()
        for r in fetched:
            yield _row(r)

    def counts(self, teacher: str | None = None) -> dict[str, Any]:
        """Rows per status plus total attempts, tokens and cost (for one teacher or all)."""
        sql = (
            "SELECT status, COUNT(*), SUM(attempts), SUM(tokens_in), SUM(tokens_out), SUM(cost) FROM calls"
            + (" WHERE teacher=?" if teacher else "")
            + " GROUP BY status"
        )
        with self._lock:
            fetched = self._db.execute(sql, (teacher,) if teacher else ()).fetchall()
        out: dict[str, Any] = {s: 0 for s in STATUSES}
        out.update(attempts=0, tokens_in=0, tokens_out=0, cost=0.0)
        for status, n, att, tin, tout, cost in fetched:
            out[status] = int(n)
            out["attempts"] += int(att or 0)
            out["tokens_in"] += int(tin or 0)
            out["tokens_out"] += int(tout or 0)
            out["cost"] += float(cost or 0.0)
        return out

    # -- runs ----------------------------------------------------------------------
    def start_run(self, teacher: str, kind: str, info: dict[str, Any]) -> int:
        """Record the start of a labeling run; returns its id."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO runs(teacher, kind, started_at, info) VALUES (?,?,?,?)",
                (teacher, kind, time.time(), canonical_json(info)),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, info: dict[str, Any]) -> None:
        """Record the end of a run with its numbers."""
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished_at=?, info=? WHERE id=?", (time.time(), canonical_json(info), run_id)
            )

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
