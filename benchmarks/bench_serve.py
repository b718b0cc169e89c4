"""Serving load test on loopback: a real uvicorn server in its own process, bounded in time.

Phase 1 ("teacher up"): ``--concurrency`` clients send single-text requests for ``--seconds``;
the texts are banking77 test queries mixed with CLINC150 out-of-scope queries (``--oos-share``),
so some go to the teacher.  Phase 2 ("teacher stopped"): the same, after the teacher is stopped;
every request must still be answered, the ones that needed the teacher flagged ``degraded``
(texts the teacher answered in phase 1 still come from the journal).

Student: an ngram artifact (``--artifact DIR``, e.g. one written by bench_router.py, or trained
here on banking77 with ``--epochs``).  Teacher: a ``function`` teacher — the team's "existing
code", written next to the task file — answering banking77 gold labels after ``--teacher-ms`` of
simulated latency per call, and raising while a stop-file exists.

    .venv/bin/python benchmarks/bench_serve.py [--seconds 30] [--concurrency 64] [--artifact DIR]

Prints one table: requests/s, p50/p99 latency, errors, share routed to the teacher, degraded.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

TEACHER_MODULE = '''"""A team's existing classifier, used as the teacher (benchmark)."""
import json, os, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLD = json.loads((HERE / "gold.json").read_text(encoding="utf-8"))
LABELS = json.loads((HERE / "labels.json").read_text(encoding="utf-8"))
DELAY = float(os.environ.get("BENCH_TEACHER_MS", "50")) / 1000.0


def answer(texts):
    if (HERE / "STOPPED").exists():
        raise ConnectionError("teacher stopped")
    time.sleep(DELAY)
    return [GOLD.get(t, LABELS[0]) for t in texts]
