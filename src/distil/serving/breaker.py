"""The circuit breaker in front of the teacher: stop calling it for a while after repeated failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from distil.errors import ConfigError


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
