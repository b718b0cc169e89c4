"""The server's Prometheus metrics, through ``prometheus_client`` with one registry per app.

Conventional names: counters end in ``_total`` (with the client's ``_created`` series), latencies are
``_seconds`` histograms, ``distil_model_info{student,fingerprint,...}`` says what is served, and the
process and platform collectors add ``process_*`` (CPU, memory, open files) and ``python_*`` series.
Values that live elsewhere (the circuit breaker, the threshold in force) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: What ``/metrics`` answers with (the text exposition format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST

_COUNTERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("distil_requests_total", "HTTP requests by endpoint and status code.", ("endpoint", "code")),
    ("distil_inputs_total", "Inputs answered, by who answered (student or teacher).", ("source",)),
    ("distil_predictions_total", "Answers given, by label and by who answered.", ("label", "source")),
    ("distil_routed_total", "Router decisions: inputs routed to the student or to the teacher.", ("to",)),
    ("distil_ood_total", "Inputs flagged out of distribution.", ()),
    (
        "distil_rung_answers_total", "Inputs a ladder member answered alone, by member (one per rung of a cascade).",
        ("member",),
    ),
    ("distil_degraded_total", "Inputs the teacher should have answered, answered by the student.", ()),
    ("distil_errors_total", "Errors by kind (bad_request, auth, teacher, internal).", ("kind",)),
    ("distil_teacher_calls_total", "Teacher calls by outcome (ok, error, timeout, circuit_open).", ("outcome",)),
]
_HISTOGRAMS: list[tuple[str, str, tuple[str, ...], Sequence[float]]] = [
    ("distil_request_duration_seconds", "Request latency by endpoint.", ("endpoint",), LATENCY_BUCKETS),
    ("distil_student_batch_size", "Inputs per micro-batch sent to the student.", (), BATCH_BUCKETS),
]

_Kind = Literal["gauge", "counter"]


class _ScrapeTime(Collector):
    """Gauges and counters whose value is read from elsewhere when scraped."""

    def __init__(self) -> None:
        self.series: list[tuple[_Kind, str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[Metric]:
        for kind, name, help_, fn in self.series:
            if kind == "counter":
                yield CounterMetricFamily(name.removesuffix("_total"), help_, value=fn())
            else:
                yield GaugeMetricFamily(name, help_, value=fn())


class Metrics:
    """The counters, histograms and scrape-time values of one server; thread-safe (prometheus_client's own locks)."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self._counters = {
            name: Counter(name, help_, labels, registry=self.registry) for name, help_, labels in _COUNTERS
        }
        self._hists = {
            name: Histogram(name, help_, labels, buckets=buckets, registry=self.registry)
            for name, help_, labels, buckets in _HISTOGRAMS
        }
        self._info = Info("distil_model", "What this server answers with.", registry=self.registry)
        self._scrape = _ScrapeTime()
        self.registry.register(self._scrape)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter (``labels`` are its label values, by name)."""
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        hist = self._hists[name]
        (hist.labels(**labels) if labels else hist).observe(value)

    def gauge(self, name: str, help_: str, fn: Callable[[], float]) -> None:
        """A gauge computed when scraped."""
        self._scrape.series.append(("gauge", name, help_, fn))

    def counter(self, name: str, help_: str, fn: Callable[[], float]) -> None:
        """A counter (name ending in ``_total``) whose running total is kept elsewhere and read when scraped."""
        self._scrape.series.append(("counter", name, help_, fn))

    def info(self, **values: str) -> None:
        """Set ``distil_model_info``'s labels (student, fingerprint, ...)."""
        self._info.info(values)

    def value(self, name: str, **labels: str) -> float:
        """Current value of one counter series (0 if never incremented)."""
        return self.registry.get_sample_value(name, labels or None) or 0.0

    def total(self, name: str) -> float:
        """Sum of a counter over all its label values."""
        return sum(
            s.value for m in self._counters[name].collect() for s in m.samples if s.name == name
        )

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self.registry).decode("utf-8")
