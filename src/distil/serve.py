"""Serve the student over HTTP, with the teacher behind it for the inputs the student should not answer.

``create_app(artifact_dir, task=...)`` builds a FastAPI app; ``serve(...)`` runs it with uvicorn.

Endpoints
---------
``POST /v1/classify``
    ``{"inputs": "text" | ["text", ...]}`` → ``[{"label", "score", "source", "confidence", "ood",
    "degraded"}, ...]``, one per input, in order.  ``source`` is ``"student"`` or ``"teacher"``;
    ``score`` is the probability the answering model gave ``label``; ``confidence`` is the
    student's calibrated top probability; ``ood`` says the input looked unlike the training data;
    ``degraded`` is true when the input should have gone to the teacher but the teacher could not
    answer (down, slow, circuit open, no teacher configured), so the student answered instead.
``POST /v1/chat/completions``
    An OpenAI-compatible facade: the last user message's content is the text; the answer's
    ``choices[0].message.content`` is the label; ``model`` is echoed; ``usage`` counts
    whitespace-separated words (there is no tokenizer on this path).  ``stream: true`` is refused
    (400).  The routing details are under the extra key ``distil``.
``GET /healthz``
    The process is alive.
``GET /readyz``
    The student is loaded and the batching worker runs (503 otherwise).  Ready even when the
    teacher is down: the server then answers degraded.
``GET /metrics``
    Prometheus text format: requests, inputs by source, share routed to the teacher, latency
    histogram, errors, degraded answers, teacher calls and circuit state.

Safety and robustness: binds 127.0.0.1 by default; an optional bearer token (``401`` without it;
``/healthz`` and ``/readyz`` stay open for probes); request bodies over ``max_body_bytes`` get
``413``; more than ``max_inputs`` inputs ``422``; malformed JSON or non-UTF-8 bodies ``400``;
wrong types or empty texts ``422`` — every error is JSON ``{"error": {"message", "type", "code"}}``
and the server keeps serving.

Concurrent requests are micro-batched for the student: a worker collects requests until
``max_batch`` inputs are waiting or ``max_wait_ms`` passed since the first, and runs the router
once for all of them in a worker thread.  Inputs routed to the teacher go through
:func:`distil.label.label` with ``source="serve"``, so every teacher answer lands in the journal
and the next ``distil train`` learns from it.  A circuit breaker guards the teacher: after
``breaker_failures`` consecutive failures (errors, timeouts, budget stops) it opens for
``breaker_cooldown_s`` seconds, during which the student answers alone, flagged ``degraded``.

Nothing here imports torch when the student is a numpy one (ngram, static).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.cascade import resolve
from distil.errors import ConfigError, DistilError, MissingExtra
from distil.route import Decision, Router

try:  # the serve extra; create_app raises MissingExtra without it
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, Response

    _HAVE_FASTAPI = True
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_FASTAPI = False

if TYPE_CHECKING:
    from distil.journal import Journal
    from distil.task import Task
    from distil.teachers.base import Teacher

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ---------------------------------------------------------------------------------------------
# Metrics (Prometheus text exposition, hand-written: no extra dependency)


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.n += 1


def _labels(d: dict[str, str]) -> str:
    if not d:
        return ""
    esc = {k: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in d.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(esc.items())) + "}"


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Metrics:
    """Counters, gauges and histograms of the server; thread-safe; rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self._hists: dict[str, dict[tuple[tuple[str, str], ...], _Histogram]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._bucket_defs: dict[str, tuple[float, ...]] = {}
        for name, help_ in [
            ("distil_requests_total", "HTTP requests by endpoint and status code."),
            ("distil_inputs_total", "Inputs answered, by who answered (student or teacher)."),
            ("distil_routed_total", "Router decisions: inputs routed to the student or to the teacher."),
            ("distil_ood_total", "Inputs flagged out of distribution."),
            ("distil_degraded_total", "Inputs the teacher should have answered, answered by the student."),
            ("distil_errors_total", "Errors by kind (bad_request, auth, teacher, internal)."),
            ("distil_teacher_calls_total", "Teacher calls by outcome (ok, error, timeout, circuit_open)."),
        ]:
            self._help[name] = ("counter", help_)
            self._counters[name] = {}
        for name in ("distil_degraded_total", "distil_ood_total"):
            self._counters[name][()] = 0.0
        for name, help_, buckets in [
            ("distil_request_duration_seconds", "Request latency by endpoint.", LATENCY_BUCKETS),
            ("distil_student_batch_size", "Inputs per micro-batch sent to the student.", BATCH_BUCKETS),
        ]:
            self._help[name] = ("histogram", help_)
            self._hists[name] = {}
            self._bucket_defs[name] = tuple(buckets)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._hists[name]
            if key not in series:
                series[key] = _Histogram(self._bucket_defs[name])
            series[key].observe(value)

    def gauge(self, name: str, help_: str, fn: Callable[[], float]) -> None:
        """Register a gauge computed when scraped."""
        self._help[name] = ("gauge", help_)
        self._gauges[name] = fn

    def value(self, name: str, **labels: str) -> float:
        """Current value of one counter series (0 if never incremented)."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters[name].get(key, 0.0)

    def total(self, name: str) -> float:
        """Sum of a counter over all its label values."""
        with self._lock:
            return sum(self._counters[name].values())

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, series in self._counters.items():
                kind, help_ = self._help[name]
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
                for key, v in sorted(series.items()):
                    lines.append(f"{name}{_labels(dict(key))} {_num(v)}")
            for name, hseries in self._hists.items():
                kind, help_ = self._help[name]
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
                for key, h in sorted(hseries.items()):
                    base = dict(key)
                    cum = 0
                    for b, c in zip(h.buckets, h.counts, strict=False):
                        cum += c
                        lines.append(f"{name}_bucket{_labels({**base, 'le': _num(b)})} {cum}")
                    lines.append(f"{name}_bucket{_labels({**base, 'le': '+Inf'})} {h.n}")
                    lines.append(f"{name}_sum{_labels(base)} {_num(h.total)}")
                    lines.append(f"{name}_count{_labels(base)} {h.n}")
        for name, fn in self._gauges.items():
            kind, help_ = self._help[name]
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {_num(fn())}"]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Circuit breaker


class CircuitBreaker:
    """Stop calling a failing teacher for a while.

    Closed: calls go through; ``failures`` consecutive failures open it.  Open: calls are refused
    for ``cooldown_s``.  Then half-open: one trial call goes through; success closes the circuit,
    failure opens it again for another cool-down.
    """

    def __init__(
        self, failures: int = 5, cooldown_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1:
            raise ConfigError(f"circuit breaker: failures must be >= 1, found {failures}")
        if cooldown_s < 0:
            raise ConfigError(f"circuit breaker: cooldown_s must be >= 0, found {cooldown_s}")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go to the teacher now?  (In half-open state only one trial at a time.)"""
        with self._lock:
            st = self._state()
            if st == "closed":
                return True
            if st == "half_open" and not self._trial:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        """A call succeeded: close the circuit."""
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial = False

    def failure(self) -> None:
        """A call failed: count it; open (or re-open) the circuit when needed."""
        with self._lock:
            self._consecutive += 1
            if self._trial or self._consecutive >= self.failures:
                if self._opened_at is None or self._trial:
                    self.opened_count += 1
                self._opened_at = self.clock()
            self._trial = False


# ---------------------------------------------------------------------------------------------
# Micro-batching of concurrent requests for the student


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[Decision]]


