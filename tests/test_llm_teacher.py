"""The openai teacher end to end against a real LLM server (llama.cpp + SmolLM2-135M, offline).

SmolLM2-135M is a weak classifier: these tests check the plumbing (probe, constrained
answers, logprobs, sampling, token counts, the journal), not accuracy.  The server comes
from the session fixture ``llm_server`` (tests/llm_server.py), which skips when
llama-cpp-python or the model is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import banking77

from distil.journal import Journal
from distil.label import label
from distil.task import Task
from distil.teachers.openai import OpenAITeacher

if TYPE_CHECKING:
    from llm_server import LlmServer

pytestmark = [pytest.mark.slow, pytest.mark.llm]

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]


def pick(per_intent: int, offset: int = 0) -> list[tuple[str, str]]:
    """``per_intent`` banking77 training rows of each of INTENTS (deterministic: file order)."""
    rows = banking77("train")
    out: list[tuple[str, str]] = []
    for intent in INTENTS:
        mine = [r for r in rows if r[1] == intent]
        out += mine[offset : offset + per_intent]
    return out


def make_task(server: LlmServer, tmp_path: Path, labels: list[str] = INTENTS, **teacher: Any) -> Task:
    spec = {
        "kind": "openai",
        "model": "smollm2-135m",
        "base_url": server.base_url,
        "api_key_env": "DISTIL_TEST_NO_KEY",
        "concurrency": 2,
        "max_tokens": 24,
        "timeout_s": 120,
        "max_retries": 2,
        **teacher,
    }
    return Task.from_dict(
        {
            "name": "banking4",
            "instruction": "Which banking intent does this customer message express?",
            "labels": labels,
            "teacher": spec,
        },
        base_dir=tmp_path,
    )


def check_probs(probs: list[float] | None, k: int) -> None:
    assert probs is not None and len(probs) == k
    assert all(p >= 0 for p in probs)
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-6)


def test_the_llm_server_completes_a_chat_request(llm_server: LlmServer) -> None:
    """The portable llama.cpp build answers a real completion on this CPU (a native one may crash here)."""
    import httpx

    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 4}
    r = httpx.post(f"{llm_server.base_url}/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["choices"][0]["message"]["content"] is not None
    assert reply["usage"]["completion_tokens"] >= 1
    llm_server.check_alive()


def test_logprobs_teacher_against_llama_cpp(llm_server: LlmServer, tmp_path: Path) -> None:
    task = make_task(llm_server, tmp_path)
    assert task.teacher is not None and task.teacher.kind == "openai"
    teacher = OpenAITeacher(task.teacher, task)
    rows = pick(4)
    answers = teacher.predict_batch([t for t, _ in rows])
    caps = teacher.capabilities
    assert caps is not None
    # llama-cpp-python refuses OpenAI's json_schema (HTTP 500) and accepts json_object + schema.
    assert caps.response_format == "json_object"
    assert caps.logprobs and caps.mode == "logprobs"
    assert caps.calls == 3 and caps.tokens_in > 0
    assert len(answers) == len(rows) == 16
    # A grammar constrains every answer to the label set: all are done, all from logprobs.
    assert [a.status for a in answers] == ["done"] * 16, [(a.status, a.raw, a.error) for a in answers]
    for a in answers:
        check_probs(a.probs, len(INTENTS))
        assert a.method == "logprobs", a.extra
        assert a.extra["answer"] in INTENTS
        assert a.attempts == 1
        assert a.tokens_in > 50 and a.tokens_out > 0
        assert a.cost == 0.0 and a.latency_ms > 0
    # Soft labels, not one-hot: the renormalised logprobs spread mass over several labels.
    assert any(max(a.probs or [1.0]) < 0.99 for a in answers)
    teacher.close()


def test_samples_teacher_against_llama_cpp(llm_server: LlmServer, tmp_path: Path) -> None:
    """llama.cpp ignores ``n``: each sample is its own request."""
    task = make_task(llm_server, tmp_path, probs="samples", samples=3, sample_temperature=1.0)
    assert task.teacher is not None and task.teacher.kind == "openai"
    teacher = OpenAITeacher(task.teacher, task)
    answers = teacher.predict_batch([t for t, _ in pick(1)][:2])
    assert len(answers) == 2
    assert teacher.capabilities is not None and teacher.capabilities.mode == "samples"
    for a in answers:
        assert a.status == "done" and a.method == "samples"
        check_probs(a.probs, len(INTENTS))
        extra = a.extra.get("tie_break_samples", 0)  # three different answers are a tie: ask again
        assert a.attempts == 3 + extra  # one request per sample, one choice each
        n = 3 + extra
        assert all(p is not None and p * n == round(p * n) for p in a.probs or [])
        assert len(a.extra["samples"]) == n
        assert a.tokens_in > 150
    teacher.close()


def test_label_journals_answers_and_resumes(llm_server: LlmServer, tmp_path: Path) -> None:
    task = make_task(llm_server, tmp_path)
    assert task.teacher is not None and task.teacher.kind == "openai"
    texts = [t for t, _ in pick(2, offset=10)]
    with Journal(tmp_path / "journal.sqlite") as journal:
        teacher = OpenAITeacher(task.teacher, task)
        first = label(task, texts, teacher=teacher, journal=journal)
        assert first.stats.calls == len(texts) == 8
        assert first.stats.done == 8 and first.stats.failed == first.stats.invalid == 0
        assert len(first.labeled.texts) == 8 and first.labeled.probs.shape == (8, len(INTENTS))
        for text in texts:
            row = first.row_for(text)
            assert row is not None
            assert (row.status, row.method, row.attempts) == ("done", "logprobs", 1)
            check_probs(row.probs, len(INTENTS))
            assert row.label in INTENTS and row.tokens_in > 0 and row.tokens_out > 0
        teacher.close()

        again = OpenAITeacher(task.teacher, task)  # a fresh teacher: same fingerprint
        second = label(task, texts, teacher=again, journal=journal)
        assert second.stats.calls == 0 and second.stats.from_journal == 8
        assert again.capabilities is None  # nothing was sent, not even the probe
        assert second.labeled.probs.tolist() == first.labeled.probs.tolist()
        again.close()


def test_label_keys_give_exact_soft_labels_against_llama_cpp(llm_server: LlmServer, tmp_path: Path) -> None:
    # labels that share their first token: by name, the probability on "card" is split evenly three ways
    shared = ["card_arrival", "card_linking", "card_about_to_expire", "top_up_failed"]
    texts = [t for t, lab in banking77("train") if lab in shared][:40:4]
    split: dict[str, list[float]] = {}
    for mode in ("names", "letters"):
        task = make_task(llm_server, tmp_path / mode, shared, label_keys=mode)
        teacher = OpenAITeacher(task.teacher, task)  # type: ignore[arg-type]
        answers = teacher.predict_batch(texts)
        teacher.close()
        assert [a.status for a in answers] == ["done"] * len(texts), [(a.raw, a.error) for a in answers]
        assert all(a.method == "logprobs" and a.extra["answer"] in shared for a in answers)
        for a in answers:
            check_probs(a.probs, len(shared))
        split[mode] = [float(a.extra["split_mass"]) for a in answers]
    assert split["letters"] == [0.0] * len(texts)  # every label got its own probability
    assert sum(split["names"]) > 0  # by name, some mass on "card" had to be shared out evenly
