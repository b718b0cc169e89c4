"""Asking an ``openai`` teacher through its provider's Batch API (``distil label --via batch``).

OpenAI's Batch API takes a JSONL file of chat-completion requests, answers them within a window
(24 h) at half the price and in its own rate-limit pool.  Labeling a pool is the work it exists for.
Any server that implements the same endpoints works: ``POST /files`` (``purpose=batch``),
``POST /batches``, ``GET /batches/{id}``, ``GET /batches`` (listing, for recovery) and
``GET /files/{id}/content``.

**One batch per chunk** of up to ``max_requests`` inputs; each line's ``custom_id`` is the input's
journal key and its body is exactly what the synchronous path would send (same prompt, schema,
logprobs), so an answer collected from a batch is the same answer and lands under the same key.

**Nothing is paid twice.**  A chunk is journaled (``batches`` table: its keys, status
``preparing``) before its file is uploaded; the file id, then the batch id are journaled the moment
the server returns them, and the batch carries ``metadata.distil_batch`` = the journal's own id.  A
run killed at any point is resumed by the next ``distil label --via batch``: batches with a remote
id are polled again; one killed between creation and journaling is found again by its metadata in
the server's batch list; one never created is sent again.  While a batch is open its inputs are not
asked by any other run (synchronous runs skip them and say so).

**Results.**  A completed batch's output file gives each line's answer (parsed like a synchronous
reply: label, logprobs, usage); lines in the error file, or with a non-200 status, are journaled as
``failed`` (the next run asks them again).  An expired or cancelled batch keeps the answers it
finished; the inputs it did not reach are released unanswered, and were not billed.  A batch that
fails validation raises :class:`~distil.errors.TeacherError` with the server's reasons.

**Cost.**  Each request reserves its estimate at the batch price (``discount`` × the synchronous
price) in the run's budget before the file is sent, so ``--max-calls`` and ``--max-cost`` hold;
each answer then costs what its ``usage`` says at the batch price.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from distil.errors import TeacherError
from distil.teachers.base import RETRYABLE_STATUS, Answer, RetryableError, retry_call
from distil.teachers.reply import MalformedReply, parse_reply

if TYPE_CHECKING:
    from distil.cost import Budget
    from distil.journal import Journal
    from distil.teachers.openai import Capabilities, OpenAITeacher

log = logging.getLogger(__name__)

#: Remote statuses after which a batch's results are final.
TERMINAL = frozenset({"completed", "expired", "cancelled", "failed"})
#: What OpenAI's Batch API charges, as a share of the synchronous price.
BATCH_DISCOUNT = 0.5

#: ``on_answer(journal key, answer)``: one collected answer, already journaled.
OnKeyAnswer = Callable[[str, Answer], None]


@dataclass(frozen=True)
class BatchSettings:
    """How batches are sent and waited for."""

    poll_s: float = 30.0
    max_requests: int = 50_000
    completion_window: str = "24h"
    discount: float = BATCH_DISCOUNT
    sleep: Callable[[float], None] = time.sleep


class BatchClient:
    """The Batch API's endpoints on the teacher's server (``base_url``), with the teacher's key and retries."""

    def __init__(self, teacher: OpenAITeacher, *, transport: httpx.BaseTransport | None = None) -> None:
        self.teacher = teacher
        self.base = teacher.spec.base_url.rstrip("/")
        headers = dict(teacher.spec.headers)
        auth = teacher._client.headers.get("Authorization")
        if auth:
            headers["Authorization"] = auth
        self._http = httpx.Client(timeout=max(teacher.spec.timeout_s, 60.0), headers=headers, transport=transport)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        def attempt() -> httpx.Response:
            try:
                resp = self._http.request(method, self.base + path, **kwargs)
            except httpx.TransportError as exc:
                raise RetryableError(f"{method} {path}: {exc}") from None
            if resp.status_code in RETRYABLE_STATUS:
                raise RetryableError(f"{method} {path}: HTTP {resp.status_code}")
            if resp.status_code >= 400:
                raise TeacherError(
                    f"{self.base}{path}: HTTP {resp.status_code} from the Batch API: {resp.text.strip()[:300]}",
                    hint="check that the server implements OpenAI's files and batches endpoints, and the key",
                )
            return resp

        try:
            resp, _ = retry_call(attempt, self.teacher.retry)
        except RetryableError as exc:
            raise TeacherError(f"the Batch API did not answer: {exc}", hint="try again later") from None
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self._call(method, path, **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TeacherError(f"{self.base}{path}: the Batch API answered something that is not a JSON object")
        return body

    def upload(self, name: str, content: bytes) -> str:
        """Upload a JSONL request file; its file id."""
        body = self._json("POST", "/files", data={"purpose": "batch"},
                          files={"file": (name, content, "application/jsonl")})
        return str(body["id"])

    def create(self, file_id: str, local_id: str, window: str) -> dict[str, Any]:
        """Create the batch for an uploaded file, tagged with distil's own id."""
        return self._json("POST", "/batches", json={
            "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": window,
            "metadata": {"distil_batch": local_id},
        })

    def get(self, remote_id: str) -> dict[str, Any]:
        """The batch's current state."""
        return self._json("GET", f"/batches/{remote_id}")

    def find(self, local_id: str) -> dict[str, Any] | None:
        """The batch created with ``metadata.distil_batch == local_id``, if the server lists one."""
        after: str | None = None
        for _ in range(50):  # at most 5,000 batches back
            page = self._json("GET", "/batches", params={"limit": 100, **({"after": after} if after else {})})
            data = page.get("data") or []
            for b in data:
                if isinstance(b, dict) and (b.get("metadata") or {}).get("distil_batch") == local_id:
                    return b
            if not page.get("has_more") or not data:
                return None
            after = str(data[-1].get("id"))
        return None

    def content(self, file_id: str) -> str:
        """A result file's text (JSONL)."""
        return self._call("GET", f"/files/{file_id}/content").text

    def close(self) -> None:
        """Close the connections."""
        self._http.close()


class BatchRunner:
    """Sends a run's inputs as batches, waits for them, and journals every answer by its key."""

    def __init__(
        self, teacher: OpenAITeacher, journal: Journal, fingerprint: str, settings: BatchSettings | None = None,
        *, client: BatchClient | None = None,
    ) -> None:
        self.teacher, self.journal, self.fp = teacher, journal, fingerprint
        self.settings = settings or BatchSettings()
        self.client = client or BatchClient(teacher)
        self._holds: dict[str, float] = {}  # key -> the estimate reserved for it in the budget

    def answer(self, texts: Sequence[str], keys: dict[str, str], on_answer: OnKeyAnswer, budget: Budget) -> None:
        """Collect what open batches hold, then send ``texts`` not in any, and collect those."""
        caps = self._capabilities()
        self.collect_open(caps, on_answer, budget)
        covered = {k for b in self.journal.batches(self.fp, open_only=True) for k in b["keys"]}
        answered = self._answered([keys[t] for t in texts])
        todo = [t for t in texts if keys[t] not in covered and keys[t] not in answered]
        for start in range(0, len(todo), self.settings.max_requests):
            chunk = self._reserve(todo[start : start + self.settings.max_requests], keys, budget)
            if chunk:
                self._send(chunk, keys, caps)
            if budget.exhausted:
                break
        self.collect_open(caps, on_answer, budget)

    def _capabilities(self) -> Capabilities:
        caps = self.teacher.capabilities
        if caps is None:
            raise TeacherError("the teacher's capabilities were not probed before sending a batch")
        if caps.mode == "samples":
            raise TeacherError(
                f"{self.teacher.describe()} returns no logprobs, so each input would need several sampled "
                "answers; the batch path sends one request per input",
                hint='set probs = "onehot" in [teacher] to batch one answer per input, or label without --via batch',
            )
        return caps

    def _answered(self, keys: Sequence[str]) -> set[str]:
        rows = self.journal.lookup(list(keys))
        return {k for k, r in rows.items() if r.status in ("done", "invalid")}

    def _reserve(self, texts: list[str], keys: dict[str, str], budget: Budget) -> list[str]:
        """The leading texts whose estimate (at the batch price) the budget holds."""
        out = []
        for t in texts:
            est = self.teacher.estimate_cost([t]) * self.settings.discount
            if not budget.reserve(est):
                break
            self._holds[keys[t]] = est
            out.append(t)
        return out

    def _send(self, texts: list[str], keys: dict[str, str], caps: Capabilities) -> None:
        """Journal the chunk, upload its file, create its batch; each id journaled as soon as it is known."""
        local = f"distil-{uuid.uuid4().hex[:16]}"
        chunk_keys = [keys[t] for t in texts]
        self.journal.add_batch(local, self.fp, chunk_keys)
        lines = [
            json.dumps({"custom_id": keys[t], "method": "POST", "url": "/v1/chat/completions",
                        "body": self.teacher._payload(t, response_format=caps.response_format,
                                                      logprobs=caps.mode == "logprobs")},
                       ensure_ascii=False)
            for t in texts
        ]
        file_id = self.client.upload(f"{local}.jsonl", ("\n".join(lines) + "\n").encode("utf-8"))
        self.journal.update_batch(local, input_file_id=file_id, status="uploaded")
        self._create(local, file_id)

    def _create(self, local: str, file_id: str) -> str:
        """Create the batch and journal its id; the id."""
        created = self.client.create(file_id, local, self.settings.completion_window)
        remote = str(created["id"])
        self.journal.update_batch(local, remote_id=remote, status=str(created.get("status", "validating")))
        log.info("batch %s sent (%s)", remote, local)
        return remote

    def collect_open(self, caps: Capabilities, on_answer: OnKeyAnswer, budget: Budget | None = None) -> None:
        """Wait for every open batch of this teacher and journal its answers (recovering lost ids first)."""
        for batch in self.journal.batches(self.fp, open_only=True):
            remote = batch["remote_id"] or self._recover(batch)
            if remote is None:
                continue
            state = self._wait(batch["id"], remote)
            self._ingest(batch, state, caps, on_answer, budget)

    def _recover(self, batch: dict[str, Any]) -> str | None:
        """A batch journaled without its remote id: find it on the server by its metadata, else send it again."""
        found = self.client.find(batch["id"])
        if found is not None:
            self.journal.update_batch(batch["id"], remote_id=str(found["id"]), status=str(found.get("status")))
            return str(found["id"])
        if batch["input_file_id"]:  # uploaded, never created: create it now
            return self._create(batch["id"], batch["input_file_id"])
        self.journal.update_batch(batch["id"], status="failed", info={"reason": "never uploaded"})
        return None

    def _wait(self, local: str, remote: str) -> dict[str, Any]:
        """Poll until the batch is final; its status is journaled as it changes."""
        last = None
        while True:
            state = self.client.get(remote)
            status = str(state.get("status"))
            if status != last:
                self.journal.update_batch(local, status=status, info={"request_counts": state.get("request_counts")})
                last = status
            if status in TERMINAL:
                return state
            self.settings.sleep(self.settings.poll_s)

    def _ingest(
        self, batch: dict[str, Any], state: dict[str, Any], caps: Capabilities, on_answer: OnKeyAnswer,
        budget: Budget | None,
    ) -> None:
        """Journal the answers of a final batch; release what it did not answer."""
        status = str(state.get("status"))
        if status == "failed":
            reasons = "; ".join(str(e.get("message")) for e in ((state.get("errors") or {}).get("data") or []))
            self.journal.update_batch(batch["id"], status="failed", info={"errors": reasons})
            self._release(batch["keys"], budget)
            raise TeacherError(f"batch {state.get('id')} failed validation: {reasons or 'no reason given'}",
                               hint="nothing was billed; fix the request and run distil label --via batch again")
        lines = []
        for field_name in ("output_file_id", "error_file_id"):
            if state.get(field_name):
                lines += [ln for ln in self.client.content(str(state[field_name])).splitlines() if ln.strip()]
        seen: set[str] = set()
        wanted = set(batch["keys"])
        for line in lines:
            key, answer = self._line_answer(line, caps)
            if key is None or key not in wanted or key in seen:
                continue
            seen.add(key)
            self.journal.record([(key, answer, self._label(answer))])
            self._settle(key, answer.cost, budget)
            on_answer(key, answer)
        self._release([k for k in batch["keys"] if k not in seen], budget)
        self.journal.update_batch(batch["id"], status="collected",
                                  info={"remote_status": status, "answered": len(seen), "asked": len(wanted)})

    def _label(self, answer: Answer) -> str | None:
        idx = answer.label_index
        return self.teacher.labels[idx] if idx is not None and answer.status == "done" else None

    def _settle(self, key: str, cost: float, budget: Budget | None) -> None:
        est = self._holds.pop(key, 0.0)
        if budget is not None:
            budget.settle(est, cost)

    def _release(self, keys: Sequence[str], budget: Budget | None) -> None:
        """Inputs a final batch did not answer (expired, cancelled): not billed, free to ask again."""
        for key in keys:
            self._settle(key, 0.0, budget)

    def _line_answer(self, line: str, caps: Capabilities) -> tuple[str | None, Answer]:
        """One result line as (journal key, answer)."""
        try:
            obj = json.loads(line)
        except ValueError:
            return None, Answer("failed", error="unreadable result line")
        key = obj.get("custom_id") if isinstance(obj, dict) else None
        if not isinstance(key, str):
            return None, Answer("failed", error="result line without custom_id")
        resp = obj.get("response") or {}
        error = obj.get("error")
        if error or resp.get("status_code") != 200:
            message = (error or {}).get("message") if isinstance(error, dict) else None
            body_error = ((resp.get("body") or {}).get("error") or {}) if isinstance(resp.get("body"), dict) else {}
            why = message or body_error.get("message") or f"HTTP {resp.get('status_code')}"
            return key, Answer("failed", error=f"batch: {why}", attempts=1)
        raw = json.dumps(resp.get("body"))
        try:
            reply = parse_reply(raw)
        except MalformedReply as exc:
            return key, Answer("invalid", raw=exc.raw, error=f"malformed reply: {exc.reason}", attempts=1)
        t_in, t_out = reply.tokens()
        cost = self.teacher._cost(t_in, t_out, reply.cached) * self.settings.discount
        common = {"attempts": 1, "tokens_in": t_in, "tokens_out": t_out, "cost": cost}
        answer = self.teacher.reply_answer(reply, caps, common, estimated=reply.usage is None)
        answer.extra["via"] = "batch"
        return key, answer

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()
