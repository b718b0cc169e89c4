"""The journal: every teacher call, in SQLite, written before it is sent.

Rows are keyed by a content address: the hash of the canonical JSON of the
teacher's fingerprint (kind, model, prompt version, label set, sampling
parameters — never the API key or the base URL) and the input text.  A row
moves ``pending → done | failed | invalid``; ``done`` and ``invalid`` were paid
for and are never asked again, ``pending`` (a crash mid-call) and ``failed``
are asked again on the next run.

**Leases.**  A run takes the rows it is about to ask in one transaction (:meth:`Journal.lease`):
``lease_owner`` names the run (host, pid, start time) and ``lease_until`` says until when the lease
holds; the run renews its leases while it works (:meth:`Journal.renew`).  Another run skips rows
leased to a live owner, so two runs on one journal never pay for the same input; a lease whose
owner died (its pid is gone on this host) or that was not renewed in time is taken over.

**Writes** are one short transaction each (an answer is committed the moment it arrives); a write
that fails (a full disk, a read-only file) raises :class:`~distil.errors.JournalError` and leaves
every earlier commit in place.

The schema version is SQLite's ``user_version``; :data:`MIGRATIONS` brings an
older journal up to date and a newer one is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.errors import JournalError
from distil.task import canonical_json
from distil.teachers.base import Answer

if TYPE_CHECKING:
    from distil.shards import MergeStats

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
    # 4: leases on pending rows (two runs never ask the same input) and the capability probes'
    # requests (paid for, so journaled and counted)
    """
    ALTER TABLE calls ADD COLUMN lease_owner TEXT;
    ALTER TABLE calls ADD COLUMN lease_until REAL;
    CREATE TABLE probes (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        teacher     TEXT NOT NULL,
        run         INTEGER,
        created_at  REAL NOT NULL,
        calls       INTEGER NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        tokens_in   INTEGER NOT NULL DEFAULT 0,
        tokens_out  INTEGER NOT NULL DEFAULT 0,
        cost        REAL NOT NULL DEFAULT 0,
        info        TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 5: batches sent through a provider's Batch API (the remote id journaled before anything is
    # waited for, so a killed run polls the same batch again instead of paying for it twice)
    """
    CREATE TABLE batches (
        id             TEXT PRIMARY KEY,
        teacher        TEXT NOT NULL,
        remote_id      TEXT,
        input_file_id  TEXT,
        status         TEXT NOT NULL,
        keys           TEXT NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        info           TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX batches_teacher ON batches(teacher, status);
    """,
    # 6: journal shards merged in (``distil journal merge``, the Ray engine's per-worker journals):
    # how far each shard has been taken, so merging it again adds nothing twice
    """
    CREATE TABLE merges (
        shard       TEXT PRIMARY KEY,
        calls_upto  REAL NOT NULL DEFAULT -1,
        probes_upto INTEGER NOT NULL DEFAULT 0,
        runs_upto   INTEGER NOT NULL DEFAULT 0,
        merged_at   REAL NOT NULL
    );
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

#: Seconds a lease holds without renewal; a run renews its leases every ``LEASE_SECONDS / 4``.
LEASE_SECONDS = 120.0


def new_lease_owner() -> str:
    """A fresh owner name for one run: ``host|pid|start time (unix seconds)|random``."""
    return f"{socket.gethostname()}|{os.getpid()}|{time.time():.3f}|{uuid.uuid4().hex[:8]}"


def _owner_parts(owner: str) -> tuple[str, int, float]:
    host, pid, started, *_ = [*owner.split("|"), "", "", ""]
    try:
        return host, int(pid), float(started)
    except ValueError:
        return host, -1, 0.0


def owner_alive(owner: str) -> bool:
    """False only when ``owner`` ran on this host and its process is gone (or a zombie)."""
    host, pid, _ = _owner_parts(owner)
    if host != socket.gethostname() or pid <= 0:
        return True  # another machine: only the lease's time tells
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but not ours to signal
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def describe_owner(owner: str) -> str:
    """``pid 123 on host h, started 2025-06-01 12:03:04`` for messages."""
    host, pid, started = _owner_parts(owner)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "at an unknown time"
    return f"pid {pid} on host {host}, started {when}"


@dataclass
class Leased:
    """What :meth:`Journal.lease` found for the keys it was given."""

    granted: list[str] = field(default_factory=list)  # this run asks them now
    answered: list[str] = field(default_factory=list)  # done or invalid meanwhile: nothing to ask
    held: dict[str, str] = field(default_factory=dict)  # key → the live owner asking it now


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
            self._db.execute("PRAGMA busy_timeout=10000")
            self._wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"{self.path}: not a usable distil journal ({exc})",
                hint="move the file away to start a new journal, or point work_dir elsewhere",
            ) from None

    def _wal(self, wait_s: float = 10.0) -> None:
        """Switch to WAL; retried while another process creating the same journal holds it (SQLite does not
        wait on its busy timeout for a journal-mode change)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- schema --------------------------------------------------------------------
    def _migrate(self) -> None:
        """Apply the missing migrations, each in one write transaction.

        The version is read again inside the transaction, so two processes opening a new journal
        at once do not both create its tables.
        """
        with self._lock:
            self._refuse_newer(int(self._db.execute("PRAGMA user_version").fetchone()[0]))
            while True:
                with self._write("upgrading its schema"):
                    version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                    self._refuse_newer(version)
                    if version >= SCHEMA_VERSION:
                        return
                    for stmt in _split_sql(MIGRATIONS[version]):
                        self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version={version + 1}")

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path}: journal schema version {version} is newer than this distil "
                f"understands ({SCHEMA_VERSION})",
                hint="upgrade distil: pip install -U distil",
            )

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; a SQLite failure becomes a :class:`JournalError` naming ``what``."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise _write_error(self.path, what, exc) from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already (a failed COMMIT may have)."""
        if self._db.in_transaction:
            with suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    @property
    def schema_version(self) -> int:
        """The journal's schema version (SQLite ``user_version``)."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- teachers ------------------------------------------------------------------
    def register_teacher(self, fingerprint: str, kind: str, identity: dict[str, Any], labels: list[str]) -> None:
        """Remember what a teacher fingerprint stands for (idempotent)."""
        with self._write("registering the teacher") as db:
            db.execute(
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
        with self._write("marking calls pending") as db:
            db.executemany(
                "INSERT INTO calls(key, teacher, text, status, created_at, updated_at, source) "
                "VALUES (?,?,?,'pending',?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET status='pending', updated_at=excluded.updated_at "
                "WHERE calls.status IN ('pending','failed')",
                [(k, t, x, now, now, source) for k, t, x in items],
            )

    def lease(
        self,
        items: Sequence[tuple[str, str, str]],
        owner: str,
        *,
        source: str = "label",
        seconds: float = LEASE_SECONDS,
    ) -> Leased:
        """Take (key, teacher, text) rows for ``owner`` to ask, in one transaction, before sending.

        A row is granted when it is new, ``failed``, or ``pending`` without a live lease (none, its
        owner's own, expired, or its owner's process gone); granted rows become ``pending`` leased
        to ``owner`` for ``seconds``.  Rows answered meanwhile and rows another live run holds are
        reported, not granted.
        """
        now = time.time()
        out = Leased()
        with self._write("leasing calls") as db:
            current = self._lease_state(db, [k for k, _, _ in items])
            grant = _sort_for_lease(items, current, owner, now, out)
            db.executemany(
                "INSERT INTO calls(key, teacher, text, status, created_at, updated_at, source, lease_owner, "
                "lease_until) VALUES (?,?,?,'pending',?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET status='pending', updated_at=excluded.updated_at, "
                "lease_owner=excluded.lease_owner, lease_until=excluded.lease_until "
                "WHERE calls.status IN ('pending','failed')",
                [(k, t, x, now, now, source, owner, now + seconds) for k, t, x in grant],
            )
            out.granted = [k for k, _, _ in grant]
        return out

    @staticmethod
    def _lease_state(db: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[str, str | None, float | None]]:
        state: dict[str, tuple[str, str | None, float | None]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT key, status, lease_owner, lease_until FROM calls WHERE key IN ({marks})"
            for key, status, holder, until in db.execute(sql, chunk):
                state[key] = (status, holder, until)
        return state

    def renew(self, owner: str, seconds: float = LEASE_SECONDS) -> int:
        """Extend ``owner``'s leases on rows still unanswered; returns how many."""
        with self._write("renewing leases") as db:
            cur = db.execute(
                "UPDATE calls SET lease_until=? WHERE lease_owner=? AND status IN ('pending','failed')",
                (time.time() + seconds, owner),
            )
            return int(cur.rowcount)

    def release(self, owner: str) -> None:
        """Give up ``owner``'s leases (the run is over; its unasked rows are free to others)."""
        with self._write("releasing leases") as db:
            db.execute("UPDATE calls SET lease_owner=NULL, lease_until=NULL WHERE lease_owner=?", (owner,))

    def note_uses(self, keys: Iterable[str], source: str) -> None:
        """Record that these keys were asked for ``source`` (whether answered now or from the journal)."""
        rows = [(k, source) for k in keys]
        with self._write("noting what the inputs are for") as db:
            db.executemany("INSERT OR IGNORE INTO uses(key, source) VALUES (?,?)", rows)

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
        """Store answers: (key, answer, label name or None), in one transaction.

        Only unanswered rows (``pending``/``failed``) take an answer, and their lease ends: an input
        answered already keeps its first answer.  Call it with one answer the moment it arrives.
        """
        now = time.time()
        with self._write("recording an answer") as db:
            db.executemany(
                "UPDATE calls SET status=?, probs=?, label=?, method=?, raw=?, error=?, "
                "attempts=attempts+?, tokens_in=tokens_in+?, tokens_out=tokens_out+?, "
                "latency_ms=?, cost=cost+?, updated_at=?, lease_owner=NULL, lease_until=NULL "
                "WHERE key=? AND status IN ('pending','failed')",
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

    def record_probe(self, teacher: str, info: dict[str, Any], run: int | None = None) -> None:
        """Journal what a capability probe sent and cost (``calls``, ``attempts``, tokens, ``cost``)."""
        with self._write("recording the capability probe") as db:
            db.execute(
                "INSERT INTO probes(teacher, run, created_at, calls, attempts, tokens_in, tokens_out, cost, info) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    teacher, run, time.time(), int(info.get("calls", 0)), int(info.get("attempts", 0)),
                    int(info.get("tokens_in", 0)), int(info.get("tokens_out", 0)), float(info.get("cost", 0.0)),
                    canonical_json({k: v for k, v in info.items() if k not in _PROBE_COLUMNS}),
                ),
            )

    # -- provider batches ------------------------------------------------------------
    def add_batch(self, batch_id: str, teacher: str, keys: Sequence[str]) -> None:
        """Journal a batch about to be sent (status ``preparing``), with the keys its file holds."""
        now = time.time()
        with self._write("recording a batch") as db:
            db.execute(
                "INSERT INTO batches(id, teacher, status, keys, created_at, updated_at) VALUES (?,?,?,?,?,?)",
                (batch_id, teacher, "preparing", json.dumps(list(keys)), now, now),
            )

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        """Set a batch's ``remote_id``, ``input_file_id``, ``status`` or ``info`` (a dict)."""
        allowed = {"remote_id", "input_file_id", "status", "info"}
        if set(fields) - allowed:
            raise ValueError(f"unknown batch field(s) {sorted(set(fields) - allowed)}")
        values = {k: canonical_json(v) if k == "info" else v for k, v in fields.items()}
        cols = ", ".join(f"{k}=?" for k in values)
        with self._write("updating a batch") as db:
            db.execute(f"UPDATE batches SET {cols}, updated_at=? WHERE id=?", (*values.values(), time.time(), batch_id))

    def batches(self, teacher: str | None = None, *, open_only: bool = False) -> list[dict[str, Any]]:
        """The journaled batches (oldest first); ``open_only``: those whose answers are not all collected."""
        sql = "SELECT id, teacher, remote_id, input_file_id, status, keys, created_at, updated_at, info FROM batches"
        cond, args = [], []
        if teacher is not None:
            cond.append("teacher=?")
            args.append(teacher)
        if open_only:
            cond.append("status NOT IN ('collected', 'failed')")
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        with self._lock:
            found = self._db.execute(sql + " ORDER BY created_at", args).fetchall()
        names = ("id", "teacher", "remote_id", "input_file_id", "status", "keys", "created_at", "updated_at", "info")
        out = [dict(zip(names, r, strict=True)) for r in found]
        for b in out:
            b["keys"], b["info"] = json.loads(b["keys"]), json.loads(b["info"])
        return out

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
        out.update(self._probe_counts(teacher))
        return out

    def _probe_counts(self, teacher: str | None) -> dict[str, Any]:
        """``probe_calls``, ``probe_attempts`` and ``probe_cost`` of the journaled capability probes."""
        sql = "SELECT COUNT(*), SUM(attempts), SUM(cost) FROM probes" + (" WHERE teacher=?" if teacher else "")
        with self._lock:
            n, att, cost = self._db.execute(sql, (teacher,) if teacher else ()).fetchone()
        return {"probes": int(n or 0), "probe_attempts": int(att or 0), "probe_cost": float(cost or 0.0)}

    # -- runs ----------------------------------------------------------------------
    def start_run(self, teacher: str, kind: str, info: dict[str, Any]) -> int:
        """Record the start of a labeling run; returns its id."""
        with self._write("starting a run record") as db:
            cur = db.execute(
                "INSERT INTO runs(teacher, kind, started_at, info) VALUES (?,?,?,?)",
                (teacher, kind, time.time(), canonical_json(info)),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, info: dict[str, Any]) -> None:
        """Record the end of a run with its numbers."""
        with self._write("finishing the run record") as db:
            db.execute(
                "UPDATE runs SET finished_at=?, info=? WHERE id=?", (time.time(), canonical_json(info), run_id)
            )

    # -- shards --------------------------------------------------------------------
    def merge(self, shard: str | Path) -> MergeStats:
        """Take what the journal ``shard`` holds that this one lacks, in one transaction; idempotent.

        An answer (``done``/``invalid``) fills a row this journal has no answer for; a row it has answered
        keeps its first answer (the shard's is counted in ``duplicates``: paid twice); a failure is kept
        for its cost; pending rows are not answers and are left.  The shard's probes, runs and uses come
        along.  ``merges`` records how far the shard was taken, so merging it again adds nothing.
        """
        from distil.shards import merge_attached

        path = Path(shard)
        Journal(path).close()  # a usable journal, at this schema version
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS shard", (str(path),))
            try:
                with self._write(f"merging the shard {path}") as db:
                    return merge_attached(db, path.name)
            finally:
                self._db.execute("DETACH DATABASE shard")

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by SQLite)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sort_for_lease(
    items: Sequence[tuple[str, str, str]],
    current: dict[str, tuple[str, str | None, float | None]],
    owner: str,
    now: float,
    out: Leased,
) -> list[tuple[str, str, str]]:
    """The items ``owner`` may take; answered and held ones go into ``out``."""
    alive: dict[str, bool] = {}
    grant: list[tuple[str, str, str]] = []
    for key, teacher, text in items:
        status, holder, until = current.get(key, (None, None, None))
        if status in ("done", "invalid"):
            out.answered.append(key)
            continue
        if holder and holder != owner and (until or 0.0) > now:
            if holder not in alive:
                alive[holder] = owner_alive(holder)
            if alive[holder]:
                out.held[key] = holder
                continue
        grant.append((key, teacher, text))
    return grant


_PROBE_COLUMNS = frozenset({"calls", "attempts", "tokens_in", "tokens_out", "cost"})


def _write_error(path: Path, what: str, exc: sqlite3.Error) -> JournalError:
    """The clear error for a failed journal write: what failed, why, and what to do."""
    msg = str(exc)
    kept = "every answer committed before this one is kept"
    if "full" in msg:
        hint = f"free disk space (or point work_dir at a disk with room) and run the same command again; {kept}"
    elif "readonly" in msg or "read-only" in msg:
        hint = f"make {path} and its folder writable, then run the same command again; {kept}"
    elif "locked" in msg or "busy" in msg:
        hint = f"another process kept the journal locked for 10 s; wait for it and run again; {kept}"
    else:
        hint = f"check the disk holding {path.parent} and run the same command again; {kept}"
    return JournalError(f"cannot write to the journal {path} while {what}: {msg}", hint=hint)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
