"""Progress lines: every long step says what it does and how long it took; retries say their wait."""

from __future__ import annotations

import logging
import random

import pytest

from distil.progress import collect_timings, step
from distil.teachers.base import RetryableError, RetryPolicy, retry_call


def test_steps_log_start_and_seconds_and_only_top_level_steps_are_collected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="distil.progress")
    with collect_timings() as timings:
        with step("outer"), step("inner"):
            pass
        with step("second"):
            pass
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0] == "outer …" and msgs[1] == "  inner …"
    assert any(m.startswith("  inner: ") and m.endswith(" s") for m in msgs)
    assert [name for name, _ in timings.steps] == ["outer", "second"]
    table = timings.table().splitlines()
    assert table[0].endswith("s  outer") and table[-1].endswith("s  total")


def test_a_step_that_fails_still_reports_its_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="distil.progress")
    with pytest.raises(ValueError), step("doomed"):
        raise ValueError("boom")
    assert any(r.getMessage().startswith("doomed: ") for r in caplog.records)


def test_each_retry_is_one_line_with_its_wait(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="distil.progress")
    waits: list[float] = []
    policy = RetryPolicy(max_retries=3, base_delay=1.0, sleep=waits.append, rng=random.Random(0))
    calls = iter([RetryableError("HTTP 503"), RetryableError("HTTP 429", retry_after=2.0), "ok"])

    def attempt() -> str:
        got = next(calls)
        if isinstance(got, Exception):
            raise got
        return got

    assert retry_call(attempt, policy) == ("ok", 3)
    lines = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(lines) == 2
    assert "HTTP 503" in lines[0] and "retry 1 of 3" in lines[0]
    assert "HTTP 429" in lines[1] and "retry 2 of 3 in 2.0 s" in lines[1]
    assert waits[1] == 2.0
