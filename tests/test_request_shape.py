"""Request shape per model family: reasoning models, provider options, headers — against a stand-in that
follows OpenAI's documented rules for its reasoning models (400 for max_tokens, a non-default temperature
and logprobs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_reliability_standin import StandIn, openai_task

from distil.label import label
from distil.task import Task
from distil.teachers import make_teacher

TEXTS = [f"question {i}: my card payment was declined at the shop" for i in range(12)]
OLD_IDENTITY_KEYS = {"model", "prompt_version", "prompt_sha", "temperature", "probs", "top_logprobs", "samples",
                     "sample_temperature", "constrained", "max_tokens"}


def _task(tmp_path: Path, s: StandIn, extra_lines: str = "", **teacher: Any) -> Task:
    path = openai_task(tmp_path, s.base_url, **teacher)
    if extra_lines:
        path.write_text(path.read_text(encoding="utf-8") + extra_lines, encoding="utf-8")
    return Task.load(path)


def test_a_reasoning_model_is_asked_the_way_it_accepts(tmp_path: Path) -> None:
    """gpt-5-mini: max_completion_tokens, no temperature, no logprobs once refused — every input answered."""
    with StandIn(reasoning=True) as s:
        res = label(_task(tmp_path, s, model="gpt-5-mini", max_tokens=400), TEXTS)
        assert res.stats.done == len(TEXTS) and res.stats.failed == 0
        answered = [p for p in s.payloads if "logprobs" not in p]
        assert answered and all("max_completion_tokens" in p and "max_tokens" not in p for p in s.payloads)
        assert all("temperature" not in p for p in s.payloads)
        assert all(p["max_completion_tokens"] == 400 for p in s.payloads)


def test_the_old_request_shape_is_what_a_reasoning_model_refuses(tmp_path: Path) -> None:
    """The same stand-in refuses a model not named as a reasoning one (the request distil sent before)."""
    with StandIn(reasoning=True) as s:
        task = _task(tmp_path, s, model="my-proxy-route")
        with pytest.raises(Exception, match="max_completion_tokens"):
            label(task, TEXTS[:2])
        declared = _task(tmp_path / "declared", s, model="my-proxy-route", token_limit_param="max_completion_tokens",
                         send_temperature="no")
        assert label(declared, TEXTS[:2]).stats.done == 2


def test_other_models_keep_their_request_and_journal_key(tmp_path: Path) -> None:
    with StandIn() as s:
        task = _task(tmp_path, s, model="gpt-4o-mini")
        assert set(make_teacher(task).identity()) == OLD_IDENTITY_KEYS  # old journals keep their keys
        label(task, TEXTS[:3])
        assert all(p["max_tokens"] == 32 and p["temperature"] == 0.0 for p in s.payloads)
        assert not any("seed" in p or "reasoning_effort" in p for p in s.payloads)


def test_provider_options_headers_seed_and_effort_reach_every_request(tmp_path: Path) -> None:
    extra = ('\n[teacher.extra_body]\nthink = false\nchat_template_kwargs = {enable_thinking = false}\n'
             '\n[teacher.headers]\nX-Team = "support"\n')
    with StandIn() as s:
        task = _task(tmp_path, s, extra, model="qwen3-8b", seed=7, reasoning_effort="low")
        res = label(task, TEXTS[:4])
        assert res.stats.done == 4
        for p in s.payloads:
            assert p["think"] is False and p["chat_template_kwargs"] == {"enable_thinking": False}
            assert p["seed"] == 7 and p["reasoning_effort"] == "low"
        assert all(h.get("x-team") == "support" for h in s.headers_seen)
        ident = make_teacher(task).identity()
        assert ident["extra_body"] == {"think": False, "chat_template_kwargs": {"enable_thinking": False}}
        assert "headers" not in json.dumps(ident)
    with StandIn() as s2:
        other = _task(tmp_path / "b", s2, extra.replace("think = false", "think = true"), model="qwen3-8b", seed=7,
                      reasoning_effort="low")
        assert make_teacher(other).fingerprint() != make_teacher(task).fingerprint()  # answers never mixed


def test_extra_body_overrides_what_distil_sets(tmp_path: Path) -> None:
    with StandIn() as s:
        task = _task(tmp_path, s, "\n[teacher.extra_body]\nmax_tokens = 99\n", model="standin-1")
        label(task, TEXTS[:1])
        assert all(p["max_tokens"] == 99 for p in s.payloads)


def test_bad_request_shape_settings_are_one_clear_line(tmp_path: Path) -> None:
    from distil.errors import ConfigError

    with StandIn() as s, pytest.raises(ConfigError, match="reasoning_effort"):
        _task(tmp_path, s, model="gpt-5", reasoning_effort="extreme")


@pytest.mark.parametrize("top1", [True, False])
def test_one_hot_logprobs_are_called_out(tmp_path: Path, top1: bool) -> None:
    """A server whose logprobs hold only the chosen token gives no soft labels: label() says so."""
    texts = [f"soft check {i}: my card payment" for i in range(30)]
    with StandIn(top1=top1) as s:
        res = label(_task(tmp_path, s, model="standin-1"), texts)
        assert res.stats.done == 30
        methods = {r.method for r in res.rows.values()}
        assert methods == {"logprobs"}
        if top1:
            assert res.soft_warning is not None and "30 of 30 logprobs answers are one-hot" in res.soft_warning
        else:
            assert res.soft_warning is None


@pytest.mark.parametrize("top1", [True, False])
def test_the_evaluation_report_says_the_training_answers_were_one_hot(tmp_path: Path, top1: bool) -> None:
    from distil.evaluate.core import soft_label_warnings

    texts = [f"soft check {i}: my card payment" for i in range(30)]
    with StandIn(top1=top1) as s:
        task = _task(tmp_path, s, model="standin-1")
        res = label(task, texts)
    said = soft_label_warnings(res.teacher, task)
    if top1:
        assert len(said) == 1 and said[0].startswith("training answers: the soft labels carry no information")
    else:
        assert said == []
    assert soft_label_warnings("no-such-teacher", task) == []


def test_distil_label_prints_the_soft_label_warning(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from helpers import write_csv

    inputs = write_csv(tmp_path / "in.csv", [{"text": f"soft check {i}: my card payment"} for i in range(25)])
    with StandIn(top1=True) as s:
        task = openai_task(tmp_path / "t", s.base_url, model="standin-1")
        env = {**os.environ, "COLUMNS": "200", "DISTIL_DEBUG": ""}
        proc = subprocess.run([sys.executable, "-m", "distil", "label", str(task), str(inputs)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        said = " ".join((proc.stdout + proc.stderr).split())
        assert "soft labels carry no information" in said and "[teacher].top_logprobs" in said
        journal = subprocess.run([sys.executable, "-m", "distil", "journal", str(task)], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=120)
    assert journal.returncode == 0, journal.stderr
    assert "25 of 25 logprobs answers are one-hot" in " ".join((journal.stdout + journal.stderr).split())


@pytest.mark.parametrize("task_knows_the_cached_price", [True, False])
def test_cached_prompt_tokens_are_priced_as_billed(tmp_path: Path, task_knows_the_cached_price: bool) -> None:
    """The long shared prefix (instruction + labels) is read from the provider's cache at a lower price."""
    prices = {"price_in_per_1m": 1.0, "price_out_per_1m": 2.0}
    if task_knows_the_cached_price:
        prices["price_cached_in_per_1m"] = 0.1
    with StandIn(cached_price=0.1, price=(1.0, 2.0)) as s:
        res = label(_task(tmp_path, s, model="standin-1", **prices), TEXTS)
        assert res.stats.done == len(TEXTS) and s.billed > 0
        if task_knows_the_cached_price:
            assert res.stats.spent == pytest.approx(s.billed, rel=1e-9)  # what the invoice shows
        else:
            assert res.stats.spent > 1.5 * s.billed  # cached tokens at the full input price: never under the bill


