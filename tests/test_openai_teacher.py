"""The openai teacher against a scripted transport: retries, errors, probes, logprobs (fast, offline)."""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from distil.errors import TeacherError
from distil.task import Task
from distil.teachers.base import RetryPolicy
from distil.teachers.openai import (
    PROBE_TEXT,
    Capabilities,
    OpenAITeacher,
    label_probs_from_logprobs,
)
from distil.teachers.ratelimit import TokenBucket

LABELS = ["card_arrival", "card_linking", "lost_card", "top_up"]
BASE_URL = "http://llm.test/v1"
URL = BASE_URL + "/chat/completions"

Handler = Callable[[dict[str, Any], int], httpx.Response]
#: Pass as ``caps`` to make the teacher probe the server itself.
PROBE = Capabilities(None, False, "onehot", notes=["probe"])


# -- helpers -----------------------------------------------------------------------------------


def make_task(**teacher: Any) -> Task:
    spec = {"kind": "openai", "model": "m-1", "base_url": BASE_URL, "concurrency": 1, **teacher}
    return Task.from_dict({"name": "t", "instruction": "Which intent?", "labels": LABELS, "teacher": spec})


def chat(
    content: str | list[str],
    *,
    logprobs: list[dict[str, Any]] | None = None,
    usage: tuple[int, int] = (20, 5),
) -> httpx.Response:
    contents = [content] if isinstance(content, str) else content
    choices = []
    for i, c in enumerate(contents):
        choice: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": c}}
        choice["logprobs"] = {"content": logprobs} if logprobs is not None else None
        choices.append(choice)
    body = {
        "id": "x",
        "object": "chat.completion",
        "choices": choices,
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }
    return httpx.Response(200, json=body)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message}}, headers=headers)


