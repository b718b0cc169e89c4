"""Micro-batching for the student: concurrent requests are merged and routed once per batch in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from distil.errors import ConfigError
from distil.route import Decision
from distil.serving.metrics import Metrics


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future[list[Decision]]


class MicroBatcher:
    """Collect concurrent requests and run the router once per batch in a worker thread.

    A worker collects requests until ``max_batch`` inputs are waiting or ``max_wait_ms`` passed
    since the first, then calls ``fn`` once on all their texts.
    """

    def __init__(
        self, fn: Callable[[list[str]], list[Decision]], *, max_batch: int = 64, max_wait_ms: float = 0.0,
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
        while True:
            batch = await self._collect(queue)
            live = [p for p in batch if not p.future.done()]
            if live:
                await self._dispatch(live)

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        """Wait for a first request, then take more until the batch is full or the wait is over."""
        loop = asyncio.get_running_loop()
        first = await queue.get()
        batch = [first]
        size = len(first.texts)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            item = await self._next(queue, deadline - loop.time())
            if item is None:
                break
            batch.append(item)
            size += len(item.texts)
        return batch

    @staticmethod
    async def _next(queue: asyncio.Queue[_Pending], remaining: float) -> _Pending | None:
        """The next waiting request within ``remaining`` seconds; past the deadline only one already waiting."""
        if remaining <= 0:
            return None if queue.empty() else queue.get_nowait()
        try:
            return await asyncio.wait_for(queue.get(), remaining)
        except TimeoutError:
            return None

    async def _dispatch(self, live: list[_Pending]) -> None:
        """Route the texts of ``live`` in one call and hand each request its share of the decisions."""
        flat = [t for p in live for t in p.texts]
        if self.metrics is not None:
            self.metrics.observe("distil_student_batch_size", float(len(flat)))
        try:
            decisions = await asyncio.get_running_loop().run_in_executor(self._executor, self.fn, flat)
        except Exception as exc:  # the router failed: every waiting request gets the error
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        pos = 0
        for p in live:
            part = decisions[pos : pos + len(p.texts)]
            pos += len(p.texts)
            if not p.future.done():
                p.future.set_result(part)
