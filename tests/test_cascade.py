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


def test_the_served_line_says_what_the_cascade_does() -> None:
    from distil.evaluate import served_line

    m = {"served": {"threshold": 0.574, "target_agreement": 0.95, "ood_guard": True, "coverage": 0.662,
                    "ood_share": 0.022, "local_agreement": 0.962, "accuracy": 0.732}}
    assert served_line(m) == (
        "Served as a cascade (threshold 0.574, 2.2% flagged off-distribution), the student answers 66.2% of "
        "inputs alone at 96.2% agreement with the teacher; served answers 73.2% accurate."
    )
    m["served"].update(cost_per_1m=6.94, teacher_cost_per_1m=25.5)
    assert served_line(m).endswith(
        "; served answers 73.2% accurate; $6.94 per 1M requests against $25.50 for the teacher alone."
    )
    m["served"].update(threshold=None, coverage=0.0, local_agreement=None)
    assert "every input goes to the teacher" in served_line(m)
    assert served_line({"served": None}) == ""