def lp(token: str, p: float, alts: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    """A logprobs.content item; alts (token, probability) default to the token alone."""
    top = [{"token": t, "logprob": math.log(q)} for t, q in (alts or [(token, p)])]
    return {"token": token, "logprob": math.log(p), "top_logprobs": top}


def json_answer_items(value_items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tokens of {"label": "<value>"} around the given value tokens."""
    head = [lp('{"', 0.9), lp("label", 0.9), lp('":', 0.9), lp(' "', 0.9)]
    return [*head, *value_items, lp('"}', 0.9)]


class Server:
    """A scripted OpenAI-compatible endpoint: ``handler(payload, index)`` answers request ``index``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == URL
        payload = json.loads(request.content)
        with self._lock:
            index = len(self.requests)
            self.requests.append(payload)
            self.headers.append(request.headers)
        return self.handler(payload, index)


def teacher_for(
    handler: Handler,
    caps: Capabilities | None = None,
    *,
    max_retries: int = 3,
    **spec: Any,
) -> tuple[OpenAITeacher, Server, list[float]]:
    """A teacher on a scripted server; ``caps`` preset skips the probe (``PROBE``: probe for real)."""
    task = make_task(max_retries=max_retries, **spec)
    assert task.teacher is not None and task.teacher.kind == "openai"
    server = Server(handler)
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=max_retries, base_delay=0.5, sleep=sleeps.append, rng=random.Random(0))
    t = OpenAITeacher(task.teacher, task, transport=httpx.MockTransport(server), retry=policy)
    t.capabilities = None if caps is PROBE else (caps or Capabilities("json_schema", True, "logprobs"))
    return t, server, sleeps


def ok_label(label: str) -> httpx.Response:
    return chat(json.dumps({"label": label}))


# -- retries -----------------------------------------------------------------------------------


def test_429_honours_retry_after_then_succeeds() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(429, "slow down", {"Retry-After": "7"}) if i == 0 else ok_label("top_up")

    t, server, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    [a] = t.predict_batch(["top me up"])
    assert a.status == "done"
    assert a.probs == [0.0, 0.0, 0.0, 1.0]
    assert a.method == "onehot"
    assert a.attempts == 2
    assert sleeps == [7.0]
    assert len(server.requests) == 2


def test_retry_after_ms_header_is_honoured() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(429, "slow", {"retry-after-ms": "250"}) if i == 0 else ok_label("top_up")

    t, _, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    assert t.predict_batch(["x"])[0].attempts == 2
    assert sleeps == [0.25]


def test_500_then_success_backs_off_with_jitter() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(500, "boom") if i == 0 else ok_label("lost_card")

    t, server, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    [a] = t.predict_batch(["I lost my card"])
    assert (a.status, a.attempts, len(server.requests)) == ("done", 2, 2)
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5


def test_timeouts_are_retried_then_succeed() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        if i < 2:
            raise httpx.ReadTimeout("read timed out")
        return ok_label("card_linking")

    t, server, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    [a] = t.predict_batch(["link my card"])
    assert (a.status, a.attempts, len(server.requests), len(sleeps)) == ("done", 3, 3, 2)


def test_retries_exhausted_is_failed_with_last_error() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out")

    t, server, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"), max_retries=2)
    [a] = t.predict_batch(["x"])
    assert a.status == "failed"
    assert a.attempts == 3
    assert len(server.requests) == 3
    assert len(sleeps) == 2
    assert a.error is not None and "did not answer within" in a.error and "3 attempts" in a.error


def test_other_4xx_fails_that_input_without_retry() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        text = payload["messages"][1]["content"]
        if text == "too long":
            return error(400, "This model's maximum context length is 8192 tokens")
        return ok_label("top_up")

    t, server, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    answers = t.predict_batch(["a", "too long", "b"])
    assert [a.status for a in answers] == ["done", "failed", "done"]
    bad = answers[1]
    assert bad.attempts == 1
    assert bad.error is not None and "HTTP 400" in bad.error and "maximum context length" in bad.error
    assert len(server.requests) == 3
    assert sleeps == []


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_raise_teacher_error(status: int) -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(status, "Incorrect API key provided: sk-...abc")

    t, server, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"), concurrency=3)
    with pytest.raises(TeacherError) as exc:
        t.predict_batch(["a", "b", "c", "d"])
    assert f"HTTP {status}" in str(exc.value) and "Incorrect API key" in str(exc.value)
    assert sleeps == []
    sent = len(server.requests)
    assert 1 <= sent <= 3  # at most the requests already in flight
    # a later call tries again (the key may work by then): one request, not a teacher stopped for good
    with pytest.raises(TeacherError):
        t.predict_batch(["e"])
    assert len(server.requests) == sent + 1


def test_garbage_http_body_is_invalid_with_raw_not_retried() -> None:
    """A 2xx body that is not JSON was paid for: kept as ``invalid`` with the body, never asked again."""

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return httpx.Response(200, text="<html>gateway</html>")

    t, server, _ = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    [a] = t.predict_batch(["x"])
    assert (a.status, a.attempts, len(server.requests), a.raw) == ("invalid", 1, 1, "<html>gateway</html>")
    assert a.error is not None and "not JSON" in a.error


# -- answers outside the label set --------------------------------------------------------------


def test_garbage_json_answer_is_invalid_with_raw() -> None:
    raw = '{"label": "card_arr'
    t, _, _ = teacher_for(lambda p, i: chat(raw), Capabilities(None, False, "onehot"))
    [a] = t.predict_batch(["x"])
    assert (a.status, a.raw, a.probs, a.attempts) == ("invalid", raw, None, 1)


def test_out_of_set_answer_is_invalid_never_mapped() -> None:
    raw = '{"label": "card_arrivals"}'
    t, _, _ = teacher_for(lambda p, i: chat(raw), Capabilities(None, False, "onehot"))
    [a] = t.predict_batch(["x"])
    assert (a.status, a.raw, a.probs) == ("invalid", raw, None)


@pytest.mark.parametrize(
    ("content", "label"),
    [
        ('{"label": "card_arrival"}', "card_arrival"),
        ('```json\n{"label": "Lost_Card"}\n```', "lost_card"),
        ("  'Top_up'. ", "top_up"),
        ('"card_linking"', "card_linking"),
    ],
)
def test_normalised_exact_match(content: str, label: str) -> None:
    t, _, _ = teacher_for(lambda p, i: chat(content), Capabilities(None, False, "onehot"))
    [a] = t.predict_batch(["x"])
    assert a.status == "done"
    assert a.label_index == LABELS.index(label)
    assert a.raw == content


# -- logprobs ------------------------------------------------------------------------------------


GOLDEN_VALUE = [
    # 'card' generated; 'I' and 'Card' are forbidden by the grammar (case-sensitive); 'lost', 'top' allowed.
    lp("card", 0.4, [("I", 0.3), ("card", 0.4), ("lost", 0.2), ("top", 0.05), ("Card", 0.05)]),
    lp("_", 0.9, [("_", 0.9), ("-", 0.1)]),
    lp("arr", 0.6, [("arr", 0.6), ("link", 0.3), ("xyz", 0.1)]),
    lp("ival", 0.99),
]
GOLDEN_PROBS = [0.4 / 0.65 * 2 / 3, 0.4 / 0.65 / 3, 0.2 / 0.65, 0.05 / 0.65]


def test_logprob_renormalisation_golden() -> None:
    probs, why = label_probs_from_logprobs(json_answer_items(GOLDEN_VALUE), LABELS)
    assert why == ""
    assert probs == pytest.approx(GOLDEN_PROBS, abs=1e-12)
    assert sum(probs) == pytest.approx(1.0, abs=1e-12)


def test_logprobs_non_generated_shared_branch_splits_evenly() -> None:
    first = lp("lost", 0.5, [("lost", 0.5), ("card", 0.3), ("top", 0.2)])
    items = json_answer_items([first, lp("_card", 1.0)])
    probs, _ = label_probs_from_logprobs(items, LABELS)
    assert probs == pytest.approx([0.15, 0.15, 0.5, 0.2], abs=1e-12)


def test_logprobs_value_starting_inside_a_token() -> None:
    # '":"card' holds the end of the JSON syntax and the start of the value.
    items = [
        lp('{"', 0.9),
        lp("label", 0.9),
        lp('":"card', 0.6, [('":"card', 0.6), ('":"top', 0.2), ('":', 0.1), ("xyz", 0.1)]),
        lp("_link", 0.5, [("_link", 0.5), ("_arr", 0.5)]),
        lp('ing"}', 0.9),
    ]
    probs, _ = label_probs_from_logprobs(items, LABELS)
    assert probs == pytest.approx([0.375, 0.375, 0.0, 0.25], abs=1e-12)


def test_logprobs_bare_answer_case_insensitive_when_unconstrained() -> None:
    items = [lp("Top", 0.5, [("Top", 0.5), ("Lost", 0.25), ("Sorry", 0.25)]), lp("_up", 0.9)]
    probs, _ = label_probs_from_logprobs(items, LABELS, case_sensitive=False)
    assert probs == pytest.approx([0.0, 0.0, 1 / 3, 2 / 3], abs=1e-12)
    none, why = label_probs_from_logprobs(items, LABELS, case_sensitive=True)
    assert none is None and "leaves the label set" in why


def test_logprobs_through_the_teacher() -> None:
    items = json_answer_items(GOLDEN_VALUE)
    t, server, _ = teacher_for(lambda p, i: chat('{"label": "card_arrival"}', logprobs=items))
    [a] = t.predict_batch(["where is my card"])
    assert a.status == "done" and a.method == "logprobs"
    assert a.probs == pytest.approx(GOLDEN_PROBS, abs=1e-9)
    sent = server.requests[0]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 20
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == LABELS


def test_logprobs_missing_falls_back_to_onehot() -> None:
    t, _, _ = teacher_for(lambda p, i: chat('{"label": "top_up"}', logprobs=None))
    [a] = t.predict_batch(["x"])
    assert (a.status, a.method, a.probs) == ("done", "onehot", [0.0, 0.0, 0.0, 1.0])
    assert "no logprobs" in a.extra["logprobs_error"]


# -- sampling ------------------------------------------------------------------------------------


def test_samples_with_n_are_frequencies() -> None:
    answers = ["top_up", "top_up", "lost_card", "nonsense", "top_up"]

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        assert payload["n"] == 5 and payload["temperature"] == 1.0 and "logprobs" not in payload
        return chat([json.dumps({"label": x}) for x in answers], usage=(30, 25))

    t, server, _ = teacher_for(handler, Capabilities("json_schema", False, "samples"))
    [a] = t.predict_batch(["x"])
    assert a.method == "samples"
    assert a.probs == pytest.approx([0.0, 0.0, 0.25, 0.75])
    assert a.extra["invalid_samples"] == 1
    assert (len(server.requests), a.attempts, a.tokens_in, a.tokens_out) == (1, 1, 30, 25)


def test_samples_when_server_ignores_n() -> None:
    seq = ["lost_card", "lost_card", "top_up"]

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return ok_label(seq[i])

    t, server, _ = teacher_for(handler, Capabilities(None, False, "samples"), samples=3)
    [a] = t.predict_batch(["x"])
    assert [r.get("n") for r in server.requests] == [3, 2, None]  # asking for 1 sends no "n"
    assert a.probs == pytest.approx([0.0, 0.0, 2 / 3, 1 / 3])
    assert (a.attempts, a.tokens_in, a.tokens_out) == (3, 60, 15)


def test_a_tie_at_the_top_is_broken_by_asking_again_not_by_label_order() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        assert payload["temperature"] == 0.7  # the configured sampling temperature
        if i == 0:
            return chat([json.dumps({"label": x}) for x in ["lost_card", "top_up", "lost_card", "top_up"]])
        return ok_label("top_up")

    t, server, _ = teacher_for(handler, Capabilities("json_schema", False, "samples"), samples=4,
                               sample_temperature=0.7)
    [a] = t.predict_batch(["x"])
    assert [r.get("n") for r in server.requests] == [4, None]  # one tie-breaking sample
    assert a.probs == pytest.approx([0.0, 0.0, 0.4, 0.6]) and a.extra["tie_break_samples"] == 1
    assert "tied" not in a.extra


def test_a_tie_that_persists_is_an_even_split_and_says_so() -> None:
    seq = LABELS  # every new sample starts a new tie

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return ok_label(seq[i % 4])

    t, server, _ = teacher_for(handler, Capabilities(None, False, "samples"), samples=2)
    [a] = t.predict_batch(["x"])
    assert len(server.requests) == 4  # 2 samples, then at most 2 more
    assert a.probs == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert a.extra["tied"] == sorted(seq) and a.extra["tie_break_samples"] == 2


def test_all_samples_invalid_is_invalid() -> None:
    t, _, _ = teacher_for(lambda p, i: chat(["no", "idea"]), Capabilities(None, False, "samples"), samples=2)
    [a] = t.predict_batch(["x"])
    assert a.status == "invalid" and json.loads(a.raw or "") == ["no", "idea"]


# -- the capability probe --------------------------------------------------------------------------


def test_probe_falls_back_when_response_format_is_refused() -> None:
    """OpenAI-style json_schema refused (400) → llama.cpp-style json_object; logprobs work."""

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        rf = payload.get("response_format")
        if rf and rf["type"] == "json_schema":
            return error(400, "response_format json_schema is not supported")
        items = json_answer_items([lp("top", 0.5, [("top", 0.5), ("lost", 0.5)]), lp("_up", 1.0)])
        return chat('{"label": "top_up"}', logprobs=items if payload.get("logprobs") else None)

    t, server, sleeps = teacher_for(handler, PROBE)
    answers = t.predict_batch(["t1", "t2"])
    caps = t.capabilities
    assert caps is not None
    assert (caps.response_format, caps.logprobs, caps.mode) == ("json_object", True, "logprobs")
    assert (caps.calls, caps.attempts) == (3, 3)
    assert "json_schema refused" in caps.notes[0] and "not supported" in caps.notes[0]
    probes = server.requests[:3]
    assert all(r["messages"][1]["content"] == PROBE_TEXT for r in probes)
    assert [r["response_format"]["type"] for r in probes] == ["json_schema", "json_object", "json_object"]
    assert len(server.requests) == 5
    for r in server.requests[3:]:
        assert r["response_format"] == {"type": "json_object", "schema": t.schema}
    assert [a.method for a in answers] == ["logprobs", "logprobs"]
    assert answers[0].probs == pytest.approx([0.0, 0.0, 0.5, 0.5])
    assert sleeps == []


def test_probe_treats_a_persistent_500_as_refusal_and_falls_back_to_samples() -> None:
    """llama-cpp-python answers an unknown response_format with HTTP 500; logprobs refused (400)."""

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        if "response_format" in payload:
            return error(500, "Input should be 'text' or 'json_object'")
        if payload.get("logprobs"):
            return error(400, "logprobs are not supported")
        return chat(json.dumps({"label": "lost_card"}))

    t, server, sleeps = teacher_for(handler, PROBE, samples=2)
    answers = t.predict_batch(["x"])
    caps = t.capabilities
    assert caps is not None
    assert (caps.response_format, caps.logprobs, caps.mode) == (None, False, "samples")
    # json_schema: 2 attempts (one retry), json_object: 2 attempts, logprobs: 1, plain: 1
    assert (caps.calls, caps.attempts) == (4, 6)
    assert len(sleeps) == 2
    # sampling: n=2 is answered with one choice (as llama.cpp does), so a second request asks for 1
    assert len(server.requests) == 6 + 2
    assert server.requests[6]["n"] == 2 and "n" not in server.requests[7]
    a = answers[0]
    assert (a.status, a.method, a.probs, a.attempts) == ("done", "samples", [0.0, 0.0, 1.0, 0.0], 2)


def test_probe_unreachable_endpoint_raises_teacher_error() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    t, server, sleeps = teacher_for(handler, PROBE, max_retries=2)
    with pytest.raises(TeacherError) as exc:
        t.predict_batch(["x"])
    assert URL in str(exc.value) and "base_url" in str(exc.value)
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_forced_logprobs_without_logprobs_stops() -> None:
    t, _, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE, probs="logprobs", constrained="none")
    with pytest.raises(TeacherError, match="does not return logprobs"):
        t.predict_batch(["x"])


