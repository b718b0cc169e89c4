"""Scaling out: labeling and batch prediction on Ray against one local process, and the journal merge, one run.

1. Labeling against a latency-bound stand-in teacher (``--delay`` seconds per answer, the server
   threaded): ``label()`` in this process (concurrency 8) against ``label_on_ray`` with 1, 2 and 4
   workers (concurrency 8 each) — inputs/s, the ratio to local, requests billed per input.
2. Batch prediction of ``--rows`` generated texts in 8 Parquet shards with an ngram student: the
   local engine (one process, shard after shard) against Ray with 2 workers — rows/s and the peak
   resident memory of the driver and of each worker process.
3. Merging a journal shard of ``--merge-rows`` answered rows into a central journal, and merging it
   again (the idempotent no-op a re-run pays).
4. How many requests per second one ``Quota`` actor (the cluster's budget) lets workers reserve.

    .venv/bin/python benchmarks/bench_scale.py [--part label,predict,merge,quota] [--rows N] [--merge-rows N]

Two cores here: the labeling part is bound by the teacher's latency (it scales with requests in
flight), the prediction part by CPU (at most 2x on 2 cores, less Ray's own processes).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = """
import json, sys
from pathlib import Path
from distil.ray_engine import RaySettings, peak_rss_mb, predict_sharded
art, out, engine, workers, *shards = sys.argv[1:]
res = predict_sharded(art, [Path(s) for s in shards], out, engine=engine, settings=RaySettings(workers=int(workers)))
print(json.dumps({"parts": res.parts, "seconds": res.seconds, "peak_rss_mb": peak_rss_mb()}))
"""


def bench_label(n: int, delay: float, workers: list[int]) -> None:
    """Inputs/s of local labeling and of Ray with each worker count, against one stand-in."""
    from test_reliability_standin import StandIn, openai_task

    from distil.label import label
    from distil.ray_engine import RaySettings, label_on_ray
    from distil.task import Task

    work = Path(tempfile.mkdtemp(prefix="distil-scale-"))
    rows = []
    with StandIn(delay=(delay, delay)) as s:
        runs: list[tuple[str, int]] = [("local", 0), *[("ray", w) for w in workers]]
        for engine, w in runs:
            texts = [f"{engine}{w} question {i} about my card" for i in range(n)]
            task = Task.load(openai_task(work / f"{engine}{w}", s.base_url, concurrency=8))
            before, peak0 = s.requests, s.max_in_flight
            s.max_in_flight = 0
            t0 = time.perf_counter()
            if engine == "local":
                label(task, texts)
            else:
                label_on_ray(task, texts, settings=RaySettings(workers=w))
            wall = time.perf_counter() - t0
            rows.append((engine if engine == "local" else f"ray, {w} worker{'s' * (w > 1)}", wall, n / wall,
                         (s.requests - before) / n, s.max_in_flight))
            s.max_in_flight = max(s.max_in_flight, peak0)
    local = rows[0][2]
    print(f"\n## Labeling {n} inputs, stand-in teacher {delay * 1000:.0f} ms per answer, concurrency 8 per process\n")
    print("| engine | wall s | inputs/s | vs local | requests per input | most in flight |")
    print("|---|---|---|---|---|---|")
    for name, wall, rate, per, peak in rows:
        print(f"| {name} | {wall:.1f} | {rate:.1f} | {rate / local:.2f}x | {per:.3f} | {peak} |")


def _shards(work: Path, rows: int, parts: int, texts: list[str]) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    step = -(-rows // parts)
    for p in range(parts):
        lo, hi = p * step, min(rows, (p + 1) * step)
        ids = [f"T{i:08d}" for i in range(lo, hi)]
        col = [f"{texts[i % len(texts)]} (ref {i})" for i in range(lo, hi)]
        path = work / f"tickets-{p:02d}.parquet"
        pq.write_table(pa.table({"ticket_id": ids, "text": col}), path)
        out.append(path)
    return out


def _child(art: Path, out: Path, engine: str, workers: int, shards: list[Path]) -> tuple[dict, float]:
    """One prediction run in its own process: its manifest parts, seconds, and its own peak memory."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", CHILD, str(art), str(out), engine, str(workers), *map(str, shards)],
                          check=True, env=env, capture_output=True, text=True)
    res = json.loads(done.stdout.strip().splitlines()[-1])
    return res, float(res["peak_rss_mb"])


def bench_predict(rows: int) -> None:
    """Rows/s and peak memory per process: local engine against Ray with 2 workers, same shards."""
    from _distil_helpers import small_banking

    from distil.train import train

    work = Path(tempfile.mkdtemp(prefix="distil-scale-"))
    ls = small_banking(n_classes=8, per_class=30)
    art = work / "students"
    train(ls, art, students=("ngram",), params={"ngram": {"bits": 14, "dim": 16, "epochs": 3}},
          routing={"calibration": "heldout"})
    shards = _shards(work, rows, 8, ls.texts)
    print(f"\n## Batch prediction of {rows:,} rows in {len(shards)} Parquet shards, ngram student\n")
    print("| engine | wall s | rows/s | vs local | driver peak RSS MB | worker peak RSS MB (max) | worker processes |")
    print("|---|---|---|---|---|---|---|")
    local_rate = None
    for engine, workers in (("local", 1), ("ray", 2)):
        res, driver_peak = _child(art, work / f"out-{engine}", engine, workers, shards)
        wall = float(res["seconds"])
        rate = rows / wall
        local_rate = local_rate or rate
        pids = {p["pid"] for p in res["parts"]}
        worker_peak = max(float(p["peak_rss_mb"]) for p in res["parts"])
        shown = "–" if engine == "local" else f"{worker_peak:.0f}"
        print(f"| {engine} | {wall:.1f} | {rate:,.0f} | {rate / local_rate:.2f}x | {driver_peak:.0f} | {shown} | "
              f"{len(pids) if engine == 'ray' else 0} |")


