"""The server's Prometheus metrics: counters, gauges and histograms, rendered as text (no extra dependency)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_COUNTERS = [
    ("distil_requests_total", "HTTP requests by endpoint and status code."),
    ("distil_inputs_total", "Inputs answered, by who answered (student or teacher)."),
    ("distil_routed_total", "Router decisions: inputs routed to the student or to the teacher."),
    ("distil_ood_total", "Inputs flagged out of distribution."),
    ("distil_rung_answers_total", "Inputs a ladder member answered alone, by member (one per rung of a cascade)."),
    ("distil_degraded_total", "Inputs the teacher should have answered, answered by the student."),
    ("distil_errors_total", "Errors by kind (bad_request, auth, teacher, internal)."),
    ("distil_teacher_calls_total", "Teacher calls by outcome (ok, error, timeout, circuit_open)."),
]
#: Counters without labels, shown as 0 before their first increment.
_ZERO_AT_START = ("distil_degraded_total", "distil_ood_total")
_HISTOGRAMS: list[tuple[str, str, Sequence[float]]] = [
    ("distil_request_duration_seconds", "Request latency by endpoint.", LATENCY_BUCKETS),
    ("distil_student_batch_size", "Inputs per micro-batch sent to the student.", BATCH_BUCKETS),
]

_Key = tuple[tuple[str, str], ...]


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

    def lines(self, name: str, base: dict[str, str]) -> list[str]:
        """The exposition lines of this series: cumulative buckets, +Inf, sum and count."""
        out: list[str] = []
        cum = 0
        for b, c in zip(self.buckets, self.counts, strict=False):
            cum += c
            out.append(f"{name}_bucket{_labels({**base, 'le': _num(b)})} {cum}")
        out.append(f"{name}_bucket{_labels({**base, 'le': '+Inf'})} {self.n}")
        out.append(f"{name}_sum{_labels(base)} {_num(self.total)}")
        out.append(f"{name}_count{_labels(base)} {self.n}")
        return out


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
        self._counters: dict[str, dict[_Key, float]] = {}
        self._hists: dict[str, dict[_Key, _Histogram]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}
        self._bucket_defs: dict[str, tuple[float, ...]] = {}
        for name, help_ in _COUNTERS:
            self._help[name] = ("counter", help_)
            self._counters[name] = {}
        for name in _ZERO_AT_START:
            self._counters[name][()] = 0.0
        for name, help_, buckets in _HISTOGRAMS:
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

    def _header(self, name: str) -> list[str]:
        kind, help_ = self._help[name]
        return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            for name, series in self._counters.items():
                lines += self._header(name)
                lines += [f"{name}{_labels(dict(key))} {_num(v)}" for key, v in sorted(series.items())]
            for name, hseries in self._hists.items():
                lines += self._header(name)
                for key, h in sorted(hseries.items()):
                    lines += h.lines(name, dict(key))
        for name, fn in self._gauges.items():  # outside the lock: a gauge may read other state
            lines += [*self._header(name), f"{name} {_num(fn())}"]
        return "\n".join(lines) + "\n"