def test_constrained_none_sends_no_response_format() -> None:
    t, server, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE, probs="onehot", constrained="none")
    [a] = t.predict_batch(["x"])
    assert a.method == "onehot"
    assert len(server.requests) == 2  # one probe, one answer
    assert all("response_format" not in r and "logprobs" not in r for r in server.requests)


# -- concurrency, rate limits, accounting ---------------------------------------------------------


def test_requests_run_concurrently_and_keep_order() -> None:
    barrier = threading.Barrier(4, timeout=10)

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        barrier.wait()  # fails unless 4 requests are in flight together
        text = payload["messages"][1]["content"]
        return ok_label(LABELS[int(text)])

    t, server, _ = teacher_for(handler, Capabilities("json_schema", False, "onehot"), concurrency=4)
    texts = [str(i % 4) for i in range(8)]
    answers = t.predict_batch(texts)
    assert [a.label_index for a in answers] == [i % 4 for i in range(8)]
    assert len(server.requests) == 8


def test_requests_per_minute_limit_waits() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    task = make_task(requests_per_minute=60)
    assert task.teacher is not None and task.teacher.kind == "openai"
    server = Server(lambda p, i: ok_label("top_up"))
    t = OpenAITeacher(
        task.teacher, task, transport=httpx.MockTransport(server), clock=lambda: now[0], sleep=sleep
    )
    t.capabilities = Capabilities("json_schema", False, "onehot")
    answers = t.predict_batch([f"t{i}" for i in range(12)])  # bucket of 10 (10 s at 1/s), then 1/s
    assert all(a.status == "done" for a in answers)
    assert sleeps == pytest.approx([1.0, 1.0])