def _fill_shard(path: Path, rows: int) -> None:
    from distil.journal import Journal

    Journal(path).close()
    con = sqlite3.connect(path)
    con.execute("INSERT INTO teachers VALUES ('fp', 'openai', '{}', '[\"a\",\"b\"]', 0)")
    now = time.time()
    batch = 100_000
    for lo in range(0, rows, batch):
        con.executemany(
            "INSERT INTO calls(key, teacher, text, status, probs, label, method, attempts, cost, created_at, "
            "updated_at, source) VALUES (?, 'fp', ?, 'done', '[0.9,0.1]', 'a', 'logprobs', 1, 0.0001, ?, ?, 'label')",
            ((f"{i:064x}", f"ticket text number {i} about my card and a transfer", now, now + i * 1e-6)
             for i in range(lo, min(rows, lo + batch))),
        )
        con.commit()
    con.close()


def bench_merge(rows: int) -> None:
    """Seconds to merge a shard of ``rows`` answers into an empty central journal, then again (no-op)."""
    from distil.journal import Journal

    work = Path(tempfile.mkdtemp(prefix="distil-merge-"))
    shard = work / "journal.sqlite.shards" / "w1.sqlite"
    shard.parent.mkdir()
    t0 = time.perf_counter()
    _fill_shard(shard, rows)
    fill = time.perf_counter() - t0
    with Journal(work / "journal.sqlite") as central:
        t0 = time.perf_counter()
        first = central.merge(shard)
        merge = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = central.merge(shard)
        noop = time.perf_counter() - t0
    size = shard.stat().st_size / 1e6
    print(f"\n## Merging one journal shard of {rows:,} answered rows ({size:,.0f} MB)\n")
    print("| step | seconds | rows/s | rows taken |")
    print("|---|---|---|---|")
    print(f"| write the shard (benchmark set-up) | {fill:.1f} | {rows / fill:,.0f} | – |")
    print(f"| merge into the central journal | {merge:.1f} | {rows / merge:,.0f} | {first.added:,} |")
    print(f"| merge again (idempotent) | {noop:.2f} | – | {again.added} |")


def bench_quota(n: int) -> None:
    """Requests per second one Quota actor lets workers reserve and settle, with 1 and 8 callers."""
    from concurrent.futures import ThreadPoolExecutor

    from distil.quota import ALLOTMENT, Quota, SharedBudget
    from distil.ray_engine import RaySettings, quota_caller, ray_session

    print(f"\n## One Quota actor: {n:,} requests reserved and settled under --max-calls (allotments of "
          f"{ALLOTMENT}), from 1 and 8 threads\n")
    print("| callers | seconds | requests/s |")
    print("|---|---|---|")
    with ray_session(RaySettings()) as ray:
        for callers in (1, 8):
            actor = ray.remote(Quota).options(max_concurrency=256, num_cpus=0).remote(max_calls=10**9)
            budget = SharedBudget(quota_caller(ray, actor))
            budget.reserve(0.0)

            def spend(k: int, budget: SharedBudget = budget) -> None:
                for _ in range(k):
                    budget.reserve(0.0)
                    budget.settle(0.0, 0.0)

            t0 = time.perf_counter()
            with ThreadPoolExecutor(callers) as pool:
                list(pool.map(spend, [n // callers] * callers))
            wall = time.perf_counter() - t0
            print(f"| {callers} | {wall:.2f} | {n / wall:,.0f} |")


def main() -> None:
    """Run the parts asked for, in order."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="label,predict,merge,quota")
    ap.add_argument("--inputs", type=int, default=800, help="labeling: inputs per engine")
    ap.add_argument("--delay", type=float, default=0.2, help="labeling: the stand-in's seconds per answer")
    ap.add_argument("--workers", default="1,2,4", help="labeling: Ray worker counts")
    ap.add_argument("--rows", type=int, default=1_000_000, help="prediction: rows")
    ap.add_argument("--merge-rows", type=int, default=1_000_000)
    ap.add_argument("--quota-requests", type=int, default=4000)
    args = ap.parse_args()
    parts = set(args.part.split(","))
    print(f"machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
    if "label" in parts:
        bench_label(args.inputs, args.delay, [int(w) for w in args.workers.split(",")])
    if "predict" in parts:
        bench_predict(args.rows)
    if "merge" in parts:
        bench_merge(args.merge_rows)
    if "quota" in parts:
        bench_quota(args.quota_requests)


if __name__ == "__main__":
    main()
