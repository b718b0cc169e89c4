"""Exception handlers: every error the server answers is JSON ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from distil.errors import DistilError
from distil.serving.metrics import Metrics
from distil.serving.schema import HTTPProblem

log = logging.getLogger(__name__)


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """The JSON error body with its status (and ``WWW-Authenticate: Bearer`` on a 401)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    payload = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(payload, status, headers=headers)


def problem_response(metrics: Metrics, exc: HTTPProblem) -> JSONResponse:
    """A client error (4xx), counted as ``bad_request``."""
    metrics.inc("distil_errors_total", kind="bad_request")
    return error_response(exc.status, exc.message, exc.kind)


def add_exception_handlers(app: Starlette, metrics: Metrics) -> None:
    """Client errors (``HTTPProblem``) → 4xx; distil's own errors → 500; unknown paths 404 and methods 405.

    An unexpected exception is :class:`distil.serving.middleware.CatchAllMiddleware`'s: Starlette answers a
    handler for ``Exception`` from its outermost layer and re-raises, past the request metrics.
    """

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPProblem)
        return problem_response(metrics, exc)

    async def on_distil_error(request: Request, exc: Exception) -> Response:
        metrics.inc("distil_errors_total", kind="internal")
        log.exception("error while serving %s", request.url.path, exc_info=exc)
        return error_response(500, f"internal error: {exc}", "server_error")

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"no such endpoint: {request.method} {request.url.path}", "not_found")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        msg = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(405, msg, "method_not_allowed")

    app.add_exception_handler(HTTPProblem, on_problem)
    app.add_exception_handler(DistilError, on_distil_error)
    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_allowed)
