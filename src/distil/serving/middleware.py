"""ASGI middleware around the API endpoints: request timing and counts, bearer-token auth, body limits, catch-all.

Each applies to a set of ``(method, path)`` endpoints given by :mod:`distil.serving.app`; other
requests pass through untouched.  Plain ASGI (no ``BaseHTTPMiddleware``): no extra task per request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from distil.serving.handlers import error_response, problem_response
from distil.serving.metrics import Metrics
from distil.serving.schema import HTTPProblem, body_too_large, check_content_length

log = logging.getLogger(__name__)

Endpoints = Collection[tuple[str, str]]


def endpoint(scope: Scope, endpoints: Endpoints) -> str | None:
    """The request's path when it is one of ``endpoints`` (an HTTP ``(method, path)``), else None."""
    if scope["type"] != "http" or (scope["method"], scope["path"]) not in endpoints:
        return None
    path: str = scope["path"]
    return path


class _StatusSpy:
    """Wraps ``send``: remembers whether the response started and with which status."""

    def __init__(self, send: Send, status: int) -> None:
        self._send = send
        self.status = status
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
        await self._send(message)


class TimingMiddleware:
    """Count every request by endpoint and status (``distil_requests_total``) and time it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, endpoints: Endpoints) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = endpoint(scope, self.endpoints)
        if path is None:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        spy = _StatusSpy(send, 200)  # 200 unless a response says otherwise (as before the split)
        try:
            await self.app(scope, receive, spy)
        finally:
            self.metrics.inc("distil_requests_total", endpoint=path, code=str(spy.status))
            self.metrics.observe("distil_request_duration_seconds", time.perf_counter() - t0, endpoint=path)


class AuthMiddleware:
    """Require ``Authorization: Bearer <token>`` (401 otherwise, counted as an ``auth`` error)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, token: str, endpoints: Endpoints) -> None:
        self.app = app
        self.metrics = metrics
        self.token = token.encode()
        self.endpoints = endpoints

    def authorised(self, scope: Scope) -> bool:
        """The request carries the bearer token (compared in constant time)."""
        scheme, _, value = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if endpoint(scope, self.endpoints) is None or self.authorised(scope):
            await self.app(scope, receive, send)
            return
        self.metrics.inc("distil_errors_total", kind="auth")
        msg = "missing or wrong bearer token (send 'Authorization: Bearer <token>')"
        await error_response(401, msg, "authentication_error")(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse bodies over ``max_body_bytes`` (413): by their ``Content-Length``, and while they stream in.

    A client that stops sending its body for ``read_timeout_s`` gets a 408: a slow client cannot hold
    a connection (and its worker) open.
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, endpoints: Endpoints,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.endpoints = endpoints
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if endpoint(scope, self.endpoints) is None:
            await self.app(scope, receive, send)
            return
        try:
            check_content_length(Headers(scope=scope).get("content-length"), self.max_body_bytes)
        except HTTPProblem as exc:
            await problem_response(self.metrics, exc)(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        """``receive`` that raises a 413 :class:`HTTPProblem` (to the reader, then its handler) past the limit."""
        seen = 0
        complete = False

        async def limited() -> Message:
            nonlocal seen, complete
            if complete:  # the body is in: later reads wait for a disconnect, untimed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout_s)
            except TimeoutError:
                raise HTTPProblem(408, f"the request body did not arrive within {self.read_timeout_s:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_body_bytes:
                    raise body_too_large(self.max_body_bytes)
            return message

        return limited


class CatchAllMiddleware:
    """The last exception handler: an unexpected error becomes a JSON 500 and the server keeps serving.

    A middleware inside the timing one, not an exception handler for ``Exception``: Starlette runs that
    one from its outermost layer and re-raises, so the request would not be counted with its 500.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, endpoints: Endpoints) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = endpoint(scope, self.endpoints)
        if path is None:
            await self.app(scope, receive, send)
            return
        spy = _StatusSpy(send, 200)
        try:
            await self.app(scope, receive, spy)
        except Exception as exc:  # keep serving; the client gets a JSON 500 with the cause
            if spy.started:
                raise
            self.metrics.inc("distil_errors_total", kind="internal")
            log.exception("unexpected error while serving %s", path)
            await error_response(500, f"internal error: {type(exc).__name__}", "server_error")(scope, receive, send)
