"""The usual dialects: the Hugging Face Inference shape (with huggingface_hub's own client against a real
uvicorn), ``/v1/models``, chat ``logprobs`` and ``stream``, and the Prometheus exposition's conventions."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fixtures_serve as fx
import pytest
from fastapi.testclient import TestClient
from llm_server import free_port
from prometheus_client.parser import text_string_to_metric_families

from distil.route import Router
from distil.serving import create_app
from distil.task import Task


@pytest.fixture(scope="module")
def router() -> Router:
    r: Router = fx.centroid_router()
    assert math.isfinite(r.config.threshold.value)
    return r


def _client(router: Router, tmp_path: Path) -> TestClient:
    task = Task.load(fx.write_task(tmp_path / "task", "keyword"))
    return TestClient(create_app(router, task=task))


def _check_ranked(rows: list[dict[str, Any]], labels: list[str], k: int) -> None:
    assert len(rows) == k and {r["label"] for r in rows} <= set(labels)
    scores = [r["score"] for r in rows]
    assert scores[1:] == sorted(scores[1:], reverse=True) and all(0 <= s <= 1 for s in scores)
    assert sum(scores) <= 1 + 1e-9


def test_hf_inference_shape_on_classify_and_root(router: Router, tmp_path: Path) -> None:
    texts = ["my card was declined at the mall", "what is the best recipe for a chocolate cake"]
    with _client(router, tmp_path) as c:
        native = c.post("/v1/classify", json={"inputs": texts}).json()
        hf = c.post("/v1/classify", json={"inputs": texts, "parameters": {"top_k": 2}}).json()
        everything = c.post("/", json={"inputs": texts[0]}).json()
        one = c.post("/", json={"inputs": texts[0], "parameters": {"top_k": 1, "function_to_apply": "softmax"}})
        bad = [
            c.post("/v1/classify", json={"inputs": "x", "parameters": {"top_k": 0}}),
            c.post("/v1/classify", json={"inputs": "x", "parameters": {"top_k": True}}),
            c.post("/v1/classify", json={"inputs": "x", "parameters": {"function_to_apply": "sigmoid"}}),
            c.post("/v1/classify", json={"inputs": "x", "parameters": {"temperature": 1}}),
            c.post("/v1/classify", json={"inputs": "x", "parameters": [1]}),
        ]
    assert len(hf) == 2
    for rows, served in zip(hf, native, strict=True):
        _check_ranked(rows, router.labels, 2)
        assert rows[0] == {"label": served["label"], "score": pytest.approx(served["score"], abs=1e-6)}
    assert len(everything) == 1
    _check_ranked(everything[0], router.labels, len(router.labels))
    assert sum(r["score"] for r in everything[0]) == pytest.approx(1.0, abs=1e-6)
    assert one.status_code == 200 and len(one.json()[0]) == 1
    assert [r.status_code for r in bad] == [422] * 5
    assert "top_k" in bad[0].json()["error"]["message"] and "softmax" in bad[2].json()["error"]["message"]
    assert "temperature" in bad[3].json()["error"]["message"]


def test_models_and_chat_logprobs(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path) as c:
        models = c.get("/v1/models").json()
        body = {"messages": [{"role": "user", "content": "the atm kept my cash"}], "logprobs": True, "top_logprobs": 3}
        r = c.post("/v1/chat/completions", json=body).json()
        plain = c.post("/v1/chat/completions", json={**body, "logprobs": False}).json()
        stream = {"stream": True, "stream_options": {"include_usage": True}}
        streamed = c.post("/v1/chat/completions", json={**body, **stream})
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["distil-centroid"]
    assert models["data"][0]["object"] == "model" and models["data"][0]["owned_by"] == "distil"
    content = r["choices"][0]["logprobs"]["content"]
    assert len(content) == 1 and content[0]["token"] == r["choices"][0]["message"]["content"]
    assert math.exp(content[0]["logprob"]) == pytest.approx(r["distil"]["score"], abs=1e-5)
    top = content[0]["top_logprobs"]
    assert len(top) == 3 and top[0]["token"] == content[0]["token"]
    assert [t["logprob"] for t in top[1:]] == sorted((t["logprob"] for t in top[1:]), reverse=True)
    assert plain["choices"][0]["logprobs"] is None
    assert "data: [DONE]" in streamed.text and '"usage"' in streamed.text and '"top_logprobs"' in streamed.text


def test_prometheus_exposition_follows_the_conventions(router: Router, tmp_path: Path) -> None:
    with _client(router, tmp_path) as c:
        c.post("/v1/classify", json={"inputs": ["my card was declined", "the atm kept my cash", "card stuck"]})
        resp = c.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(resp.text)}
    info = families["distil_model_info"]  # an Info is a gauge of 1 in the text format
    (sample,) = info.samples
    assert sample.labels["student"] == "centroid" and sample.labels["labels"] == str(len(router.labels))
    preds = families["distil_predictions"]
    assert preds.type == "counter"
    by_label = {s.labels["label"]: s.value for s in preds.samples if s.name == "distil_predictions_total"}
    assert sum(by_label.values()) == 3 and set(by_label) <= set(router.labels)
    assert families["distil_circuit_opened"].type == "counter"
    assert "process_resident_memory_bytes" in families and "python_info" in families
    for family in families.values():
        if family.type == "gauge":
            assert not family.name.endswith("_total"), family.name


TOKEN = "a-long-random-serving-token"


@pytest.fixture
def live_server(router: Router, tmp_path: Path) -> Iterator[str]:
    task = Task.load(fx.write_task(tmp_path / "task", "keyword"))
    with fx.uvicorn_thread(create_app(router, task=task, token=TOKEN)) as url:
        yield url


@pytest.mark.slow
def test_huggingface_hub_inference_client_reads_the_answers(
    live_server: str, router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import InferenceClient, constants

    # HF_HUB_OFFLINE blocks every request the client makes, loopback included; this one goes to 127.0.0.1 only
    monkeypatch.setattr(constants, "is_offline_mode", lambda: False)

    for url in (live_server, f"{live_server}/v1/classify"):
        client = InferenceClient(model=url, token=TOKEN)  # sent as the bearer token distil asks for
        out = client.text_classification("my card was declined at the mall", top_k=3)
        assert len(out) == 3 and out[0].label in router.labels
        assert out[0].score >= out[1].score >= out[2].score
        full = client.text_classification("the atm kept my cash")
        assert len(full) == len(router.labels)
        assert sum(e.score for e in full) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_distil_serve_says_how_it_routes_at_start(
    banking_artifact: tuple[Path, Path, list[str], list[str]], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import httpx

    from distil.route import fit_router

    art, task_path, pool, test = banking_artifact
    fit_router(art, pool, target_agreement=0.9)
    port = free_port()
    cmd = [sys.executable, "-m", "distil", "serve", str(art), "--task", str(task_path), "--port", str(port)]
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent / "src"), str(here)])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        deadline, ready = time.time() + 60, False
        while time.time() < deadline and proc.poll() is None and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.2)
        said = proc.communicate(timeout=5)[0] if proc.poll() is not None else ""
        assert ready, f"distil serve did not become ready: {said}"
        answer = httpx.post(f"http://127.0.0.1:{port}/", json={"inputs": test[0], "parameters": {"top_k": 2}})
        assert answer.status_code == 200 and len(answer.json()[0]) == 2
    finally:
        proc.terminate()
        printed, _ = proc.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in printed
    assert "routing on the learned acceptor's P(agree with the teacher): threshold" in printed
    assert "OOD guard: on" in printed and "teacher: " in printed
    assert "/v1/classify" in printed and "Traceback" not in printed
