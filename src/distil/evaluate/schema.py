"""The ``metrics.json`` schema in one place: its record types and the one function that writes them out.

The measuring steps of :func:`distil.evaluate.evaluate` return the typed records below;
:func:`metrics_dict` is the only place that turns them into the JSON dict (key names and key order
are the schema, see ``docs/metrics.md``), and :func:`write_metrics` writes it.  Nothing else in the
package builds ``metrics.json`` keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distil.cost import Price
from distil.evaluate.decision import verdict_or_refusal
from distil.evaluate.metrics import N_BINS
from distil.evaluate.timing import Timing

SCHEMA_VERSION = 1

MEMORY_METHOD = (
    "tracemalloc peak during one batch call (Python + numpy allocations; "
    "torch's native allocations are not traced); rss_delta_mb is the growth of peak RSS "
    "over the same call"
)
LATENCY_METHOD = "wall ms at batch 1, median of single calls, this machine's CPU"

__all__ = [
    "SCHEMA_VERSION",
    "ClassScore",
    "Confusion",
    "Evaluation",
    "GoldFigures",
    "HostedCost",
    "MemberRecord",
    "Quality",
    "Reliability",
    "Retention",
    "TeacherRecord",
    "TimedCost",
    "clean",
    "cpu_cost_basis",
    "finite",
    "metrics_dict",
    "write_metrics",
]


# =============================================================================================
# Records.


@dataclass(frozen=True)
class Quality:
    """One student's quality on the evaluated rows."""

    agreement: float  # with the teacher, on every row
    accuracy: float | None  # against gold; None without gold
    macro_f1: float | None  # against gold; None without gold
    ece: float  # against the reference (gold, else the teacher)


@dataclass(frozen=True)
class GoldFigures:
    """What only gold labels allow: the teacher's own quality, per-class F1 and reliability against gold."""

    accuracy: float
    macro_f1: float
    ece: float
    per_class_f1: np.ndarray  # (k,)
    reliability: list[dict[str, Any]]


@dataclass(frozen=True)
class MemberRecord:
    """One ladder member, measured: a ``ladder`` entry of metrics.json."""

    name: str
    chosen: bool
    soft: Any  # as ladder.json records it
    needs_torch: bool
    temperature: float
    quality: Quality
    timing: Timing
    size_mb: float
    cost_per_1m: float

    def as_dict(self) -> dict[str, Any]:
        """The ladder entry, in schema order."""
        q = self.quality
        return {
            "name": self.name,
            "chosen": self.chosen,
            "soft": self.soft,
            "needs_torch": self.needs_torch,
            "temperature": self.temperature,
            "agreement": q.agreement,
            "accuracy": q.accuracy,
            "macro_f1": q.macro_f1,
            "ece": q.ece,
            "ms_per_pred": self.timing.ms_per_pred,
            "size_mb": self.size_mb,
            "cost_per_1m": self.cost_per_1m,
            **_timing_rest(self.timing),
        }


@dataclass(frozen=True)
class HostedCost:
    """A hosted (``openai``) teacher's speed and cost, from the journal's latencies and token counts."""

    model: str
    ms_per_pred: float | None  # journal median latency per call
    mean_tokens_in: float | None
    mean_tokens_out: float | None
    price: Price | None
    cost_per_1m: float | None

    def as_dict(self) -> dict[str, Any]:
        """The teacher's cost keys, in schema order."""
        return {
            "model": self.model,
            "ms_per_pred": self.ms_per_pred,
            "ms_source": "journal median latency per call (network included)",
            "preds_per_s": None,
            "cpu_ms_per_pred": None,
            "size_mb": None,
            "peak_mem_mb": None,
            "mean_tokens_in": self.mean_tokens_in,
            "mean_tokens_out": self.mean_tokens_out,
            "price": self.price.to_dict() if self.price else None,
            "cost_per_1m": self.cost_per_1m,
            "cost_basis": "tokens × price",
        }


@dataclass(frozen=True)
class TimedCost:
    """A local or function teacher's speed and cost, timed on this CPU like the students."""

    timing: Timing
    size_mb: float | None
    cost_per_1m: float
    core_hour_usd: float

    @property
    def ms_per_pred(self) -> float:
        """Wall ms per prediction at batch 1."""
        return self.timing.ms_per_pred

    def as_dict(self) -> dict[str, Any]:
        """The teacher's cost keys, in schema order."""
        return {
            "ms_per_pred": self.timing.ms_per_pred,
            "ms_source": "timed directly on this CPU (batch 1, median)",
            **_timing_rest(self.timing),
            "size_mb": self.size_mb,
            "cost_per_1m": self.cost_per_1m,
            "cost_basis": cpu_cost_basis(self.timing.batch_size, self.core_hour_usd),
        }


@dataclass(frozen=True)
class TeacherRecord:
    """The teacher, measured: who it is and what it costs (its quality against gold is in :class:`GoldFigures`)."""

    kind: str
    describe: str
    fingerprint: str
    cost: HostedCost | TimedCost


@dataclass(frozen=True)
class Retention:
    """Retention and which definition gave it."""

    value: float
    definition: str


@dataclass(frozen=True)
class ClassScore:
    """One ``per_class`` row: the chosen student against the reference on one label."""

    label: str
    support: int
    precision: float
    recall: float
    f1: float
    teacher_f1: float | None  # only with gold


@dataclass(frozen=True)
class Confusion:
    """The chosen student's confusion matrix against the reference and its largest off-diagonal cells."""

    reference: str
    labels: list[str]
    matrix: np.ndarray
    top_confused: list[dict[str, Any]]


@dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data of the chosen student (and, with gold, of the teacher)."""

    reference: str
    student: list[dict[str, Any]]
    teacher: list[dict[str, Any]] | None


@dataclass(frozen=True)
class Evaluation:
    """Everything one evaluate() run measured: the content of metrics.json before it is worded."""

    # what was evaluated
    task: str
    artifact: str
    test_file: str
    n_test: int
    n_test_texts: int
    dataset_fingerprint: str
    label_column: str | None
    text_fields: list[str]
    labels: list[str]
    reference: str
    # who was measured
    teacher: TeacherRecord
    ladder: list[MemberRecord]  # the chosen one first
    gold: GoldFigures | None
    # the headline figures
    retention: Retention
    speedup: float | None
    cost_ratio: float | None
    reliability: Reliability
    cascade: list[dict[str, Any]]
    served: dict[str, Any] | None
    per_class: list[ClassScore]
    confusion: Confusion
    ci: dict[str, tuple[float, float]]
    target: dict[str, Any]
    # how it was measured
    n_resamples: int
    seed: int
    core_hour_usd: float
    seconds: float
    warnings: list[str]
    overlap: dict[str, Any]

    @property
    def chosen(self) -> MemberRecord:
        """The chosen student."""
        return next(m for m in self.ladder if m.chosen)


# =============================================================================================
# Records → metrics.json.


def metrics_dict(ev: Evaluation, *, allow_overlap: bool = False) -> dict[str, Any]:
    """metrics.json's dict (JSON-safe) from one evaluation, with the verdict worded from it."""
    chosen = ev.chosen.as_dict()
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": ev.task,
        "artifact": ev.artifact,
        "test_file": ev.test_file,
        "n_test": ev.n_test,
        "n_test_texts": ev.n_test_texts,
        "dataset_fingerprint": ev.dataset_fingerprint,
        "label_column": ev.label_column,
        "text_fields": ev.text_fields,
        "labels": ev.labels,
        "reference": ev.reference,
        "teacher": _teacher_dict(ev.teacher, ev.gold),
        "student": {**chosen, "cost_basis": cpu_cost_basis(chosen["batch_size"], ev.core_hour_usd)},
        "ladder": [m.as_dict() for m in ev.ladder],
        "agreement": ev.chosen.quality.agreement,
        "retention": ev.retention.value,
        "retention_definition": ev.retention.definition,
        "speedup": ev.speedup,
        "cost_ratio": ev.cost_ratio,
        "ece": ev.chosen.quality.ece,
        "ece_reference": ev.reference,
        "reliability": {"n_bins": N_BINS, **asdict(ev.reliability)},
        "cascade": ev.cascade,
        "served": ev.served,
        "per_class": [asdict(c) for c in ev.per_class],
        "confusion": _confusion_dict(ev.confusion),
        "ci": {name: list(v) for name, v in sorted(ev.ci.items())},
        "ci_method": {"kind": "percentile bootstrap", "resamples": ev.n_resamples, "level": 0.95, "seed": ev.seed,
                      "paired": True},
        "target": ev.target,
        "measurement": {"core_hour_usd": ev.core_hour_usd, "memory_method": MEMORY_METHOD,
                        "latency": LATENCY_METHOD, "seconds": ev.seconds},
        "warnings": ev.warnings,
        "overlap": ev.overlap,
    }
    metrics["verdict"], metrics["verdict_withheld"] = verdict_or_refusal(metrics, ev.overlap, allow_overlap)
    return dict(clean(metrics))


def _teacher_dict(teacher: TeacherRecord, gold: GoldFigures | None) -> dict[str, Any]:
    """metrics.json's ``teacher``: who, what it costs, and its quality against gold (null without gold)."""
    against_gold: dict[str, Any] = (
        {"accuracy": gold.accuracy, "macro_f1": gold.macro_f1, "ece": gold.ece} if gold
        else dict.fromkeys(("accuracy", "macro_f1", "ece"))
    )
    return {
        "kind": teacher.kind,
        "describe": teacher.describe,
        "fingerprint": teacher.fingerprint,
        **teacher.cost.as_dict(),
        **against_gold,
    }


def _confusion_dict(c: Confusion) -> dict[str, Any]:
    """metrics.json's ``confusion``: rows are the reference, columns the student."""
    return {
        "rows": c.reference,
        "columns": "student",
        "labels": c.labels,
        "matrix": c.matrix.tolist(),
        "top_confused": c.top_confused,
    }


def _timing_rest(t: Timing) -> dict[str, Any]:
    """A timing's keys after ``ms_per_pred`` (which each record places itself)."""
    return {k: v for k, v in t.as_dict().items() if k != "ms_per_pred"}


def cpu_cost_basis(batch_size: int, core_hour_usd: float) -> str:
    """``cost_basis`` of a predictor priced by its CPU time."""
    return f"CPU core-seconds per prediction at batch {batch_size} × ${core_hour_usd}/core-hour"


def finite(x: float | None) -> float | None:
    """``x`` as a float, or None when it is None, nan or infinite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, nan/inf → None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return finite(float(obj))
    return obj


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write metrics as stable, indented JSON (sorted top-level order as built; nan → null).

    Atomic (a temporary sibling renamed over ``path``); credentials inside URLs are redacted.
    """
    from distil.data import atomic_write_text
    from distil.errors import redact_url

    text = json.dumps(clean(dict(metrics)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(path, redact_url(text), what="metrics")
