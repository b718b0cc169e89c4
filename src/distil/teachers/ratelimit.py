"""Token buckets for requests-per-minute and tokens-per-minute limits, shared across threads.

A bucket holds at most ``capacity`` units and refills at ``rate_per_minute / 60`` units
per second.  :meth:`TokenBucket.acquire` blocks until the units are there, then takes
them; a request larger than the bucket is clipped to the capacity so that it can never
wait forever.  :meth:`TokenBucket.adjust` settles the difference once the real cost is
known (e.g. the ``usage`` a server reports after a request sent on an estimate); the
level may go negative, which delays the next callers.

The clock and the sleep are injectable so that tests run without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: By default a bucket lets this many seconds' worth of its rate through in one burst.
BURST_SECONDS = 10.0


class TokenBucket:
    """A thread-safe token bucket (``rate_per_minute`` units per minute, bursts up to ``capacity``)."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate_per_minute must be > 0, found {rate_per_minute}")
        self.rate = rate_per_minute / 60.0  # units per second
        self.capacity = capacity if capacity is not None else max(1.0, self.rate * BURST_SECONDS)
        if self.capacity <= 0:
            raise ValueError(f"capacity must be > 0, found {self.capacity}")
        self._clock = clock
        self._sleep = sleep
        self._level = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()
        #: Total seconds callers were told to wait (for tests and progress displays).
        self.waited = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` units, sleeping until they are there; return the seconds waited."""
        amount = min(max(amount, 0.0), self.capacity)
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                if self._level >= amount:
                    self._level -= amount
                    self.waited += waited
                    return waited
                wait = (amount - self._level) / self.rate
            self._sleep(wait)
            waited += wait

    def take(self, amount: float = 1.0) -> float:
        """Take ``amount`` units if they are there (0.0), else take nothing and return the seconds to wait."""
        amount = min(max(amount, 0.0), self.capacity)
        with self._lock:
            self._refill()
            if self._level >= amount:
                self._level -= amount
                return 0.0
            return (amount - self._level) / self.rate

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more units (or give back, when negative) without waiting."""
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level - delta)

    @property
    def level(self) -> float:
        """Units available now."""
        with self._lock:
            self._refill()
            return self._level
