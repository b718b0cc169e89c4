"""The students: every ladder member stored in the artifact, answered and timed on the test rows.

:func:`measure_members` returns one :class:`~distil.evaluate.schema.MemberRecord` per member, the
chosen one first, and the chosen one's probabilities (which the rest of the evaluation scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distil.cost import cpu_cost_per_1m
from distil.embcache import caching
from distil.errors import ArtifactError
from distil.evaluate.resolve import align_columns
from distil.evaluate.schema import MemberRecord
from distil.evaluate.scoring import Reference, quality
from distil.evaluate.teacher import EvalRows
from distil.evaluate.timing import time_predictor
from distil.progress import step

if TYPE_CHECKING:
    from distil.artifact import Artifact

__all__ = ["Ladder", "measure_members"]

TIMING_TEXTS = 256


@dataclass(frozen=True)
class Ladder:
    """Every member measured (the chosen one first) and the chosen one's answers on the evaluated rows."""

    members: list[MemberRecord]
    chosen_probs: np.ndarray  # (n, k)

    @property
    def chosen(self) -> MemberRecord:
        """The chosen student's record."""
        return next(m for m in self.members if m.chosen)

    @property
    def s_pred(self) -> np.ndarray:
        """The chosen student's label on each evaluated row."""
        return np.asarray(self.chosen_probs.argmax(axis=1))

    @property
    def s_conf(self) -> np.ndarray:
        """The chosen student's confidence (probability of its own label) on each evaluated row."""
        return np.asarray(self.chosen_probs.max(axis=1))


def measure_members(
    art: Artifact,
    labels: list[str],
    art_perm: np.ndarray | None,
    ev: EvalRows,
    ref: Reference,
    *,
    core_hour_usd: float,
    budget_s: float,
) -> Ladder:
    """Answer the test texts with every stored member, score and time each one; the chosen one leads."""
    ladder_meta = {str(m.get("name")): m for m in art.ladder}
    names = list(art.members())
    if art.chosen not in names:
        raise ArtifactError(f"{art.path}: the chosen student {art.chosen!r} has no weights in ladder/")
    names = sorted(names, key=lambda m: m != art.chosen)  # stable: the chosen one first
    t_pred = ev.t_pred
    timing_texts = [ev.uniques[int(u)] for u in ev.rows[:TIMING_TEXTS]]
    records: list[MemberRecord] = []
    chosen_probs = np.zeros((0, len(labels)))
    for name in names:
        probs = _member_probs(art, name, labels, art_perm, ev)
        student = art.student(name)
        with step(f"timing the {name} student"):
            tim = time_predictor(student.predict_proba, timing_texts, budget_s=budget_s)
        records.append(MemberRecord(
            name=name,
            chosen=name == art.chosen,
            soft=ladder_meta.get(name, {}).get("soft"),
            needs_torch=bool(getattr(student, "needs_torch", False)),
            temperature=float(getattr(student, "temperature_", 1.0)),
            quality=quality(probs, t_pred, ref, len(labels)),
            timing=tim,
            size_mb=student.size_bytes() / 1e6,
            cost_per_1m=cpu_cost_per_1m(tim.cpu_s_per_pred_batch, core_hour_usd),
        ))
        if name == art.chosen:
            chosen_probs = probs
    return Ladder(members=records, chosen_probs=chosen_probs)


def _member_probs(
    art: Artifact, name: str, labels: list[str], art_perm: np.ndarray | None, ev: EvalRows
) -> np.ndarray:
    """One member's probabilities on the evaluated rows, columns in the task's label order."""
    student = art.student(name)
    perm = align_columns(list(student.classes_), labels, f"{art.path}/ladder/{name}")
    if perm is None:
        perm = art_perm if art_perm is not None and list(student.classes_) == list(art.labels) else None
    with step(f"the {name} student's answers for {len(ev.uniques)} test texts"), caching():
        uniq_probs = np.asarray(student.predict_proba(ev.uniques), dtype=np.float64)
    if perm is not None:
        uniq_probs = uniq_probs[:, perm]
    return np.asarray(uniq_probs[ev.rows])
