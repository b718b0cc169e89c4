"""Serve the student over HTTP, with the teacher behind it for the inputs the student should not answer.

One file per job: :mod:`.app` (``create_app``: routes, middleware, exception handlers; ``serve``
runs it with uvicorn), :mod:`.state` (the cascade, batcher, gateway and metrics of one app),
:mod:`.middleware` (timing, auth, body limits, catch-all), :mod:`.handlers` (JSON errors),
:mod:`.schema` (request parsing), :mod:`.metrics` (Prometheus), :mod:`.breaker` (circuit
breaker), :mod:`.batcher` (micro-batcher), :mod:`.gateway` (async teacher gateway).  Who answers
is :mod:`distil.cascade`'s rule (``Cascade.decide`` then ``resolve``).

Endpoints
---------
``POST /v1/classify``
    ``{"inputs": "text" | ["text", ...]}`` → ``[{"label", "score", "source", "confidence", "ood",
    "degraded"}, ...]``, one per input, in order.  ``source`` is ``"student"`` or ``"teacher"``;
    ``score`` is the probability the answering model gave ``label``; ``confidence`` is the
    student's calibrated top probability; ``routing_score`` is what the router compared with its
    threshold (the learned acceptor's probability that the student agrees with the teacher, or the
    confidence); ``ood`` says the input looked unlike the training data;
    ``degraded`` is true when the input should have gone to the teacher but the teacher could not
    answer (down, slow, circuit open, no teacher configured), so the student answered instead.
``POST /v1/chat/completions``
    An OpenAI-compatible facade: the last user message's content is the text; the answer's
    ``choices[0].message.content`` is the label; ``model`` is echoed; ``usage`` counts
    whitespace-separated words (there is no tokenizer on this path).  ``stream: true`` is refused
    (400).  The routing details are under the extra key ``distil``.
``GET /healthz``
    The process is alive.
``GET /readyz``
    The student is loaded and the batching worker runs (503 otherwise).  Ready even when the
    teacher is down: the server then answers degraded.
``GET /metrics``
    Prometheus text format: requests, inputs by source, share routed to the teacher, latency
    histogram, errors, degraded answers, teacher calls and circuit state.

Safety and robustness: binds 127.0.0.1 by default; an optional bearer token (``401`` without it;
``/healthz`` and ``/readyz`` stay open for probes); request bodies over ``max_body_bytes`` get
``413``; more than ``max_inputs`` inputs ``422``; malformed JSON or non-UTF-8 bodies ``400``;
wrong types or empty texts ``422`` — every error is JSON ``{"error": {"message", "type", "code"}}``
and the server keeps serving.

Concurrent requests are micro-batched for the student: a worker collects requests until
``max_batch`` inputs are waiting or ``max_wait_ms`` passed since the first, and runs the router
once for all of them in a worker thread.  Inputs routed to the teacher go through
:func:`distil.label.label` with ``source="serve"``, so every teacher answer lands in the journal
and the next ``distil train`` learns from it.  A circuit breaker guards the teacher: after
``breaker_failures`` consecutive failures (errors, timeouts, budget stops) it opens for
``breaker_cooldown_s`` seconds, during which the student answers alone, flagged ``degraded``.

Nothing here imports torch when the student is a numpy one (ngram, static).
"""

from __future__ import annotations

from distil.serving.app import create_app, serve
from distil.serving.batcher import MicroBatcher
from distil.serving.breaker import CircuitBreaker
from distil.serving.gateway import TeacherGateway, TeacherReply
from distil.serving.metrics import Metrics
from distil.serving.schema import HTTPProblem
from distil.serving.state import ServerState

__all__ = [
    "CircuitBreaker",
    "HTTPProblem",
    "Metrics",
    "MicroBatcher",
    "ServerState",
    "TeacherGateway",
    "TeacherReply",
    "create_app",
    "serve",
]
