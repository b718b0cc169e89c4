"""Answer texts on a few worker threads; hand each answer to the caller's thread the moment it arrives.

A network teacher sends one request per text with up to ``workers`` in flight.  The caller's
thread hands the texts out one at a time (never more than ``workers`` taken and not yet handed
back), and calls ``on_answer`` for each answer as it comes back, so that the answer is journaled
before the next text is sent.  What can be lost to a kill -9 is therefore at most ``workers``
requests.

* A :class:`~distil.errors.TeacherError` from one request (a refused key) stops the rest: nothing
  more is sent, the requests already in flight are waited for and their answers handed over, then
  the error propagates.
* Ctrl-C stops sending at once, waits up to :data:`INTERRUPT_GRACE_S` seconds for the requests in
  flight (a second Ctrl-C stops waiting), hands over what arrived, then raises
  :class:`~distil.teachers.base.Interrupted` with the number of requests abandoned on the wire.
  The workers are daemon threads: an abandoned request does not keep the process alive.
* An error raised by ``on_answer`` itself (the journal cannot be written) stops sending and
  propagates without waiting.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from distil.errors import TeacherError
from distil.teachers.base import Answer, Interrupted, OnAnswer

#: Seconds Ctrl-C waits for the requests in flight before abandoning them.
INTERRUPT_GRACE_S = 3.0
#: How often the caller's thread wakes up while it waits (so Ctrl-C is seen promptly).
_POLL_S = 0.2

AnswerFn = Callable[[str], "Answer | None"]
_Result = tuple[int, "Answer | None", "BaseException | None"]


def stream_answers(
    texts: Sequence[str],
    answer: AnswerFn,
    on_answer: OnAnswer,
    *,
    workers: int,
    stop: threading.Event,
    more: Callable[[], bool] = lambda: True,
) -> None:
    """Call ``answer(text)`` for every text on ``workers`` threads; ``on_answer(i, a)`` in this thread.

    ``answer`` returns None for a text it did not ask (the budget stopped it).  ``more()`` is
    asked before each text is handed out; False stops handing out (the rest get no answer).
    ``stop`` is set when the stream stops early, so ``answer`` can give up between attempts.
    """
    _Stream(texts, answer, on_answer, max(workers, 1), stop, more).run()


class _Stream:
    """The state of one :func:`stream_answers` call."""

    def __init__(
        self,
        texts: Sequence[str],
        answer: AnswerFn,
        on_answer: OnAnswer,
        workers: int,
        stop: threading.Event,
        more: Callable[[], bool],
    ) -> None:
        self.answer, self.on_answer, self.stop, self.more = answer, on_answer, stop, more
        self.workers = min(workers, len(texts)) or 1
        self.todo: Iterator[tuple[int, str]] = iter(enumerate(texts))
        self.jobs: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        self.in_flight = 0

    def run(self) -> None:
        """Hand out, collect, hand over; see the module docs for how it stops."""
        threads = [
            threading.Thread(target=self._work, name="distil-teacher", daemon=True) for _ in range(self.workers)
        ]
        for t in threads:
            t.start()
        try:
            self._dispatch()
            while self.in_flight:
                self._deliver(self._next(None))
                self._dispatch()
        except KeyboardInterrupt:
            self.stop.set()
            self._finish(INTERRUPT_GRACE_S, deliver=True)
            raise Interrupted(self.in_flight) from None
        except TeacherError:
            self.stop.set()
            self._finish(None, deliver=True)
            raise
        except BaseException:
            self.stop.set()
            raise
        finally:
            for _ in threads:
                self.jobs.put(None)

    def _dispatch(self) -> None:
        """Hand out texts until ``workers`` are taken (or there is nothing more to do)."""
        while self.in_flight < self.workers and not self.stop.is_set() and self.more():
            job = next(self.todo, None)
            if job is None:
                return
            self.jobs.put(job)
            self.in_flight += 1

    def _next(self, deadline: float | None) -> _Result | None:
        """The next result, waiting in short steps (Ctrl-C is seen between them); None past ``deadline``."""
        while deadline is None or time.monotonic() < deadline:
            try:
                return self.results.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _deliver(self, result: _Result | None) -> None:
        """Hand one result over (or raise the error its request ended with)."""
        if result is None:
            return
        self.in_flight -= 1
        i, ans, exc = result
        if exc is not None:
            raise exc
        if ans is not None:
            self.on_answer(i, ans)

    def _finish(self, grace: float | None, *, deliver: bool) -> None:
        """Collect the requests in flight (for ``grace`` seconds, or until all are back), handing answers over."""
        deadline = None if grace is None else time.monotonic() + grace
        try:
            while self.in_flight:
                result = self._next(deadline)
                if result is None:
                    return
                self.in_flight -= 1
                i, ans, _ = result
                if deliver and ans is not None:
                    try:
                        self.on_answer(i, ans)
                    except Exception:  # the journal failed: the first error is the one to report
                        deliver = False
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            return

    def _work(self) -> None:
        """A worker: answer the texts handed to it until told to stop (None)."""
        while True:
            job = self.jobs.get()
            if job is None:
                return
            i, text = job
            if self.stop.is_set():
                self.results.put((i, None, None))
                continue
            try:
                self.results.put((i, self.answer(text), None))
            except BaseException as exc:  # handed to the caller's thread, which decides
                self.results.put((i, None, exc))
