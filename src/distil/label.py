"""label(): ask the teacher about every input once, through the journal, within a budget.

The loop is plain: dedupe the inputs, look every key up in the journal, send
the rest to the teacher in batches (each batch written as ``pending`` before it
is sent and recorded as soon as it returns), stop at the budget, and hand back
a :class:`LabeledSet` of everything the teacher answered.  Caching, batching and
budgets live here once; retries live in the teacher base; a teacher only
answers batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from distil.data import LabeledSet
from distil.embcache import caching
from distil.errors import ConfigError, DataError, TeacherError
from distil.journal import Journal, Row, call_key, is_training_source
from distil.task import Task
from distil.teachers import make_teacher
from distil.teachers.base import Answer, Teacher

log = logging.getLogger(__name__)


@dataclass
class LabelStats:
    """Counts of one labeling run; ``calls`` and ``spent`` are what this run paid for."""

    total: int = 0
    from_journal: int = 0
    done: int = 0
    failed: int = 0
    invalid: int = 0
    calls: int = 0
    attempts: int = 0
    spent: float = 0.0
    estimate: float = 0.0
    to_ask: int = 0
    skipped: int = 0
    stopped: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON and run records)."""
        return asdict(self)


@dataclass
class LabelResult:
    """What :func:`label` returns: the run's numbers and the answered texts."""

    stats: LabelStats
    labeled: LabeledSet
    rows: dict[str, Row] = field(default_factory=dict)
    teacher: str = ""

    def row_for(self, text: str) -> Row | None:
        """The journal row for one input text (None if it was not answered)."""
        return self.rows.get(text)


Progress = Callable[[LabelStats], None]


def _batch_size(teacher: Teacher) -> int:
    size = getattr(getattr(teacher, "spec", None), "batch_size", None)
    if isinstance(size, int) and size > 0:
        return size
    conc = getattr(getattr(teacher, "spec", None), "concurrency", None)
    if isinstance(conc, int) and conc > 0:
        return max(conc * 2, 8)
    return 32


def label(
    task: Task,
    texts: Sequence[str],
    *,
    teacher: Teacher | None = None,
    journal: Journal | None = None,
    max_calls: int | None = None,
    max_cost: float | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    confirm: Callable[[LabelStats], bool] | None = None,
    source: str = "label",
) -> LabelResult:
    """Answer every text with the task's teacher, once; return the labeled set.

    Texts already answered (``done`` or ``invalid``) for the same teacher fingerprint come
    from the journal without a call.  ``max_calls`` / ``max_cost`` are hard stops: the run
    stops before a batch that would pass them and ``stats.stopped`` says which one; nothing
    already answered is lost.  ``confirm(stats)`` is called once with the estimate before
    anything is spent; returning False stops the run with ``stopped="declined"``.
    """
    started = time.perf_counter()
    own_journal = journal is None
    teacher = teacher or make_teacher(task)
    if teacher.labels != task.label_names:
        raise ConfigError(
            f"teacher labels {teacher.labels[:5]}… do not match the task's labels {task.label_names[:5]}…",
            hint="build the teacher from the same task",
        )
    journal = journal or Journal(task.journal_path)
    try:
        return _label(
            task, list(texts), teacher, journal, max_calls=max_calls, max_cost=max_cost,
            batch_size=batch_size or _batch_size(teacher), progress=progress, confirm=confirm,
            source=source, started=started,
        )
    finally:
        if own_journal:
            journal.close()


def _label(
    task: Task,
    texts: list[str],
    teacher: Teacher,
    journal: Journal,
    *,
    max_calls: int | None,
    max_cost: float | None,
    batch_size: int,
    progress: Progress | None,
    confirm: Callable[[LabelStats], bool] | None,
    source: str,
    started: float,
) -> LabelResult:
    _check_budgets(max_calls, max_cost)
    fp = teacher.fingerprint()
    journal.register_teacher(fp, teacher.kind, teacher.identity(), task.label_names)
    uniques = _unique_texts(texts)
    keys = {t: call_key(fp, t) for t in uniques}
    journal.note_uses(keys.values(), source)
    stats, todo = _plan(uniques, keys, journal, teacher)
    run_id = journal.start_run(fp, source, {"to_ask": len(todo), "total": len(uniques)})
    _report(progress, stats)
    if todo and confirm is not None and not confirm(stats):
        stats.stopped = "declined"
        todo = []
    for start in range(0, len(todo), batch_size):
        batch = _within_budget(todo[start : start + batch_size], stats, teacher, max_calls, max_cost)
        if not batch:
            break
        _ask(batch, keys, fp, task, teacher, journal, stats, source)
        _report(progress, stats)
    stats.skipped = stats.to_ask - stats.calls
    stats.seconds = time.perf_counter() - started
    journal.finish_run(run_id, stats.as_dict())
    _report(progress, stats)
    return _result(task, uniques, keys, journal, stats, fp)


def _check_budgets(max_calls: int | None, max_cost: float | None) -> None:
    if max_calls is not None and max_calls < 0:
        raise DataError(f"--max-calls must be >= 0, found {max_calls}")
    if max_cost is not None and max_cost < 0:
        raise DataError(f"--max-cost must be >= 0, found {max_cost}")


