"""The one place a chat-completions reply is checked against the shape the ``openai`` teacher reads.

:func:`parse_reply` turns a 2xx body into a :class:`Reply` or raises :class:`MalformedReply`
naming the field and the JSON type found.  Everything after it reads typed fields only, so a
server that sends ``"logprobs": "lots"``, a ``choices`` object, a ``message`` string or a
``usage`` list cannot crash a run: that one answer is stored as ``invalid`` with the raw body.

The shape (absent and ``null`` are the same everywhere)::

    {"choices": [                                   # a list (may be empty)
        {"message": {"content": str | null,         # or "refusal": str, or completions-style "text": str
                     "refusal": str | null},
         "finish_reason": str | null,
         "logprobs": {"content": [                  # a list of
             {"token": str, "logprob": number,      # never NaN
              "top_logprobs": [{"token": str, "logprob": number}, ...]}]}}],
     "usage": {"prompt_tokens": int >= 0, "completion_tokens": int >= 0}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: Characters of a malformed body kept as the answer's raw text.
MAX_RAW_CHARS = 20_000


class MalformedReply(Exception):
    """A 2xx reply that is not the shape above; ``raw`` is its body (cut to :data:`MAX_RAW_CHARS`)."""

    def __init__(self, reason: str, raw: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw[:MAX_RAW_CHARS]


@dataclass(frozen=True)
class Choice:
    """One checked choice: its text, its logprob items (None when absent) and why it ended."""

    content: str
    logprobs: list[dict[str, Any]] | None
    finish_reason: str | None


@dataclass(frozen=True)
class Reply:
    """A checked reply: its choices and the tokens it reported (None when it reported none)."""

    choices: list[Choice]
    usage: tuple[int, int] | None
    cached: int = 0  # prompt tokens the server read from its prompt cache (usage.prompt_tokens_details)

    def content(self) -> str:
        """The first choice's text ('' when there is none)."""
        return self.choices[0].content if self.choices else ""

    def finish_reason(self) -> str | None:
        """Why the first choice ended (``length``: cut at max_tokens)."""
        return self.choices[0].finish_reason if self.choices else None

    def has_top_logprobs(self) -> bool:
        """Whether the first choice carries ``top_logprobs`` anywhere."""
        items = self.choices[0].logprobs if self.choices else None
        return bool(items) and any(it.get("top_logprobs") for it in items or [])

    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) tokens reported, 0 where absent."""
        return self.usage or (0, 0)


def parse_reply(raw: str) -> Reply:
    """Check a 2xx body and return it typed; :class:`MalformedReply` names the first wrong field."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedReply("the body is not JSON", raw) from None
    try:
        obj = _object(body, "the body")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            raise _Wrong("choices", choices, "a list")
        usage = _usage(obj.get("usage"))
        return Reply([_choice(c, f"choices[{i}]") for i, c in enumerate(choices)], usage,
                     _cached(obj.get("usage"), usage))
    except _Wrong as exc:
        raise MalformedReply(str(exc), raw) from None


class _Wrong(Exception):
    def __init__(self, where: str, value: Any, expected: str) -> None:
        found = "NaN" if isinstance(value, float) and math.isnan(value) else _json_type(value)
        super().__init__(f"reply field '{where}' is {found}, expected {expected}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Wrong(where, value, "an object")
    return value


def _optional(obj: dict[str, Any], key: str, kind: type, where: str, expected: str) -> Any:
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise _Wrong(f"{where}.{key}", value, expected)
    return value


def _choice(value: Any, where: str) -> Choice:
    choice = _object(value, where)
    message = _optional(choice, "message", dict, where, "an object") or {}
    content = _optional(message, "content", str, f"{where}.message", "a string")
    refusal = _optional(message, "refusal", str, f"{where}.message", "a string")
    text = _optional(choice, "text", str, where, "a string")
    reason = _optional(choice, "finish_reason", str, where, "a string")
    # the answer's text: the content, else OpenAI's structured-output refusal, else completions-style text
    answer = next((x for x in (content, refusal, text) if x is not None), "")
    return Choice(answer, _logprobs(choice, where), reason)


def _logprobs(choice: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    lp = _optional(choice, "logprobs", dict, where, "an object")
    if lp is None:
        return None
    items = _optional(lp, "content", list, f"{where}.logprobs", "a list")
    if items is None:
        return None
    for j, item in enumerate(items):
        at = f"{where}.logprobs.content[{j}]"
        _token(item, at)
        for k, alt in enumerate(_optional(item, "top_logprobs", list, at, "a list") or []):
            _token(alt, f"{at}.top_logprobs[{k}]")
    return list(items)


def _token(value: Any, where: str) -> None:
    item = _object(value, where)
    if not isinstance(item.get("token"), str):
        raise _Wrong(f"{where}.token", item.get("token"), "a string")
    lp = item.get("logprob")
    if isinstance(lp, bool) or not isinstance(lp, int | float) or math.isnan(lp):
        raise _Wrong(f"{where}.logprob", lp, "a number")


def _cached(value: Any, usage: tuple[int, int] | None) -> int:
    """``usage.prompt_tokens_details.cached_tokens`` (OpenAI's prompt caching), capped at the prompt tokens; else 0."""
    if usage is None or not isinstance(value, dict):
        return 0
    details = value.get("prompt_tokens_details")
    if details is None:
        return 0
    n = _object(details, "usage.prompt_tokens_details").get("cached_tokens")
    if n is None:
        return 0
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _Wrong("usage.prompt_tokens_details.cached_tokens", n, "a whole number >= 0")
    return min(int(n), usage[0])


def _usage(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    usage = _object(value, "usage")
    counts = []
    for key in ("prompt_tokens", "completion_tokens"):
        n = usage.get(key)
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise _Wrong(f"usage.{key}", n, "a whole number >= 0")
        counts.append(n)
    if counts[0] is None and counts[1] is None:
        return None
    return int(counts[0] or 0), int(counts[1] or 0)