def test_token_bucket_tokens_per_minute_and_adjust() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    bucket = TokenBucket(600, capacity=100, clock=lambda: now[0], sleep=sleep)  # 10 tokens/s
    assert bucket.acquire(80) == 0.0
    assert bucket.acquire(40) == pytest.approx(2.0)  # 20 left, 20 missing at 10/s
    bucket.adjust(50)  # the server used 50 more than estimated: the level goes negative
    assert bucket.level == pytest.approx(-50.0)
    assert bucket.acquire(500) == pytest.approx(15.0)  # clipped to the capacity (100), 150 missing
    assert sleeps == pytest.approx([2.0, 15.0])


def test_usage_cost_and_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTIL_TEST_KEY", "sk-secret")
    t, server, _ = teacher_for(
        lambda p, i: chat('{"label": "top_up"}', usage=(1000, 10)),
        Capabilities("json_schema", False, "onehot"),
        api_key_env="DISTIL_TEST_KEY",
        price_in_per_1m=0.15,
        price_out_per_1m=0.6,
    )
    [a] = t.predict_batch(["x"])
    assert (a.tokens_in, a.tokens_out) == (1000, 10)
    assert a.cost == pytest.approx((1000 * 0.15 + 10 * 0.6) / 1e6)
    assert a.latency_ms > 0
    assert server.headers[0]["authorization"] == "Bearer sk-secret"
    assert "sk-secret" not in json.dumps(t.identity())


