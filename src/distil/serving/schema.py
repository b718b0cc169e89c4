"""Request parsing and validation (every bad input is a 4xx with a clear message), and the chat answer's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

#: ``function_to_apply`` values that leave a student's calibrated probabilities as they are.
_SOFTMAX_LIKE = (None, "softmax")


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


def type_name(v: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, boolean, null)."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, int | float) else type(v).__name__
    )


def _check_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise HTTPProblem(422, f"{where} must be a string, found {type_name(value)}")
    if not value.strip():
        raise HTTPProblem(422, f"{where} is empty; every input needs some text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPProblem(
            422, f"{where} contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode"
        ) from None
    return value


@dataclass(frozen=True)
class HFOptions:
    """The ``parameters`` of a Hugging Face text-classification request."""

    top_k: int | None = None


def parse_hf_parameters(value: Any) -> HFOptions:
    """``{"top_k": int, "function_to_apply": "softmax"}`` (both optional); anything else is a 422."""
    if value is None:
        return HFOptions()
    if not isinstance(value, dict):
        raise HTTPProblem(422, f"'parameters' must be an object like {{\"top_k\": 3}}, found {type_name(value)}")
    unknown = sorted(set(value) - {"top_k", "function_to_apply"})
    if unknown:
        raise HTTPProblem(422, f"unknown parameter(s) {unknown}; text classification takes top_k and function_to_apply")
    top_k = value.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise HTTPProblem(422, f"'parameters.top_k' must be an integer >= 1, found {top_k!r}")
    fn = value.get("function_to_apply")
    if fn not in _SOFTMAX_LIKE:
        raise HTTPProblem(
            422, f"'parameters.function_to_apply' {fn!r} is not supported: the student's scores are calibrated "
            "softmax probabilities; send \"softmax\" or leave it out",
        )
    return HFOptions(top_k=top_k)


def parse_classify(obj: Any, max_inputs: int) -> tuple[list[str], HFOptions | None]:
    """The texts of a ``/v1/classify`` body, ``{"inputs": "text" | ["text", ...]}`` (at most ``max_inputs``),
    and the Hugging Face options when the body carries ``parameters`` (the HF Inference shape), else None."""
    if not isinstance(obj, dict):
        raise HTTPProblem(
            422, f'expected a JSON object like {{"inputs": ["text", ...]}}, found {type_name(obj)}'
        )
    unknown = sorted(set(obj) - {"inputs", "parameters"})
    if unknown:
        raise HTTPProblem(422, f"unknown key(s) {unknown}; the body takes 'inputs' and optionally 'parameters'")
    if "inputs" not in obj:
        raise HTTPProblem(422, "missing key 'inputs' (a string or a list of strings)")
    hf = parse_hf_parameters(obj["parameters"]) if "parameters" in obj else None
    return _classify_texts(obj["inputs"], max_inputs), hf


def _classify_texts(inputs: Any, max_inputs: int) -> list[str]:
    if isinstance(inputs, str):
        return [_check_text(inputs, "inputs")]
    if not isinstance(inputs, list):
        raise HTTPProblem(422, f"'inputs' must be a string or a list of strings, found {type_name(inputs)}")
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
    raise HTTPProblem(422, f"{where} must be a string or a list of text parts, found {type_name(content)}")


@dataclass(frozen=True)
class ChatRequest:
    """What a ``/v1/chat/completions`` body asks: the text, the model name, ``stream``, ``logprobs``."""

    text: str
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    top_logprobs: int | None = None  # None: no logprobs asked


def _check_chat_options(obj: dict[str, Any]) -> dict[str, Any]:
    """Refuse what a classifier cannot do (several answers); the ``model``, ``stream`` and ``logprobs`` asked."""
    n = obj.get("n", 1)
    if n != 1:
        raise HTTPProblem(400, f"n={n!r} is not supported; a classifier gives one answer (n=1)")
    model = obj.get("model")
    if model is not None and not isinstance(model, str):
        raise HTTPProblem(422, f"'model' must be a string, found {type_name(model)}")
    stream = obj.get("stream", False)
    if not isinstance(stream, bool):
        raise HTTPProblem(422, f"'stream' must be true or false, found {type_name(stream)}")
    usage = obj.get("stream_options") or {}
    if not isinstance(usage, dict):
        raise HTTPProblem(422, f"'stream_options' must be an object, found {type_name(usage)}")
    return {"model": model, "stream": stream, "include_usage": bool(usage.get("include_usage")),
            "top_logprobs": parse_chat_logprobs(obj)}


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise HTTPProblem(422, "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if not isinstance(m, dict):
            raise HTTPProblem(422, f"messages[{i}] must be an object, found {type_name(m)}")
        if m.get("role") == "user":
            if "content" not in m:
                raise HTTPProblem(422, f"messages[{i}] has no 'content'")
            return _message_text(m["content"], f"messages[{i}].content")
    raise HTTPProblem(422, "no message with role 'user'; the last user message is the text to classify")


def parse_chat_logprobs(obj: Mapping[str, Any]) -> int | None:
    """How many alternatives the chat body asks for: None without ``logprobs``, else ``top_logprobs`` (0-20)."""
    want = obj.get("logprobs")
    if want is None or want is False:
        return None
    if want is not True:
        raise HTTPProblem(422, f"'logprobs' must be true or false, found {type_name(want)}")
    n = obj.get("top_logprobs", 0)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 20:
        raise HTTPProblem(422, f"'top_logprobs' must be an integer from 0 to 20, found {n!r}")
    return n


def parse_chat(obj: Any) -> ChatRequest:
    """The text (the last user message's content) and the options of a ``/v1/chat/completions`` body."""
    if not isinstance(obj, dict):
        raise HTTPProblem(422, f"expected a JSON object with 'messages', found {type_name(obj)}")
    options = _check_chat_options(obj)
    return ChatRequest(_last_user_text(obj.get("messages")), **options)


def chat_completion(
    text: str, model: str, answer: dict[str, Any], logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The OpenAI-shaped answer: the label as the message, word counts as usage, the details under ``distil``."""
    from distil.serving.dialects import completion_id

    words_in, words_out = len(text.split()), len(answer["label"].split())
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer["label"]},
            "finish_reason": "stop",
            "logprobs": logprobs,
        }],
        "usage": {"prompt_tokens": words_in, "completion_tokens": words_out, "total_tokens": words_in + words_out},
        "distil": answer,
    }
