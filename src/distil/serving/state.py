"""The server's state: the cascade, the micro-batcher, the teacher gateway and the metrics, and one classify step."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.cascade import Cascade, resolve
from distil.errors import ConfigError
from distil.route import Decision, Router
from distil.serving.batcher import MicroBatcher
from distil.serving.breaker import CircuitBreaker
from distil.serving.gateway import Answer, TeacherGateway
from distil.serving.metrics import Metrics

if TYPE_CHECKING:
    from distil.journal import Journal
    from distil.task import Task
    from distil.teachers.base import Teacher

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Everything a request needs; ``ready`` while the app runs (see :meth:`start` / :meth:`stop`)."""

    cascade: Cascade
    batcher: MicroBatcher
    gateway: TeacherGateway
    breaker: CircuitBreaker
    metrics: Metrics
    model_name: str
    max_chars: int | None
    routed: dict[str, int] = field(default_factory=lambda: {"student": 0, "teacher": 0})
    ready: bool = False

    @property
    def router(self) -> Router:
        """The cascade's router (student, threshold, OOD guard)."""
        return self.cascade.router

    @property
    def teacher_share(self) -> float:
        """Share of inputs routed to the teacher since start."""
        total = self.routed["student"] + self.routed["teacher"]
        return self.routed["teacher"] / total if total else 0.0

    def start(self) -> None:
        """Start the batching worker on the running loop; the server is ready."""
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        """Not ready any more; stop the worker and release threads, journal and teacher."""
        self.ready = False
        await self.batcher.stop()
        self.batcher.close()
        self.gateway.close()

    async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        """Answer ``texts`` with the cascade rule: decide (batched), ask the teacher where needed, resolve."""
        if self.max_chars is not None:
            texts = [t[: self.max_chars] for t in texts]
        decisions = await self.batcher.submit(texts)  # Cascade.decide, batched with concurrent requests
        self._count_decisions(decisions)
        replies, reason = await self._teacher_replies(texts, decisions)
        out: list[dict[str, Any]] = []
        for served in resolve(decisions, replies, reason):  # the one cascade rule (distil.cascade)
            if served.degraded:
                self.metrics.inc("distil_degraded_total")
            self.metrics.inc("distil_inputs_total", source=served.source)
            self.metrics.inc("distil_predictions_total", label=served.label, source=served.source)
            out.append(served.to_dict())
        return out

    async def ranked(
        self, texts: list[str], answers: list[dict[str, Any]], k: int | None
    ) -> list[list[dict[str, Any]]]:
        """Per answer, the top ``k`` labels with scores (see :func:`distil.serving.dialects.ranked`)."""
        from distil.serving.dialects import ranked

        if self.max_chars is not None:
            texts = [t[: self.max_chars] for t in texts]
        probs = await asyncio.to_thread(self._member_probs, texts, answers)
        return [ranked(a, p, self.router.labels, k) for a, p in zip(answers, probs, strict=True)]

    def _member_probs(self, texts: list[str], answers: list[dict[str, Any]]) -> list[np.ndarray]:
        """Each answer's student distribution: the rung that answered, or the last rung for a teacher answer."""
        router = self.router
        students = dict(zip(router.config.ladder, router.ladder, strict=True))
        students[router.config.member] = router.student
        names = [str(a.get("member") or router.config.member) for a in answers]
        out: list[np.ndarray] = [np.empty(0)] * len(texts)
        for name in dict.fromkeys(names):
            idx = [i for i, n in enumerate(names) if n == name]
            for i, row in zip(idx, students[name].predict_proba([texts[i] for i in idx]), strict=True):
                out[i] = row
        return out

    def _count_decisions(self, decisions: list[Decision]) -> None:
        for d in decisions:
            self.routed[d.source] += 1
            self.metrics.inc("distil_routed_total", to=d.source)
            if d.source == "student" and d.member is not None:
                self.metrics.inc("distil_rung_answers_total", member=d.member)
            if d.ood:
                self.metrics.inc("distil_ood_total")

    async def _teacher_replies(
        self, texts: list[str], decisions: list[Decision]
    ) -> tuple[dict[int, Answer], str | None]:
        """The teacher's answers by input index for the inputs routed to it (each distinct text asked once)."""
        need = [i for i, d in enumerate(decisions) if d.source == "teacher"]
        if not need:
            return {}, None
        uniq = list(dict.fromkeys(texts[i] for i in need))
        rep = await self.gateway.ask(uniq)
        by_text = dict(zip(uniq, rep.answers, strict=True))
        return {i: by_text[texts[i]] for i in need}, rep.reason