def test_no_key_no_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISTIL_TEST_KEY", raising=False)
    t, server, _ = teacher_for(
        lambda p, i: ok_label("top_up"), Capabilities(None, False, "onehot"), api_key_env="DISTIL_TEST_KEY"
    )
    t.predict_batch(["x"])
    assert "authorization" not in server.headers[0]


def test_estimate_cost() -> None:
    t, _, _ = teacher_for(
        lambda p, i: ok_label("top_up"), PROBE, price_in_per_1m=1.0, price_out_per_1m=2.0, max_tokens=10
    )
    text = "x" * 400
    tokens_in = math.ceil((len(t.system_prompt.encode()) + 400) / 3) + 12  # 3 UTF-8 bytes a token: the safe side
    one = (tokens_in * 1.0 + 10 * 2.0) / 1e6
    assert t.estimate_cost([text, text]) == pytest.approx(2 * one)
    t.capabilities = Capabilities(None, False, "samples")
    assert t.estimate_cost([text]) == pytest.approx(5 * one)


def test_identity_and_describe() -> None:
    t, _, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE)
    ident = t.identity()
    assert ident["model"] == "m-1" and ident["probs"] == "auto" and len(ident["prompt_sha"]) == 16
    assert BASE_URL not in json.dumps(ident)
    assert t.describe() == "openai:m-1 @ llm.test"
    other, _, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE, base_url="http://elsewhere:8080/v1")
    assert other.fingerprint() == t.fingerprint()  # the URL is not part of the answers' identity
    hotter, _, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE, temperature=0.7)
    assert hotter.fingerprint() != t.fingerprint()
    assert "card_arrival" in t.system_prompt and '{"label": "<label>"}' in t.system_prompt


