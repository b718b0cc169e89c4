"""How fast and how heavy a predictor is on this machine: batch-1 latency, batch throughput, memory.

:func:`time_predictor` is the one timing rule evaluate() applies to the teacher and to every
student: warm-up calls, single-text calls until a budget is spent, a few full-batch calls, and one
more batch call under :mod:`tracemalloc` (and, on Linux, the growth of peak RSS).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil.embcache import caching
from distil.errors import DataError

__all__ = ["Timing", "time_predictor"]

Predictor = Callable[[Sequence[str]], Any]


@dataclass
class Timing:
    """How fast and how heavy a predictor is on this machine's CPU."""

    ms_per_pred: float  # wall ms, batch 1, median over single calls
    cpu_ms_per_pred: float  # CPU (process, all threads) ms per prediction at batch 1, median
    preds_per_s: float  # wall throughput at ``batch_size``
    cpu_s_per_pred_batch: float  # CPU core-seconds per prediction at ``batch_size``
    batch_size: int
    single_calls: int
    peak_mem_mb: float | None  # peak traced allocation during one batch call
    rss_delta_mb: float | None  # peak RSS growth during one batch call (Linux), None elsewhere

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def time_predictor(
    fn: Predictor,
    texts: Sequence[str],
    *,
    single_calls: int = 100,
    batch_size: int = 256,
    budget_s: float = 3.0,
    measure_memory: bool = True,
) -> Timing:
    """Time ``fn`` (a batch predictor) on ``texts``: batch-1 latency, batch throughput, memory.

    Batch 1: two warm-up calls, then up to ``single_calls`` single-text calls (at least 5)
    until ``budget_s`` is spent; ``ms_per_pred`` is the median wall time and
    ``cpu_ms_per_pred`` the median process CPU time (all threads: core-ms).  Batch: texts
    are cycled to fill ``batch_size``; if one probe says a full batch would take longer than
    ``budget_s`` the batch shrinks (``batch_size`` in the result says what was used); the
    batch is timed up to 5 times within the budget and the median taken.  Memory: one
    more batch call under :mod:`tracemalloc` (Python and numpy allocations; torch's native
    allocator is not traced) and, on Linux, the growth of peak RSS over that call.
    """
    if not texts:
        raise DataError("cannot time a predictor on zero texts")
    with caching(False):  # a timed prediction computes everything it would compute when served
        return _time_predictor(fn, texts, single_calls, batch_size, budget_s, measure_memory)


def _time_predictor(
    fn: Predictor,
    texts: Sequence[str],
    single_calls: int,
    batch_size: int,
    budget_s: float,
    measure_memory: bool,
) -> Timing:
    pool = list(texts)
    for i in range(2):
        fn([pool[i % len(pool)]])
    walls, cpus = _single_calls(fn, pool, single_calls, budget_s)
    per_item = statistics.median(walls)
    size = _batch_size(fn, pool, per_item, batch_size, budget_s)
    batch = [pool[j % len(pool)] for j in range(size)]
    bwalls, bcpus = _batch_calls(fn, batch, budget_s)
    peak_mb, rss_mb = _batch_memory(fn, batch) if measure_memory else (None, None)
    bw = statistics.median(bwalls)
    return Timing(
        ms_per_pred=per_item * 1000.0,
        cpu_ms_per_pred=statistics.median(cpus) * 1000.0,
        preds_per_s=size / bw if bw > 0 else float("inf"),
        cpu_s_per_pred_batch=statistics.median(bcpus) / size,
        batch_size=size,
        single_calls=len(walls),
        peak_mem_mb=peak_mb,
        rss_delta_mb=rss_mb,
    )


def _single_calls(fn: Predictor, pool: list[str], calls: int, budget_s: float) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of up to ``calls`` single-text calls (at least 5) within ``budget_s``."""
    walls: list[float] = []
    cpus: list[float] = []
    start = time.perf_counter()
    i = 0
    while i < calls and (i < 5 or time.perf_counter() - start < budget_s):
        x = [pool[i % len(pool)]]
        c0, w0 = time.process_time(), time.perf_counter()
        fn(x)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        i += 1
    return walls, cpus


def _batch_size(fn: Predictor, pool: list[str], per_item: float, batch_size: int, budget_s: float) -> int:
    """``batch_size``, or fewer when one probe says a full batch would take longer than ``budget_s``."""
    if per_item * batch_size <= budget_s * 4:
        return batch_size
    probe = [pool[j % len(pool)] for j in range(min(16, batch_size))]
    w0 = time.perf_counter()
    fn(probe)
    per_item_batched = (time.perf_counter() - w0) / len(probe)
    if per_item_batched * batch_size <= budget_s:
        return batch_size
    return max(len(probe), min(batch_size, int(budget_s / max(per_item_batched, 1e-9))))


def _batch_calls(fn: Predictor, batch: list[str], budget_s: float) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of up to 5 calls on ``batch`` (at least one) within ``budget_s``."""
    bwalls: list[float] = []
    bcpus: list[float] = []
    start = time.perf_counter()
    while len(bwalls) < 5 and (not bwalls or time.perf_counter() - start < budget_s):
        c0, w0 = time.process_time(), time.perf_counter()
        fn(batch)
        bwalls.append(time.perf_counter() - w0)
        bcpus.append(time.process_time() - c0)
    return bwalls, bcpus


def _batch_memory(fn: Predictor, batch: list[str]) -> tuple[float, float | None]:
    """(peak traced MB, peak-RSS growth MB or None) over one more call on ``batch``."""
    rss0 = _rss_reset()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    fn(batch)
    _, peak = tracemalloc.get_traced_memory()
    if not was_tracing:
        tracemalloc.stop()
    hwm = _status_kb("VmHWM")
    rss_mb = max(hwm - rss0, 0) / 1e3 if rss0 is not None and hwm is not None else None
    return max(peak - base, 0) / 1e6, rss_mb


def _rss_reset() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5); return current RSS in kB or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:
        return None


def _status_kb(field: str) -> int | None:
    """One ``kB`` field of /proc/self/status (None where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None
