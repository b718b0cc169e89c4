"""The teacher on the test file: its answers (through the journal) and what one answer costs.

:func:`ask_teacher` gets the teacher's answer for every distinct test text through the journal (a text
already answered is never asked again); :func:`evaluated_rows` keeps the rows it answered;
:func:`measure_teacher` prices a hosted teacher from the journal's tokens and latencies and times any
other teacher on this CPU, as the students are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.cost import Price, cpu_cost_per_1m, lookup_price, token_cost_per_1m
from distil.errors import DataError
from distil.evaluate.schema import HostedCost, TeacherRecord, TimedCost
from distil.evaluate.testset import _TestSet
from distil.evaluate.timing import time_predictor
from distil.progress import step
from distil.task import Task

if TYPE_CHECKING:
    from distil.journal import Journal, Row
    from distil.teachers.base import Teacher

__all__ = ["EvalRows", "TeacherAnswers", "ask_teacher", "evaluated_rows", "measure_teacher"]


@dataclass(frozen=True)
class TeacherAnswers:
    """The teacher's answers on the distinct test texts, and what the journal recorded about its calls."""

    fingerprint: str
    answered: dict[str, int]  # text → row of ``probs``
    probs: np.ndarray  # (n_answered, k)
    token_rows: list[Row]  # journal rows of this teacher with token counts
    latency_ms: list[float]  # journal latency of each timed call of this teacher


@dataclass(frozen=True)
class EvalRows:
    """The test rows every figure is computed on: those whose text the teacher answered."""

    uniques: list[str]  # the test file's distinct texts
    rows: np.ndarray  # (n,) index into ``uniques``
    row_numbers: list[int]  # 1-based data row of each
    gold: np.ndarray | None  # (n,) gold label index, -1 where none; None without gold
    t_probs: np.ndarray  # (n, k) the teacher's probabilities

    @property
    def n(self) -> int:
        """Number of evaluated rows."""
        return int(self.rows.size)

    @property
    def t_pred(self) -> np.ndarray:
        """The teacher's label on each evaluated row."""
        return np.asarray(self.t_probs.argmax(axis=1))

    @property
    def t_conf(self) -> np.ndarray:
        """The teacher's confidence on each evaluated row."""
        return np.asarray(self.t_probs.max(axis=1))

    @property
    def texts(self) -> list[str]:
        """The text of each evaluated row."""
        return [self.uniques[int(u)] for u in self.rows]


def ask_teacher(
    task: Task, uniques: list[str], teacher: Teacher, journal: Journal | str | Path | None
) -> TeacherAnswers:
    """The teacher's answers for ``uniques`` through ``journal`` (a Journal, a path, or the task's own)."""
    from distil.journal import Journal
    from distil.label import label

    own_journal = not isinstance(journal, Journal)
    jr = journal if isinstance(journal, Journal) else Journal(journal or task.journal_path)
    try:
        with step(f"teacher answers for {len(uniques)} test texts (through the journal)"):
            res = label(task, uniques, teacher=teacher, journal=jr, source="eval")
        fp = res.teacher
        token_rows = [r for r in jr.rows(teacher=fp, status="done") if r.tokens_in or r.tokens_out]
        latency_rows = [r.latency_ms for r in jr.rows(teacher=fp, status="done") if r.latency_ms > 0]
    finally:
        if own_journal:
            jr.close()
    answered = {t: i for i, t in enumerate(res.labeled.texts)}
    return TeacherAnswers(fp, answered, res.labeled.probs, token_rows, latency_rows)


def evaluated_rows(
    ts: _TestSet, answers: TeacherAnswers, label_column: str | None, k: int, warnings: list[str]
) -> EvalRows:
    """The rows whose text the teacher answered, their gold labels and the teacher's probabilities.

    Raises :class:`DataError` when the teacher answered none; warns about unanswered texts and rows
    without a gold label (gold is dropped altogether when no evaluated row has one).
    """
    answered = answers.answered
    missing = sum(u not in answered for u in ts.uniques)
    if missing:
        warnings.append(
            f"the teacher gave no valid answer for {missing} test text(s) "
            f"(failed or outside the label set); they are left out of every figure"
        )
    keep = np.array([ts.uniques[int(u)] in answered for u in ts.rows], dtype=bool)
    if not keep.any():
        raise DataError(
            f"{ts.path}: the teacher answered none of the {len(ts.uniques)} test texts",
            hint="check the teacher (distil label) and the journal for errors",
        )
    uniq_probs = np.zeros((len(ts.uniques), k), dtype=np.float64)
    for u, text in enumerate(ts.uniques):
        if text in answered:
            uniq_probs[u] = answers.probs[answered[text]]
    rows = ts.rows[keep]
    return EvalRows(
        uniques=ts.uniques,
        rows=rows,
        row_numbers=[r for r, ok in zip(ts.row_numbers, keep, strict=True) if ok],
        gold=_usable_gold(ts.gold[keep] if ts.gold is not None else None, label_column, warnings),
        t_probs=uniq_probs[rows],
    )


