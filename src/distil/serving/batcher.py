"""Micro-batching for the student: concurrent requests routed together, each getting a fair share of every call."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from distil.errors import ConfigError
from distil.route import Decision
from distil.serving.metrics import Metrics


@dataclass
class _Pending:
    """One request: its texts, how many are routed so far, and their decisions."""

    texts: list[str]
    future: asyncio.Future[list[Decision]]
    done: int = 0
    results: list[Decision] = field(default_factory=list)

    @property
    def left(self) -> int:
        """Texts of this request not routed yet."""
        return len(self.texts) - self.done


class MicroBatcher:
    """Route concurrent requests together, fairly, a bounded amount of work at a time.

    A worker thread runs ``fn`` on at most ``max_batch`` texts and ``max_batch_chars`` characters per
    call (at least one text), so no call takes long.  The requests already waiting are merged, the
    ones with the least work left first, each taking at most an equal share of the call: a one-text
    request is answered in the next call even while other clients send maximum-size batches.
    ``max_wait_ms`` > 0 also holds the first request up to that long for company.
    """

    def __init__(
        self, fn: Callable[[list[str]], list[Decision]], *, max_batch: int = 64, max_wait_ms: float = 0.0,
        metrics: Metrics | None = None, max_batch_chars: int = 4096,
    ) -> None:
        if max_batch < 1 or max_batch_chars < 1:
            raise ConfigError(f"max_batch and max_batch_chars must be >= 1, found {max_batch}, {max_batch_chars}")
        if max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, found {max_wait_ms}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_batch_chars = max_batch_chars
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
        """Route ``texts``, sharing each call of ``fn`` fairly with the other waiting requests."""
        if not texts:
            return []
        if asyncio.get_running_loop() is not self._loop or not self.running:
            self.start()
        assert self._queue is not None
        fut: asyncio.Future[list[Decision]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, fut))
        return await fut

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        active: deque[_Pending] = deque()
        while True:
            if not active:
                active.append(await queue.get())
                await self._wait_for_company(queue, active)
            _take_waiting(queue, active)
            try:
                batch = self._next_batch(active)
            except Exception as exc:  # a bug here must fail the waiting requests, never hang them
                _fail_all(active, exc)
                continue
            if batch:
                await self._dispatch(batch)
            _drop_finished(active)

    async def _wait_for_company(self, queue: asyncio.Queue[_Pending], active: deque[_Pending]) -> None:
        """With ``max_wait_ms`` > 0: take arrivals until the batch is full or the wait is over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while sum(p.left for p in active) < self.max_batch and loop.time() < deadline:
            try:
                active.append(await asyncio.wait_for(queue.get(), deadline - loop.time()))
            except TimeoutError:
                return

    def _next_batch(self, active: deque[_Pending]) -> list[tuple[_Pending, int, int]]:
        """Slices ``(request, start, end)``: the least work left first, an equal share each, within the bounds."""
        live = sorted((p for p in active if not p.future.done() and p.left > 0), key=_work_left)
        if not live:
            return []
        share = max(1, -(-self.max_batch // len(live)))  # ceil: small requests finish in one call
        batch: list[tuple[_Pending, int, int]] = []
        texts = chars = 0
        for p in live:
            end = p.done
            while end < len(p.texts) and end - p.done < share and texts < self.max_batch:
                size = len(p.texts[end])
                if texts and chars + size > self.max_batch_chars:
                    break
                end, texts, chars = end + 1, texts + 1, chars + size
            if end > p.done:
                batch.append((p, p.done, end))
            if texts >= self.max_batch or chars >= self.max_batch_chars:
                break
        return batch

    async def _dispatch(self, batch: list[tuple[_Pending, int, int]]) -> None:
        """Route the slices in one call; a request whose texts are all routed gets its decisions."""
        flat = [t for p, a, b in batch for t in p.texts[a:b]]
        if self.metrics is not None:
            self.metrics.observe("distil_student_batch_size", float(len(flat)))
        try:
            decisions = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, flat)
        except Exception as exc:  # the router failed: every request in this call gets the error
            for p, _, _ in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        pos = 0
        for p, a, b in batch:
            p.results.extend(decisions[pos : pos + b - a])
            pos += b - a
            p.done = b
            if p.left == 0 and not p.future.done():
                p.future.set_result(p.results)


def _work_left(p: _Pending) -> int:
    """Characters a request still has to route (the order a call serves requests in)."""
    return sum(len(t) for t in p.texts[p.done :])


def _take_waiting(queue: asyncio.Queue[_Pending], active: deque[_Pending]) -> None:
    """Move every request already waiting into ``active`` (never blocks)."""
    while not queue.empty():
        active.append(queue.get_nowait())


def _fail_all(active: deque[_Pending], exc: Exception) -> None:
    """Every waiting request gets ``exc``; the queue starts again empty."""
    for p in active:
        if not p.future.done():
            p.future.set_exception(exc)
    active.clear()


def _drop_finished(active: deque[_Pending]) -> None:
    """Forget requests that are answered, failed or abandoned by their client."""
    for p in [p for p in active if p.future.done() or p.left == 0]:
        active.remove(p)
