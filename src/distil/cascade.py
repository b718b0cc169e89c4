"""Who answers an input: the one rule the server and ``evaluate()`` share.

The student answers when its routing score (the learned acceptor's probability that it agrees with
the teacher, or its confidence) is at least the router's threshold and the input is in
distribution (the OOD guard does not flag it); otherwise the teacher answers; when the teacher
gives no usable answer, the student answers anyway, marked ``degraded``.

:meth:`Cascade.decide` is the first half (the router's decisions, no teacher involved);
:func:`resolve` the second (merge the teacher's answers for the inputs sent to it).  The server
runs the two halves around its own asynchronous teacher gateway; :meth:`Cascade.served_on`
replays the rule offline on a test set whose teacher answers are already known, so evaluation
reports what the served system does with the stored threshold and guard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distil.route import Decision, Router


@dataclass(frozen=True)
class Served:
    """The answer the cascade gives for one input."""

    label: str
    score: float
    source: Literal["student", "teacher"]
    confidence: float
    ood: bool
    degraded: bool = False
    degraded_reason: str | None = None
    member: str | None = None  # the ladder member whose answer was computed last (the one that answered)
    routing_score: float | None = None  # what the router compared with its threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the server returns it (``degraded_reason`` only when degraded; ``member`` when a
        student answered; ``routing_score`` when the router scored the input)."""
        out: dict[str, Any] = {
            "label": self.label, "score": round(self.score, 6), "source": self.source,
            "confidence": round(self.confidence, 6), "ood": self.ood, "degraded": self.degraded,
        }
        if self.degraded:
            out["degraded_reason"] = self.degraded_reason
        if self.source == "student" and self.member is not None:
            out["member"] = self.member
        if self.routing_score is not None:
            out["routing_score"] = round(self.routing_score, 6)
        return out


def resolve(
    decisions: Sequence[Decision],
    teacher: Mapping[int, tuple[str, float] | None],
    reason: str | None = None,
) -> list[Served]:
    """Merge the teacher's answers (input index → (label, score) or None) into the decisions."""
    out: list[Served] = []
    for i, d in enumerate(decisions):
        rs = d.routing_score
        if d.source == "student":
            out.append(Served(d.label, d.score, "student", d.confidence, d.ood, member=d.member, routing_score=rs))
            continue
        ans = teacher.get(i)
        if ans is not None:
            out.append(Served(ans[0], ans[1], "teacher", d.confidence, d.ood, member=d.member, routing_score=rs))
        else:
            out.append(Served(d.label, d.score, "student", d.confidence, d.ood, degraded=True,
                              degraded_reason=reason or "teacher gave no usable answer", member=d.member,
                              routing_score=rs))
    return out


class Cascade:
    """The served system: a :class:`Router` (student, threshold, OOD guard) with the teacher behind it."""

    def __init__(self, router: Router) -> None:
        self.router = router

    @classmethod
    def load(cls, artifact_dir: str | Path) -> Cascade:
        """The cascade of an artifact folder, as its ``router.json`` stores it (see :meth:`Router.load`)."""
        return cls(Router.load(artifact_dir))

    def decide(self, texts: Sequence[str]) -> list[Decision]:
        """The first half of the rule: for each text, may the student answer alone?"""
        return self.router.decide(texts)

    def served_on(self, texts: Sequence[str], teacher_labels: Sequence[str]) -> list[Served]:
        """What the served system answers for ``texts`` when the teacher would answer ``teacher_labels``."""
        decisions = self.decide(texts)
        known = {i: (lab, 1.0) for i, lab in enumerate(teacher_labels)}
        return resolve(decisions, known)


def rung_shares(
    served: Sequence[Served], rungs: Sequence[str], companions: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Per rung, cheapest first: the share of inputs it answered, and the share it ran on (``reached``).

    A rung runs on every input the rungs before it did not answer (a flagged input stops at the first).
    ``companions`` (members run beside a lone routed student so that its acceptor reads their answers)
    come first, marked ``companion``: they run on every input and answer none.
    """
    n = max(1, len(served))
    depth = [rungs.index(s.member) if s.member in rungs else 0 for s in served]
    beside = [{"member": name, "answered": 0.0, "reached": 1.0 if served else 0.0, "companion": True}
              for name in companions]
    return beside + [
        {
            "member": name,
            "answered": sum(1 for s, d in zip(served, depth, strict=True)
                            if d == r and s.source == "student" and not s.degraded) / n,
            "reached": sum(1 for d in depth if d >= r) / n,
        }
        for r, name in enumerate(rungs)
    ]


def served_summary(
    served: Sequence[Served], teacher_labels: Sequence[str], gold: Sequence[str | None] | None = None
) -> dict[str, Any]:
    """Coverage, OOD share and quality of the served answers (against the teacher, and gold if given)."""
    n = len(served)
    if n == 0:
        return {"n": 0, "coverage": None, "ood_share": None, "agreement": None, "accuracy": None,
                "local_agreement": None}
    local = np.array([s.source == "student" for s in served])
    agree = np.array([s.label == t for s, t in zip(served, teacher_labels, strict=True)])
    out: dict[str, Any] = {
        "n": n,
        "coverage": float(local.mean()),
        "ood_share": float(np.mean([s.ood for s in served])),
        "agreement": float(agree.mean()),
        "local_agreement": float(agree[local].mean()) if local.any() else None,
        "accuracy": None,
    }
    if gold is not None:
        pairs = [(s.label, g) for s, g in zip(served, gold, strict=True) if g is not None]
        out["accuracy"] = float(np.mean([a == g for a, g in pairs])) if pairs else None
    return out
