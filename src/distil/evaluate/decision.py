"""The decision and its wording: whether the task's targets are met, and the sentences that say so.

:func:`targets` decides the retention target by the 95% interval (not the point estimate) and the
cost target by the cost ratio; :func:`verdict` and :func:`served_line` word a metrics dict in one
sentence each; :func:`verdict_or_refusal` withholds the verdict on a student graded on texts it
was trained on.  Every function here reads figures and returns values; none prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from distil.cost import cost_target_met
from distil.task import Task

__all__ = ["served_line", "targets", "verdict", "verdict_or_refusal"]


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


def targets(
    task: Task, retention: float, interval: Sequence[float] | None, cost_ratio: float | None
) -> dict[str, Any]:
    """metrics.json's ``target``: the retention decision (by interval) and the cost target."""
    limit = task.targets.max_cost_ratio
    return {
        **_target_decision(task.targets.min_retention, retention, interval),
        "max_cost_ratio": limit,
        "cost_met": cost_target_met(cost_ratio, limit),
    }


def verdict_or_refusal(metrics: Mapping[str, Any], overlap: Mapping[str, Any], allow: bool) -> tuple[str, bool]:
    """(verdict, withheld): no verdict on a student whose test texts it was trained on, unless allowed."""
    if not overlap["seen_in_training"] or allow:
        return verdict(metrics), False
    return (
        f"No verdict: {overlap['seen_in_training']} of {overlap['n_test_texts']} test texts were in the "
        "student's training data, so its figures overstate it. Evaluate on texts it never saw "
        "(or pass --allow-overlap to print the verdict anyway).",
        True,
    )


def _ratio_text(r: float) -> str:
    """A cost ratio as a share: 320 → "1/320", 12345 → "1/12,000", 5.5 → "1/5.5"."""
    if r >= 100:
        digits = math.floor(math.log10(r)) - 1
        return f"1/{round(r, -digits):,.0f}"
    if r >= 10:
        return f"1/{r:.0f}"
    return f"1/{r:.1f}"


def verdict(metrics: Mapping[str, Any]) -> str:
    """One sentence: what the chosen student kept of the teacher and at what share of its cost."""
    return (
        f"{_kept_clause(metrics)}{_share_clause(metrics.get('cost_ratio'))}{_speed_clause(metrics.get('speedup'))}"
        f"{_target_clause(metrics)}{_cost_clause(metrics)}{_cascade_clause(metrics.get('served'))}."
    )


def _cascade_clause(served: Mapping[str, Any] | None) -> str:
    """"; served as a cascade …, it costs 1/3.2 of the teacher's" — what the team will pay at the stored router.

    The student's share above prices the student alone; the served system also pays the teacher for
    every input the router sends it (student cost + teacher share × teacher cost, measured on the test
    texts).  Empty when the served system or a cost is unmeasured.
    """
    if not served or served.get("coverage") is None:
        return ""
    cost, teacher = served.get("cost_per_1m"), served.get("teacher_cost_per_1m")
    if cost is None or not teacher or cost <= 0:
        return ""
    share = 1.0 - float(served["coverage"])
    ratio = float(teacher) / float(cost)
    of = f"{_ratio_text(ratio)} of the teacher's cost" if ratio >= 1 else f"{1 / ratio:.1f}× the teacher's cost"
    return (f"; served as a cascade at the stored router (the teacher answers {share:.1%} of inputs) "
            f"it costs {of}")


def _kept_clause(metrics: Mapping[str, Any]) -> str:
    """"The X student keeps 97% of the teacher's accuracy (…)" — or its agreement without gold."""
    s = metrics["student"]
    name = s.get("name", "student")
    ret = metrics.get("retention")
    if metrics.get("reference") == "gold" and ret is not None:
        return (
            f"The {name} student keeps {ret:.1%} of the teacher's accuracy "
            f"({s['accuracy']:.1%} vs {metrics['teacher']['accuracy']:.1%})"
        )
    return f"The {name} student agrees with the teacher on {metrics['agreement']:.1%} of test inputs"


def _share_clause(ratio: float | None) -> str:
    """" at 1/320 of its cost per prediction" (or the multiple, or that the cost is unknown)."""
    if ratio is None:
        return " (the teacher's cost per prediction is unknown, so no cost comparison)"
    if ratio >= 1:
        return f" at {_ratio_text(ratio)} of its cost per prediction"
    return f" at {1 / ratio:.1f}× its cost per prediction"


def _speed_clause(speed: float | None) -> str:
    """", 55× faster" (or slower); empty when the speedup is unknown."""
    if speed is None:
        return ""
    if speed >= 10:
        return f", {speed:,.0f}× faster"
    return f", {speed:.1f}× faster" if speed >= 1 else f", {1 / speed:.1f}× slower"


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


def served_line(metrics: Mapping[str, Any]) -> str:
    """One line on the served cascade: how much it answers locally and how well (empty if unmeasured)."""
    s = metrics.get("served")
    if not s or s.get("coverage") is None:
        return ""
    if s["threshold"] is None:
        return (f"Served as a cascade, every input goes to the teacher: no threshold meets "
                f"{s['target_agreement']:.0%} agreement with the required confidence on the calibration data.")
    local = "" if s.get("local_agreement") is None else f" at {s['local_agreement']:.1%} agreement with the teacher"
    acc = "" if s.get("accuracy") is None else f"; served answers {s['accuracy']:.1%} accurate"
    guard = f", {s['ood_share']:.1%} flagged off-distribution" if s.get("ood_guard") else ""
    cost = "" if s.get("cost_per_1m") is None else (
        f"; ${s['cost_per_1m']:,.2f} per 1M requests against ${s['teacher_cost_per_1m']:,.2f} for the teacher alone"
    )
    off = s.get("off_topic")
    leak = "" if not off else f"; it answers {off['answered_locally']:.1%} of {off['n']} off-topic texts alone"
    return (f"Served as a cascade (threshold {s['threshold']:.3f}{guard}), the student answers "
            f"{s['coverage']:.1%} of inputs alone{local}{acc}{cost}{leak}.")
