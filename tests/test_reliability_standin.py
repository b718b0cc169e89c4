"""A local OpenAI-compatible stand-in that counts and bills every request it receives.

Used by the reliability tests (kill -9 loops, concurrent runs, budgets, poison replies): it runs
in the test process on a free port (``ThreadingHTTPServer``), answers ``POST /v1/chat/completions``
with a label chosen from the text, and keeps what a provider's invoice would show: every request,
per input text, with the tokens it billed (its own count: UTF-8 bytes / 4 of the messages, so a
little below distil's conservative estimate) at :attr:`StandIn.price`.

Switches: ``usage`` (report ``usage`` or not), ``logprobs`` (honour ``logprobs=true``), ``n`` (honour
``n`` like OpenAI, or ignore it like llama.cpp), ``delay`` (seconds per answer, uniform in a range),
``poison`` (user text → a malformed reply kind, see :data:`POISON`), ``refuse`` (an HTTP status, e.g.
401, that every request gets while it is set: a revoked key; set it back to None to recover),
``reasoning`` (the rules OpenAI's reference gives its reasoning models — o-series, gpt-5: HTTP 400 for
``max_tokens`` (use ``max_completion_tokens``), for a ``temperature`` other than the default 1, and for
``logprobs``), ``top1`` (logprobs with the chosen token alone, at probability 1), ``cached_price`` (the
system message billed as a prompt-cache read at that price, reported in ``prompt_tokens_details``).  Every request's
body and headers are kept in ``payloads`` and ``headers_seen``.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: Malformed reply kinds a poison text gets: the field with the wrong JSON type, or a bad Retry-After.
POISON = ("logprobs", "choices", "message", "usage", "retry_after_nan", "not_json", "content", "top_logprobs")

LABELS = ["card", "transfer", "cash", "other"]


def _tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 4)


class StandIn:
    """The server and its books.  ``price`` is ($ per 1M input tokens, $ per 1M output tokens)."""

    def __init__(
        self,
        *,
        usage: bool = True,
        logprobs: bool = True,
        n: bool = True,
        delay: tuple[float, float] = (0.0, 0.0),
        price: tuple[float, float] = (1.0, 2.0),
        poison: dict[str, str] | None = None,
        labels: list[str] | None = None,
        reasoning: bool = False,
        top1: bool = False,
        cached_price: float | None = None,
    ) -> None:
        self.usage, self.logprobs, self.n, self.delay, self.price = usage, logprobs, n, delay, price
        self.reasoning = reasoning
        self.top1 = top1  # logprobs carry only the chosen token at probability 1 (no soft information)
        # Prompt caching as OpenAI bills it: the system message is read from the cache at this price.
        self.cached_price = cached_price
        self.payloads: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.paths: list[str] = []  # the request path (and query) of every request
        self.poison = dict(poison or {})
        self.labels = labels or LABELS
        self.lock = threading.Lock()
        self.requests = 0
        self.by_text: Counter[str] = Counter()
        self.billed = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered = 0  # replies fully written back
        self._retried: set[str] = set()
        self.refuse: int | None = None
        self._rng = random.Random(0)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The ``base_url`` a task file names."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paid_twice(self) -> int:
        """Inputs (not the probe text) that were asked more than once."""
        return sum(1 for t, c in self.by_text.items() if c > 1 and not t.startswith("Hello, I have"))

    # -- answers -------------------------------------------------------------------------------
    def label_for(self, text: str) -> str:
        """The label the stand-in gives ``text`` (a stable function of the text)."""
        return self.labels[sum(text.encode()) % len(self.labels)]

    def reply(self, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for one request; bills it."""
        text = str(payload["messages"][-1]["content"])
        if self.refuse is not None:
            body = b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}'
            return self.refuse, {}, body
        refusal = self._reasoning_refusal(payload) if self.reasoning else None
        if refusal is not None:
            body = json.dumps({"error": {"message": refusal, "type": "invalid_request_error", "param": None}})
            return 400, {}, body.encode()
        kind = self.poison.get(text)
        if kind == "retry_after_nan":
            with self.lock:
                first = text not in self._retried
                self._retried.add(text)
            if first:
                return 429, {"Retry-After": "nan"}, b'{"error": {"message": "slow down"}}'
        k = int(payload.get("n", 1)) if self.n else 1
        label = self.label_for(text)
        content = json.dumps({"label": label})
        prompt = sum(_tokens(str(m.get("content", ""))) for m in payload["messages"]) + 8
        completion = _tokens(content) * k
        cached = _tokens(str(payload["messages"][0].get("content", ""))) if self.cached_price is not None else 0
        cached_rate = self.price[0] if self.cached_price is None else self.cached_price
        with self.lock:
            self.billed += ((prompt - cached) * self.price[0] + cached * cached_rate + completion * self.price[1]) / 1e6
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": "stop"}
        if payload.get("logprobs") and self.logprobs:
            choice["logprobs"] = {"content": self._logprob_items(label)}
        body: dict[str, Any] = {"id": "x", "object": "chat.completion",
                                "choices": [dict(choice, index=i) for i in range(k)]}
        if self.usage:
            body["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
            if self.cached_price is not None:
                body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
        return 200, {}, self._poisoned(body, kind)

    @staticmethod
    def _reasoning_refusal(payload: dict[str, Any]) -> str | None:
        """OpenAI's 400 messages for what its reasoning models do not take, or None."""
        if "max_tokens" in payload:
            return ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.")
        if "temperature" in payload and payload["temperature"] != 1:
            return (f"Unsupported value: 'temperature' does not support {payload['temperature']} with this model. "
                    "Only the default (1) value is supported.")
        if payload.get("logprobs"):
            return "This model does not support the 'logprobs' parameter."
        return None

    def _logprob_items(self, label: str) -> list[dict[str, Any]]:
        def item(tok: str, alts: list[str]) -> dict[str, Any]:
            top = [{"token": a, "logprob": math.log(0.8 if a == tok else 0.2 / max(len(alts) - 1, 1))}
                   for a in alts]
            return {"token": tok, "logprob": math.log(0.8), "top_logprobs": top}

        head = [item('{"', ['{"']), item("label", ["label"]), item('":', ['":']), item(' "', [' "'])]
        if self.top1:
            sure = {"token": label, "logprob": 0.0, "top_logprobs": [{"token": label, "logprob": 0.0}]}
            return [*head, sure, item('"}', ['"}'])]
        others = [lab for lab in self.labels if lab != label][:2]
        return [*head, item(label, [label, *others]), item('"}', ['"}'])]

    @staticmethod
    def _poisoned(body: dict[str, Any], kind: str | None) -> bytes:
        if kind == "not_json":
            return b"<html>200 OK from a proxy</html>"
        if kind == "choices":
            body["choices"] = {"0": body["choices"][0]}
        elif kind == "message":
            body["choices"][0]["message"] = "the label is card"
        elif kind == "logprobs":
            body["choices"][0]["logprobs"] = "lots"
        elif kind == "top_logprobs":
            body["choices"][0]["logprobs"] = {"content": [{"token": 5, "top_logprobs": {"a": 1}}]}
        elif kind == "usage":
            body["usage"] = ["prompt", 12]
        elif kind == "content":
            body["choices"][0]["message"]["content"] = {"label": "card"}
        return json.dumps(body).encode()

    # -- HTTP ----------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                except (OSError, ValueError):  # a client killed while it was sending: nothing received
                    return
                with standin.lock:
                    standin.payloads.append(payload)
                    standin.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                    standin.paths.append(self.path)
                    standin.requests += 1
                    standin.by_text[str(payload["messages"][-1]["content"])] += 1
                    standin.in_flight += 1
                    standin.max_in_flight = max(standin.max_in_flight, standin.in_flight)
                    lo, hi = standin.delay
                    pause = standin._rng.uniform(lo, hi)
                try:
                    if pause:
                        time.sleep(pause)
                    status, headers, body = standin.reply(payload)
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    with standin.lock:
                        standin.answered += 1
                except OSError:  # the client died (kill -9): the request was still paid
                    pass
                finally:
                    with standin.lock:
                        standin.in_flight -= 1

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


def openai_task(folder: Path, base_url: str, **teacher: Any) -> Path:
    """A task file in ``folder`` whose teacher is the stand-in at ``base_url``."""
    spec: dict[str, Any] = {"kind": "openai", "model": "standin-1", "base_url": base_url, "concurrency": 4,
                            "max_retries": 2, "timeout_s": 10.0, **teacher}
    lines = ['name = "bank"', 'instruction = "Which kind of banking request is this?"',
             f"labels = {json.dumps(LABELS)}", "", "[teacher]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in spec.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_standin_counts_and_bills() -> None:
    import httpx

    with StandIn(usage=True) as s:
        body = {"model": "m", "messages": [{"role": "user", "content": "my card"}], "n": 3}
        r = httpx.post(s.base_url + "/chat/completions", json=body)
        assert r.status_code == 200 and len(r.json()["choices"]) == 3
        assert s.requests == 1 and s.by_text["my card"] == 1 and s.billed > 0

