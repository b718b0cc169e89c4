"""The HTTP server: routing, journal, bad input, auth, OpenAI facade, metrics, circuit breaker."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fixtures_serve as fx
import httpx
import pytest
from fastapi.testclient import TestClient

from distil.errors import ConfigError
from distil.journal import Journal
from distil.label import labeled_set
from distil.route import Decision, Router, fit_router
from distil.serving import CircuitBreaker, MicroBatcher, create_app
from distil.task import Task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def router() -> Router:
    r: Router = fx.centroid_router()
    assert math.isfinite(r.config.threshold.value)
    return r


def _client(router: Router, tmp_path: Path, fn: str = "keyword", **kw: Any) -> TestClient:
    task = Task.load(fx.write_task(tmp_path / "task", fn))
    return TestClient(create_app(router, task=task, **kw))


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_classify_student_answers_confident_inputs_teacher_the_rest_into_the_journal(
    router: Router, tmp_path: Path
) -> None:
    inside = fx.make_texts(1200, seed=7)[-40:]
    with _client(router, tmp_path) as c:
        r = c.post("/v1/classify", json={"inputs": inside + fx.FOREIGN})
        assert r.status_code == 200
        out = r.json()
        assert len(out) == len(inside) + len(fx.FOREIGN)
        for item in out:
            assert set(item) >= {"label", "score", "source", "confidence", "ood", "degraded"}
            assert item["label"] in fx.LABELS and 0 <= item["score"] <= 1 and item["degraded"] is False
        foreign = out[len(inside):]
        assert all(x["source"] == "teacher" and x["ood"] for x in foreign)
        want = [max(d, key=d.__getitem__) for d in fx.keyword(fx.FOREIGN)]
        assert [x["label"] for x in foreign] == want
        assert sum(x["source"] == "student" for x in out[: len(inside)]) > 20
        single = c.post("/v1/classify", json={"inputs": "my card has not arrived yet"})
        assert single.status_code == 200 and len(single.json()) == 1
        metrics = c.get("/metrics").text
    teacher_texts = {t for t, x in zip(inside + fx.FOREIGN, out, strict=True) if x["source"] == "teacher"}
    task = Task.load(tmp_path / "task" / "task.toml")
    with Journal(task.journal_path) as j:
        rows = list(j.rows())
    assert {r.text for r in rows} == teacher_texts
    assert all(r.source == "serve" and r.status == "done" for r in rows)
    # the next `distil train` sees them
    assert set(labeled_set(task).texts) == teacher_texts
    routed_teacher = len(teacher_texts)
    assert _metric(metrics, "distil_routed_total") == len(out) + 1
    share = routed_teacher / (len(out) + 1)
    assert _metric(metrics, "distil_teacher_share") == pytest.approx(share, abs=1e-9)


BAD: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed json", b'{"inputs": ["a"', {}, 400, "not valid JSON"),
    ("not utf-8", b'{"inputs": ["caf\xe9"]}', {}, 400, "not UTF-8"),
    ("empty body", b"", {}, 400, "empty"),
    ("array body", b'["a"]', {}, 422, "expected a JSON object"),
    ("number inputs", b'{"inputs": 5}', {}, 422, "must be a string or a list"),
    ("null inputs", b'{"inputs": null}', {}, 422, "must be a string or a list"),
    ("missing inputs", b'{"text": "a"}', {}, 422, "unknown key"),
    ("no keys", b"{}", {}, 422, "missing key 'inputs'"),
    ("empty list", b'{"inputs": []}', {}, 422, "empty list"),
    ("empty string", b'{"inputs": [""]}', {}, 422, "inputs[0] is empty"),
    ("blank string", b'{"inputs": ["ok text", "   "]}', {}, 422, "inputs[1] is empty"),
    ("non-string item", b'{"inputs": ["a", 3]}', {}, 422, "inputs[1] must be a string"),
    ("nested list", b'{"inputs": [["a"]]}', {}, 422, "inputs[0] must be a string"),
    ("lone surrogate", b'{"inputs": ["\\ud800 x"]}', {}, 422, "surrogate"),
    ("too many inputs", json.dumps({"inputs": ["card"] * 9}).encode(), {}, 422, "over the limit of 8"),
    ("10 MB body", b'{"inputs": ["' + b"a" * 10_000_000 + b'"]}', {}, 413, "over the limit"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, {}, 413, "over the limit"),
]


def test_bad_input_matrix_all_4xx_and_the_server_keeps_serving(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path, max_inputs=8, max_body_bytes=100_000) as c:
        for name, body, headers, status, message in BAD:
            r = c.post("/v1/classify", content=body, headers={"content-type": "application/json", **headers})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:200])
            assert r.status_code == status, (name, r.status_code, r.text[:200])
            err = r.json()["error"]
            assert err["code"] == r.status_code and message in err["message"], (name, err)
        for path, method in [("/nope", "get"), ("/v1/classify", "get")]:
            r = getattr(c, method)(path)
            assert r.status_code in (404, 405) and "error" in r.json()
        ok = c.post("/v1/classify", json={"inputs": ["my card has not arrived yet"]})
        assert ok.status_code == 200
        metrics = c.get("/metrics").text
    assert 'code="500"' not in metrics
    assert _metric(metrics, 'distil_errors_total{kind="bad_request"}') >= len(BAD) - 2


def test_bearer_token(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path, token="s3cret") as c:
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        r = c.post("/v1/classify", json={"inputs": ["card"]})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": "Bearer nope"}
        assert c.post("/v1/classify", json={"inputs": ["card"]}, headers=wrong).status_code == 401
        assert c.get("/metrics").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/classify", json={"inputs": ["card"]}, headers=good).status_code == 200
        assert c.get("/metrics", headers=good).status_code == 200


def test_openai_chat_completions_facade(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path) as c:
        body = {
            "model": "my-model",
            "messages": [
                {"role": "system", "content": "classify"},
                {"role": "user", "content": "ignored earlier message"},
                {"role": "assistant", "content": "other"},
                {"role": "user", "content": [{"type": "text", "text": "the atm kept my cash at the mall"}]},
            ],
            "temperature": 0,
        }
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        data = r.json()
        assert data["object"] == "chat.completion" and data["model"] == "my-model"
        msg = data["choices"][0]["message"]
        assert msg["role"] == "assistant" and msg["content"] == data["distil"]["label"] == "cash"
        usage = data["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        # the official client's request shape works too
        r2 = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "card declined"}]})
        assert r2.status_code == 200 and r2.json()["model"] == "distil-centroid"
        stream = c.post("/v1/chat/completions", json={**body, "stream": True})
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        events = [ln.removeprefix("data: ") for ln in stream.text.splitlines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == "cash"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        for bad, code in [
            ({"messages": []}, 422),
            ({"messages": [{"role": "system", "content": "x"}]}, 422),
            ({"messages": [{"role": "user", "content": ""}]}, 422),
            ({"messages": [{"role": "user", "content": 5}]}, 422),
            ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 422),
            ({"messages": [{"role": "user", "content": "x"}], "n": 3}, 400),
            ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 422),
            ({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 50}, 422),
            ("just a string", 422),
        ]:
            r = c.post("/v1/chat/completions", json=bad)
            assert r.status_code == code, (bad, r.text)


def test_circuit_breaker_opens_on_a_failing_teacher_and_the_student_answers_degraded(
    router: Router, tmp_path: Path
) -> None:
    with _client(router, tmp_path, fn="down", breaker_failures=2, breaker_cooldown_s=300) as c:
        for i in range(5):
            r = c.post("/v1/classify", json={"inputs": [fx.FOREIGN[i], "my card has not arrived yet"]})
            assert r.status_code == 200
            foreign, home = r.json()
            assert foreign["source"] == "student" and foreign["degraded"] is True and foreign["ood"]
            assert foreign["label"] in fx.LABELS
            assert home["degraded"] is False
        metrics = c.get("/metrics").text
        ready = c.get("/readyz").json()
    assert ready["ready"] is True and ready["teacher"] == "open"
    assert _metric(metrics, 'distil_teacher_calls_total{outcome="error"}') == 2
    assert _metric(metrics, 'distil_teacher_calls_total{outcome="circuit_open"}') == 3
    assert _metric(metrics, "distil_degraded_total") == 5
    assert _metric(metrics, "distil_circuit_open") == 1
    task = Task.load(tmp_path / "task" / "task.toml")
    with Journal(task.journal_path) as j:
        rows = list(j.rows())
    assert len(rows) == 2 and all(r.status == "failed" and r.source == "serve" for r in rows)


def test_journaled_answers_are_still_served_while_the_teacher_is_down(
    router: Router, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "teacher_down"
    monkeypatch.setenv("DISTIL_TEST_TEACHER_DOWN", str(flag))
    seen, unseen = fx.FOREIGN[0], fx.FOREIGN[1]
    with _client(router, tmp_path, fn="flaky", breaker_failures=1, breaker_cooldown_s=300) as c:
        first = c.post("/v1/classify", json={"inputs": [seen]}).json()[0]
        assert first["source"] == "teacher" and not first["degraded"]
        flag.touch()  # the teacher stops
        r = c.post("/v1/classify", json={"inputs": [unseen]}).json()[0]
        assert r["degraded"] is True  # this failure opens the circuit (breaker_failures=1)
        assert c.get("/readyz").json()["teacher"] == "open"
        again = c.post("/v1/classify", json={"inputs": [seen, unseen]}).json()
        assert again[0]["source"] == "teacher" and again[0]["label"] == first["label"]
        assert again[0]["degraded"] is False and again[1]["degraded"] is True


def test_teacher_timeout_degrades_quickly(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path, fn="hang", teacher_timeout_s=0.2) as c:
        t0 = time.perf_counter()
        r = c.post("/v1/classify", json={"inputs": [fx.FOREIGN[0]]})
        took = time.perf_counter() - t0
        assert r.status_code == 200 and r.json()[0]["degraded"] is True
        assert "timed out" in r.json()[0]["degraded_reason"]
        assert took < 1.5
        assert _metric(c.get("/metrics").text, 'distil_teacher_calls_total{outcome="timeout"}') == 1


def test_without_a_task_the_student_answers_everything_degraded_where_needed(router: Router) -> None:
    with TestClient(create_app(router)) as c:
        out = c.post("/v1/classify", json={"inputs": [fx.FOREIGN[0], "my card has not arrived yet"]}).json()
        assert out[0]["degraded"] is True and out[0]["source"] == "student"
        assert c.get("/readyz").json()["teacher"] == "none"


def test_readyz_is_valid_json_when_everything_goes_to_the_teacher(router: Router) -> None:
    import copy
    import dataclasses

    teacher_only = copy.copy(router)
    teacher_only.config = dataclasses.replace(
        router.config, threshold=dataclasses.replace(router.config.threshold, value=math.inf)
    )
    with TestClient(create_app(teacher_only)) as c:
        r = c.get("/readyz")
        body = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert r.status_code == 200 and body["threshold"] is None and body["answers_locally"] is False
    assert any("every input goes to the teacher" in why for why in body["degraded"])
    assert any("no teacher" in why for why in body["degraded"])


def test_an_empty_token_or_an_unset_token_variable_is_refused(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    from distil.cli.commands import _token

    with pytest.raises(ConfigError, match="token is empty"):
        create_app(router, token=" ")
    monkeypatch.delenv("DISTIL_TEST_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="not set"):
        _token("DISTIL_TEST_TOKEN")
    monkeypatch.setenv("DISTIL_TEST_TOKEN", "")
    with pytest.raises(ConfigError, match="empty"):
        _token("DISTIL_TEST_TOKEN")
    monkeypatch.setenv("DISTIL_TEST_TOKEN", "s3cret")
    assert _token("DISTIL_TEST_TOKEN") == "s3cret"


def test_a_client_that_stalls_its_body_gets_a_408(router: Router) -> None:
    app = create_app(router, read_timeout_s=0.2)
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b'{"inputs": ["my ca', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if chunks:
            return chunks.pop()
        await asyncio.sleep(30)  # the client never sends the rest
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/v1/classify", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
        "server": ("t", 80), "client": ("c", 1),
    }
    t0 = time.perf_counter()
    asyncio.run(app(scope, receive, send))
    assert time.perf_counter() - t0 < 5
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 408 and b"did not arrive" in body


def test_circuit_breaker_states() -> None:
    now = [0.0]
    b = CircuitBreaker(failures=3, cooldown_s=10, clock=lambda: now[0])
    assert b.state == "closed" and b.allow()
    b.failure()
    b.failure()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow() and b.opened_count == 1
    now[0] = 10.5
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # one trial at a time
    b.failure()  # the trial failed: open again
    assert b.state == "open" and b.opened_count == 2
    now[0] = 21.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_micro_batching_merges_concurrent_requests() -> None:
    seen: list[int] = []

    def fn(texts: list[str]) -> list[Decision]:
        seen.append(len(texts))
        time.sleep(0.01)
        return [Decision(t, 1.0, 1.0, False, "student") for t in texts]

    async def main() -> list[list[Decision]]:
        mb = MicroBatcher(fn, max_batch=8, max_wait_ms=50)
        mb.start()
        try:
            return await asyncio.gather(*(mb.submit([f"t{i}", f"u{i}"]) for i in range(20)))
        finally:
            await mb.stop()
            mb.close()

    results = asyncio.run(main())
    assert [[d.label for d in r] for r in results] == [[f"t{i}", f"u{i}"] for i in range(20)]
    assert sum(seen) == 40 and len(seen) < 20 and max(seen) <= 8


def test_a_one_text_request_is_not_held_behind_big_batches() -> None:
    calls: list[list[str]] = []

    def fn(texts: list[str]) -> list[Decision]:
        calls.append(list(texts))
        time.sleep(0.002 * len(texts))  # the student's work grows with the batch
        return [Decision(t, 1.0, 1.0, False, "student") for t in texts]

    async def main() -> tuple[int, int, list[list[Decision]]]:
        mb = MicroBatcher(fn, max_batch=16)
        mb.start()
        try:
            big = [asyncio.create_task(mb.submit([f"big{j}-{i}" for i in range(256)])) for j in range(2)]
            await asyncio.sleep(0.01)  # the big ones are being routed
            small = await mb.submit(["small"])
            calls_before_small = len(calls)
            done = await asyncio.gather(*big)
            return calls_before_small, len(calls), [small, *done]
        finally:
            await mb.stop()
            mb.close()

    before_small, total, (small, *big) = asyncio.run(main())
    assert [d.label for d in small] == ["small"]
    assert [d.label for d in big[0]] == [f"big0-{i}" for i in range(256)]  # order kept across slices
    assert max(len(c) for c in calls) <= 16  # bounded work per call
    assert before_small <= 3 < total  # answered within a call or two, long before the big ones end


def test_metrics_exposition_is_valid_prometheus_text(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path) as c:
        c.post("/v1/classify", json={"inputs": ["card", "cash"]})
        text = c.get("/metrics").text
        assert c.get("/metrics").headers["content-type"].startswith("text/plain")
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram")
            names.add(name)
        elif line and not line.startswith("#"):
            _series, value = line.rsplit(" ", 1)
            float(value.replace("+Inf", "inf"))
    assert {"distil_requests_total", "distil_request_duration_seconds", "distil_teacher_share",
            "distil_degraded_total", "distil_errors_total", "distil_circuit_open"} <= names
    prefix = 'distil_request_duration_seconds_bucket{endpoint="/v1/classify"'
    buckets = [ln for ln in text.splitlines() if ln.startswith(prefix)]
    counts = [float(b.rsplit(" ", 1)[1]) for b in buckets]
    assert counts == sorted(counts) and counts[-1] == 1  # cumulative, one request


# ---------------------------------------------------------------------------------------------
# a real uvicorn on loopback, and a real ngram artifact (slow)


@pytest.fixture
def live_server(router: Router, tmp_path: Path) -> Iterator[str]:
    task = Task.load(fx.write_task(tmp_path / "task", "keyword"))
    with fx.uvicorn_thread(create_app(router, task=task)) as url:
        yield url


@pytest.mark.slow
def test_real_uvicorn_on_loopback_survives_bad_input_and_concurrency(live_server: str) -> None:
    with httpx.Client(base_url=live_server, timeout=10) as c:
        assert c.get("/readyz").json()["ready"] is True
        for body in [b"{", b"\xff", b'{"inputs": [1]}', b'{"inputs": ["' + b"x" * 2_000_000 + b'"]}']:
            r = c.post("/v1/classify", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500
        texts = fx.make_texts(64, seed=11)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=20) as ac:
            return await asyncio.gather(*(ac.post("/v1/classify", json={"inputs": [t]}) for t in texts))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    with httpx.Client(base_url=live_server, timeout=10) as c:
        metrics = c.get("/metrics").text
    batches = _metric(metrics, "distil_student_batch_size_count")
    assert batches < len(texts) + 1  # concurrent requests were merged into micro-batches


@pytest.mark.slow
def test_serve_a_real_ngram_artifact_without_importing_torch(
    banking_artifact: tuple[Path, Path, list[str], list[str]], tmp_path: Path
) -> None:
    art, task_path, pool, test = banking_artifact
    fit_router(art, pool, target_agreement=0.9)
    script = f"""