class MicroBatcher:
    """Collect concurrent requests and run the router once per batch in a worker thread."""

    def __init__(
        self, fn: Callable[[list[str]], list[Decision]], *, max_batch: int = 64, max_wait_ms: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, found {max_batch}")
        if max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, found {max_wait_ms}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distil-student")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        """True while the worker task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the worker on the running event loop (idempotent per loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self.running:
            return
        self._loop = loop
        self._queue = asyncio.Queue()
        self._task = loop.create_task(self._run(), name="distil-microbatcher")

    async def stop(self) -> None:
        """Stop the worker; pending requests get an error."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._task
        self._task = None

    def close(self) -> None:
        """Release the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, texts: list[str]) -> list[Decision]:
        """Route ``texts`` (batched with whatever else arrives within ``max_wait_ms``)."""
        if asyncio.get_running_loop() is not self._loop or not self.running:
            self.start()
        assert self._queue is not None
        fut: asyncio.Future[list[Decision]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            batch = [first]
            size = len(first.texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    # take what is already waiting, without waiting longer
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                else:
                    try:
                        item = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                batch.append(item)
                size += len(item.texts)
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            flat = [t for p in live for t in p.texts]
            if self.metrics is not None:
                self.metrics.observe("distil_student_batch_size", float(len(flat)))
            try:
                decisions = await loop.run_in_executor(self._executor, self.fn, flat)
            except Exception as exc:  # the router failed: every waiting request gets the error
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            pos = 0
            for p in live:
                part = decisions[pos : pos + len(p.texts)]
                pos += len(p.texts)
                if not p.future.done():
                    p.future.set_result(part)


# ---------------------------------------------------------------------------------------------
# The teacher behind the student


@dataclass
class TeacherReply:
    """The teacher's answers for a batch: (label, probability) or None per text, and why if degraded."""

    answers: list[tuple[str, float] | None]
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

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="distil-teacher")

    @property
    def available(self) -> bool:
        """A teacher is configured."""
        return self.teacher is not None and self.task is not None

    def _answers(self, texts: list[str], rows: dict[str, Any]) -> list[tuple[str, float] | None]:
        assert self.task is not None
        names = self.task.label_names
        out: list[tuple[str, float] | None] = []
        for t in texts:
            row = rows.get(t)
            if row is None or row.status != "done" or not row.probs or len(row.probs) != len(names):
                out.append(None)
                continue
            i = max(range(len(row.probs)), key=row.probs.__getitem__)
            out.append((names[i], float(row.probs[i])))
        return out

    def _call(self, texts: list[str]) -> list[tuple[str, float] | None]:
        from distil.label import label

        assert self.task is not None and self.teacher is not None
        res = label(self.task, texts, teacher=self.teacher, journal=self.journal, source="serve")
        return self._answers(texts, res.rows)

    def _from_journal(self, texts: list[str]) -> list[tuple[str, float] | None]:
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
        none: list[tuple[str, float] | None] = [None] * len(texts)
        if not self.available:
            return TeacherReply(none, "no teacher configured")
        loop = asyncio.get_running_loop()
        if not self.breaker.allow():
            self.metrics.inc("distil_teacher_calls_total", outcome="circuit_open")
            try:  # answers already in the journal are still served while the teacher is down
                cached = await loop.run_in_executor(self._pool, self._from_journal, texts)
            except Exception as exc:  # a journal problem must not fail the request
                log.warning("journal lookup failed while the teacher circuit is open: %s", exc)
                cached = none
            return TeacherReply(cached, "teacher circuit open")
        try:
            call = loop.run_in_executor(self._pool, self._call, texts)
            answers = await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError:
            self.breaker.failure()
            self.metrics.inc("distil_teacher_calls_total", outcome="timeout")
            self.metrics.inc("distil_errors_total", kind="teacher")
            log.warning("teacher timed out after %.1fs on %d texts", self.timeout_s, len(texts))
            return TeacherReply(none, "teacher timed out")
        except Exception as exc:  # the teacher is user code or a remote API: any failure degrades
            self.breaker.failure()
            self.metrics.inc("distil_teacher_calls_total", outcome="error")
            self.metrics.inc("distil_errors_total", kind="teacher")
            log.warning("teacher failed on %d texts: %s: %s", len(texts), type(exc).__name__, exc)
            return TeacherReply(none, f"teacher failed: {type(exc).__name__}")
        if texts and all(a is None for a in answers):
            self.breaker.failure()
            self.metrics.inc("distil_teacher_calls_total", outcome="error")
            self.metrics.inc("distil_errors_total", kind="teacher")
            return TeacherReply(answers, "teacher gave no usable answer")
        self.breaker.success()
        self.metrics.inc("distil_teacher_calls_total", outcome="ok")
        return TeacherReply(answers, None)

    def close(self) -> None:
        """Release the worker threads and the journal."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self.journal is not None:
            with contextlib.suppress(Exception):
                self.journal.close()
        if self.teacher is not None:
            with contextlib.suppress(Exception):
                self.teacher.close()


# ---------------------------------------------------------------------------------------------
# Request parsing: every bad input is a 4xx with a clear message


class HTTPProblem(Exception):
    """An error answered to the client as JSON with an HTTP status (never a 500)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


async def _read_json(request: Request, max_body_bytes: int) -> Any:
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            declared = int(cl)
        except ValueError:
            raise HTTPProblem(400, f"Content-Length header is not a number: {cl[:40]!r}") from None
        if declared > max_body_bytes:
            raise HTTPProblem(
                413, f"request body of {declared} bytes is over the limit of {max_body_bytes} bytes; "
                "send fewer or shorter inputs per request",
            )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_body_bytes:
            raise HTTPProblem(
                413, f"request body is over the limit of {max_body_bytes} bytes; "
                "send fewer or shorter inputs per request",
            )
    if not body.strip():
        raise HTTPProblem(400, "the request body is empty; expected a JSON object")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(
            400, f"the request body is not UTF-8 (invalid byte 0x{body[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPProblem(
            400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise HTTPProblem(400, "the request body is not valid JSON: nested too deeply") from None


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, int | float) else type(v).__name__
    )


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise HTTPProblem(422, f"{where} must be a string, found {_type_name(value)}")
    if not value.strip():
        raise HTTPProblem(422, f"{where} is empty; every input needs some text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPProblem(
            422, f"{where} contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode"
        ) from None
    return value


def _parse_classify(obj: Any, max_inputs: int) -> list[str]:
    if not isinstance(obj, dict):
        raise HTTPProblem(
            422, f'expected a JSON object like {{"inputs": ["text", ...]}}, found {_type_name(obj)}'
        )
    unknown = sorted(set(obj) - {"inputs"})
    if unknown:
        raise HTTPProblem(422, f"unknown key(s) {unknown}; the body takes only 'inputs'")
    if "inputs" not in obj:
        raise HTTPProblem(422, "missing key 'inputs' (a string or a list of strings)")
    inputs = obj["inputs"]
    if isinstance(inputs, str):
        return [_check_text(inputs, "inputs")]
    if not isinstance(inputs, list):
        raise HTTPProblem(422, f"'inputs' must be a string or a list of strings, found {_type_name(inputs)}")
    if not inputs:
        raise HTTPProblem(422, "'inputs' is an empty list; send at least one text")
    if len(inputs) > max_inputs:
        raise HTTPProblem(
            422,
            f"'inputs' holds {len(inputs)} texts, over the limit of {max_inputs} per request; "
            "split the batch",
        )
    return [_check_text(v, f"inputs[{i}]") for i, v in enumerate(inputs)]


def _message_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return _check_text(content, where)
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            is_text = (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            )
            if not is_text:
                raise HTTPProblem(
                    422, f"{where}[{j}] must be a text part {{\"type\": \"text\", \"text\": \"...\"}}; "
                    "only text is supported",
                )
            parts.append(part["text"])
        return _check_text("\n".join(parts), where)
    raise HTTPProblem(422, f"{where} must be a string or a list of text parts, found {_type_name(content)}")


def _parse_chat(obj: Any) -> tuple[str, str | None]:
    if not isinstance(obj, dict):
        raise HTTPProblem(422, f"expected a JSON object with 'messages', found {_type_name(obj)}")
    if obj.get("stream"):
        raise HTTPProblem(400, "stream=true is not supported by this endpoint; send stream=false or omit it")
    n = obj.get("n", 1)
    if n != 1:
        raise HTTPProblem(400, f"n={n!r} is not supported; a classifier gives one answer (n=1)")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise HTTPProblem(422, f"'model' must be a string, found {_type_name(model)}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem(422, "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if not isinstance(m, dict):
            raise HTTPProblem(422, f"messages[{i}] must be an object, found {_type_name(m)}")
        if m.get("role") == "user":
            if "content" not in m:
                raise HTTPProblem(422, f"messages[{i}] has no 'content'")
            return _message_text(m["content"], f"messages[{i}].content"), model
    raise HTTPProblem(422, "no message with role 'user'; the last user message is the text to classify")


# ---------------------------------------------------------------------------------------------
# The app


@dataclass
class _State:
    router: Router
    batcher: MicroBatcher
    gateway: TeacherGateway
    metrics: Metrics
    model_name: str
    max_chars: int | None
    routed: dict[str, int] = field(default_factory=lambda: {"student": 0, "teacher": 0})
    ready: bool = False


def _load_task(task: Task | str | Path | None) -> Task | None:
    if task is None or not isinstance(task, str | Path):
        return task
    from distil.task import Task as TaskCls

    return TaskCls.load(task)


def create_app(
    artifact_dir: str | Path | Router,
    *,
    task: Task | str | Path | None = None,
    target_agreement: float | None = None,
    threshold: float | None = None,
    token: str | None = None,
    max_batch: int = 64,
    max_wait_ms: float = 5.0,
    max_body_bytes: int = 1_000_000,
    max_inputs: int = 256,
    teacher: Teacher | None = None,
    teacher_timeout_s: float = 30.0,
    teacher_concurrency: int = 4,
    breaker_failures: int = 5,
    breaker_cooldown_s: float = 30.0,
) -> FastAPI:
    """Build the serving app for an artifact (or a ready :class:`~distil.route.Router`).

    ``task`` (a :class:`~distil.task.Task` or the path of its task.toml) supplies the teacher
    (``make_teacher(task)`` unless ``teacher`` is given) and the journal its answers go to;
    without a task, inputs routed to the teacher are answered by the student, flagged
    ``degraded``.  ``target_agreement`` recalibrates the confidence threshold on the artifact's
    held-out set; ``threshold`` sets it directly.  ``token`` requires ``Authorization: Bearer``.
    """
    if not _HAVE_FASTAPI:  # pragma: no cover - depends on the environment
        raise MissingExtra("fastapi", "serve")

    if max_inputs < 1 or max_body_bytes < 1:
        raise ConfigError(f"max_inputs and max_body_bytes must be >= 1, found {max_inputs}, {max_body_bytes}")
    if isinstance(artifact_dir, Router):
        router = artifact_dir
        if target_agreement is not None or threshold is not None:
            raise ConfigError(
                "target_agreement/threshold apply when loading an artifact, not to a ready Router"
            )
    else:
        router = Router.load(artifact_dir, target_agreement=target_agreement, threshold=threshold)
    log.info("router: %s", router.config.threshold.describe())
    task_obj = _load_task(task)
    journal = None
    if task_obj is not None:
        if list(task_obj.label_names) != list(router.labels):
            raise ConfigError(
                f"the task's labels {task_obj.label_names[:5]}… differ from the student's "
                f"{router.labels[:5]}…",
                hint="serve the artifact with the task it was trained for",
            )
        if teacher is None:
            from distil.teachers import make_teacher

            teacher = make_teacher(task_obj)
        from distil.journal import Journal

        journal = Journal(task_obj.journal_path)
    elif teacher is not None:
        raise ConfigError("a teacher needs its task (labels and journal): pass task= as well")
    else:
        log.warning("no task given: inputs routed to the teacher will be answered by the student (degraded)")

    metrics = Metrics()
    breaker = CircuitBreaker(breaker_failures, breaker_cooldown_s)
    gateway = TeacherGateway(
        task_obj, teacher, journal, breaker, metrics, timeout_s=teacher_timeout_s,
        concurrency=teacher_concurrency,
    )
    batcher = MicroBatcher(router.decide, max_batch=max_batch, max_wait_ms=max_wait_ms, metrics=metrics)
    st = _State(
        router=router, batcher=batcher, gateway=gateway, metrics=metrics,
        model_name=f"distil-{router.config.member}",
        max_chars=task_obj.input.max_chars if task_obj is not None else None,
    )

    def _share() -> float:
        total = st.routed["student"] + st.routed["teacher"]
        return st.routed["teacher"] / total if total else 0.0

    metrics.gauge("distil_teacher_share", "Share of inputs routed to the teacher since start.", _share)
    metrics.gauge(
        "distil_circuit_open", "1 while the teacher's circuit breaker is open (teacher not called).",
        lambda: 0.0 if breaker.state == "closed" else 1.0,
    )
    metrics.gauge(
        "distil_circuit_opened_total", "Times the circuit breaker opened.", lambda: breaker.opened_count
    )
    metrics.gauge("distil_confidence_threshold", "Confidence threshold in force.", lambda: router.threshold)
    metrics.gauge("distil_ready", "1 when the server is ready.", lambda: 1.0 if st.ready else 0.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        st.ready = True
        try:
            yield
        finally:
            st.ready = False
            await batcher.stop()
            batcher.close()
            gateway.close()

    app = FastAPI(
        title="distil", description="A distilled student with its teacher behind it.", lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.state.distil = st

    def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        payload = {"error": {"message": message, "type": kind, "code": status}}
        return JSONResponse(payload, status, headers=headers)

    def _authorised(request: Request) -> bool:
        if token is None:
            return True
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    async def _classify(texts: list[str]) -> list[dict[str, Any]]:
        if st.max_chars is not None:
            texts = [t[: st.max_chars] for t in texts]
        decisions = await batcher.submit(texts)
        for d in decisions:
            st.routed[d.source] += 1
            metrics.inc("distil_routed_total", to=d.source)
            if d.ood:
                metrics.inc("distil_ood_total")
        need = [i for i, d in enumerate(decisions) if d.source == "teacher"]
        replies: dict[int, tuple[str, float] | None] = {}
        reason = None
        if need:
            uniq = list(dict.fromkeys(texts[i] for i in need))
            rep = await gateway.ask(uniq)
            reason = rep.reason
            by_text = dict(zip(uniq, rep.answers, strict=True))
            replies = {i: by_text[texts[i]] for i in need}
        out: list[dict[str, Any]] = []
        for served in resolve(decisions, replies, reason):  # the one cascade rule (distil.cascade)
            if served.degraded:
                metrics.inc("distil_degraded_total")
            metrics.inc("distil_inputs_total", source=served.source)
            out.append(served.to_dict())
        return out

    async def _guarded(
        request: Request, endpoint: str, handler: Callable[[Any], Any], *, needs_body: bool = True
    ) -> Response:
        t0 = time.perf_counter()
        status = 200
        try:
            if not _authorised(request):
                metrics.inc("distil_errors_total", kind="auth")
                status = 401
                return _error(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                              "authentication_error")
            body = await _read_json(request, max_body_bytes) if needs_body else None
            result = await handler(body)
            return result if not isinstance(result, dict | list) else JSONResponse(result)
        except HTTPProblem as exc:
            status = exc.status
            metrics.inc("distil_errors_total", kind="bad_request")
            return _error(exc.status, exc.message, exc.kind)
        except DistilError as exc:
            status = 500
            metrics.inc("distil_errors_total", kind="internal")
            log.exception("error while serving %s", endpoint)
            return _error(500, f"internal error: {exc}", "server_error")
        except Exception as exc:  # keep serving; the client gets a JSON 500 with the cause
            status = 500
            metrics.inc("distil_errors_total", kind="internal")
            log.exception("unexpected error while serving %s", endpoint)
            return _error(500, f"internal error: {type(exc).__name__}", "server_error")
        finally:
            metrics.inc("distil_requests_total", endpoint=endpoint, code=str(status))
            metrics.observe("distil_request_duration_seconds", time.perf_counter() - t0, endpoint=endpoint)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Response:
        async def handle(body: Any) -> Any:
            return await _classify(_parse_classify(body, max_inputs))

        return await _guarded(request, "/v1/classify", handle)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        async def handle(body: Any) -> Any:
            text, model = _parse_chat(body)
            res = (await _classify([text]))[0]
            words_in, words_out = len(text.split()), len(res["label"].split())
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model or st.model_name,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": res["label"]},
                    "finish_reason": "stop",
                    "logprobs": None,
                }],
                "usage": {"prompt_tokens": words_in, "completion_tokens": words_out,
                          "total_tokens": words_in + words_out},
                "distil": res,
            }

        return await _guarded(request, "/v1/chat/completions", handle)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = st.ready and batcher.running
        teacher_state = "none" if not gateway.available else breaker.state
        body = {
            "ready": ok, "student": router.config.member, "threshold": router.threshold,
            "ood_guard": router.ood is not None, "teacher": teacher_state,
        }
        return JSONResponse(body, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request) -> Response:
        if not _authorised(request):
            metrics.inc("distil_errors_total", kind="auth")
            return _error(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                          "authentication_error")
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such endpoint: {request.method} {request.url.path}", "not_found")

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        msg = f"method {request.method} is not allowed on {request.url.path}"
        return _error(405, msg, "method_not_allowed")

    return app


def serve(
    artifact_dir: str | Path,
    *,
    task: Task | str | Path | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    target_agreement: float | None = None,
    threshold: float | None = None,
    token: str | None = None,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Run :func:`create_app` with uvicorn until interrupted (binds 127.0.0.1 unless told otherwise).

    ``options`` go to :func:`create_app` (``max_batch``, ``max_wait_ms``, ``max_body_bytes``,
    ``max_inputs``, ``teacher_timeout_s``, ``breaker_failures``, ``breaker_cooldown_s``...).
    """
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("uvicorn", "serve") from exc
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        log.warning("serving on %s without a bearer token: anyone who can reach it can use the teacher", host)
    app = create_app(
        artifact_dir, task=task, target_agreement=target_agreement, threshold=threshold, token=token,
        **options,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
