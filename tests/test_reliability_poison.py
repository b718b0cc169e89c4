"""One bad reply never stops a run: malformed replies are stored ``invalid`` with the raw body, the run goes on.

Against the stand-in (a real HTTP server): a reply whose ``logprobs``, ``choices``, ``message``,
``usage``, ``content`` or ``top_logprobs`` has the wrong JSON type, a 200 that is not JSON, and a
``Retry-After: nan``.  Before this change each of them ended ``distil label`` with exit 70 and
the batch lost, and every rerun died on the same input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_reliability_standin import StandIn, openai_task

from distil.journal import Journal
from distil.label import label
from distil.task import Task

TESTS = Path(__file__).resolve().parent
TEXTS = [f"poison case number {i}" for i in range(20)]
BAD = TEXTS[5]


@pytest.mark.parametrize(
    "kind", ["logprobs", "choices", "message", "usage", "content", "top_logprobs", "not_json"]
)
def test_a_malformed_reply_is_invalid_with_its_raw_body_and_the_run_goes_on(tmp_path: Path, kind: str) -> None:
    with StandIn(poison={BAD: kind}) as s:
        task = Task.load(openai_task(tmp_path, s.base_url))
        res = label(task, TEXTS)
        assert (res.stats.done, res.stats.invalid, res.stats.failed) == (len(TEXTS) - 1, 1, 0)
        row = res.row_for(BAD)
        assert row is not None and row.status == "invalid"
        assert row.raw and row.error and "malformed reply" in row.error
        assert BAD not in res.labeled.texts and len(res.labeled) == len(TEXTS) - 1
        asked = s.by_text[BAD]
        again = label(task, TEXTS)  # paid for once: never asked again
        assert again.stats.calls == 0 and s.by_text[BAD] == asked == 1


def test_retry_after_nan_is_ignored_and_the_request_retried(tmp_path: Path) -> None:
    with StandIn(poison={BAD: "retry_after_nan"}) as s:
        task = Task.load(openai_task(tmp_path, s.base_url))
        res = label(task, TEXTS)
        assert res.stats.done == len(TEXTS) and res.stats.failed == 0
        assert s.by_text[BAD] == 2  # the 429, then the answer


def test_the_cli_completes_with_the_poisoned_input_invalid(tmp_path: Path) -> None:
    """The real command: exit 0 (no traceback, no exit 70), the input invalid in the journal, a rerun asks nothing."""
    inputs = tmp_path / "in.csv"
    inputs.write_text("text\n" + "\n".join(TEXTS) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "DISTIL_DEBUG": ""}
    with StandIn(poison={BAD: "logprobs", TEXTS[7]: "usage", TEXTS[9]: "message"}) as s:
        task = openai_task(tmp_path / "t", s.base_url)
        cmd = [sys.executable, "-m", "distil", "label", str(task), str(inputs)]
        first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "internal error" not in first.stderr and "3 answers were outside the label set" in first.stderr
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0 and "teacher calls this run: 0" in second.stderr
    with Journal(tmp_path / "t" / ".distil" / "journal.sqlite") as j:
        c = j.counts()
    assert (c["done"], c["invalid"], c["pending"], c["failed"]) == (len(TEXTS) - 3, 3, 0, 0)
