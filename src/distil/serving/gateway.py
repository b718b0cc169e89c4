"""The asynchronous gateway to the teacher: journaled calls, time-outs, the circuit breaker, degraded replies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distil.serving.breaker import CircuitBreaker
from distil.serving.metrics import Metrics

if TYPE_CHECKING:
    from distil.journal import Journal
    from distil.task import Task
    from distil.teachers.base import Teacher

log = logging.getLogger(__name__)

Answer = tuple[str, float] | None


@dataclass
class TeacherReply:
    """The teacher's answers for a batch: (label, probability) or None per text, and why if degraded."""

    answers: list[Answer]
    reason: str | None = None


@dataclass
class TeacherGateway:
    """Calls the teacher through :func:`distil.label.label` (journaled, ``source="serve"``).

    Failures (exceptions, timeouts) count against the circuit breaker; while it is open the
    teacher is not called, but answers it gave before are still read from the journal.  A text
    the teacher answered ``failed``/``invalid`` gets None.
    """

    task: Task | None
    teacher: Teacher | None
    journal: Journal | None
    breaker: CircuitBreaker
    metrics: Metrics
    timeout_s: float = 30.0
    concurrency: int = 4
    _pool: ThreadPoolExecutor = field(init=False)
    _fingerprint: str | None = field(default=None, init=False)
    #: Why the teacher's last call failed (its error message); None once a call succeeds.
    last_error: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="distil-teacher")

    @property
    def available(self) -> bool:
        """A teacher is configured."""
        return self.teacher is not None and self.task is not None

    def _answers(self, texts: list[str], rows: dict[str, Any]) -> list[Answer]:
        assert self.task is not None
        names = self.task.label_names
        out: list[Answer] = []
        for t in texts:
            row = rows.get(t)
            if row is None or row.status != "done" or not row.probs or len(row.probs) != len(names):
                out.append(None)
                continue
            i = max(range(len(row.probs)), key=row.probs.__getitem__)
            out.append((names[i], float(row.probs[i])))
        return out

    def _call(self, texts: list[str]) -> list[Answer]:
        from distil.label import label

        assert self.task is not None and self.teacher is not None
        res = label(self.task, texts, teacher=self.teacher, journal=self.journal, source="serve")
        return self._answers(texts, res.rows)

    def _from_journal(self, texts: list[str]) -> list[Answer]:
        """Answers the teacher already gave (and was paid for), without calling it."""
        from distil.journal import call_key

        assert self.teacher is not None
        if self.journal is None:
            return [None] * len(texts)
        fp = self._fingerprint or self.teacher.fingerprint()
        self._fingerprint = fp
        keys = {t: call_key(fp, t) for t in texts}
        found = self.journal.lookup(list(keys.values()))
        return self._answers(texts, {t: found[k] for t, k in keys.items() if k in found})

    async def ask(self, texts: list[str]) -> TeacherReply:
        """Answers for ``texts``; never raises (a failure degrades to None answers with a reason)."""
        if not self.available:
            return TeacherReply([None] * len(texts), "no teacher configured")
        if not self.breaker.allow():
            return await self._while_open(texts)
        return await self._ask_teacher(texts)

    async def _while_open(self, texts: list[str]) -> TeacherReply:
        """The circuit is open: answers already in the journal are still served while the teacher is down."""
        self.metrics.inc("distil_teacher_calls_total", outcome="circuit_open")
        try:
            cached = await asyncio.get_running_loop().run_in_executor(self._pool, self._from_journal, texts)
        except Exception as exc:  # a journal problem must not fail the request
            log.warning("journal lookup failed while the teacher circuit is open: %s", exc)
            cached = [None] * len(texts)
        return TeacherReply(cached, "teacher circuit open")

    async def _ask_teacher(self, texts: list[str]) -> TeacherReply:
        """Call the teacher within ``timeout_s``; every outcome is reported to the breaker and the metrics."""
        none: list[Answer] = [None] * len(texts)
        try:
            call = asyncio.get_running_loop().run_in_executor(self._pool, self._call, texts)
            answers = await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError:
            self._failed("timeout", f"no answer within {self.timeout_s:g}s")
            log.warning("teacher timed out after %.1fs on %d texts", self.timeout_s, len(texts))
            return TeacherReply(none, "teacher timed out")
        except Exception as exc:  # the teacher is user code or a remote API: any failure degrades
            self._failed("error", f"{type(exc).__name__}: {exc}")
            log.warning("teacher failed on %d texts: %s: %s", len(texts), type(exc).__name__, exc)
            return TeacherReply(none, f"teacher failed: {type(exc).__name__}")
        if texts and all(a is None for a in answers):
            self._failed("error", "no usable answer (every one failed or was invalid)")
            return TeacherReply(answers, "teacher gave no usable answer")
        self.breaker.success()
        self.last_error = None
        self.metrics.inc("distil_teacher_calls_total", outcome="ok")
        return TeacherReply(answers, None)

    def _failed(self, outcome: str, why: str) -> None:
        self.last_error = why
        self.breaker.failure()
        self.metrics.inc("distil_teacher_calls_total", outcome=outcome)
        self.metrics.inc("distil_errors_total", kind="teacher")

    def close(self) -> None:
        """Release the worker threads and the journal."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.close()
        if self.teacher is not None:
            with contextlib.suppress(Exception):
                self.teacher.close()
