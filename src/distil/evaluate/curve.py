"""The cascade: the student answers when it is confident enough, the teacher answers the rest.

:func:`cascade_curve` sweeps the confidence threshold over the test rows; :func:`served_block`
replays the served system (router.json's stored threshold and OOD guard, the same
:mod:`distil.cascade` rule as ``distil serve``) on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cascade_curve", "served_block"]


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


def served_block(
    artifact: Path,
    texts: list[str],
    t_pred: np.ndarray,
    gold: np.ndarray | None,
    labels: list[str],
    warnings: list[str],
    *,
    student_cost_per_1m: float | None = None,
    teacher_cost_per_1m: float | None = None,
    member_costs: Mapping[str, float | None] | None = None,
) -> dict[str, Any] | None:
    """What the served cascade (router.json's threshold + OOD guard) answers on the test rows.

    Adds the 95% Clopper–Pearson interval of the agreement on what the student answered alone, the
    share each rung of a cascade through the ladder answered and ran on (``rungs``), and the cost of 1M
    requests served this way (each rung on the inputs that reach it, the teacher on the rest) next to
    the teacher alone.  ``member_costs``: $ per 1M predictions per member (else ``student_cost_per_1m``
    for the routed one).  None, with a warning, when the artifact has no router.
    """
    from distil.cascade import Cascade, rung_shares, served_summary

    if not (artifact / "router.json").exists():
        warnings.append("the artifact has no router.json: what the served system does is not measured")
        return None
    cascade = Cascade.load(artifact)
    teacher_labels = [labels[int(i)] for i in t_pred]
    answers = cascade.served_on(texts, teacher_labels)
    gold_labels = None if gold is None else [labels[int(g)] if g >= 0 else None for g in gold]
    summary = served_summary(answers, teacher_labels, gold_labels)
    threshold = cascade.router.config.threshold
    local = [a.source == "student" for a in answers]
    agreed = sum(a.label == t for a, t, here in zip(answers, teacher_labels, local, strict=True) if here)
    rungs = rung_shares(answers, cascade.router.config.rungs, cascade.router.config.companions)
    costs = {cascade.router.config.member: student_cost_per_1m, **(member_costs or {})}
    for rung in rungs:
        rung["cost_per_1m"] = costs.get(rung["member"])
    return {
        "threshold": None if not math.isfinite(threshold.value) else threshold.value,
        "target_agreement": threshold.target,
        "score": cascade.router.config.score,
        "ood_guard": cascade.router.ood is not None,
        **summary,
        "rungs": rungs,
        "local_agreement_ci": _binomial_interval(agreed, sum(local)),
        "cost_per_1m": _served_cost(summary["coverage"], rungs, teacher_cost_per_1m),
        "teacher_cost_per_1m": teacher_cost_per_1m,
    }


def off_topic_block(artifact: Path, texts: list[str], source: str) -> dict[str, Any]:
    """What the served system does with texts the task has no label for: the share the student answers alone.

    Every one of them should go to the teacher (or be flagged by the guard); the share answered
    locally is the off-topic leak.  No teacher is asked: nothing here has a right answer to compare.
    """
    from distil.cascade import Cascade

    decisions = Cascade.load(artifact).decide(texts)
    local = sum(d.source == "student" for d in decisions)
    return {
        "source": source, "n": len(texts), "answered_locally": local / len(texts),
        "answered_locally_ci": _binomial_interval(local, len(texts)),
        "flagged": sum(d.ood for d in decisions) / len(texts),
    }


def _binomial_interval(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Two-sided Clopper–Pearson interval of ``k`` successes in ``n`` (None when ``n`` is 0).

    Each side is the router's one-sided bound at ``(1 + level) / 2``; the upper one is one minus the
    lower bound of the failures.
    """
    from distil.route import clopper_pearson_lower

    if n == 0:
        return None
    side = (1.0 + level) / 2
    lo = float(clopper_pearson_lower(k, n, side))
    hi = 1.0 - float(clopper_pearson_lower(n - k, n, side))
    return [round(lo, 6), round(hi, 6)]


def _served_cost(coverage: float | None, rungs: Sequence[Mapping[str, Any]], teacher: float | None) -> float | None:
    """$ per 1M requests: each rung on the share of inputs that reach it, the teacher on what none answers."""
    if coverage is None or teacher is None or any(r.get("cost_per_1m") is None for r in rungs):
        return None
    return sum(float(r["reached"]) * float(r["cost_per_1m"]) for r in rungs) + (1.0 - coverage) * teacher
