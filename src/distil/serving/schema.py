"""Request parsing and validation (every bad input is a 4xx with a clear message), and the chat answer's shape."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request


class HTTPProblem(Exception):
    """An error answered to the client as JSON with an HTTP status (never a 500)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


def check_content_length(value: str | None, max_body_bytes: int) -> None:
    """Refuse a ``Content-Length`` that is not a number (400) or over ``max_body_bytes`` (413)."""
    if value is None:
        return
    try:
        declared = int(value)
    except ValueError:
        raise HTTPProblem(400, f"Content-Length header is not a number: {value[:40]!r}") from None
    if declared > max_body_bytes:
        raise HTTPProblem(
            413, f"request body of {declared} bytes is over the limit of {max_body_bytes} bytes; "
            "send fewer or shorter inputs per request",
        )


def body_too_large(max_body_bytes: int) -> HTTPProblem:
    """The 413 for a body that grew over ``max_body_bytes`` while it was read."""
    return HTTPProblem(
        413, f"request body is over the limit of {max_body_bytes} bytes; send fewer or shorter inputs per request"
    )


async def read_json(request: Request) -> Any:
    """The request body as JSON; empty, non-UTF-8 and malformed bodies are 400s.

    The size limits are the body-limit middleware's (:class:`distil.serving.middleware.BodyLimitMiddleware`).
    """
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
    if not body.strip():
        raise HTTPProblem(400, "the request body is empty; expected a JSON object")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPProblem(
            400, f"the request body is not UTF-8 (invalid byte 0x{body[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPProblem(
            400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise HTTPProblem(400, "the request body is not valid JSON: nested too deeply") from None


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, int | float) else type(v).__name__
    )


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise HTTPProblem(422, f"{where} must be a string, found {_type_name(value)}")
    if not value.strip():
        raise HTTPProblem(422, f"{where} is empty; every input needs some text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPProblem(
            422, f"{where} contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode"
        ) from None
    return value


def parse_classify(obj: Any, max_inputs: int) -> list[str]:
    """The texts of a ``/v1/classify`` body: ``{"inputs": "text" | ["text", ...]}``, at most ``max_inputs``."""
    if not isinstance(obj, dict):
        raise HTTPProblem(
            422, f'expected a JSON object like {{"inputs": ["text", ...]}}, found {_type_name(obj)}'
        )
    unknown = sorted(set(obj) - {"inputs"})
    if unknown:
        raise HTTPProblem(422, f"unknown key(s) {unknown}; the body takes only 'inputs'")
    if "inputs" not in obj:
        raise HTTPProblem(422, "missing key 'inputs' (a string or a list of strings)")
    inputs = obj["inputs"]
    if isinstance(inputs, str):
        return [_check_text(inputs, "inputs")]
    if not isinstance(inputs, list):
        raise HTTPProblem(422, f"'inputs' must be a string or a list of strings, found {_type_name(inputs)}")
    if not inputs:
        raise HTTPProblem(422, "'inputs' is an empty list; send at least one text")
    if len(inputs) > max_inputs:
        raise HTTPProblem(
            422,
            f"'inputs' holds {len(inputs)} texts, over the limit of {max_inputs} per request; "
            "split the batch",
        )
    return [_check_text(v, f"inputs[{i}]") for i, v in enumerate(inputs)]


def _message_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return _check_text(content, where)
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            is_text = (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            )
            if not is_text:
                raise HTTPProblem(
                    422, f"{where}[{j}] must be a text part {{\"type\": \"text\", \"text\": \"...\"}}; "
                    "only text is supported",
                )
            parts.append(part["text"])
        return _check_text("\n".join(parts), where)
    raise HTTPProblem(422, f"{where} must be a string or a list of text parts, found {_type_name(content)}")


def _check_chat_options(obj: dict[str, Any]) -> str | None:
    """Refuse what a classifier cannot do (streaming, several answers); the ``model`` asked for, if any."""
    if obj.get("stream"):
        raise HTTPProblem(400, "stream=true is not supported by this endpoint; send stream=false or omit it")
    n = obj.get("n", 1)
    if n != 1:
        raise HTTPProblem(400, f"n={n!r} is not supported; a classifier gives one answer (n=1)")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise HTTPProblem(422, f"'model' must be a string, found {_type_name(model)}")
    return model


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem(422, "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if not isinstance(m, dict):
            raise HTTPProblem(422, f"messages[{i}] must be an object, found {_type_name(m)}")
        if m.get("role") == "user":
            if "content" not in m:
                raise HTTPProblem(422, f"messages[{i}] has no 'content'")
            return _message_text(m["content"], f"messages[{i}].content")
    raise HTTPProblem(422, "no message with role 'user'; the last user message is the text to classify")


def parse_chat(obj: Any) -> tuple[str, str | None]:
    """The text (the last user message's content) and the ``model`` of a ``/v1/chat/completions`` body."""
    if not isinstance(obj, dict):
        raise HTTPProblem(422, f"expected a JSON object with 'messages', found {_type_name(obj)}")
    model = _check_chat_options(obj)
    return _last_user_text(obj.get("messages")), model


def chat_completion(text: str, model: str, answer: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI-shaped answer: the label as the message, word counts as usage, the details under ``distil``."""
    words_in, words_out = len(text.split()), len(answer["label"].split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer["label"]},
            "finish_reason": "stop",
            "logprobs": None,
        }],
        "usage": {"prompt_tokens": words_in, "completion_tokens": words_out, "total_tokens": words_in + words_out},
        "distil": answer,
    }
