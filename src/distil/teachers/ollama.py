"""Ollama's native chat API (``POST /api/chat``) in and out of the chat-completions shape.

Ollama's OpenAI-compatible ``/v1`` offers neither logprobs nor ``n``, so ``probs = "auto"`` there falls
back to several sampled answers per text.  Its native ``/api/chat`` returns logprobs
(``logprobs: true``, ``top_logprobs: k``; one ``{token, logprob, top_logprobs}`` entry per generated
token) and takes a JSON schema as ``format``.  ``api = "ollama"`` in ``[teacher]`` sends every request
there: :func:`to_ollama` turns the request distil builds into Ollama's (sampling settings under
``options``: ``temperature``, ``num_predict``, ``seed``), and :func:`from_ollama` turns the answer back
(``message``, ``logprobs``, and ``prompt_eval_count``/``eval_count`` as usage), so that everything
after the wire — parsing, label probabilities, cost — is the one path every server takes.
"""

from __future__ import annotations

import json
from typing import Any

#: Request keys distil sets that Ollama takes elsewhere (under ``options``, or as ``format``) or not at all.
_MAPPED = frozenset({"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "seed", "n",
                     "logprobs", "top_logprobs", "response_format", "reasoning_effort"})


def chat_url(base_url: str) -> str:
    """``/api/chat`` under the server's root (a trailing ``/v1`` or ``/api`` is dropped)."""
    root = base_url.rstrip("/")
    for suffix in ("/v1", "/api"):
        root = root.removesuffix(suffix)
    return root + "/api/chat"


def to_ollama(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat-completions request as Ollama's native one (``extra_body`` keys such as ``think`` pass through)."""
    out: dict[str, Any] = {"model": payload["model"], "messages": payload["messages"], "stream": False}
    options: dict[str, Any] = {}
    if "temperature" in payload:
        options["temperature"] = payload["temperature"]
    limit = payload.get("max_tokens", payload.get("max_completion_tokens"))
    if limit is not None:
        options["num_predict"] = limit
    if "seed" in payload:
        options["seed"] = payload["seed"]
    if options:
        out["options"] = options
    if payload.get("logprobs"):
        out["logprobs"] = True
        out["top_logprobs"] = int(payload.get("top_logprobs", 0))
    rf = payload.get("response_format")
    if isinstance(rf, dict):
        schema = (rf.get("json_schema") or {}).get("schema") or rf.get("schema")
        out["format"] = schema if schema else "json"
    out.update({k: v for k, v in payload.items() if k not in _MAPPED})
    return out


def from_ollama(text: str) -> str:
    """An Ollama chat answer as a chat-completions body; anything else is returned as it came (and is then
    judged malformed by :func:`distil.teachers.reply.parse_reply`, with the raw text kept)."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return text
    choice: dict[str, Any] = {
        "index": 0, "message": body["message"],
        "finish_reason": "length" if body.get("done_reason") == "length" else "stop",
    }
    if isinstance(body.get("logprobs"), list):
        choice["logprobs"] = {"content": body["logprobs"]}
    out: dict[str, Any] = {"object": "chat.completion", "model": body.get("model"), "choices": [choice]}
    if "prompt_eval_count" in body or "eval_count" in body:
        t_in, t_out = int(body.get("prompt_eval_count") or 0), int(body.get("eval_count") or 0)
        out["usage"] = {"prompt_tokens": t_in, "completion_tokens": t_out, "total_tokens": t_in + t_out}
    return json.dumps(out)
