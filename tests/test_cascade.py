"""The one cascade rule: student if confident and in distribution, else teacher, else student degraded."""

from __future__ import annotations

from distil.cascade import Served, resolve, served_summary
from distil.route import Decision


def _d(label: str, conf: float, source: str, ood: bool = False) -> Decision:
    return Decision(label=label, score=conf, confidence=conf, ood=ood, source=source)  # type: ignore[arg-type]


def test_resolve_student_teacher_and_degraded() -> None:
    decisions = [_d("card", 0.97, "student"), _d("cash", 0.4, "teacher"), _d("card", 0.9, "teacher", ood=True)]
    out = resolve(decisions, {1: ("transfer", 0.88), 2: None}, reason="teacher unreachable")
    assert out[0] == Served("card", 0.97, "student", 0.97, False)
    assert out[1] == Served("transfer", 0.88, "teacher", 0.4, False)
    assert out[2].source == "student" and out[2].degraded and out[2].ood
    assert out[2].degraded_reason == "teacher unreachable"
    assert "degraded_reason" not in out[0].to_dict() and out[2].to_dict()["degraded"] is True


def test_served_summary_by_hand() -> None:
    served = [
        Served("a", 0.9, "student", 0.9, False),
        Served("b", 0.9, "student", 0.9, False),
        Served("c", 1.0, "teacher", 0.3, True),
        Served("a", 1.0, "teacher", 0.5, False),
    ]
    s = served_summary(served, ["a", "a", "c", "a"], gold=["a", "b", "c", None])
    assert s["n"] == 4 and s["coverage"] == 0.5 and s["ood_share"] == 0.25
    assert s["agreement"] == 0.75 and s["local_agreement"] == 0.5
    assert s["accuracy"] == 1.0  # three rows with gold, all right
    assert served_summary([], [])["coverage"] is None
