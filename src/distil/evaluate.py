"""evaluate(): what the student kept of the teacher, and what it saves — measured, with intervals.

On one test file, in one run on one machine, this measures the teacher and every
student stored in an artifact (the chosen one leads):

* quality — agreement with the teacher; with gold labels also accuracy, macro-F1,
  per-class F1, the confusion matrix and retention (student accuracy ÷ teacher
  accuracy).  Without gold labels retention *is* agreement, and the JSON says so.
  Every headline figure gets a 95% percentile-bootstrap interval (seeded,
  vectorised; the teacher and the student are resampled together);
* calibration — expected calibration error (15 equal-width confidence bins) and the
  reliability-diagram data;
* cost — wall ms per prediction at batch 1 (median of single calls), throughput at
  batch 256, CPU core-seconds per prediction, peak memory, model size and dollars per
  1M predictions (tokens × price for hosted teachers, CPU time × $/core-hour for
  everything run locally), and the speedup;
* the cascade curve — for each confidence threshold, the share the student answers
  alone and the combined system's agreement and accuracy (the teacher answers the rest).

The teacher's answers come through the journal (:func:`distil.label.label`): a test
text already answered is never asked again.  The result is a plain dict (see
``docs/metrics.md``) written to ``out/metrics.json`` with the HTML report beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics
import time
import tracemalloc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.cost import cpu_cost_per_1m, load_prices, lookup_price, token_cost_per_1m
from distil.data import extract_texts, gold_text, read_table, require_columns
from distil.embcache import caching
from distil.errors import ArtifactError, ConfigError, DataError
from distil.progress import step
from distil.task import InputSpec, Task

if TYPE_CHECKING:
    from distil.journal import Journal
    from distil.teachers.base import Teacher

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
N_BINS = 15
MIN_PER_CLASS = 5

__all__ = [
    "SCHEMA_VERSION",
    "Timing",
    "accuracy",
    "bootstrap",
    "cascade_curve",
    "confusion_matrix",
    "evaluate",
    "expected_calibration_error",
    "macro_f1",
    "per_class_scores",
    "reliability_bins",
    "time_predictor",
    "verdict",
    "write_metrics",
]


# =============================================================================================
# Pure metrics on label indices (numpy only).


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true (reference) class, column = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of positions where the two label arrays agree (nan when empty)."""
    t = np.asarray(y_true)
    if t.size == 0:
        return float("nan")
    return float(np.mean(t == np.asarray(y_pred)))


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn does)."""
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64),
            "predicted": predicted.astype(np.int64)}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` or ``y_pred``.

    This equals ``sklearn.metrics.f1_score(y_true, y_pred, average="macro")`` (which
    also averages over the labels present in either array).
    """
    s = per_class_scores(y_true, y_pred, k)
    present = (s["support"] + s["predicted"]) > 0
    if not present.any():
        return float("nan")
    return float(s["f1"][present].mean())


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence: bins are (i/M, (i+1)/M], the first one also holds 0."""
    c = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0)
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.asarray(np.searchsorted(inner, c, side="left"), dtype=np.int64)


def expected_calibration_error(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE = Σ_b |B_b|/n · |acc(B_b) − conf(B_b)| over ``n_bins`` equal-width bins (Guo et al. 2017).

    ``conf`` is the probability given to the predicted label; ``correct`` whether the
    prediction matched the reference.  Equivalently (1/n) Σ_b |Σ correct − Σ conf|.
    """
    c = np.asarray(conf, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if c.size == 0:
        return float("nan")
    b = _bin_index(c, n_bins)
    gap = np.bincount(b, weights=ok, minlength=n_bins) - np.bincount(b, weights=c, minlength=n_bins)
    return float(np.abs(gap).sum() / c.size)


def reliability_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> list[dict[str, Any]]:
    """Reliability-diagram data: per bin its bounds, count, mean confidence and accuracy (None if empty)."""
    c = np.asarray(conf, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    b = _bin_index(c, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_c = np.bincount(b, weights=c, minlength=n_bins)
    sum_ok = np.bincount(b, weights=ok, minlength=n_bins)
    out = []
    for i in range(n_bins):
        n = int(count[i])
        out.append({
            "lo": i / n_bins,
            "hi": (i + 1) / n_bins,
            "count": n,
            "confidence": float(sum_c[i] / n) if n else None,
            "accuracy": float(sum_ok[i] / n) if n else None,
        })
    return out


def cascade_curve(
    conf: np.ndarray,
    student_pred: np.ndarray,
    teacher_pred: np.ndarray,
    gold: np.ndarray | None = None,
    *,
    n_points: int = 50,
    student_cost_per_1m: float | None = None,
    teacher_cost_per_1m: float | None = None,
) -> list[dict[str, Any]]:
    """The student answers when its confidence ≥ threshold; the teacher answers the rest.

    Thresholds are the unique ``n_points`` quantiles of ``conf`` (observed values, numpy
    ``method="lower"``) plus one just above the
    maximum (coverage 0: the teacher answers everything).  Each point has ``threshold``,
    ``coverage`` (share the student answers), ``agreement`` (combined system vs teacher),
    ``accuracy`` (combined vs gold; None without gold) and ``cost_per_1m`` (the student runs
    on every input, the teacher on the rest; None if a cost is unknown).  Points are
    ordered by threshold, ascending.  ``gold`` entries < 0 (no gold label) are ignored.
    """
    c = np.asarray(conf, dtype=np.float64)
    s = np.asarray(student_pred, dtype=np.int64)
    t = np.asarray(teacher_pred, dtype=np.int64)
    if c.size == 0:
        return []
    qs = np.quantile(c, np.linspace(0.0, 1.0, max(n_points, 2)), method="lower")
    thresholds = np.unique(np.concatenate([qs, [np.nextafter(c.max(), np.inf)]]))
    disagree = s != t
    has_gold = gold is not None and bool((np.asarray(gold) >= 0).any())
    if has_gold:
        g = np.asarray(gold, dtype=np.int64)
        mask = g >= 0
        s_ok, t_ok = (s == g)[mask], (t == g)[mask]
    points = []
    for th in thresholds:
        confident = c >= th
        coverage = float(confident.mean())
        agreement = 1.0 - float((confident & disagree).mean())
        acc = None
        if has_gold:
            cm = confident[mask]
            acc = float(np.where(cm, s_ok, t_ok).mean())
        cost = None
        if student_cost_per_1m is not None and teacher_cost_per_1m is not None:
            cost = student_cost_per_1m + (1.0 - coverage) * teacher_cost_per_1m
        points.append({"threshold": float(th), "coverage": coverage, "agreement": agreement,
                       "accuracy": acc, "cost_per_1m": cost})
    return points


# =============================================================================================
# Bootstrap.

StatFn = Callable[[np.ndarray], dict[str, np.ndarray]]


def bootstrap(
    stats: StatFn,
    n: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    chunk: int | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile-bootstrap intervals for several statistics computed on the same resamples.

    ``stats(idx)`` receives a (b, n) array of row indices (each row one resample drawn with
    replacement) and returns name → (b,) array of that statistic per resample.  Resamples
    are drawn from ``numpy.random.default_rng(seed)`` in chunks (to bound memory) and the
    interval is the (1−level)/2 and (1+level)/2 percentiles, ignoring nan resamples.
    """
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    chunk = chunk or max(1, min(n_resamples, 4_000_000 // max(n, 1)))
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))
        for name, vals in stats(idx).items():
            parts.setdefault(name, []).append(np.asarray(vals, dtype=np.float64))
        done += b
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, tuple[float, float]] = {}
    for name, chunks in parts.items():
        vals = np.concatenate(chunks)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, [lo_q, hi_q])
        out[name] = (float(lo), float(hi))
    return out


def resampled_accuracy(correct: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Accuracy of each resample: mean of ``correct`` over each row of ``idx``."""
    return np.asarray(np.asarray(correct, dtype=np.float64)[idx].mean(axis=1))


def resampled_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample (classes present in either array of that resample), vectorised."""
    b = idx.shape[0]
    t = np.asarray(y_true, dtype=np.int64)[idx]
    p = np.asarray(y_pred, dtype=np.int64)[idx]
    off = np.arange(b, dtype=np.int64)[:, None] * k
    tp = np.bincount((off + t)[t == p], minlength=b * k).reshape(b, k)
    support = np.bincount((off + t).ravel(), minlength=b * k).reshape(b, k)
    predicted = np.bincount((off + p).ravel(), minlength=b * k).reshape(b, k)
    denom = support + predicted
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denom > 0, 2.0 * tp / np.maximum(denom, 1), 0.0)
        return np.asarray(f1.sum(axis=1) / (denom > 0).sum(axis=1))


def resampled_ece(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """ECE of each resample, vectorised with one bincount per chunk."""
    b, n = idx.shape
    bins = _bin_index(conf, n_bins)[idx]
    key = (np.arange(b, dtype=np.int64)[:, None] * n_bins + bins).ravel()
    c = np.asarray(conf, dtype=np.float64)[idx].ravel()
    ok = np.asarray(correct, dtype=np.float64)[idx].ravel()
    m = b * n_bins
    gap = np.bincount(key, weights=ok, minlength=m) - np.bincount(key, weights=c, minlength=m)
    return np.asarray(np.abs(gap.reshape(b, n_bins)).sum(axis=1) / n)


# =============================================================================================
# Timing and memory.


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


def _rss_reset() -> int | None:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5); return current RSS in kB or None."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:
        return None


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def time_predictor(
    fn: Callable[[Sequence[str]], Any],
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
    fn: Callable[[Sequence[str]], Any],
    texts: Sequence[str],
    single_calls: int,
    batch_size: int,
    budget_s: float,
    measure_memory: bool,
) -> Timing:
    pool = list(texts)
    for i in range(2):
        fn([pool[i % len(pool)]])
    walls: list[float] = []
    cpus: list[float] = []
    start = time.perf_counter()
    i = 0
    while i < single_calls and (i < 5 or time.perf_counter() - start < budget_s):
        x = [pool[i % len(pool)]]
        c0, w0 = time.process_time(), time.perf_counter()
        fn(x)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        i += 1
    per_item = statistics.median(walls)
    size = batch_size
    if per_item * batch_size > budget_s * 4:
        probe = [pool[j % len(pool)] for j in range(min(16, batch_size))]
        w0 = time.perf_counter()
        fn(probe)
        per_item_batched = (time.perf_counter() - w0) / len(probe)
        if per_item_batched * batch_size > budget_s:
            size = max(len(probe), min(batch_size, int(budget_s / max(per_item_batched, 1e-9))))
    batch = [pool[j % len(pool)] for j in range(size)]
    bwalls: list[float] = []
    bcpus: list[float] = []
    start = time.perf_counter()
    while len(bwalls) < 5 and (not bwalls or time.perf_counter() - start < budget_s):
        c0, w0 = time.process_time(), time.perf_counter()
        fn(batch)
        bwalls.append(time.perf_counter() - w0)
        bcpus.append(time.process_time() - c0)
    peak_mb = rss_mb = None
    if measure_memory:
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
        peak_mb = max(peak - base, 0) / 1e6
        hwm = _status_kb("VmHWM")
        if rss0 is not None and hwm is not None:
            rss_mb = max(hwm - rss0, 0) / 1e3
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


# =============================================================================================
# evaluate()


@dataclass
class _TestSet:
    path: Path
    uniques: list[str]  # unique texts
    rows: np.ndarray  # (n_rows,) index into uniques for every usable row
    row_numbers: list[int]  # 1-based data row of every usable row
    gold: np.ndarray | None  # (n_rows,) label index, -1 where the row has no gold label
    skipped_rows: int
    text_fields: list[str]


def _read_test(
    path: Path, task: Task, *, text_column: str, label_column: str | None
) -> _TestSet:
    table = read_table(path)
    if text_column in table.columns:
        spec = InputSpec(fields=[text_column], max_chars=task.input.max_chars)
    elif all(f in table.columns for f in task.input.fields):
        spec = task.input
    else:
        require_columns(table, [text_column], what="text")
        spec = task.input  # not reached: require_columns raised
    uniques, mapping, report = extract_texts(table, spec.fields, spec.render)
    keep = [i for i, m in enumerate(mapping) if m >= 0]
    gold = None
    if label_column is not None:
        if label_column not in table.columns:
            raise DataError(
                f"{path}: gold label column {label_column!r} not found; the file has {table.columns}",
                hint="pass --label-column with one of those names, "
                "or leave it out to compare with the teacher only",
            )
        index = {name: j for j, name in enumerate(task.label_names)}
        gold_list: list[int] = []
        unknown: list[tuple[int, str]] = []
        for i in keep:
            value = gold_text(table.rows[i].get(label_column)) or ""
            if not value:
                gold_list.append(-1)
            elif value in index:
                gold_list.append(index[value])
            else:
                unknown.append((i + 1, value))
                gold_list.append(-1)
        if unknown:
            row, value = unknown[0]
            others = sorted({v for _, v in unknown})
            raise DataError(
                f"{path}, row {row}, column {label_column!r}: gold label {value!r} is not one of the task's "
                f"{len(index)} labels ({len(unknown)} row(s) affected; unknown values: {others[:5]})",
                hint=f"the task's labels are {task.label_names[:8]}{'…' if len(index) > 8 else ''}; "
                "fix the file or the task's label list",
            )
        gold = np.array(gold_list, dtype=np.int64)
    return _TestSet(
        path=path,
        uniques=uniques,
        rows=np.array([mapping[i] for i in keep], dtype=np.int64),
        row_numbers=[i + 1 for i in keep],
        gold=gold,
        skipped_rows=len(report.empty) + len(report.non_text),
        text_fields=list(spec.fields),
    )


def _resolve_task(task: Task | str | Path | None, artifact: Any) -> Task:
    """The given task, else the one stored with the artifact, else a ``task.toml`` found nearby.

    Nearby: the current folder, then the artifact's folder and up to three folders above it
    (the default artifact lives in ``<task folder>/.distil/student``).  A found task is used
    only if its fingerprint equals the one the artifact was trained for or, when the artifact
    records none, if its labels are the artifact's labels.
    """
    if isinstance(task, Task):
        return task
    if task is not None:
        return Task.load(task)
    root = Path(artifact.path).resolve()
    stored = root / "task.toml"
    if stored.exists():
        return Task.load(stored)
    stored_path = artifact.config.get("task_path")
    if isinstance(stored_path, str) and stored_path and Path(stored_path).exists():
        return Task.load(stored_path)
    raw = artifact.config.get("task")
    if isinstance(raw, dict):
        return Task.from_dict(raw, source=f"{root / 'config.json'} [task]")
    wanted = artifact.config.get("task_fingerprint") or None
    looked: list[str] = []
    for folder in [Path.cwd(), root, *list(root.parents)[:3]]:
        cand = folder / "task.toml"
        if str(cand) in looked:
            continue
        looked.append(str(cand))
        if not cand.exists():
            continue
        try:
            found = Task.load(cand)
        except ConfigError:
            continue
        if (wanted and found.fingerprint() == wanted) or (
            not wanted and found.label_names == list(artifact.labels)
        ):
            return found
    raise ConfigError(
        f"{root}: no task given, and no task.toml matching this artifact was found "
        f"(looked at {', '.join(looked)})",
        hint="pass the task file: distil eval STUDENTS TEST --task task.toml",
    )


def _align_columns(artifact_labels: list[str], task_labels: list[str], where: str) -> np.ndarray | None:
    """Column permutation from artifact order to task order (None when identical)."""
    if artifact_labels == task_labels:
        return None
    if sorted(artifact_labels) != sorted(task_labels):
        missing = [x for x in task_labels if x not in artifact_labels]
        extra = [x for x in artifact_labels if x not in task_labels]
        raise ArtifactError(
            f"{where}: the student's labels do not match the task's "
            f"(task labels missing from the student: {missing[:5]}; "
            f"student labels not in the task: {extra[:5]})",
            hint="evaluate with the task the student was trained for, or train again",
        )
    pos = {name: j for j, name in enumerate(artifact_labels)}
    return np.array([pos[name] for name in task_labels], dtype=np.int64)


def _fingerprint(ts: _TestSet, rows: np.ndarray, gold: np.ndarray | None, labels: list[str]) -> str:
    """Hash of the evaluated texts in row order and their gold labels (if any)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(ts.uniques[int(r)].encode("utf-8"))
        h.update(b"\x00")
    if gold is not None:
        h.update(json.dumps([labels[g] if g >= 0 else None for g in gold.tolist()]).encode())
    return h.hexdigest()[:16]


def _dir_size_mb(path: Path) -> float | None:
    if not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, nan/inf → None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _finite(float(obj))
    return obj


def _quality(
    probs: np.ndarray, teacher_pred: np.ndarray, gold: np.ndarray | None, k: int
) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    out: dict[str, Any] = {"agreement": accuracy(teacher_pred, pred)}
    if gold is not None:
        mask = gold >= 0
        out["accuracy"] = accuracy(gold[mask], pred[mask])
        out["macro_f1"] = macro_f1(gold[mask], pred[mask], k)
        out["ece"] = expected_calibration_error(conf[mask], pred[mask] == gold[mask])
    else:
        out["accuracy"] = None
        out["macro_f1"] = None
        out["ece"] = expected_calibration_error(conf, pred == teacher_pred)
    out["_pred"], out["_conf"] = pred, conf
    return out


def evaluate(
    artifact_dir: str | Path,
    test_path: str | Path,
    *,
    task: Task | str | Path | None = None,
    label_column: str | None = None,
    text_column: str = "text",
    out: str | Path | None = None,
    teacher: Teacher | None = None,
    journal: Journal | str | Path | None = None,
    prices: Mapping[str, Any] | str | Path | None = None,
    core_hour_usd: float = 0.05,
    seed: int = 0,
    n_resamples: int = 1000,
    timing_budget_s: float = 3.0,
    teacher_timing_texts: int = 64,
    report: bool = True,
    allow_overlap: bool = False,
) -> dict[str, Any]:
    """Measure teacher and students of ``artifact_dir`` on ``test_path``; return metrics.json's dict.

    ``task`` is a :class:`Task` or a task file (default: the one stored in the artifact).
    ``label_column`` names gold labels in the test file (optional; without it agreement with
    the teacher leads and retention is defined as agreement).  Text comes from
    ``text_column`` when the file has it, else from the task's ``[input].fields``.  The
    teacher answers through the journal (``journal`` or the task's own): answered texts are
    not asked again.  ``prices`` extends the price table (:func:`distil.cost.load_prices`);
    ``core_hour_usd`` prices CPU time.  With ``out``, writes ``metrics.json``,
    ``disagreements.json`` and (``report=True``) ``report.html`` there.

    Test texts the ladder saw in training (the artifact's ``train_texts.sha256``) are counted in
    ``overlap``; when there are any, the verdict is withheld (``verdict_withheld``) unless
    ``allow_overlap``: a student graded on its own training texts looks better than it is.

    Raises :class:`DataError` for an unusable test file (empty, missing column, gold label not
    in the task), :class:`ArtifactError` for a student whose labels do not match the task.
    """
    from distil.artifact import load_artifact
    from distil.journal import Journal
    from distil.label import label
    from distil.teachers import make_teacher

    t_start = time.perf_counter()
    if core_hour_usd < 0:
        raise ConfigError(f"core_hour_usd must be >= 0, found {core_hour_usd}")
    art = load_artifact(artifact_dir)
    the_task = _resolve_task(task, art)
    labels = the_task.label_names
    k = len(labels)
    art_perm = _align_columns(list(art.labels), labels, str(art.path))
    ts = _read_test(Path(test_path), the_task, text_column=text_column, label_column=label_column)
    price_table = load_prices(prices)
    warnings: list[str] = []
    trained_for = art.config.get("task_fingerprint")
    if trained_for and trained_for != the_task.fingerprint():
        warnings.append(
            f"the student was trained for task fingerprint {trained_for}, this task's is "
            f"{the_task.fingerprint()} (labels, descriptions, instruction or input changed)"
        )
    if ts.skipped_rows:
        warnings.append(f"{ts.skipped_rows} test row(s) had empty or non-text input and were skipped")
    overlap = _overlap(art, ts.uniques, warnings)

    # -- the teacher, through the journal ------------------------------------------------------
    teacher_obj = teacher or make_teacher(the_task)
    own_journal = not isinstance(journal, Journal)
    jr = journal if isinstance(journal, Journal) else Journal(journal or the_task.journal_path)
    try:
        with step(f"teacher answers for {len(ts.uniques)} test texts (through the journal)"):
            res = label(the_task, ts.uniques, teacher=teacher_obj, journal=jr, source="eval")
        fp = res.teacher
        token_rows = [r for r in jr.rows(teacher=fp, status="done") if r.tokens_in or r.tokens_out]
        latency_rows = [r.latency_ms for r in jr.rows(teacher=fp, status="done") if r.latency_ms > 0]
    finally:
        if own_journal:
            jr.close()
    answered = {t: i for i, t in enumerate(res.labeled.texts)}
    missing_teacher = [u for u in range(len(ts.uniques)) if ts.uniques[u] not in answered]
    if missing_teacher:
        warnings.append(
            f"the teacher gave no valid answer for {len(missing_teacher)} test text(s) "
            f"(failed or outside the label set); they are left out of every figure"
        )
    keep_rows = np.array([ts.uniques[int(u)] in answered for u in ts.rows], dtype=bool)
    if not keep_rows.any():
        raise DataError(
            f"{ts.path}: the teacher answered none of the {len(ts.uniques)} test texts",
            hint="check the teacher (distil label) and the journal for errors",
        )
    rows = ts.rows[keep_rows]
    row_numbers = [r for r, ok in zip(ts.row_numbers, keep_rows, strict=True) if ok]
    gold = ts.gold[keep_rows] if ts.gold is not None else None
    if gold is not None and not (gold >= 0).any():
        warnings.append(
            f"column {label_column!r} has no gold labels on the evaluated rows; gold metrics are left out"
        )
        gold = None
    elif gold is not None and (gold < 0).any():
        warnings.append(f"{int((gold < 0).sum())} row(s) have no gold label; gold metrics use the other rows")
    n = int(rows.size)
    uniq_probs_t = np.zeros((len(ts.uniques), k), dtype=np.float64)
    for u, text in enumerate(ts.uniques):
        if text in answered:
            uniq_probs_t[u] = res.labeled.probs[answered[text]]
    t_probs = uniq_probs_t[rows]
    t_pred = t_probs.argmax(axis=1)
    t_conf = t_probs.max(axis=1)

    # -- teacher cost -----------------------------------------------------------------------------
    spec = the_task.teacher
    kind = getattr(teacher_obj, "kind", spec.kind if spec is not None else "function")
    teacher_block: dict[str, Any] = {"kind": kind, "describe": teacher_obj.describe(), "fingerprint": fp}
    sample = [t for t in ts.uniques if t in answered][:teacher_timing_texts]
    if kind == "openai":
        model = getattr(spec, "model", "") or ""
        price = lookup_price(
            model, price_table,
            price_in_per_1m=float(getattr(spec, "price_in_per_1m", 0.0) or 0.0),
            price_out_per_1m=float(getattr(spec, "price_out_per_1m", 0.0) or 0.0),
        )
        tin = float(np.mean([r.tokens_in for r in token_rows])) if token_rows else None
        tout = float(np.mean([r.tokens_out for r in token_rows])) if token_rows else None
        ms = float(np.median(latency_rows)) if latency_rows else None
        cost = token_cost_per_1m(tin, tout or 0.0, price) if (price and tin is not None) else None
        if price is None:
            warnings.append(
                f"no price known for teacher model {model!r}: set price_in_per_1m/price_out_per_1m in the "
                "task or pass a price table; the teacher's cost is left out"
            )
        if tin is None:
            warnings.append("the journal holds no token counts for this teacher; its cost is left out")
        teacher_block.update(
            model=model, ms_per_pred=ms, ms_source="journal median latency per call (network included)",
            preds_per_s=None, cpu_ms_per_pred=None, size_mb=None, peak_mem_mb=None,
            mean_tokens_in=tin, mean_tokens_out=tout, price=price.to_dict() if price else None,
            cost_per_1m=cost, cost_basis="tokens × price",
        )
    else:
        def _teacher_fn(xs: Sequence[str]) -> Any:
            return teacher_obj.predict_batch(list(xs))

        with step(f"timing the teacher on {len(sample)} texts"):
            tim = time_predictor(_teacher_fn, sample, single_calls=min(30, max(5, len(sample))),
                                 batch_size=256, budget_s=timing_budget_s)
        size_mb = None
        if kind == "local" and spec is not None:
            try:
                from distil.models import model_path

                size_mb = _dir_size_mb(model_path(getattr(spec, "model", "")))
                head = getattr(spec, "head", None)
                if head and size_mb is not None:
                    size_mb += _dir_size_mb(the_task.resolve(head)) or 0.0
            except Exception:  # the size is a courtesy; never fail an evaluation for it
                size_mb = None
        teacher_block.update(
            ms_per_pred=tim.ms_per_pred, ms_source="timed directly on this CPU (batch 1, median)",
            **{k2: v for k2, v in tim.as_dict().items() if k2 != "ms_per_pred"},
            size_mb=size_mb,
            cost_per_1m=cpu_cost_per_1m(tim.cpu_s_per_pred_batch, core_hour_usd),
            cost_basis=f"CPU core-seconds per prediction at batch {tim.batch_size} "
            f"× ${core_hour_usd}/core-hour",
        )

    if teacher is None:  # built here: close it (a caller's teacher is the caller's to close)
        teacher_obj.close()

    # -- students -------------------------------------------------------------------------------
    ladder_meta = {str(m.get("name")): m for m in art.ladder}
    members = list(art.members())
    if art.chosen not in members:
        raise ArtifactError(f"{art.path}: the chosen student {art.chosen!r} has no weights in ladder/")
    members = sorted(members, key=lambda m: m != art.chosen)  # stable: the chosen one first
    ladder: list[dict[str, Any]] = []
    chosen_q: dict[str, Any] = {}
    chosen_probs = np.zeros((0, k))
    timing_texts = [ts.uniques[int(u)] for u in rows[: max(256, 1)]]
    for name in members:
        student = art.student(name)
        perm = _align_columns(list(student.classes_), labels, f"{art.path}/ladder/{name}")
        if perm is None:
            perm = art_perm if art_perm is not None and list(student.classes_) == list(art.labels) else None
        with step(f"the {name} student's answers for {len(ts.uniques)} test texts"), caching():
            uniq_probs = np.asarray(student.predict_proba(ts.uniques), dtype=np.float64)
        if perm is not None:
            uniq_probs = uniq_probs[:, perm]
        s_probs = uniq_probs[rows]
        q = _quality(s_probs, t_pred, gold, k)
        with step(f"timing the {name} student"):
            tim = time_predictor(student.predict_proba, timing_texts, budget_s=timing_budget_s)
        meta = ladder_meta.get(name, {})
        entry = {
            "name": name,
            "chosen": name == art.chosen,
            "soft": meta.get("soft"),
            "needs_torch": bool(getattr(student, "needs_torch", False)),
            "temperature": float(getattr(student, "temperature_", 1.0)),
            "agreement": q["agreement"],
            "accuracy": q["accuracy"],
            "macro_f1": q["macro_f1"],
            "ece": q["ece"],
            "ms_per_pred": tim.ms_per_pred,
            "size_mb": student.size_bytes() / 1e6,
            "cost_per_1m": cpu_cost_per_1m(tim.cpu_s_per_pred_batch, core_hour_usd),
            **{k2: v for k2, v in tim.as_dict().items() if k2 != "ms_per_pred"},
        }
        ladder.append(entry)
        if name == art.chosen:
            chosen_q = q
            chosen_probs = s_probs
    student_block = dict(next(e for e in ladder if e["chosen"]))
    student_block["cost_basis"] = (
        f"CPU core-seconds per prediction at batch {student_block['batch_size']} × ${core_hour_usd}/core-hour"
    )
    s_pred, s_conf = chosen_q["_pred"], chosen_q["_conf"]

    # -- teacher quality vs gold -------------------------------------------------------------------
    if gold is not None:
        mask = gold >= 0
        teacher_block["accuracy"] = accuracy(gold[mask], t_pred[mask])
        teacher_block["macro_f1"] = macro_f1(gold[mask], t_pred[mask], k)
        teacher_block["ece"] = expected_calibration_error(t_conf[mask], t_pred[mask] == gold[mask])
        t_acc = teacher_block["accuracy"]
        retention = student_block["accuracy"] / t_acc if t_acc else float("nan")
        retention_def = "student accuracy / teacher accuracy (gold labels)"
        reference = "gold"
    else:
        teacher_block["accuracy"] = None
        teacher_block["macro_f1"] = None
        teacher_block["ece"] = None
        retention = chosen_q["agreement"]
        retention_def = "agreement with the teacher (no gold labels given)"
        reference = "teacher"

    # -- bootstrap ------------------------------------------------------------------------------
    agree_vec = (s_pred == t_pred).astype(np.float64)
    if gold is not None:
        gm = gold >= 0
        g_idx = np.flatnonzero(gm)
        gs, gt, gg = s_pred[gm], t_pred[gm], gold[gm]
        s_ok, t_ok = (gs == gg).astype(np.float64), (gt == gg).astype(np.float64)
        s_conf_g = s_conf[gm]

        def stats(idx: np.ndarray) -> dict[str, np.ndarray]:
            sa, ta = resampled_accuracy(s_ok, idx), resampled_accuracy(t_ok, idx)
            with np.errstate(divide="ignore", invalid="ignore"):
                ret = sa / ta
            return {
                "agreement": resampled_accuracy(agree_vec[g_idx], idx),
                "student.accuracy": sa,
                "teacher.accuracy": ta,
                "retention": ret,
                "student.macro_f1": resampled_macro_f1(gg, gs, k, idx),
                "teacher.macro_f1": resampled_macro_f1(gg, gt, k, idx),
                "ece": resampled_ece(s_conf_g, s_ok, idx),
            }

        ci = bootstrap(stats, int(g_idx.size), n_resamples=n_resamples, seed=seed)
        if g_idx.size < n:
            ci["agreement"] = bootstrap(
                lambda idx: {"a": resampled_accuracy(agree_vec, idx)}, n, n_resamples=n_resamples, seed=seed
            )["a"]
    else:
        s_ok_t = (s_pred == t_pred).astype(np.float64)

        def stats(idx: np.ndarray) -> dict[str, np.ndarray]:
            a = resampled_accuracy(agree_vec, idx)
            return {
                "agreement": a,
                "retention": a,
                "student.macro_f1_vs_teacher": resampled_macro_f1(t_pred, s_pred, k, idx),
                "ece": resampled_ece(s_conf, s_ok_t, idx),
            }

        ci = bootstrap(stats, n, n_resamples=n_resamples, seed=seed)

    # -- per class, confusion, calibration, cascade ------------------------------------------------
    if gold is not None:
        gm = gold >= 0
        ref_idx, pred_idx, t_ref_pred = gold[gm], s_pred[gm], t_pred[gm]
    else:
        ref_idx, pred_idx, t_ref_pred = t_pred, s_pred, None
    pcs = per_class_scores(ref_idx, pred_idx, k)
    pct = per_class_scores(ref_idx, t_ref_pred, k) if t_ref_pred is not None else None
    per_class = []
    for j, name in enumerate(labels):
        row: dict[str, Any] = {
            "label": name,
            "support": int(pcs["support"][j]),
            "precision": float(pcs["precision"][j]),
            "recall": float(pcs["recall"][j]),
            "f1": float(pcs["f1"][j]),
        }
        row["teacher_f1"] = float(pct["f1"][j]) if pct is not None else None
        per_class.append(row)
    cm = confusion_matrix(ref_idx, pred_idx, k)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:20]
    top_confused = [
        {"reference": labels[int(i) // k], "predicted": labels[int(i) % k], "count": int(off.flat[int(i)])}
        for i in order if off.flat[int(i)] > 0
    ]
    confusion = {
        "rows": reference,
        "columns": "student",
        "labels": labels,
        "matrix": cm.tolist(),
        "top_confused": top_confused,
    }
    if gold is not None:
        gm = gold >= 0
        rel_student = reliability_bins(s_conf[gm], s_pred[gm] == gold[gm])
        rel_teacher = reliability_bins(t_conf[gm], t_pred[gm] == gold[gm])
    else:
        rel_student = reliability_bins(s_conf, s_pred == t_pred)
        rel_teacher = None
    cascade = cascade_curve(
        s_conf, s_pred, t_pred, gold,
        student_cost_per_1m=_finite(student_block["cost_per_1m"]),
        teacher_cost_per_1m=_finite(teacher_block.get("cost_per_1m")),
    )
    with step("the served system on the test texts (stored threshold and OOD guard)"), caching():
        served = _served(art.path, [ts.uniques[int(u)] for u in rows], t_pred, gold, labels, warnings)

    # -- speed, cost ratio, verdict ---------------------------------------------------------------
    t_ms, s_ms = teacher_block.get("ms_per_pred"), student_block["ms_per_pred"]
    speedup = t_ms / s_ms if t_ms and s_ms else None
    t_cost, s_cost = teacher_block.get("cost_per_1m"), student_block["cost_per_1m"]
    cost_ratio = t_cost / s_cost if t_cost and s_cost else None
    small = [row["label"] for row in per_class if 0 < row["support"] < MIN_PER_CLASS]
    absent = [row["label"] for row in per_class if row["support"] == 0]
    basis = "gold" if gold is not None else "teacher-labelled"
    if small:
        warnings.append(
            f"{len(small)} class(es) have fewer than {MIN_PER_CLASS} {basis} test examples "
            f"(e.g. {small[:3]}): per-class F1 is noisy"
        )
    if absent:
        warnings.append(
            f"{len(absent)} class(es) have no {basis} test examples (e.g. {absent[:3]}): no per-class F1"
        )
    if n < 100:
        warnings.append(f"only {n} test examples: the confidence intervals are wide")
    if kind != "openai" and t_cost is not None and s_cost is not None and t_cost < s_cost:
        warnings.append("the student costs more CPU per prediction than the teacher on this machine")

    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "task": the_task.name,
        "artifact": str(art.path),
        "test_file": str(ts.path),
        "n_test": n,
        "n_test_texts": len({int(r) for r in rows}),
        "dataset_fingerprint": _fingerprint(ts, rows, gold, labels),
        "label_column": label_column if gold is not None else None,
        "text_fields": ts.text_fields,
        "labels": labels,
        "reference": reference,
        "teacher": teacher_block,
        "student": student_block,
        "ladder": ladder,
        "agreement": chosen_q["agreement"],
        "retention": retention,
        "retention_definition": retention_def,
        "speedup": speedup,
        "cost_ratio": cost_ratio,
        "ece": chosen_q["ece"],
        "ece_reference": reference,
        "reliability": {
            "n_bins": N_BINS, "reference": reference, "student": rel_student, "teacher": rel_teacher,
        },
        "cascade": cascade,
        "served": served,
        "per_class": per_class,
        "confusion": confusion,
        "ci": {name: list(v) for name, v in sorted(ci.items())},
        "ci_method": {"kind": "percentile bootstrap", "resamples": n_resamples, "level": 0.95, "seed": seed,
                      "paired": True},
        "target": _targets(the_task, retention, ci.get("retention"), cost_ratio),
        "measurement": {
            "core_hour_usd": core_hour_usd,
            "memory_method": "tracemalloc peak during one batch call (Python + numpy allocations; "
            "torch's native allocations are not traced); rss_delta_mb is the growth of peak RSS "
            "over the same call",
            "latency": "wall ms at batch 1, median of single calls, this machine's CPU",
            "seconds": None,
        },
        "warnings": warnings,
    }
    metrics["overlap"] = overlap
    metrics["verdict"], metrics["verdict_withheld"] = _verdict_or_refusal(metrics, overlap, allow_overlap)
    disagreements = _disagreements(ts, rows, row_numbers, t_probs, chosen_probs, gold, labels)
    metrics["measurement"]["seconds"] = time.perf_counter() - t_start
    metrics = _clean(metrics)
    if out is not None:
        write_metrics(metrics, Path(out) / "metrics.json")
        (Path(out) / "disagreements.json").write_text(
            json.dumps(_clean(disagreements), indent=2, ensure_ascii=False), encoding="utf-8"
        )
        if report:
            from distil.report import write_report

            write_report(metrics, Path(out) / "report.html", disagreements=disagreements)
    return metrics


def _disagreements(
    ts: _TestSet,
    rows: np.ndarray,
    row_numbers: list[int],
    t_probs: np.ndarray,
    s_probs: np.ndarray,
    gold: np.ndarray | None,
    labels: list[str],
    limit: int = 30,
) -> list[dict[str, Any]]:
    """The student's most confident answers that differ from the teacher's, one per text."""
    s_pred, t_pred = s_probs.argmax(1), t_probs.argmax(1)
    idx = np.flatnonzero(s_pred != t_pred)
    idx = idx[np.argsort(-s_probs[idx, s_pred[idx]], kind="stable")]
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i in idx:
        u = int(rows[i])
        if u in seen:
            continue
        seen.add(u)
        out.append({
            "row": row_numbers[i],
            "text": ts.uniques[u],
            "teacher": labels[int(t_pred[i])],
            "teacher_conf": float(t_probs[i, t_pred[i]]),
            "student": labels[int(s_pred[i])],
            "student_conf": float(s_probs[i, s_pred[i]]),
            "gold": labels[int(gold[i])] if gold is not None and gold[i] >= 0 else None,
        })
        if len(out) >= limit:
            break
    return out


def _ratio_text(r: float) -> str:
    if r >= 100:
        digits = math.floor(math.log10(r)) - 1
        return f"1/{round(r, -digits):,.0f}"
    if r >= 10:
        return f"1/{r:.0f}"
    return f"1/{r:.1f}"


def _target_decision(target: float, retention: float, interval: Sequence[float] | None) -> dict[str, Any]:
    """Whether the retention target is met, decided by the 95% interval, not the point estimate.

    ``met`` is True when the interval's lower end clears the target, False when its upper end is
    below it, and None when the interval straddles it (or nothing could be computed).
    """
    out: dict[str, Any] = {"min_retention": target, "met": None, "decided_by": "95% interval"}
    if not math.isfinite(retention):
        return out
    if interval is None or len(interval) != 2 or not all(math.isfinite(float(v)) for v in interval):
        out["decided_by"] = "point estimate (no interval)"
        out["met"] = bool(retention >= target)
        return out
    lo, hi = float(interval[0]), float(interval[1])
    out["met"] = True if lo >= target else (False if hi < target else None)
    return out


def _served(
    artifact: Path,
    texts: list[str],
    t_pred: np.ndarray,
    gold: np.ndarray | None,
    labels: list[str],
    warnings: list[str],
) -> dict[str, Any] | None:
    """What the served cascade (router.json's threshold + OOD guard) answers on the test rows."""
    from distil.cascade import Cascade, served_summary

    if not (artifact / "router.json").exists():
        warnings.append("the artifact has no router.json: what the served system does is not measured")
        return None
    cascade = Cascade.load(artifact)
    teacher_labels = [labels[int(i)] for i in t_pred]
    answers = cascade.served_on(texts, teacher_labels)
    gold_labels = None if gold is None else [labels[int(g)] if g >= 0 else None for g in gold]
    summary = served_summary(answers, teacher_labels, gold_labels)
    threshold = cascade.router.config.threshold
    return {
        "threshold": None if not math.isfinite(threshold.value) else threshold.value,
        "target_agreement": threshold.target,
        "ood_guard": cascade.router.ood is not None,
        **summary,
    }


def _targets(
    task: Task, retention: float, interval: Sequence[float] | None, cost_ratio: float | None
) -> dict[str, Any]:
    """metrics.json's ``target``: the retention decision (by interval) and the cost target."""
    limit = task.targets.max_cost_ratio
    return {
        **_target_decision(task.targets.min_retention, retention, interval),
        "max_cost_ratio": limit,
        "cost_met": None if cost_ratio is None else bool(cost_ratio * limit >= 1.0),
    }


def _overlap(art: Any, uniques: Sequence[str], warnings: list[str]) -> dict[str, Any]:
    """How many distinct test texts are in the artifact's training hash set (None: not recorded)."""
    from distil.artifact import text_hash

    seen = art.train_hashes()
    if seen is None:
        return {"n_test_texts": len(uniques), "seen_in_training": None, "checked": False}
    n = sum(text_hash(u) in seen for u in uniques)
    if n:
        warnings.append(
            f"{n} of {len(uniques)} test texts were in the student's training data: its figures on them are inflated"
        )
    return {"n_test_texts": len(uniques), "seen_in_training": n, "checked": True}


def _verdict_or_refusal(metrics: Mapping[str, Any], overlap: Mapping[str, Any], allow: bool) -> tuple[str, bool]:
    """(verdict, withheld): no verdict on a student whose test texts it was trained on, unless allowed."""
    if not overlap["seen_in_training"] or allow:
        return verdict(metrics), False
    return (
        f"No verdict: {overlap['seen_in_training']} of {overlap['n_test_texts']} test texts were in the "
        "student's training data, so its figures overstate it. Evaluate on texts it never saw "
        "(or pass --allow-overlap to print the verdict anyway).",
        True,
    )


def verdict(metrics: Mapping[str, Any]) -> str:
    """One sentence: what the chosen student kept of the teacher and at what share of its cost."""
    s = metrics["student"]
    name = s.get("name", "student")
    ret = metrics.get("retention")
    if metrics.get("reference") == "gold" and ret is not None:
        kept = (
            f"The {name} student keeps {ret:.1%} of the teacher's accuracy "
            f"({s['accuracy']:.1%} vs {metrics['teacher']['accuracy']:.1%})"
        )
    else:
        kept = f"The {name} student agrees with the teacher on {metrics['agreement']:.1%} of test inputs"
    ratio = metrics.get("cost_ratio")
    if ratio is None:
        cost = " (the teacher's cost per prediction is unknown, so no cost comparison)"
    elif ratio >= 1:
        cost = f" at {_ratio_text(ratio)} of its cost per prediction"
    else:
        cost = f" at {1 / ratio:.1f}× its cost per prediction"
    speed = metrics.get("speedup")
    fast = ""
    if speed is not None:
        fast = f", {speed:,.0f}× faster" if speed >= 10 else (
            f", {speed:.1f}× faster" if speed >= 1 else f", {1 / speed:.1f}× slower")
    return f"{kept}{cost}{fast}{_target_clause(metrics)}{_cost_clause(metrics)}."


def _cost_clause(metrics: Mapping[str, Any]) -> str:
    """"; its cost misses the 1/100 target" when the task's cost target is not met."""
    target = metrics.get("target") or {}
    limit = target.get("max_cost_ratio")
    if limit is None or target.get("cost_met") is None:
        return ""
    share = f"1/{1 / limit:,.0f}" if limit < 1 else "the teacher's"
    if target["cost_met"]:
        return f", within the {share} cost target"
    return f"; at more than {share} of the teacher's cost it misses the cost target"


def served_line(metrics: Mapping[str, Any]) -> str:
    """One line on the served cascade: how much it answers locally and how well (empty if unmeasured)."""
    s = metrics.get("served")
    if not s or s.get("coverage") is None:
        return ""
    if s["threshold"] is None:
        return (f"Served as a cascade, every input goes to the teacher: no threshold meets "
                f"{s['target_agreement']:.0%} agreement on the held-out split.")
    local = "" if s.get("local_agreement") is None else f" at {s['local_agreement']:.1%} agreement with the teacher"
    acc = "" if s.get("accuracy") is None else f"; served answers {s['accuracy']:.1%} accurate"
    guard = f", {s['ood_share']:.1%} flagged off-distribution" if s.get("ood_guard") else ""
    return (f"Served as a cascade (threshold {s['threshold']:.3f}{guard}), the student answers "
            f"{s['coverage']:.1%} of inputs alone{local}{acc}.")


def _target_clause(metrics: Mapping[str, Any]) -> str:
    """"; it meets the 95% retention target (95% CI …)" — or says the interval does not settle it."""
    target = metrics.get("target") or {}
    goal = target.get("min_retention")
    if goal is None or metrics.get("retention") is None:
        return ""
    interval = (metrics.get("ci") or {}).get("retention")
    ci_text = f" (95% CI {interval[0]:.1%}–{interval[1]:.1%})" if interval else ""
    if target.get("met") is True:
        return f"; it meets the {goal:.0%} retention target{ci_text}"
    if target.get("met") is False:
        return f"; it misses the {goal:.0%} retention target{ci_text}"
    if interval:
        return (
            f"; whether it meets the {goal:.0%} retention target is not settled{ci_text}: "
            "a larger test set would narrow the interval"
        )
    return ""


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write metrics as stable, indented JSON (sorted top-level order as built; nan → null)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_clean(dict(metrics)), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                 encoding="utf-8")
    return p