def load_router(
    artifact_dir: str | Path | Router, *, target_agreement: float | None, threshold: float | None,
    level: float | None = None,
) -> Router:
    """The artifact's router (re-certified or re-thresholded if asked), or the ready one given."""
    if isinstance(artifact_dir, Router):
        if target_agreement is not None or threshold is not None or level is not None:
            raise ConfigError(
                "target_agreement/threshold/level apply when loading an artifact, not to a ready Router"
            )
        router = artifact_dir
    else:
        router = Router.load(artifact_dir, target_agreement=target_agreement, threshold=threshold, level=level)
    log.info("router: %s", router.config.threshold.describe())
    return router


def _load_task(task: Task | str | Path | None) -> Task | None:
    if task is None or not isinstance(task, str | Path):
        return task
    from distil.task import Task as TaskCls

    return TaskCls.load(task)


def teacher_side(
    task: Task | None, router: Router, teacher: Teacher | None
) -> tuple[Teacher | None, Journal | None]:
    """The teacher (``make_teacher(task)`` unless given) and the journal its answers go to; none without a task."""
    if task is None:
        if teacher is not None:
            raise ConfigError("a teacher needs its task (labels and journal): pass task= as well")
        log.warning("no task given: inputs routed to the teacher will be answered by the student (degraded)")
        return None, None
    if list(task.label_names) != list(router.labels):
        raise ConfigError(
            f"the task's labels {task.label_names[:5]}… differ from the student's {router.labels[:5]}…",
            hint="serve the artifact with the task it was trained for",
        )
    if teacher is None:
        from distil.teachers import make_teacher

        teacher = make_teacher(task)
    from distil.journal import Journal

    return teacher, Journal(task.journal_path)


def build_state(
    artifact_dir: str | Path | Router,
    *,
    task: Task | str | Path | None,
    target_agreement: float | None,
    threshold: float | None,
    teacher: Teacher | None,
    max_batch: int,
    level: float | None = None,
    max_batch_chars: int = 4096,
    max_wait_ms: float,
    teacher_timeout_s: float,
    teacher_concurrency: int,
    breaker_failures: int,
    breaker_cooldown_s: float,
) -> ServerState:
    """Load the router and the task, and put the cascade, batcher, breaker, gateway and metrics together."""
    router = load_router(artifact_dir, target_agreement=target_agreement, threshold=threshold, level=level)
    task_obj = _load_task(task)
    teacher, journal = teacher_side(task_obj, router, teacher)
    cascade = Cascade(router)
    metrics = Metrics()
    breaker = CircuitBreaker(breaker_failures, breaker_cooldown_s)
    gateway = TeacherGateway(
        task_obj, teacher, journal, breaker, metrics, timeout_s=teacher_timeout_s, concurrency=teacher_concurrency,
    )
    batcher = MicroBatcher(
        cascade.decide, max_batch=max_batch, max_wait_ms=max_wait_ms, metrics=metrics,
        max_batch_chars=max_batch_chars,
    )
    st = ServerState(
        cascade=cascade, batcher=batcher, gateway=gateway, breaker=breaker, metrics=metrics,
        model_name=f"distil-{router.config.member}",
        max_chars=task_obj.input.max_chars if task_obj is not None else None,
    )
    register_gauges(st)
    st.metrics.info(**model_info(artifact_dir, router))
    return st


def model_info(artifact_dir: str | Path | Router, router: Router) -> dict[str, str]:
    """``distil_model_info``'s labels: the student, its rungs, the threshold rule and the data fingerprint."""
    fingerprint = ""
    if not isinstance(artifact_dir, Router):
        from distil.artifact import load_artifact

        fingerprint = str(load_artifact(artifact_dir).config.get("data_fingerprint", ""))
    return {
        "student": router.config.member, "rungs": ",".join(router.config.rungs), "fingerprint": fingerprint,
        "labels": str(len(router.labels)), "ood_guard": "yes" if router.ood is not None else "no",
    }


def register_gauges(st: ServerState) -> None:
    """The gauges computed at scrape time: teacher share, circuit state, threshold, readiness."""
    m, breaker, router = st.metrics, st.breaker, st.router
    m.gauge("distil_teacher_share", "Share of inputs routed to the teacher since start.", lambda: st.teacher_share)
    m.gauge(
        "distil_circuit_open", "1 while the teacher's circuit breaker is open (teacher not called).",
        lambda: 0.0 if breaker.state == "closed" else 1.0,
    )
    m.counter("distil_circuit_opened_total", "Times the circuit breaker opened.", lambda: breaker.opened_count)
    m.gauge("distil_confidence_threshold", "Routing-score threshold in force (router.json's score: acceptor or "
            "confidence).", lambda: router.threshold)
    m.gauge("distil_ready", "1 when the server is ready.", lambda: 1.0 if st.ready else 0.0)
