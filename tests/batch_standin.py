"""The chat stand-in plus OpenAI's Batch API, as its API reference describes it (files and batches).

``POST /v1/files`` (multipart: ``purpose=batch``, ``file``) stores a JSONL file; ``POST /v1/batches``
(``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``) creates a batch in status
``validating``; ``GET /v1/batches/{id}`` moves it on (``in_progress`` after the first look, final after
``polls_to_finish`` looks); ``GET /v1/batches`` lists batches newest first; ``GET /v1/files/{id}/content``
returns a file.  A final batch has an output file (one line per answered request: ``custom_id``,
``response.status_code``, ``response.body``) and, when some failed, an error file.

Its books: every request line it answers is billed at ``discount`` (0.5) of the chat price and counted
per ``custom_id`` in :attr:`BatchStandIn.answered_lines`, so a test sees any input paid for twice.
Switches: ``polls_to_finish``, ``expire_after`` (answer only the first k lines, then ``expired``),
``fail_keys`` (custom_ids answered with HTTP 400 in the error file), ``invalid`` (the batch fails
validation, nothing billed).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from test_reliability_standin import StandIn


class BatchStandIn(StandIn):
    """:class:`StandIn` with the Batch API's endpoints."""

    def __init__(
        self, *, polls_to_finish: int = 2, expire_after: int | None = None, fail_keys: set[str] | None = None,
        invalid: bool = False, discount: float = 0.5, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.polls_to_finish, self.expire_after, self.invalid, self.discount = (
            polls_to_finish, expire_after, invalid, discount)
        self.fail_keys = set(fail_keys or ())
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls: Counter[str] = Counter()
        self.answered_lines: Counter[str] = Counter()
        self.batch_billed = 0.0

    # -- the API ---------------------------------------------------------------------------------
    def upload(self, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        head = b"Content-Type: " + content_type.encode() + b"\r\n\r\n"
        msg = BytesParser(policy=email_policy).parsebytes(head + body)
        fields = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                  for part in msg.iter_parts()}
        if fields.get("purpose") != b"batch" or not fields.get("file"):
            return 400, {"error": {"message": "purpose must be 'batch' and a file is required"}}
        with self.lock:
            file_id = f"file-{len(self.files) + 1:04d}"
            self.files[file_id] = bytes(fields["file"])
        return 200, {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(fields["file"])}

    def create(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if payload.get("input_file_id") not in self.files or payload.get("endpoint") != "/v1/chat/completions":
            return 400, {"error": {"message": "unknown input_file_id or endpoint"}}
        with self.lock:
            batch_id = f"batch_{len(self.batches) + 1:04d}"
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": payload["endpoint"], "status": "validating",
                "input_file_id": payload["input_file_id"], "completion_window": payload.get("completion_window"),
                "created_at": int(time.time()), "output_file_id": None, "error_file_id": None, "errors": None,
                "metadata": payload.get("metadata") or {}, "request_counts": {"total": 0, "completed": 0, "failed": 0},
            }
            return 200, dict(self.batches[batch_id])

    def get(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, {"error": {"message": f"No batch found with id '{batch_id}'."}}
            self.polls[batch_id] += 1
            if batch["status"] in ("validating", "in_progress") and self.polls[batch_id] >= self.polls_to_finish:
                self._finish(batch)
            elif batch["status"] == "validating":
                batch["status"] = "in_progress"
            return 200, dict(batch)

    def listing(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        limit = int((query.get("limit") or ["20"])[0])
        with self.lock:
            data = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        return 200, {"object": "list", "data": [dict(b) for b in data[:limit]], "has_more": len(data) > limit}

    # -- running a batch -------------------------------------------------------------------------
    def _finish(self, batch: dict[str, Any]) -> None:
        """Answer the batch's lines (the first ``expire_after`` only, then expired), under the lock."""
        if self.invalid:
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "line 1: bad body"}]}
            return
        lines = [json.loads(ln) for ln in self.files[batch["input_file_id"]].decode().splitlines() if ln.strip()]
        done = lines if self.expire_after is None else lines[: self.expire_after]
        out, err = [], []
        for line in done:
            key = line["custom_id"]
            self.answered_lines[key] += 1
            if key in self.fail_keys:
                err.append({"id": f"req_{key[:8]}", "custom_id": key, "error": None,
                            "response": {"status_code": 400, "body": {"error": {"message": "bad request line"}}}})
                continue
            before = self.billed
            self.lock.release()  # reply() takes the lock to bill
            try:
                status, _, body = self.reply(line["body"])
            finally:
                self.lock.acquire()
            charged = self.billed - before
            self.billed = before + charged * self.discount
            self.batch_billed += charged * self.discount
            out.append({"id": f"req_{key[:8]}", "custom_id": key, "error": None,
                        "response": {"status_code": status, "body": json.loads(body)}})
        batch["output_file_id"] = self._store(out)
        batch["error_file_id"] = self._store(err) if err else None
        batch["status"] = "completed" if len(done) == len(lines) else "expired"
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    def _store(self, rows: list[dict[str, Any]]) -> str:
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
        return file_id

    # -- HTTP ------------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        chat = super()._handler()
        standin = self

        class Handler(chat):  # type: ignore[misc, valid-type]
            def _send(self, status: int, body: dict[str, Any] | bytes, kind: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                path = urlparse(self.path).path
                if path.endswith("/chat/completions"):
                    super().do_POST()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if path.endswith("/files"):
                    self._send(*standin.upload(self.headers.get("Content-Type", ""), body))
                elif path.endswith("/batches"):
                    self._send(*standin.create(json.loads(body)))
                else:
                    self._send(404, {"error": {"message": f"no route {path}"}})

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = url.path.rstrip("/").split("/")
                if parts[-1] == "batches":
                    self._send(*standin.listing(parse_qs(url.query)))
                elif parts[-2] == "batches":
                    self._send(*standin.get(parts[-1]))
                elif parts[-1] == "content" and parts[-2] in standin.files:
                    self._send(200, standin.files[parts[-2]], "application/jsonl")
                else:
                    self._send(404, {"error": {"message": f"no route {url.path}"}})

        return Handler