import sys, json
sys.path.insert(0, {str(ROOT / 'tests')!r})
from fastapi.testclient import TestClient
from distil.serving import create_app
app = create_app({str(art)!r}, task={str(task_path)!r}, target_agreement=0.95)
with TestClient(app) as c:
    r = c.post("/v1/classify", json={{"inputs": {json.dumps(test[:20] + fx.FOREIGN)}}})
    print(json.dumps({{"status": r.status_code, "out": r.json(), "torch": "torch" in sys.modules}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["status"] == 200 and res["torch"] is False
    out = res["out"]
    labels = set(json.loads((art / "labels.json").read_text()))
    assert all(x["label"] in labels for x in out)
    foreign = out[20:]
    assert sum(x["ood"] for x in foreign) >= len(foreign) // 2 > sum(x["ood"] for x in out[:20])
    assert all(x["source"] == "teacher" for x in foreign if x["ood"])
    to_teacher = {t for t, x in zip(test[:20] + fx.FOREIGN, out, strict=True) if x["source"] == "teacher"}
    # teacher answers from serving landed in the task's journal, marked source=serve
    task = Task.load(task_path)
    with Journal(task.journal_path) as j:
        served = [r for r in j.rows() if r.source == "serve"]
    assert {r.text for r in served} >= to_teacher and to_teacher
