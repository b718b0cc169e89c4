"""Budgets are hard stops: what the stand-in bills stays within the cap, however the server reports.

The matrix: ``usage`` reported or not, the price known (task file, built-in table) or not, one
request per input (logprobs) or ``samples`` (with a server that honours ``n`` and one that ignores
it, as llama.cpp does).  Before this change: replies without ``usage`` were recorded as $0 while
5x the cap was billed, ``--max-cost`` without a price was ignored, ``--max-calls 10`` made 52
requests in samples mode, and ``--max-cost nan`` was accepted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from test_reliability_standin import StandIn, openai_task

from distil.errors import ConfigError
from distil.journal import Journal
from distil.label import label
from distil.task import Task

TEXTS = [f"budget question {i} about a card payment " + "x" * 150 for i in range(120)]
PRICES = {"price_in_per_1m": 1.0, "price_out_per_1m": 2.0}
CONCURRENCY = 4


def _task(tmp_path: Path, s: StandIn, **teacher: Any) -> Task:
    return Task.load(openai_task(tmp_path, s.base_url, concurrency=CONCURRENCY, **teacher))


def _one_request_bill(s: StandIn, k: int = 1) -> float:
    """What the stand-in bills for the largest single request of this test (the in-flight slack)."""
    prompt = math.ceil(2000 / 4) + 8
    return (prompt * s.price[0] + 8 * k * s.price[1]) / 1e6


@pytest.mark.parametrize("usage", [True, False])
@pytest.mark.parametrize(("mode", "n"), [("logprobs", True), ("samples", True), ("samples", False)])
def test_max_cost_holds_with_or_without_usage(tmp_path: Path, usage: bool, mode: str, n: bool) -> None:
    cap = 0.004
    with StandIn(usage=usage, logprobs=mode == "logprobs", n=n) as s:
        task = _task(tmp_path, s, **PRICES)
        res = label(task, TEXTS, max_cost=cap)
        assert res.stats.stopped == "max_cost"
        assert 0 < s.billed <= cap + CONCURRENCY * _one_request_bill(s, 5)
        assert s.billed <= cap  # the estimate is conservative: in practice nothing passes the cap at all
        assert res.stats.spent <= cap + 1e-12
        assert res.stats.spent >= s.billed - 1e-9  # what we count is never less than the bill
        assert res.stats.requests == s.requests  # every request counted, probe included
        c = Journal(task.journal_path).counts()
        assert c["probe_attempts"] == res.stats.probe_requests > 0
        assert c["cost"] + c["probe_cost"] == pytest.approx(res.stats.spent, abs=1e-9)
        rest = label(task, TEXTS)  # no budget: the rest follows, nothing asked twice
        assert rest.stats.calls == len(TEXTS) - res.stats.calls - res.stats.from_journal
        per_input = 1 if n else 5  # a server that ignores ``n`` is asked once per sample
        assert max(c for t, c in s.by_text.items() if t in TEXTS) <= per_input


@pytest.mark.parametrize(("mode", "n"), [("logprobs", True), ("samples", True), ("samples", False)])
def test_max_calls_counts_every_request(tmp_path: Path, mode: str, n: bool) -> None:
    with StandIn(logprobs=mode == "logprobs", n=n) as s:
        task = _task(tmp_path, s)
        res = label(task, TEXTS, max_calls=10)
        assert s.requests <= 10 and res.stats.requests == s.requests
        assert res.stats.stopped == "max_calls"


def test_max_cost_without_a_price_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    with StandIn() as s:
        task = _task(tmp_path, s)
        with pytest.raises(ConfigError, match="no known price") as exc:
            label(task, TEXTS, max_cost=1.0)
        assert exc.value.hint is not None and "price_in_per_1m" in exc.value.hint
        assert s.requests == 0


def test_the_built_in_price_table_counts(tmp_path: Path) -> None:
    with StandIn(usage=False) as s:
        task = Task.load(openai_task(tmp_path, s.base_url, model="gpt-4o-mini", concurrency=CONCURRENCY))
        res = label(task, TEXTS[:10], max_cost=1.0)
        assert res.stats.done == 10 and res.stats.spent > 0 and res.stats.stopped is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, -math.inf])
def test_a_max_cost_that_is_not_a_finite_number_is_refused(tmp_path: Path, bad: float) -> None:
    with StandIn() as s:
        task = _task(tmp_path, s, **PRICES)
        with pytest.raises(ConfigError, match="finite number"):
            label(task, TEXTS, max_cost=bad)
        with pytest.raises(ConfigError, match="max-calls"):
            label(task, TEXTS, max_calls=-1)
        assert s.requests == 0


def test_max_cost_zero_sends_nothing(tmp_path: Path) -> None:
    with StandIn() as s:
        task = _task(tmp_path, s, **PRICES)
        res = label(task, TEXTS, max_cost=0.0)
        assert res.stats.stopped == "max_cost" and s.requests == 0 and res.stats.calls == 0