def test_a_malformed_cached_token_count_is_named() -> None:
    from distil.teachers.reply import MalformedReply, parse_reply

    body = {"choices": [{"message": {"content": "card"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": -3}}}
    with pytest.raises(MalformedReply, match="cached_tokens"):
        parse_reply(json.dumps(body))
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 50}  # type: ignore[index]
    assert parse_reply(json.dumps(body)).cached == 10  # never more than the prompt


def test_few_shot_examples_reach_the_prompt_and_the_journal_key(tmp_path: Path) -> None:
    examples = '\n[examples]\ncard = ["my card got stuck in the ATM", "card  declined\\nagain"]\ncash = ["ATM cash"]\n'
    with StandIn() as s:
        plain = _task(tmp_path / "a", s, model="standin-1")
        shots = _task(tmp_path / "b", s, examples, model="standin-1")
        assert shots.examples["card"][0] == "my card got stuck in the ATM"
        label(shots, TEXTS[:2])
        system = s.payloads[-1]["messages"][0]["content"]
        assert 'Examples:\n- "my card got stuck in the ATM" -> {"label": "card"}\n- "card declined again"' in system
        assert system.index('-> {"label": "card"}') < system.index('-> {"label": "cash"}')  # label order
        assert "Examples:" not in make_teacher(plain).system_prompt
        assert make_teacher(plain).fingerprint() != make_teacher(shots).fingerprint()


def test_examples_for_an_unknown_label_are_refused(tmp_path: Path) -> None:
    from distil.errors import ConfigError

    with StandIn() as s, pytest.raises(ConfigError, match="examples for label"):
        _task(tmp_path, s, '\n[examples]\ncrypto = ["bitcoin"]\n', model="standin-1")


def test_price_tables_take_a_cached_input_price() -> None:
    from distil.cost import DEFAULT_PRICES, load_prices, lookup_price
    from distil.errors import ConfigError

    table = load_prices({"my-model": {"in_per_1m": 1.0, "out_per_1m": 2.0, "cached_in_per_1m": 0.25}})
    price = lookup_price("my-model", table)
    assert price is not None and price.tokens_cost(1000, 10, cached=600) == pytest.approx(
        (400 * 1.0 + 600 * 0.25 + 10 * 2.0) / 1e6)
    assert DEFAULT_PRICES["gpt-4o-mini"].cached_in_per_1m == 0.075
    assert DEFAULT_PRICES["claude-sonnet-4"].tokens_cost(1000, 0, cached=1000) == pytest.approx(3.0 / 1000)
    with pytest.raises(ConfigError, match="negative"):
        load_prices({"m": {"in_per_1m": 1.0, "out_per_1m": 2.0, "cached_in_per_1m": -1}})


def test_azure_openai_gets_its_deployment_url_api_version_and_api_key_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distil.errors import ConfigError

    monkeypatch.setenv("DISTIL_AZURE_KEY", "azure-secret")
    with StandIn() as s:
        root = s.base_url.removesuffix("/v1")
        task = Task.load(openai_task(tmp_path, root, api="azure", azure_deployment="gpt-4o prod",
                                     api_version="2024-10-21", api_key_env="DISTIL_AZURE_KEY"))
        res = label(task, [f"azure {i}: card" for i in range(5)])
    assert res.stats.done == 5
    assert set(s.paths) == {"/openai/deployments/gpt-4o%20prod/chat/completions?api-version=2024-10-21"}
    assert all(h.get("api-key") == "azure-secret" and "authorization" not in h for h in s.headers_seen)
    with pytest.raises(ConfigError, match="azure_deployment"):
        _task(tmp_path / "bad", s, api="azure")
    with pytest.raises(ConfigError, match='api = "azure" only'):
        _task(tmp_path / "bad2", s, api_version="2024-10-21")