def test_refusal_is_invalid_with_the_refusal_as_raw() -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't."}
    body = {"choices": [{"index": 0, "message": message}]}
    caps = Capabilities("json_schema", False, "onehot")
    t, _, _ = teacher_for(lambda p, i: httpx.Response(200, json=body), caps)
    [a] = t.predict_batch(["x"])
    assert (a.status, a.raw) == ("invalid", "I can't.")


def test_probe_plain_request_retries_a_transient_500() -> None:
    """Only feature requests read a repeated 5xx as a refusal; a plain probe retries as usual."""

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(503, "loading model") if i < 3 else ok_label("top_up")

    t, server, sleeps = teacher_for(handler, PROBE, probs="onehot", constrained="none")
    [a] = t.predict_batch(["x"])
    caps = t.capabilities
    assert caps is not None and (caps.calls, caps.attempts, caps.mode) == (1, 4, "onehot")
    assert len(sleeps) == 3 and a.status == "done" and len(server.requests) == 5


def test_probe_names_max_tokens_when_the_constrained_answer_is_cut() -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        resp = chat('{"label": "card_ar')
        body = resp.json()
        body["choices"][0]["finish_reason"] = "length"
        return httpx.Response(200, json=body)

    t, server, _ = teacher_for(handler, PROBE, probs="onehot", max_tokens=6)
    [a] = t.predict_batch(["x"])
    caps = t.capabilities
    assert caps is not None and caps.response_format is None and caps.calls == 3
    assert len(server.requests) == 4
    assert all("raise [teacher].max_tokens" in n for n in caps.notes)
    assert a.status == "invalid" and a.raw == '{"label": "card_ar'


# -- reply shape, budgets, timeouts (issue 12) ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"choices": {"0": {}}}, "'choices' is an object"),
        ({"choices": ["x"]}, "'choices[0]' is a string"),
        ({"choices": [{"message": "hi"}]}, "'choices[0].message' is a string"),
        ({"choices": [{"message": {"content": 7}}]}, "'choices[0].message.content' is a number"),
        ({"choices": [{"message": {"content": "x"}, "logprobs": "lots"}]}, "'choices[0].logprobs' is a string"),
        ({"choices": [{"message": {"content": "x"}, "logprobs": {"content": [{"token": 1}]}}]}, "token' is a number"),
        ({"choices": [{"message": {"content": "x"}}], "usage": [1, 2]}, "'usage' is a list"),
        ({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "9"}}, "usage.prompt_tokens"),
        ([1, 2], "'the body' is a list"),
    ],
)
def test_a_reply_of_the_wrong_shape_is_invalid_with_its_raw_body(body: Any, where: str) -> None:
    t, server, _ = teacher_for(lambda p, i: httpx.Response(200, json=body), Capabilities(None, True, "logprobs"))
    a, b = t.predict_batch(["x", "y"])
    assert a.status == b.status == "invalid" and a.attempts == 1 and len(server.requests) == 2
    assert a.raw is not None and json.loads(a.raw) == body and a.error is not None and where in a.error