def _usable_gold(gold: np.ndarray | None, label_column: str | None, warnings: list[str]) -> np.ndarray | None:
    """``gold``, or None when no row has a gold label (with a warning either way when some lack one)."""
    if gold is None:
        return None
    if not (gold >= 0).any():
        warnings.append(
            f"column {label_column!r} has no gold labels on the evaluated rows; gold metrics are left out"
        )
        return None
    if (gold < 0).any():
        warnings.append(f"{int((gold < 0).sum())} row(s) have no gold label; gold metrics use the other rows")
    return gold


def teacher_kind(teacher: Teacher, task: Task) -> str:
    """``openai``, ``local`` or ``function``: the teacher's own kind, else the task's."""
    spec = task.teacher
    return str(getattr(teacher, "kind", spec.kind if spec is not None else "function"))


def measure_teacher(
    teacher: Teacher,
    task: Task,
    answers: TeacherAnswers,
    sample: Sequence[str],
    *,
    prices: dict[str, Price],
    core_hour_usd: float,
    budget_s: float,
    warnings: list[str],
) -> TeacherRecord:
    """The teacher's record: a hosted one priced from the journal, any other timed on ``sample``."""
    kind = teacher_kind(teacher, task)
    cost: HostedCost | TimedCost
    if kind == "openai":
        cost = _hosted_cost(task, answers, prices, warnings)
    else:
        cost = _timed_cost(teacher, task, kind, sample, core_hour_usd, budget_s)
    return TeacherRecord(kind=kind, describe=teacher.describe(), fingerprint=answers.fingerprint, cost=cost)


def _hosted_cost(task: Task, answers: TeacherAnswers, prices: dict[str, Price], warnings: list[str]) -> HostedCost:
    """Tokens × price and the journal's median latency; warns when the price or the tokens are unknown."""
    spec = task.teacher
    model = getattr(spec, "model", "") or ""
    price = lookup_price(
        model, prices,
        price_in_per_1m=float(getattr(spec, "price_in_per_1m", 0.0) or 0.0),
        price_out_per_1m=float(getattr(spec, "price_out_per_1m", 0.0) or 0.0),
    )
    rows = answers.token_rows
    tin = float(np.mean([r.tokens_in for r in rows])) if rows else None
    tout = float(np.mean([r.tokens_out for r in rows])) if rows else None
    ms = float(np.median(answers.latency_ms)) if answers.latency_ms else None
    cost = token_cost_per_1m(tin, tout or 0.0, price) if (price and tin is not None) else None
    if price is None:
        warnings.append(
            f"no price known for teacher model {model!r}: set price_in_per_1m/price_out_per_1m in the "
            "task or pass a price table; the teacher's cost is left out"
        )
    if tin is None:
        warnings.append("the journal holds no token counts for this teacher; its cost is left out")
    return HostedCost(model=model, ms_per_pred=ms, mean_tokens_in=tin, mean_tokens_out=tout, price=price,
                      cost_per_1m=cost)


def _timed_cost(
    teacher: Teacher, task: Task, kind: str, sample: Sequence[str], core_hour_usd: float, budget_s: float
) -> TimedCost:
    """Time the teacher directly on ``sample`` (bypassing the journal) and price its CPU time."""

    def predict(xs: Sequence[str]) -> Any:
        return teacher.predict_batch(list(xs))

    with step(f"timing the teacher on {len(sample)} texts"):
        tim = time_predictor(predict, sample, single_calls=min(30, max(5, len(sample))),
                             batch_size=256, budget_s=budget_s)
    size_mb = _local_size_mb(task) if kind == "local" else None
    return TimedCost(timing=tim, size_mb=size_mb, cost_per_1m=cpu_cost_per_1m(tim.cpu_s_per_pred_batch, core_hour_usd),
                     core_hour_usd=core_hour_usd)


def _local_size_mb(task: Task) -> float | None:
    """A local teacher's encoder folder + head, in MB (None when unknown)."""
    spec = task.teacher
    if spec is None:
        return None
    try:
        from distil.models import model_path

        size_mb = _dir_size_mb(model_path(getattr(spec, "model", "")))
        head = getattr(spec, "head", None)
        if head and size_mb is not None:
            size_mb += _dir_size_mb(task.resolve(head)) or 0.0
    except Exception:  # the size is a courtesy; never fail an evaluation for it
        return None
    return size_mb


def _dir_size_mb(path: Path) -> float | None:
    """Size of a file or a folder's files in MB (None when absent)."""
    if not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
