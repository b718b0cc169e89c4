"""``api = "ollama"``: Ollama's native ``/api/chat`` with its logprobs, against a stand-in that follows
Ollama's API reference (the request: ``options``, ``format``, ``logprobs``/``top_logprobs``, ``stream``;
the answer: ``message``, ``logprobs`` entries, ``prompt_eval_count``/``eval_count``)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from test_reliability_standin import StandIn, openai_task

from distil.label import label
from distil.task import Task
from distil.teachers.ollama import chat_url, from_ollama, to_ollama


class OllamaStandIn(StandIn):
    """Answers ``POST /api/chat`` in Ollama's native shape (and nothing at ``/v1``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.native: list[dict[str, Any]] = []

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer_native(self, req: dict[str, Any]) -> tuple[int, bytes]:
        self.native.append(req)
        if req.get("stream") is not False or "options" not in req:
            return 400, b'{"error": "stream must be false in this stand-in; options are required"}'
        opts = req["options"]
        chat = {"model": req["model"], "messages": req["messages"], "max_tokens": opts.get("num_predict", 128),
                "temperature": opts.get("temperature", 0.8), "logprobs": req.get("logprobs", False),
                "top_logprobs": req.get("top_logprobs", 0)}
        with self.lock:
            self.requests += 1
            self.by_text[str(req["messages"][-1]["content"])] += 1
        status, _, body = self.reply(chat)
        reply = json.loads(body)
        choice = reply["choices"][0]
        out: dict[str, Any] = {"model": req["model"], "created_at": "2026-12-03T00:00:00Z",
                               "message": choice["message"], "done": True, "done_reason": "stop",
                               "prompt_eval_count": reply["usage"]["prompt_tokens"],
                               "eval_count": reply["usage"]["completion_tokens"]}
        if choice.get("logprobs"):
            out["logprobs"] = choice["logprobs"]["content"]
        return status, json.dumps(out).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                status, data = (standin.answer_native(body) if self.path == "/api/chat"
                                else (404, b'{"error": "not found"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler


def test_the_request_and_the_answer_change_shape_both_ways() -> None:
    chat = {"model": "qwen3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 32,
            "temperature": 0.0, "seed": 7, "logprobs": True, "top_logprobs": 20, "think": False,
            "response_format": {"type": "json_schema", "json_schema": {"name": "label", "schema": {"type": "object"}}}}
    native = to_ollama(chat)
    assert native == {"model": "qwen3", "messages": chat["messages"], "stream": False, "think": False,
                      "options": {"temperature": 0.0, "num_predict": 32, "seed": 7},
                      "logprobs": True, "top_logprobs": 20, "format": {"type": "object"}}
    answer = {"model": "qwen3", "message": {"role": "assistant", "content": '{"label": "card"}'}, "done": True,
              "done_reason": "stop", "prompt_eval_count": 40, "eval_count": 6,
              "logprobs": [{"token": "card", "logprob": -0.1, "top_logprobs": [{"token": "card", "logprob": -0.1}]}]}
    back = json.loads(from_ollama(json.dumps(answer)))
    assert back["choices"][0]["message"]["content"] == '{"label": "card"}'
    assert back["choices"][0]["logprobs"]["content"][0]["token"] == "card"
    assert back["usage"] == {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}
    assert from_ollama("not json") == "not json"
    assert chat_url("http://127.0.0.1:11434/v1/") == chat_url("http://127.0.0.1:11434") == \
        "http://127.0.0.1:11434/api/chat"


def test_an_ollama_teacher_gives_logprob_soft_labels_one_request_per_input(tmp_path: Path) -> None:
    texts = [f"ollama {i}: my card payment" for i in range(25)]
    with OllamaStandIn() as s:
        path = openai_task(tmp_path / "t", s.root_url, api="ollama", model="qwen3:0.6b")
        path.write_text(path.read_text() + "\n[teacher.extra_body]\nthink = false\n")
        task = Task.load(path)
        res = label(task, texts)
    assert res.stats.done == 25 and {r.method for r in res.rows.values()} == {"logprobs"}
    assert res.stats.requests == 25 + res.stats.probe_requests  # one request per input, not k samples
    assert all(max(r.probs or [1.0]) < 0.99 for r in res.rows.values())  # soft, from the top_logprobs
    sent = s.native[-1]
    assert sent["stream"] is False and sent["logprobs"] is True and sent["think"] is False
    assert sent["options"]["temperature"] == 0.0 and "max_tokens" not in sent and "n" not in sent
    assert res.rows[texts[0]].tokens_in > 0  # usage from prompt_eval_count / eval_count
