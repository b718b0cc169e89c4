"""The teacher contract: one batch method; everything else lives once, here and in ``label``.

A teacher turns a batch of texts into one :class:`Answer` per text.  Caching
(the journal), batching, budgets and progress live in :func:`distil.label`;
the HTTP retry loop lives in :func:`retry_call` so that every network teacher
shares one.

:func:`distil.label` drives a teacher through :meth:`Teacher.answer_each`, which hands each
answer over the moment it exists (so it is journaled at once) and spends within a
:class:`~distil.cost.Budget`.  The default sends the texts the budget allows as one
:meth:`Teacher.predict_batch`; a network teacher overrides it to count every request it sends.
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from distil.cost import Budget
from distil.errors import TeacherError
from distil.progress import note
from distil.task import canonical_json

Status = Literal["done", "failed", "invalid"]
#: How the probabilities were obtained; stored in the journal with every answer.
Method = Literal["logprobs", "samples", "onehot", "head", "zeroshot", "function"]


@dataclass
class Answer:
    """A teacher's answer to one text.

    ``probs`` is aligned with the task's label order and sums to 1 when
    ``status == "done"``.  An answer outside the label set is ``invalid`` and keeps
    the raw text; a call that failed for good is ``failed`` with the error.
    """

    status: Status
    probs: list[float] | None = None
    method: Method | None = None
    raw: str | None = None
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1
    # Free-form details worth keeping (e.g. the sampled answers).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label_index(self) -> int | None:
        """Index of the most probable label, or None when there are no probabilities."""
        if not self.probs:
            return None
        return max(range(len(self.probs)), key=self.probs.__getitem__)


#: ``on_answer(i, answer)``: the answer to ``texts[i]``, the moment it exists.
OnAnswer = Callable[[int, "Answer"], None]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a teacher was answering: every answer that arrived was handed over first.

    ``abandoned`` requests were still on the wire and not waited for (the server may bill them).
    """

    def __init__(self, abandoned: int = 0) -> None:
        super().__init__(f"interrupted with {abandoned} requests in flight")
        self.abandoned = abandoned


class Teacher(ABC):
    """Base class of all teachers.  Subclasses implement :meth:`predict_batch` only."""

    #: "openai" | "local" | "function"
    kind: str = "base"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes the answers (model, prompt, labels, sampling) — no secrets, no URLs."""

    @abstractmethod
    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        """Answer every text; one :class:`Answer` per text, in order.  Must not raise for one bad item."""

    def fingerprint(self) -> str:
        """Stable hash of :meth:`identity`; part of every journal key."""
        ident = {"kind": self.kind, "labels": self.labels, **self.identity()}
        return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:24]

    def estimate_cost(self, texts: Sequence[str]) -> float:
        """Dollars the teacher would charge for these texts (0 for local teachers)."""
        return 0.0

    def prices_known(self) -> bool:
        """Whether :meth:`estimate_cost` and the answers' ``cost`` are real prices (a ``max_cost`` needs them).

        False here: a teacher that does not know what its calls cost cannot keep to a dollar budget.
        """
        return False

    def prepare(self, budget: Budget) -> None:  # noqa: B027 - optional hook
        """Get ready to answer (a network teacher probes its server), spending within ``budget``."""

    def shared_state(self) -> Any:
        """What a copy of this teacher in another process needs in order not to prepare again (None: nothing)."""
        return None

    def adopt(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Take :meth:`shared_state` of the teacher that prepared (a worker of a distributed run)."""

    def share_limits(self, buckets: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Throttle through ``buckets`` (``"rpm"``, ``"tpm"``: objects with ``acquire``/``adjust``) shared with
        other processes, instead of this process's own; a teacher without rate limits ignores it."""

    def take_probe_spend(self) -> dict[str, Any] | None:
        """What preparing cost since the last call (``calls``, ``attempts``, tokens, ``cost``); None if nothing.

        :func:`distil.label` journals it, so the probe's requests are counted like any other.
        """
        return None

    def answer_each(self, texts: Sequence[str], on_answer: OnAnswer, budget: Budget) -> None:
        """Answer ``texts``, calling ``on_answer(i, answer)`` for each, within ``budget``.

        Texts the budget has no room for get no answer (``budget.stopped`` says why).  This
        default reserves one request per text at :meth:`estimate_cost`, sends the allowed ones as
        one :meth:`predict_batch` and hands the answers over in order.
        """
        allowed: list[tuple[str, float]] = []
        for text in texts:
            est = self.estimate_cost([text])
            if not budget.reserve(est):
                break
            allowed.append((text, est))
        if not allowed:
            return
        answers = self.predict_batch([t for t, _ in allowed])
        if len(answers) != len(allowed):
            for _, est in allowed:
                budget.settle(est, est)
            raise TeacherError(f"teacher {self.describe()} returned {len(answers)} answers for {len(allowed)} texts")
        for i, (answer, (_, est)) in enumerate(zip(answers, allowed, strict=True)):
            budget.settle(est, answer.cost)
            on_answer(i, answer)

    def describe(self) -> str:
        """One line for progress displays and reports."""
        return self.kind

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or models."""


# ---------------------------------------------------------------------------------------------
# The one retry loop shared by every network teacher.

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

T = TypeVar("T")


class RetryableError(Exception):
    """Raised by an attempt that may succeed if tried again (timeouts, 429, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, capped, honouring Retry-After."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt number ``attempt + 1``."""
        if retry_after is not None and math.isfinite(retry_after):
            return min(max(retry_after, 0.0), self.max_delay * 4)
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return self.rng.uniform(cap / 2, cap)


def retry_call(fn: Callable[[], T], policy: RetryPolicy) -> tuple[T, int]:
    """Call ``fn`` until it returns, retrying :class:`RetryableError`; return (value, attempts).

    Any other exception propagates at once (a 4xx other than 408/409/429 is not retried).
    After ``policy.max_retries`` retries the last :class:`RetryableError` propagates.
    """
    attempt = 0
    while True:
        try:
            return fn(), attempt + 1
        except RetryableError as exc:
            if attempt >= policy.max_retries:
                raise
            wait = policy.delay(attempt, exc.retry_after)
            note("teacher call failed (%s); retry %d of %d in %.1f s", exc, attempt + 1, policy.max_retries, wait)
            policy.sleep(wait)
            attempt += 1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or bad (``nan``, ``inf``)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def normalise(scores: dict[str, float], labels: Sequence[str]) -> list[float] | None:
    """Probabilities over ``labels`` from non-negative scores; None if they are all zero."""
    vec = [max(float(scores.get(lab, 0.0)), 0.0) for lab in labels]
    total = sum(vec)
    if total <= 0:
        return None
    return [v / total for v in vec]
