"""Progress events for long steps: one logger, one context manager, optional timing collection.

Library code never prints (DESIGN rule 1); a step that can take more than a few seconds wraps
itself in :func:`step`, which logs ``"<what>…"`` when it starts and ``"<what>: <secs>s"`` when it
ends on the ``distil.progress`` logger.  The CLI shows that logger's INFO lines on stderr
(:func:`distil.cli.main`); a Python user sees them with ``logging.basicConfig(level=logging.INFO)``.

:func:`collect_timings` records every step that finishes inside it (name and wall seconds), so
``distil demo`` can end with a table of where its time went.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

log = logging.getLogger("distil.progress")


@dataclass
class Timings:
    """Wall seconds of the steps that finished while collecting, in the order they finished."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def total(self) -> float:
        """Seconds since collection started."""
        return time.perf_counter() - self.started

    def table(self) -> str:
        """A plain-text table: seconds, then the step, one a line; the total last."""
        lines = [f"{secs:8.1f} s  {name}" for name, secs in self.steps]
        lines.append(f"{self.total():8.1f} s  total")
        return "\n".join(lines)


_COLLECTOR: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("distil_timings", default=None)


@contextlib.contextmanager
def collect_timings() -> Iterator[Timings]:
    """Record the top-level :func:`step` calls made inside the ``with`` block."""
    timings = Timings()
    token = _COLLECTOR.set(timings)
    try:
        yield timings
    finally:
        _COLLECTOR.reset(token)


_DEPTH: contextvars.ContextVar[int] = contextvars.ContextVar("distil_step_depth", default=0)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Log that ``what`` starts and how long it took; nested steps are logged but not collected."""
    depth = _DEPTH.get()
    token = _DEPTH.set(depth + 1)
    log.info("%s%s …", "  " * depth, what)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        secs = time.perf_counter() - t0
        _DEPTH.reset(token)
        log.info("%s%s: %.1f s", "  " * depth, what, secs)
        timings = _COLLECTOR.get()
        if timings is not None and depth == 0:
            timings.steps.append((what, secs))


def note(message: str, *args: object) -> None:
    """One progress line (e.g. a retry and its wait)."""
    log.info(message, *args)
