"""Reliability benchmark: what a provider would bill when `distil label` is killed, doubled or capped.

Re-measures the figures of the reliability issue (12) against the counting OpenAI-compatible stand-in
of ``tests/test_reliability_standin.py`` (a real HTTP server on 127.0.0.1 that bills every request):

* kill -9 of ``distil label`` ``--kills`` times at random points (500 inputs, concurrency 4; the issue
  ran batch 8, answers now commit one by one),
  then one run to the end: requests received vs unique inputs, inputs paid twice, probe requests
  journaled, whether the export reads back;
* two ``distil label`` runs started at once, on a fresh work dir and on an existing journal: inputs
  paid twice;
* ``--max-cost`` with replies that carry no ``usage``, and ``--max-calls 10`` in samples mode with a
  server that ignores ``n``: billed vs cap.

Run::

    .venv/bin/python benchmarks/bench_reliability.py [--kills 20] [--inputs 500]

Prints one table of measured figures next to the figures the issue reported before the change.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from tables import markdown_table  # noqa: E402
from test_reliability_standin import StandIn, openai_task  # noqa: E402

from distil.data import read_labeled  # noqa: E402
from distil.journal import Journal  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(TESTS), "DISTIL_DEBUG": ""}
CONCURRENCY = 4


def _inputs(path: Path, n: int, prefix: str) -> list[str]:
    texts = [f"{prefix} {i} about my card and a transfer" for i in range(n)]
    path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    return texts


def _label(task: Path, inputs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "distil", "label", str(task), str(inputs), *extra]


def kill_loop(root: Path, kills: int, n: int) -> dict[str, object]:
    """kill -9 ``kills`` times at random points, then finish; what the stand-in received."""
    rng = random.Random(20)
    inputs = root / "in.csv"
    texts = _inputs(inputs, n, "kill question")
    with StandIn(delay=(0.005, 0.03)) as s:
        task = openai_task(root / "t", s.base_url, concurrency=CONCURRENCY)
        for _ in range(kills):
            proc = subprocess.Popen(_label(task, inputs), env=ENV, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            start, target = s.requests, rng.randint(3, 40)
            deadline = time.time() + 30
            while s.requests - start < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        final = subprocess.run(_label(task, inputs), env=ENV, capture_output=True, text=True, timeout=300)
        chat = sum(c for t, c in s.by_text.items() if t in set(texts))
        probes = sum(c for t, c in s.by_text.items() if t not in set(texts))
        with Journal(root / "t" / ".distil" / "journal.sqlite") as j:
            counts = j.counts()
        try:
            readable = len(read_labeled(root / "t" / ".distil" / "labeled.parquet")) == n
        except Exception:  # a benchmark reports an unreadable export, it does not stop
            readable = False
        return {
            "rc": final.returncode, "chat": chat, "unique": n, "paid_twice": s.paid_twice(), "probes": probes,
            "probes_journaled": counts.get("probe_attempts"), "readable": readable,
            "bound": n + kills * CONCURRENCY,
        }


def two_runs(root: Path, n: int, *, fresh: bool) -> int:
    """Inputs paid twice when two runs start on one task at once."""
    inputs = root / "in.csv"
    texts = _inputs(inputs, n, "concurrent question")
    with StandIn(delay=(0.005, 0.02)) as s:
        task = openai_task(root / "t", s.base_url, concurrency=CONCURRENCY)
        if not fresh:
            warm = root / "warm.csv"
            _inputs(warm, 3, "warm up")
            subprocess.run(_label(task, warm), env=ENV, capture_output=True, timeout=120, check=True)
        procs = [subprocess.Popen(_label(task, inputs, "--out", str(root / f"o{i}.jsonl")), env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
        for p in procs:
            p.wait(timeout=300)
        return sum(1 for t in texts if s.by_text[t] > 1)


def budgets(root: Path) -> dict[str, float]:
    """Billed vs cap: ``--max-cost`` without ``usage``; ``--max-calls 10`` in samples mode, ``n`` ignored."""
    from distil.label import label
    from distil.task import Task

    texts = [f"budget question {i} about a card payment " + "x" * 150 for i in range(120)]
    with StandIn(usage=False) as s:
        task = Task.load(openai_task(root / "a", s.base_url, price_in_per_1m=1.0, price_out_per_1m=2.0))
        res = label(task, texts, max_cost=0.004)
        no_usage = (s.billed / 0.004, res.stats.spent / 0.004)
    with StandIn(logprobs=False, n=False) as s:
        task = Task.load(openai_task(root / "b", s.base_url))
        label(task, texts, max_calls=10)
        samples_requests = s.requests
    return {"no_usage_billed_x_cap": no_usage[0], "no_usage_counted_x_cap": no_usage[1],
            "samples_requests_at_max_calls_10": samples_requests}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--inputs", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for d in ("kill", "fresh", "existing", "budget"):
            (root / d).mkdir()
        k = kill_loop(root / "kill", args.kills, args.inputs)
        fresh, existing = two_runs(root / "fresh", 240, fresh=True), two_runs(root / "existing", 200, fresh=False)
        b = budgets(root / "budget")
    rows = [
        (f"kill -9 x{args.kills}: chat requests for {k['unique']} inputs", "611 for 500",
         f"{k['chat']} (bound {k['bound']})"),
        (f"kill -9 x{args.kills}: inputs asked more than once", "81", str(k["paid_twice"])),
        ("kill -9: probe requests / journaled", "36 / 0", f"{k['probes']} / {k['probes_journaled']}"),
        ("kill -9: final run exit code, export readable", "corrupt 10 of 10 (export kill)",
         f"{k['rc']}, {k['readable']}"),
        ("two runs at once, fresh work dir: inputs paid twice (of 240)", "second run died", str(fresh)),
        ("two runs at once, existing journal: inputs paid twice (of 200)", "200", str(existing)),
        ("--max-cost, replies without usage: billed / cap", "5.4x",
         f"{b['no_usage_billed_x_cap']:.2f}x (counted {b['no_usage_counted_x_cap']:.2f}x)"),
        ("--max-calls 10, samples mode, server ignores n: requests", "50",
         f"{b['samples_requests_at_max_calls_10']:.0f}"),
    ]
    print(markdown_table(("case", "before (issue 12)", "measured"), rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
