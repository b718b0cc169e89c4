"""The FastAPI app: build the state, add the middleware and exception handlers, register the routes; run it.

``create_app(artifact_dir, task=...)`` builds the app; ``serve(...)`` runs it with uvicorn.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.errors import ConfigError, MissingExtra
from distil.route import Router

try:  # the serve extra; create_app raises MissingExtra without it
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from distil.serving.handlers import add_exception_handlers
    from distil.serving.middleware import AuthMiddleware, BodyLimitMiddleware, CatchAllMiddleware, TimingMiddleware

    _HAVE_FASTAPI = True
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_FASTAPI = False

from distil.serving.dialects import chat_logprobs, model_list, stream_chunks
from distil.serving.metrics import CONTENT_TYPE
from distil.serving.schema import ChatRequest, chat_completion, parse_chat, parse_classify, read_json
from distil.serving.state import ServerState, build_state

if TYPE_CHECKING:
    from distil.task import Task
    from distil.teachers.base import Teacher

log = logging.getLogger(__name__)

CLASSIFY = ("POST", "/v1/classify")
#: The Hugging Face Inference shape at the root, for clients given the server's bare URL.
HF_ROOT = ("POST", "/")
CHAT = ("POST", "/v1/chat/completions")
MODELS = ("GET", "/v1/models")
METRICS = ("GET", "/metrics")
#: The JSON API: size-limited, counted and timed, its errors JSON (the probes and metrics are not).
API = frozenset({CLASSIFY, HF_ROOT, CHAT})
#: Behind the bearer token when there is one (``/healthz`` and ``/readyz`` stay open for probes).
PROTECTED = API | {METRICS, MODELS}


def create_app(
    artifact_dir: str | Path | Router,
    *,
    task: Task | str | Path | None = None,
    target_agreement: float | None = None,
    threshold: float | None = None,
    token: str | None = None,
    level: float | None = None,
    max_batch: int = 64,
    max_wait_ms: float = 0.0,
    max_body_bytes: int = 1_000_000,
    max_inputs: int = 256,
    teacher: Teacher | None = None,
    teacher_timeout_s: float = 30.0,
    teacher_concurrency: int = 4,
    breaker_failures: int = 5,
    breaker_cooldown_s: float = 30.0,
    read_timeout_s: float = 10.0,
    max_batch_chars: int = 4096,
) -> FastAPI:
    """Build the serving app for an artifact (or a ready :class:`~distil.route.Router`).

    ``task`` (a :class:`~distil.task.Task` or the path of its task.toml) supplies the teacher
    (``make_teacher(task)`` unless ``teacher`` is given) and the journal its answers go to;
    without a task, inputs routed to the teacher are answered by the student, flagged
    ``degraded``.  ``target_agreement`` (and ``level``) certify a new confidence threshold on the
    artifact's stored calibration scores; ``threshold`` sets it directly.  ``max_wait_ms`` > 0 holds
    a request up to that long to batch it with others (0: batch only what is already waiting).
    ``token`` requires ``Authorization: Bearer``.  A body that stalls for ``read_timeout_s`` gets a 408.
    The student routes at most ``max_batch`` texts and ``max_batch_chars`` characters per call, shared
    fairly between waiting requests (see :class:`~distil.serving.batcher.MicroBatcher`).
    """
    if not _HAVE_FASTAPI:  # pragma: no cover - depends on the environment
        raise MissingExtra("fastapi", "serve")
    if token is not None and not token.strip():
        raise ConfigError("the bearer token is empty", hint="set a long random token, or pass none to serve without")
    if max_inputs < 1 or max_body_bytes < 1:
        raise ConfigError(f"max_inputs and max_body_bytes must be >= 1, found {max_inputs}, {max_body_bytes}")
    st = build_state(
        artifact_dir, task=task, target_agreement=target_agreement, threshold=threshold, teacher=teacher,
        level=level, max_batch=max_batch, max_batch_chars=max_batch_chars, max_wait_ms=max_wait_ms,
        teacher_timeout_s=teacher_timeout_s,
        teacher_concurrency=teacher_concurrency, breaker_failures=breaker_failures,
        breaker_cooldown_s=breaker_cooldown_s,
    )
    app = FastAPI(
        title="distil", description="A distilled student with its teacher behind it.", lifespan=_lifespan(st),
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.state.distil = st
    add_middleware(app, st, token=token, max_body_bytes=max_body_bytes, read_timeout_s=read_timeout_s)
    add_exception_handlers(app, st.metrics)
    register_routes(app, st, max_inputs=max_inputs)
    return app


def _lifespan(st: ServerState) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        st.start()
        try:
            yield
        finally:
            await st.stop()

    return lifespan


def add_middleware(
    app: FastAPI, st: ServerState, *, token: str | None, max_body_bytes: int, read_timeout_s: float = 10.0
) -> None:
    """Outermost first: timing and counts, bearer-token auth, body limits, the catch-all 500."""
    # add_middleware puts each one outside those added before it: add from the innermost out
    app.add_middleware(CatchAllMiddleware, metrics=st.metrics, endpoints=API)
    app.add_middleware(
        BodyLimitMiddleware, metrics=st.metrics, max_body_bytes=max_body_bytes, endpoints=API,
        read_timeout_s=read_timeout_s,
    )
    if token is not None:
        app.add_middleware(AuthMiddleware, metrics=st.metrics, token=token, endpoints=PROTECTED)
    app.add_middleware(TimingMiddleware, metrics=st.metrics, endpoints=API)


def register_routes(app: FastAPI, st: ServerState, *, max_inputs: int) -> None:
    """The answering endpoints (:func:`register_answers`), ``/healthz``, ``/readyz`` and ``/metrics``."""
    register_answers(app, st, max_inputs=max_inputs)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = st.ready and st.batcher.running
        return JSONResponse(readiness(st, ok), 200 if ok else 503)

    @app.get(METRICS[1])
    async def metrics() -> Response:
        return Response(st.metrics.render(), media_type=CONTENT_TYPE)


def register_answers(app: FastAPI, st: ServerState, *, max_inputs: int) -> None:
    """``/v1/classify`` (distil's shape, or Hugging Face's with ``parameters``), ``POST /`` (Hugging Face's),
    ``/v1/chat/completions`` (with ``logprobs`` and ``stream``) and ``/v1/models``."""

    @app.post(CLASSIFY[1])
    async def classify(request: Request) -> Response:
        texts, hf = parse_classify(await read_json(request), max_inputs)
        answers = await st.classify(texts)
        if hf is None:
            return JSONResponse(answers)
        return JSONResponse(await st.ranked(texts, answers, hf.top_k))

    @app.post(HF_ROOT[1])
    async def hf_root(request: Request) -> Response:
        texts, hf = parse_classify(await read_json(request), max_inputs)
        answers = await st.classify(texts)
        return JSONResponse(await st.ranked(texts, answers, hf.top_k if hf is not None else None))

    @app.post(CHAT[1])
    async def chat(request: Request) -> Response:
        ask = parse_chat(await read_json(request))
        completion = await chat_answer(st, ask)
        if not ask.stream:
            return JSONResponse(completion)
        return StreamingResponse(
            stream_chunks(completion, include_usage=ask.include_usage), media_type="text/event-stream"
        )

    @app.get(MODELS[1])
    async def models() -> dict[str, Any]:
        return model_list(st.model_name, created=st.router.config.created_at)


async def chat_answer(st: ServerState, ask: ChatRequest) -> dict[str, Any]:
    """The chat completion for one request: the served label, with its logprobs when asked."""
    answer = (await st.classify([ask.text]))[0]
    logprobs = None
    if ask.top_logprobs is not None:
        top = (await st.ranked([ask.text], [answer], max(1, ask.top_logprobs)))[0]
        logprobs = chat_logprobs(top, ask.top_logprobs)
    return chat_completion(ask.text, ask.model or st.model_name, answer, logprobs)


def readiness(st: ServerState, ok: bool) -> dict[str, Any]:
    """The ``/readyz`` body: valid JSON in every state, with the reasons the server is degraded."""
    threshold = st.router.threshold
    local = math.isfinite(threshold)
    teacher = st.breaker.state if st.gateway.available else "none"
    reasons = []
    if not local:
        reasons.append("no threshold met the target agreement: every input goes to the teacher")
    if teacher == "none":
        reasons.append("no teacher: the student answers everything, marked degraded where it should not")
    elif teacher == "open":
        reasons.append("the teacher failed repeatedly (circuit open): its inputs get the student's answer, degraded")
    if st.gateway.last_error is not None:
        reasons.append(
            f"the teacher's last call failed ({st.gateway.last_error}); it is tried again after the cool-down"
        )
    if st.router.ood is None:
        reasons.append("no OOD guard: unfamiliar inputs are not sent to the teacher")
    return {
        "ready": ok, "student": st.router.config.member, "threshold": threshold if local else None,
        "answers_locally": local, "ood_guard": st.router.ood is not None, "teacher": teacher,
        "degraded": reasons, "rungs": st.router.config.rungs, "score": st.router.config.score,
        "companions": st.router.config.companions,
    }


def describe_server(st: ServerState, url: str) -> str:
    """What ``distil serve`` prints at start: where, who answers, under what rule, and what to call."""
    router = st.router
    rungs = " -> ".join(router.config.rungs)
    teacher = "none: inputs meant for it get the student's answer, flagged degraded"
    task = st.gateway.task
    if st.gateway.available and task is not None and task.teacher is not None:
        teacher = f"{task.teacher.kind} (answers journaled to {task.journal_path})"
    guard = "on" if router.ood is not None else "off (unfamiliar inputs are not sent to the teacher)"
    return "\n".join([
        f"distil serving {st.model_name} on {url}",
        f"  students: {rungs}; labels: {len(router.labels)}",
        f"  routing on the {_score_words(router.config)}: {router.config.threshold.describe()}",
        f"  OOD guard: {guard}",
        f"  teacher: {teacher}",
        f"  try: curl -s {url}/v1/classify -H 'content-type: application/json' -d '{{\"inputs\": [\"...\"]}}'",
        "  also: POST / (Hugging Face shape), POST /v1/chat/completions, GET /v1/models, /readyz, /metrics",
    ])


def _score_words(cfg: Any) -> str:
    """What the router's threshold applies to, for the start-up lines."""
    if cfg.score != "acceptor":
        return "student's confidence"
    reads = f", reading {', '.join(cfg.companions)} run beside it" if cfg.companions else ""
    return f"learned acceptor's P(agree with the teacher){reads}"


def run_app(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run a :func:`create_app` app with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra("uvicorn", "serve") from exc
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def check_exposure(host: str, token: str | None) -> None:
    """Warn when a server without a bearer token listens beyond loopback."""
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        log.warning("serving on %s without a bearer token: anyone who can reach it can use the teacher", host)


def serve(
    artifact_dir: str | Path,
    *,
    task: Task | str | Path | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    target_agreement: float | None = None,
    threshold: float | None = None,
    token: str | None = None,
    log_level: str = "info",
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Run :func:`create_app` with uvicorn until interrupted (binds 127.0.0.1 unless told otherwise).

    ``announce(text)`` gets :func:`describe_server`'s lines once the app is built (the CLI prints them).
    ``options`` go to :func:`create_app` (``max_batch``, ``max_wait_ms``, ``max_body_bytes``,
    ``max_inputs``, ``teacher_timeout_s``, ``breaker_failures``, ``breaker_cooldown_s``...).
    """
    check_exposure(host, token)
    app = create_app(
        artifact_dir, task=task, target_agreement=target_agreement, threshold=threshold, token=token,
        **options,
    )
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(describe_server(app.state.distil, f"http://{shown}:{port}"))
    run_app(app, host=host, port=port, log_level=log_level)