'''

TASK = """
name = "bench-serve"
labels = {labels}

[teacher]
kind = "function"
callable = "bench_teacher:answer"
batch_size = 64
"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def banking_rows() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    out = []
    for split in ("train", "test"):
        with (DATA / "banking77" / f"{split}.csv").open(encoding="utf-8") as fh:
            out.append([(r["text"], r["category"]) for r in csv.DictReader(fh)])
    return out[0], out[1]


def train_artifact(out: Path, rows: list[tuple[str, str]], epochs: int) -> None:
    """A banking77 ngram artifact with its router (teacher = gold, 0.9 on the gold label)."""
    from distil.data import LabeledSet
    from distil.train import train

    labels = sorted({lab for _, lab in rows})
    texts = list(dict.fromkeys(t for t, _ in rows))
    gold = dict(rows)
    p = np.full((len(texts), len(labels)), 0.1 / (len(labels) - 1), dtype=np.float32)
    p[np.arange(len(texts)), [labels.index(gold[t]) for t in texts]] = 0.9
    train(LabeledSet(texts, p, labels, teacher="gold"), out, students=["ngram"],
          params={"ngram": {"bits": 16, "dim": 32, "epochs": epochs}})


async def load(url: str, texts: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` clients, each sending one text per request, until ``seconds`` pass."""
    lat: list[float] = []
    errors = 0
    codes: dict[int, int] = {}
    routed_teacher = degraded = answered = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal errors, routed_teacher, degraded, answered
            i = w
            while time.perf_counter() < stop:
                text = texts[i % len(texts)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/classify", json={"inputs": [text]})
                except httpx.HTTPError:
                    errors += 1
                    continue
                lat.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    errors += 1
                    continue
                item = r.json()[0]
                answered += 1
                routed_teacher += item["source"] == "teacher" or item["degraded"]
                degraded += item["degraded"]

        t_start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    arr = np.array(lat) if lat else np.array([np.nan])
    return {
        "rps": len(lat) / elapsed, "p50_ms": float(np.percentile(arr, 50) * 1000),
        "p99_ms": float(np.percentile(arr, 99) * 1000), "errors": errors, "codes": codes,
        "teacher_share": routed_teacher / max(answered, 1), "degraded": degraded, "answered": answered,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", help="an ngram artifact dir (banking77 labels); trained here if absent")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--teacher-ms", type=float, default=50.0)
    ap.add_argument("--oos-share", type=float, default=0.1, help="share of CLINC150 out-of-scope queries")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--target-agreement", type=float, default=0.95)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    args = ap.parse_args()
    b_train, b_test = banking_rows()
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    art = Path(args.artifact) if args.artifact else work / "artifact"
    if not args.artifact:
        t0 = time.perf_counter()
        train_artifact(art, b_train, args.epochs)
        print(f"trained a banking77 ngram artifact in {time.perf_counter() - t0:.0f}s")
    labels = json.loads((art / "labels.json").read_text())
    keep = set(labels)  # an artifact trained on a subset of the intents gets the matching queries
    b_train = [(t, lab) for t, lab in b_train if lab in keep]
    b_test = [(t, lab) for t, lab in b_test if lab in keep]
    from distil.route import fit_router

    cfg = fit_router(art, [t for t, _ in b_train], target_agreement=args.target_agreement)
    print(cfg.threshold.describe())
    task_dir = work / "task"
    task_dir.mkdir()
    (task_dir / "bench_teacher.py").write_text(TEACHER_MODULE, encoding="utf-8")
    (task_dir / "gold.json").write_text(json.dumps(dict(b_train + b_test)), encoding="utf-8")
    (task_dir / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    (task_dir / "task.toml").write_text(TASK.format(labels=json.dumps(labels)), encoding="utf-8")

    oos = [t for t, _ in json.loads((DATA / "clinc150" / "data_full.json").read_text())["oos_test"]]
    rng = np.random.default_rng(0)
    n_oos = int(len(b_test) * args.oos_share / (1 - args.oos_share))
    texts = [t for t, _ in b_test] + list(rng.choice(oos, size=min(n_oos, len(oos)), replace=False))
    rng.shuffle(texts)
    half = len(texts) // 2
    phase1, phase2 = texts[:half], texts[half:]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = (
        "from distil.serving import serve; "
        f"serve({str(art)!r}, task={str(task_dir / 'task.toml')!r}, port={port}, log_level='warning', "
        f"max_batch={args.max_batch}, max_wait_ms={args.max_wait_ms}, "
        "breaker_failures=5, breaker_cooldown_s=5)"
    )
    env = {**os.environ, "BENCH_TEACHER_MS": str(args.teacher_ms), "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=work)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                print("server exited before it was ready", file=sys.stderr)
                return 1
            time.sleep(0.2)
        info = httpx.get(url + "/readyz").json()
        print(f"student {info['student']}, threshold {info['threshold']:.4f}, ood guard {info['ood_guard']}; "
              f"teacher: function, {args.teacher_ms:.0f} ms/call; concurrency {args.concurrency}, "
              f"{args.seconds:.0f}s per phase, {len(texts)} distinct texts "
              f"({args.oos_share:.0%} CLINC150 oos)")
        up = asyncio.run(load(url, phase1, args.seconds, args.concurrency))
        (task_dir / "STOPPED").touch()
        down = asyncio.run(load(url, phase1[: len(phase1) // 4] + phase2, args.seconds, args.concurrency))
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    print("\n| phase | requests | req/s | p50 ms | p99 ms | errors (non-200) | share to teacher | degraded |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in [("teacher up", up), ("teacher stopped", down)]:
        print(f"| {name} | {r['answered'] + r['errors']} | {r['rps']:.0f} | {r['p50_ms']:.1f} "
              f"| {r['p99_ms']:.1f} | {r['errors']} | {r['teacher_share']:.1%} | {r['degraded']} |")
    wanted = ("distil_degraded_total ", "distil_circuit_opened_total ", "distil_teacher_share ")
    print("\n/metrics: " + "; ".join(ln for ln in metrics.splitlines() if ln.startswith(wanted)))
    print("teacher calls: " + "; ".join(
        ln.split("{")[1].replace("}", "") for ln in metrics.splitlines()
        if ln.startswith("distil_teacher_calls_total{")))
    return 0 if up["errors"] == 0 and down["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