def test_usage_null_and_logprobs_null_are_fine() -> None:
    body = {"choices": [{"message": {"content": '{"label": "top_up"}'}, "logprobs": None}], "usage": None}
    t, _, _ = teacher_for(lambda p, i: httpx.Response(200, json=body), Capabilities(None, True, "logprobs"))
    [a] = t.predict_batch(["x"])
    assert a.status == "done" and a.method == "onehot" and (a.tokens_in, a.tokens_out) == (0, 0)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_retry_after_that_is_not_a_finite_number_falls_back_to_backoff(value: str) -> None:
    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(429, "slow", {"Retry-After": value, "retry-after-ms": value}) if i == 0 else ok_label("top_up")

    t, _, sleeps = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    [a] = t.predict_batch(["x"])
    assert a.status == "done" and len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5


def test_every_request_counts_against_the_budget_retries_included() -> None:
    from distil.cost import Budget

    def handler(payload: dict[str, Any], i: int) -> httpx.Response:
        return error(503, "busy") if i % 2 == 0 else ok_label("top_up")  # every answer needs a retry

    t, server, _ = teacher_for(handler, Capabilities("json_schema", False, "onehot"))
    got: dict[int, Any] = {}
    budget = Budget(max_calls=5)
    t.answer_each([f"t{i}" for i in range(10)], got.__setitem__, budget)
    assert len(server.requests) == budget.requests == 5 and budget.stopped == "max_calls"
    assert len(got) == 2  # the third answer's retry was refused: no answer, nothing more sent


def test_samples_stop_at_the_budget_and_keep_the_samples_paid_for() -> None:
    from distil.cost import Budget

    t, server, _ = teacher_for(lambda p, i: ok_label("top_up"), Capabilities(None, False, "samples"), samples=5)
    got: dict[int, Any] = {}
    t.answer_each(["x", "y"], got.__setitem__, Budget(max_calls=3))  # a server that ignores ``n``
    assert len(server.requests) == 3
    [a] = got.values()
    assert a.status == "done" and a.method == "samples" and a.extra["samples_short"] == 2 and a.attempts == 3


def test_without_usage_the_cost_is_the_conservative_estimate() -> None:
    body = {"choices": [{"message": {"content": '{"label": "top_up"}'}}]}
    t, _, _ = teacher_for(
        lambda p, i: httpx.Response(200, json=body), Capabilities(None, False, "onehot"),
        price_in_per_1m=1.0, price_out_per_1m=2.0,
    )
    [a] = t.predict_batch(["x" * 300])
    assert a.cost == pytest.approx(t.estimate_cost(["x" * 300])) and a.cost > 0
    assert a.extra["cost_estimated"] is True


def test_a_model_in_the_price_table_has_a_price() -> None:
    t, _, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE, model="gpt-4o-mini")
    assert t.prices_known() and t.estimate_cost(["x"]) > 0
    unknown, _, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE)
    assert not unknown.prices_known() and unknown.estimate_cost(["x"]) == 0.0


def test_a_retry_after_a_timeout_waits_twice_as_long() -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        if len(seen) < 4:
            raise httpx.ReadTimeout("read timed out")
        return ok_label("top_up")

    task = make_task(max_retries=4, timeout_s=2.0)
    assert task.teacher is not None and task.teacher.kind == "openai"
    policy = RetryPolicy(max_retries=4, sleep=lambda s: None, rng=random.Random(0))
    t = OpenAITeacher(task.teacher, task, transport=httpx.MockTransport(handler), retry=policy)
    t.capabilities = Capabilities("json_schema", False, "onehot")
    [a] = t.predict_batch(["x"])
    assert a.status == "done" and seen == [2.0, 4.0, 8.0, 8.0]


def test_probe_requests_are_counted_and_handed_over_once() -> None:
    from distil.cost import Budget

    t, server, _ = teacher_for(lambda p, i: ok_label("top_up"), PROBE, probs="onehot")
    budget = Budget()
    t.prepare(budget)
    spend = t.take_probe_spend()
    assert spend is not None and spend["attempts"] == len(server.requests) == budget.requests > 0
    assert spend["mode"] == "onehot" and t.take_probe_spend() is None
