"""One budget and one set of rate limits for many processes: the cluster-wide side of a distributed run.

:class:`Quota` holds a run's :class:`~distil.cost.Budget` (``max_calls``, ``max_cost``) and the
teacher's token buckets (``requests_per_minute``, ``tokens_per_minute``) in one place; the Ray engine
runs it as one actor.  Workers reach it through :class:`SharedBudget` and :class:`SharedBucket`, which
keep the interfaces the teacher already calls (``reserve``/``settle``, ``acquire``/``adjust``), so the
same teacher code runs alone or as one of many.  Workers take the budget in small allotments granted
centrally before anything is sent, so a budget is overshot by nothing, and a rate limit holds for the
whole cluster: eight workers against one endpoint share its requests per minute instead of multiplying
them.

``call(method, *args)`` is how a worker reaches the quota: a direct call in one process, a Ray actor
call in a cluster (:func:`distil.ray_engine.quota_caller`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from distil.cost import Budget, check_budget
from distil.teachers.ratelimit import TokenBucket

#: How a worker calls the quota: ``call("grant", 16, 0.001)`` returns what ``Quota.grant`` returns.
QuotaCall = Callable[..., Any]
#: Longest single sleep of a worker waiting for a shared bucket (it asks again after).
MAX_WAIT_S = 1.0
#: Dollars a sum of estimates may be short of one estimate by rounding alone.
EPS = 1e-12
#: Requests a worker takes from the quota at once (fewer when its batch has fewer inputs left).
ALLOTMENT = 16


class Quota:
    """A run's budget and rate limits, for every worker at once (thread-safe).

    Workers take the budget in allotments (:meth:`grant`: up to ``ALLOTMENT`` requests and their
    estimated dollars), spend them locally, and hand back what they did not use with what they spent
    (:meth:`release`), so a worker asks the quota once per allotment, not once per request.  What is
    granted and not yet released counts as spent: the limits are never passed, and a worker killed
    holding an allotment makes the run stop early by at most that allotment, never late.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_cost: float | None = None,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> None:
        check_budget(max_calls, max_cost)
        self.max_calls = max_calls
        self.max_cost = None if max_cost is None else float(max_cost)
        self.used = 0  # requests released as sent
        self.spent = 0.0
        self.granted = 0  # requests granted, not released yet
        self.granted_dollars = 0.0
        self.stopped: str | None = None
        self.buckets: dict[str, TokenBucket] = {}
        if requests_per_minute:
            self.buckets["rpm"] = TokenBucket(requests_per_minute)
        if tokens_per_minute:
            self.buckets["tpm"] = TokenBucket(tokens_per_minute)
        self._lock = threading.Lock()

    def grant(self, calls: int, estimate: float) -> tuple[int, float]:
        """Up to ``calls`` requests of ``estimate`` dollars each: (requests granted, dollars granted); (0, 0.0)
        once the budget has no room for one more, and from then on."""
        with self._lock:
            if self.stopped is not None:
                return 0, 0.0
            room = calls
            if self.max_calls is not None:
                room = min(room, self.max_calls - self.used - self.granted)
                if room < 1:
                    self.stopped = "max_calls"
            if self.max_cost is not None and room >= 1:
                left = self.max_cost - self.spent - self.granted_dollars
                room = min(room, int(left // estimate) if estimate > 0 else room)
                if room < 1:
                    self.stopped = "max_cost"
            if room < 1:
                return 0, 0.0
            self.granted += room
            self.granted_dollars += room * estimate
            return room, room * estimate

    def release(self, granted: int, granted_dollars: float, used: int, spent: float) -> None:
        """A worker is done with its allotments (``granted``, ``granted_dollars``): it sent ``used`` requests
        and spent ``spent`` dollars (a worker of an unlimited run reports only these)."""
        with self._lock:
            self.granted = max(self.granted - granted, 0)
            self.granted_dollars = max(self.granted_dollars - granted_dollars, 0.0)
            self.used += used
            self.spent += spent

    def take(self, bucket: str, amount: float) -> tuple[float, float]:
        """Take ``amount`` from a bucket (clipped to its capacity): (amount taken, 0.0), or (0.0, seconds to wait
        before asking again).  A limit the task does not set grants everything at once."""
        found = self.buckets.get(bucket)
        if found is None:
            return amount, 0.0
        amount = min(amount, found.capacity)
        wait = found.take(amount)
        return (amount, 0.0) if wait <= 0 else (0.0, wait)

    def limits(self) -> list[str]:
        """The buckets this quota holds (``rpm``, ``tpm``)."""
        return sorted(self.buckets)

    def state(self) -> dict[str, Any]:
        """Requests sent (plus granted, not released), dollars spent (plus granted), what stopped the budget."""
        with self._lock:
            return {"requests": self.used + self.granted, "spent": self.spent + self.granted_dollars,
                    "used": self.used, "stopped": self.stopped}


class SharedBudget(Budget):
    """A worker's share of the cluster's budget: allotments taken from the quota, spent here.

    ``requests`` and ``spent`` count this worker's own (its stats).  :meth:`expect` caps the next
    allotments to the inputs this worker still has to ask (so it holds no room another worker could
    use); :meth:`release` hands back what is left and reports what was spent — call it when a batch
    is over.
    """

    def __init__(self, call: QuotaCall, *, limited: bool = True) -> None:
        super().__init__()
        self._call, self.limited = call, limited
        self._left, self._dollars = 0, 0.0  # the allotment not used yet
        self._granted, self._granted_dollars = 0, 0.0
        self._reported = (0, 0.0)  # requests and dollars already released to the quota
        self._asking = threading.Lock()
        self._room: int | None = None  # no cap until expect() is called
        self._start = 0

    def expect(self, inputs: int) -> None:
        """The inputs this worker is about to ask: allotments are no larger than that."""
        with self._lock:
            self._room, self._start = max(inputs, 1), self.requests

    def reserve(self, estimate: float) -> bool:
        """One request from the allotment (taking a new one when it is spent); False once the quota refuses."""
        if self.stopped is not None:
            return False
        if self.limited and not self._from_allotment(estimate):
            return False
        return super().reserve(estimate)

    def _from_allotment(self, estimate: float) -> bool:
        if self._take(estimate):
            return True
        with self._asking:  # one thread of this worker asks the quota at a time: no allotment taken twice
            if self._take(estimate):
                return True
            with self._lock:
                room = ALLOTMENT if self._room is None else self._room - (self.requests - self._start)
                want = max(1, min(ALLOTMENT, room))
            got, dollars = self._call("grant", want, estimate)
            with self._lock:
                self._granted, self._granted_dollars = self._granted + got, self._granted_dollars + dollars
                self._left, self._dollars = self._left + got, self._dollars + dollars
            if self._take(estimate):
                return True
            self.stopped = str(self._call("state")["stopped"] or "max_calls")
            return False

    def _take(self, estimate: float) -> bool:
        """One request out of the allotment this worker holds, if it has room."""
        with self._lock:
            if self._left >= 1 and self._dollars >= estimate - EPS:
                self._left, self._dollars = self._left - 1, self._dollars - estimate
                return True
            return False

    def settle(self, estimate: float, cost: float) -> None:
        """A request is over: its estimate, less what it cost, goes back into the allotment."""
        super().settle(estimate, cost)
        with self._lock:
            self._dollars += estimate - cost

    def release(self) -> None:
        """Hand back the allotment not used and report what this worker sent and spent since the last release."""
        with self._lock:
            used, spent = self.requests - self._reported[0], self.spent - self._reported[1]
            granted, dollars = self._granted, self._granted_dollars
            self._reported = (self.requests, self.spent)
            self._left, self._dollars, self._granted, self._granted_dollars = 0, 0.0, 0, 0.0
        self._call("release", granted, dollars, used, spent)


class SharedBucket:
    """A token bucket held by the quota, with :class:`~distil.teachers.ratelimit.TokenBucket`'s calls.

    It takes a few requests' worth at once (``ALLOTMENT // 2``) and spends them here, so a worker asks
    the quota once per few requests; what it took stays within the bucket's rate.
    """

    def __init__(self, call: QuotaCall, name: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._call, self.name, self._sleep = call, name, sleep
        self._local = 0.0
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount``, from what this worker holds or from the shared bucket; the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                if self._local >= amount:
                    self._local -= amount
                    break
                want = amount - self._local
            got, wait = self._call("take", self.name, want + amount * (ALLOTMENT // 2 - 1))
            if got <= 0:
                got, wait = self._call("take", self.name, want)
            if got > 0:
                with self._lock:
                    self._local += got
                    if got < want:  # clipped to the bucket's capacity: all the bucket can ever give at once
                        self._local = 0.0
                        break
                continue
            wait = min(wait, MAX_WAIT_S)
            self._sleep(wait)
            waited += wait
        self.waited += waited
        return waited

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more (or give it back) from what this worker holds (it may go below zero)."""
        with self._lock:
            self._local -= delta


def shared_limits(call: QuotaCall, names: list[str]) -> dict[str, SharedBucket]:
    """The shared buckets a worker's teacher throttles through."""
    return {name: SharedBucket(call, name) for name in names}


def local_caller(quota: Quota) -> QuotaCall:
    """``call`` for a quota in this process (tests, and the driver itself)."""

    def call(method: str, *args: Any) -> Any:
        return getattr(quota, method)(*args)

    return call