def _unique_texts(texts: list[str]) -> list[str]:
    """The texts once each, in first-seen order; an empty one is refused."""
    uniques = list(dict.fromkeys(t for t in texts))
    empty = [i for i, t in enumerate(uniques) if not t.strip()]
    if empty:
        raise DataError(f"input {empty[0] + 1} is an empty text", hint="drop empty rows before labeling")
    return uniques


def _plan(
    uniques: list[str], keys: dict[str, str], journal: Journal, teacher: Teacher
) -> tuple[LabelStats, list[str]]:
    """The run's starting counts and the texts the journal does not answer yet (``done`` or ``invalid``)."""
    known = journal.lookup(list(keys.values()))
    stats = LabelStats(total=len(uniques))
    todo: list[str] = []
    for t in uniques:
        row = known.get(keys[t])
        if row is not None and row.status in ("done", "invalid"):
            stats.from_journal += 1
        else:
            todo.append(t)
    stats.to_ask = len(todo)
    stats.estimate = teacher.estimate_cost(todo) if todo else 0.0
    return stats, todo


def _report(progress: Progress | None, stats: LabelStats) -> None:
    if progress:
        progress(stats)


def _within_budget(
    batch: list[str], stats: LabelStats, teacher: Teacher, max_calls: int | None, max_cost: float | None
) -> list[str]:
    """``batch`` cut to what the budgets still allow; empty (``stats.stopped`` set) when they allow nothing."""
    if max_calls is not None:
        room = max_calls - stats.calls
        if room <= 0:
            stats.stopped = "max_calls"
            return []
        batch = batch[:room]
    if max_cost is not None:
        while batch and stats.spent + teacher.estimate_cost(batch) > max_cost:
            batch = batch[: len(batch) // 2]
        if not batch:
            stats.stopped = "max_cost"
    return batch


def _ask(
    batch: list[str],
    keys: dict[str, str],
    fp: str,
    task: Task,
    teacher: Teacher,
    journal: Journal,
    stats: LabelStats,
    source: str,
) -> None:
    """Send one batch: journaled as ``pending`` first, its answers recorded and counted as they return."""
    bkeys = [keys[t] for t in batch]
    journal.mark_pending(zip(bkeys, [fp] * len(batch), batch, strict=True), source=source)
    with caching():  # a local encoder reuses embeddings it made before (e.g. for another head)
        answers = teacher.predict_batch(batch)
    if len(answers) != len(batch):
        raise TeacherError(
            f"teacher {teacher.describe()} returned {len(answers)} answers for {len(batch)} texts"
        )
    journal.record(
        (k, a, _label_name(a, task.label_names)) for k, a in zip(bkeys, answers, strict=True)
    )
    _count(stats, answers)


def _result(
    task: Task, uniques: list[str], keys: dict[str, str], journal: Journal, stats: LabelStats, fp: str
) -> LabelResult:
    """What the journal now holds for the run's texts: the rows, and the answered texts as a labeled set."""
    final = journal.lookup(list(keys.values()))
    rows = {t: final[keys[t]] for t in uniques if keys[t] in final}
    answered = [t for t in uniques if t in rows and rows[t].status == "done" and rows[t].probs is not None]
    probs = (
        np.array([rows[t].probs for t in answered], dtype=np.float32)
        if answered
        else np.zeros((0, len(task.label_names)), dtype=np.float32)
    )
    labeled = LabeledSet(answered, probs, task.label_names, teacher=fp)
    return LabelResult(stats=stats, labeled=labeled, rows=rows, teacher=fp)


def _label_name(answer: Answer, labels: list[str]) -> str | None:
    idx = answer.label_index
    return labels[idx] if idx is not None and answer.status == "done" else None


def _count(stats: LabelStats, answers: list[Answer]) -> None:
    for a in answers:
        stats.calls += 1
        stats.attempts += a.attempts
        stats.spent += a.cost
        if a.status == "done":
            stats.done += 1
        elif a.status == "invalid":
            stats.invalid += 1
        else:
            stats.failed += 1


def labeled_set(
    task: Task,
    *,
    teacher: Teacher | None = None,
    journal: Journal | None = None,
    include: Sequence[str] = (),
) -> LabeledSet:
    """The ``done`` answers of the task's teacher that a student may learn from.

    Only texts asked for a training purpose (:data:`distil.journal.TRAINING_SOURCES`: labeling
    runs, active rounds, serving fallbacks) are included; answers asked only to measure (``eval``
    for test files, ``valid`` for validation files) are left out unless ``include`` names them.
    """
    teacher = teacher or make_teacher(task)
    fp = teacher.fingerprint()
    own = journal is None
    journal = journal or Journal(task.journal_path)
    try:
        texts: list[str] = []
        probs: list[list[float]] = []
        uses = journal.uses(teacher=fp)
        for row in journal.rows(teacher=fp, status="done"):
            wanted = uses.get(row.key, {row.source})
            if not any(is_training_source(s) or s in include for s in wanted):
                continue
            if row.probs is not None and len(row.probs) == len(task.label_names):
                texts.append(row.text)
                probs.append(row.probs)
    finally:
        if own:
            journal.close()
    arr = np.array(probs, dtype=np.float32) if probs else np.zeros((0, len(task.label_names)), np.float32)
    return LabeledSet(texts, arr, task.label_names, teacher=fp)
