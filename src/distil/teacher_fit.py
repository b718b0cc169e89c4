"""``distil teacher fit``: fit the local teacher's head on a team's gold labels.

The teacher is the task's local encoder (``[teacher] kind = "local"``) with a multinomial logistic
regression on its sentence embeddings.  :func:`fit_head` checks the gold file, embeds it once,
picks the regularisation ``C`` on a validation split, reports held-out accuracy, refits on every
example and writes the head (``head.npz`` + ``head.json``, no pickle) to ``out`` — by default
the folder ``[teacher].head`` names, else ``<work_dir>/teacher_head``.  The task file's
``[teacher].head`` must point at that folder, relative to the task file;
:attr:`HeadReport.head_setting` is the exact value to write.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.data import InputReport, read_inputs
from distil.embcache import caching
from distil.errors import ConfigError, DataError, require
from distil.progress import step
from distil.task import LocalTeacherSpec, Task
from distil.teachers.local import Encoder, Head, softmax

log = logging.getLogger(__name__)

#: Regularisation strengths tried on the validation split (inverse L2 strength).  The embeddings are
#: unit vectors, so useful values are larger than sklearn's default of 1.
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


@dataclass
class HeadReport:
    """What :func:`fit_head` did: where the head is, on how much data, and how well it did."""

    path: Path
    head_setting: str
    encoder: str
    n_rows: int
    n: int
    n_holdout: int
    accuracy: float | None
    C: float
    counts: dict[str, int]
    #: C → validation log loss (lower is better).
    val_scores: dict[float, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    input_summary: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the CLI."""
        acc = (
            "n/a (no holdout)" if self.accuracy is None
            else f"{self.accuracy:.3f} on {self.n_holdout} held out"
        )
        lines = [
            f"teacher head: {self.encoder} + logistic regression (C={self.C:g}), "
            f"{self.n} labeled texts ({self.input_summary})",
            f"held-out accuracy: {acc}",
            "per class: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()),
            f"written to {self.path} in {self.seconds:.1f}s",
            f'set in the task file: [teacher] head = "{self.head_setting}"',
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _local_spec(task: Task) -> LocalTeacherSpec:
    spec = task.teacher
    if not isinstance(spec, LocalTeacherSpec):
        found = "no [teacher] section" if spec is None else f'kind = "{spec.kind}"'
        raise ConfigError(
            f"distil teacher fit fits a head for a local encoder teacher; task {task.name!r} has {found}",
            hint='set [teacher] kind = "local" and model = "all-mpnet-base-v2" (or a folder) in the task',
        )
    return spec


def _head_setting(task: Task, out: Path) -> str:
    base = task.base_dir.resolve()
    target = out.resolve()
    try:
        return target.relative_to(base).as_posix()
    except ValueError:
        return str(target)


def _split(y: np.ndarray, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: about ``frac`` of each class (that has >= 2 examples) goes to the second part."""
    first: list[int] = []
    second: list[int] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        k = round(len(idx) * frac) if len(idx) >= 2 else 0
        k = min(max(k, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        second.extend(idx[:k].tolist())
        first.extend(idx[k:].tolist())
    return np.array(sorted(first), dtype=np.int64), np.array(sorted(second), dtype=np.int64)


def _fit_lr(X: np.ndarray, y: np.ndarray, C: float, seed: int) -> Any:
    lm: Any = require("sklearn.linear_model", "local")
    clf = lm.LogisticRegression(C=C, max_iter=2000, random_state=seed)
    clf.fit(X, y)
    return clf


def _log_loss(clf: Any, X: np.ndarray, y: np.ndarray, k: int) -> float:
    """Mean negative log-likelihood of the true labels (classes unseen in training get ~0 mass)."""
    W, b = _to_head_weights(clf, k)
    p = softmax(X @ W.astype(np.float64) + b)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def _to_head_weights(clf: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (dim, k), b (k,)) in task label order from a fitted LogisticRegression on indices 0..k-1.

    Binary sklearn models keep one weight vector: logits [0, w.x + b] give the same softmax.
    Classes without examples get a zero column and a bias far below the others (probability ~0).
    """
    classes = [int(c) for c in clf.classes_]
    coef = np.asarray(clf.coef_, dtype=np.float64)
    icpt = np.asarray(clf.intercept_, dtype=np.float64)
    if len(classes) == 2 and coef.shape[0] == 1:
        coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
        icpt = np.array([0.0, icpt[0]])
    dim = coef.shape[1]
    W = np.zeros((dim, k), dtype=np.float64)
    b = np.full(k, float(icpt.min()) - 30.0)
    for j, c in enumerate(classes):
        W[:, c] = coef[j]
        b[c] = icpt[j]
    return W.astype(np.float32), b.astype(np.float32)


@dataclass
class _Gold:
    """What :func:`_read_gold` read: one gold label index per unique text, and what it found on the way."""

    path: Path
    fields: list[str]
    texts: list[str]
    y: np.ndarray
    conflicts: int
    input_report: InputReport


def _read_gold(task: Task, path: str | Path, label_column: str, text_column: str | None) -> _Gold:
    """Read the gold file by the one input rule: one label per unique text (rows without one are skipped)."""
    got = read_inputs(
        path, task.input, text_column=text_column, label_column=label_column, labels=task.label_names,
        require_gold=True,
    )
    index = {lab: i for i, lab in enumerate(task.label_names)}
    gold_of = got.gold_by_text()  # conflicting duplicates keep the first (counted in the report)
    texts = [t for t in got.texts if t in gold_of]
    y = np.array([index[gold_of[t]] for t in texts], dtype=np.int64)
    return _Gold(got.path, got.fields, texts, y, got.report.gold_conflicts, got.report)


def _class_counts(gold: _Gold, labels: list[str], label_column: str) -> tuple[dict[str, int], list[str]]:
    """Examples per label and the warnings about the gold data; refuses fewer than 2 labels."""
    counts_idx = Counter(gold.y.tolist())
    counts = {lab: int(counts_idx.get(i, 0)) for i, lab in enumerate(labels)}
    warnings: list[str] = []
    empty = [lab for lab, c in counts.items() if c == 0]
    if empty:
        warnings.append(
            f"no examples for {empty}: the head will give them probability ~0; add examples and refit"
        )
    if gold.conflicts:
        warnings.append(f"{gold.conflicts} repeated texts have another label than their first copy (first kept)")
    if gold.input_report.empty or gold.input_report.non_text:
        warnings.append(f"input: {gold.input_report.summary()}")
    if len(counts_idx) < 2:
        raise DataError(
            f"{gold.path}: the head needs examples of at least 2 labels in column {label_column!r}, "
            f"found {sorted(lab for lab, c in counts.items() if c)}",
        )
    for w in warnings:
        log.warning("%s", w)
    return counts, warnings


@dataclass
class _HeadFit:
    """The logistic head fitted on every example, its ``C`` and the held-out accuracy."""

    clf: Any
    C: float
    accuracy: float | None
    n_holdout: int
    val_scores: dict[float, float]


def _choose_C(
    X: np.ndarray, y: np.ndarray, fit_idx: np.ndarray, val_idx: np.ndarray, k: int, seed: int
) -> tuple[float, dict[float, float]]:
    """``C`` by validation log loss (a proper scoring rule: the head's probabilities are soft labels)."""
    val_scores: dict[float, float] = {}
    if not len(val_idx) or len(np.unique(y[fit_idx])) < 2:
        return 10.0, val_scores
    for C in C_GRID:
        clf = _fit_lr(X[fit_idx], y[fit_idx], C, seed)
        val_scores[C] = _log_loss(clf, X[val_idx], y[val_idx], k)
    return min(val_scores, key=lambda c: (val_scores[c], c)), val_scores


def _fit_logistic(X: np.ndarray, y: np.ndarray, k: int, *, holdout: float, seed: int) -> _HeadFit:
    """Hold out ``holdout`` (stratified) for accuracy, choose ``C`` on a split of the rest, refit on all."""
    rng = np.random.default_rng(seed)
    accuracy: float | None = None
    if holdout > 0:
        train_idx, test_idx = _split(y, holdout, rng)
    else:
        train_idx, test_idx = np.arange(len(y)), np.array([], dtype=np.int64)
    fit_idx, val_idx = _split(y[train_idx], 0.2, rng)
    with step(f"fitting the logistic head ({len(C_GRID)} values of C, then held-out accuracy, then all rows)"):
        best_C, val_scores = _choose_C(X, y, train_idx[fit_idx], train_idx[val_idx], k, seed)
        if len(test_idx) and len(np.unique(y[train_idx])) >= 2:
            clf = _fit_lr(X[train_idx], y[train_idx], best_C, seed)
            accuracy = float((clf.predict(X[test_idx]) == y[test_idx]).mean())
        clf = _fit_lr(X, y, best_C, seed)
    return _HeadFit(clf, best_C, accuracy, len(test_idx) if holdout > 0 else 0, val_scores)


def _head_dir(task: Task, spec: LocalTeacherSpec, out: str | Path | None) -> Path:
    """``out`` (relative to the current directory), else ``[teacher].head``, else ``<work_dir>/teacher_head``."""
    if out is not None:
        return Path(out) if Path(out).is_absolute() else Path.cwd() / out
    if spec.head:
        return task.resolve(spec.head)
    return task.work_path / "teacher_head"


def _setting_warnings(task: Task, spec: LocalTeacherSpec, out_dir: Path, setting: str) -> list[str]:
    """A warning when the task file's ``[teacher].head`` is missing or names another folder."""
    if not spec.head:
        return [
            f'the task file has no [teacher].head; add head = "{setting}" to use this head '
            "(without it the teacher stays zero-shot)"
        ]
    if task.resolve(spec.head).resolve() != out_dir.resolve():
        return [f'the task file\'s head = "{spec.head}" points elsewhere; set head = "{setting}" to use this head']
    return []


def fit_head(
    task: Task,
    path: str | Path,
    *,
    label_column: str,
    text_column: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    holdout: float = 0.2,
    progress: Callable[[int, int], None] | None = None,
) -> HeadReport:
    """Fit the local teacher's head on gold labels in ``path`` and write it; return a :class:`HeadReport`.

    Texts come from the task's ``[input]`` fields (or ``text_column``), labels from ``label_column``;
    every label must be one of the task's labels.  ``holdout`` of the data (stratified) measures
    accuracy; ``C`` is chosen on a validation split of the rest; the written head is refitted on all
    examples.  ``progress(done, total)`` reports embedding progress.

    The head is written to ``out`` (relative to the current directory), else to the folder the task's
    ``[teacher].head`` names, else to ``<work_dir>/teacher_head``.  ``HeadReport.head_setting`` is the
    value ``[teacher].head`` must have to use it (a warning says so when the task file differs).
    """
    t0 = time.perf_counter()
    spec = _local_spec(task)
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), found {holdout}")
    gold = _read_gold(task, path, label_column, text_column)
    labels = task.label_names
    counts, warnings = _class_counts(gold, labels, label_column)
    encoder = Encoder(spec.model, max_seq_length=spec.max_seq_length, batch_size=spec.batch_size)
    what = f"{len(gold.texts)} gold texts with {spec.model} (max {spec.max_seq_length} tokens)"
    with step(f"embedding {what}"), caching():
        X = encoder.encode(gold.texts, normalize=True, progress=progress).astype(np.float64)
    fit = _fit_logistic(X, gold.y, len(labels), holdout=holdout, seed=seed)
    out_dir = _head_dir(task, spec, out)
    setting = _head_setting(task, out_dir)
    warnings += _setting_warnings(task, spec, out_dir, setting)
    seconds = time.perf_counter() - t0
    metrics = {
        "holdout_accuracy": fit.accuracy,
        "n": len(gold.y),
        "n_holdout": fit.n_holdout,
        "C": fit.C,
        "val_log_loss": {str(k): v for k, v in fit.val_scores.items()},
        "counts": counts,
        "source": str(Path(path)),
        "label_column": label_column,
        "text_fields": gold.fields,
        "seed": seed,
    }
    W, b = _to_head_weights(fit.clf, len(labels))
    Head(
        W=W, b=b, classes=labels, encoder=spec.model, encoder_fingerprint=encoder.fingerprint(),
        normalize=True, max_seq_length=spec.max_seq_length, metrics=metrics,
    ).save(out_dir)
    return HeadReport(
        path=out_dir, head_setting=setting, encoder=spec.model, n_rows=gold.input_report.total, n=len(gold.y),
        n_holdout=fit.n_holdout, accuracy=fit.accuracy, C=fit.C, counts=counts, val_scores=fit.val_scores,
        warnings=warnings, input_summary=gold.input_report.summary(), seconds=seconds,
    )
