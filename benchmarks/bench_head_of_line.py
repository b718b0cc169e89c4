"""Head-of-line benchmark: does a one-text request wait behind other clients' maximum-size batches?

A real uvicorn server (``distil.serving.serve``) in its own process on loopback, with a banking77
ngram artifact and no teacher (every request is answered by the student, so only the student's
work is measured).  Two phases, one run:

1. *unloaded*: one client sends ``--requests`` one-text requests, one after another;
2. *loaded*: the same, while ``--heavy`` other clients loop on requests of 256 texts of ~3.5 KB each
   (the server's default limits: 256 inputs, 1 MB body).

Prints the p50/p90 of the one-text requests in both phases and their ratio (the goal: loaded p50
within 5x of unloaded), and the heavy clients' throughput.  Run::

    .venv/bin/python benchmarks/bench_head_of_line.py [--requests 200] [--heavy 2] [--max-batch 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import ROOT, banking_rows, free_port, train_artifact


def start_server(art: Path, port: int, max_batch: int, max_wait_ms: float, work: Path) -> subprocess.Popen[bytes]:
    """The server process; returns once /readyz answers 200."""
    code = (
        "from distil.serving import serve; "
        f"serve({str(art)!r}, task=None, port={port}, log_level='warning', max_batch={max_batch}, "
        f"max_wait_ms={max_wait_ms})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=work)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("server exited before it was ready")
        time.sleep(0.2)
    server.kill()
    raise SystemExit("server not ready within 120 s")


def one_text_latencies(url: str, texts: list[str], n: int) -> np.ndarray:
    """Seconds per one-text request, sent one after another on a kept-alive connection."""
    out = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(n):
            t0 = time.perf_counter()
            r = client.post("/v1/classify", json={"inputs": [texts[i % len(texts)]]})
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return np.array(out)


def heavy_client(url: str, batch: list[str], stop: threading.Event, done: list[int]) -> None:
    """Loop on maximum-size requests until ``stop``; count the texts answered."""
    with httpx.Client(base_url=url, timeout=300) as client:
        while not stop.is_set():
            r = client.post("/v1/classify", json={"inputs": batch})
            r.raise_for_status()
            done.append(len(batch))


def long_texts(rows: list[tuple[str, str]], n: int, size: int) -> list[str]:
    """``n`` distinct texts of about ``size`` characters, made of banking queries."""
    out = []
    for i in range(n):
        parts, j = [], i
        while sum(len(p) + 1 for p in parts) < size:
            parts.append(rows[j % len(rows)][0])
            j += 7
        out.append(" ".join(parts)[:size])
    return out


def main() -> int:
    """Run both phases and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--heavy", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    train_rows, test_rows = banking_rows()
    work = Path(tempfile.mkdtemp(prefix="bench_hol_"))
    t0 = time.perf_counter()
    train_artifact(work / "artifact", train_rows, args.epochs)
    print(f"trained a banking77 ngram artifact in {time.perf_counter() - t0:.0f}s")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(work / "artifact", port, args.max_batch, args.max_wait_ms, work)
    small = [t for t, _ in test_rows]
    try:
        one_text_latencies(url, small, 20)  # warm up
        unloaded = one_text_latencies(url, small, args.requests)
        stop, done = threading.Event(), []
        batches = [long_texts(train_rows[k * 300:], 256, 3500) for k in range(args.heavy)]
        threads = [threading.Thread(target=heavy_client, args=(url, b, stop, done)) for b in batches]
        for th in threads:
            th.start()
        time.sleep(1.0)  # the heavy clients are in flight
        t_loaded = time.perf_counter()
        loaded = one_text_latencies(url, small, args.requests)
        seconds = time.perf_counter() - t_loaded
        stop.set()
        for th in threads:
            th.join()
    finally:
        server.terminate()
        server.wait(timeout=10)
    ratio = float(np.median(loaded) / np.median(unloaded))
    print(f"\nmax_batch {args.max_batch}, max_wait_ms {args.max_wait_ms:g}; {args.heavy} heavy clients x 256 texts "
          f"of 3.5 KB per request")
    print("| phase | one-text p50 ms | p90 ms | heavy texts/s |")
    print("|---|---|---|---|")
    print(f"| unloaded | {np.median(unloaded) * 1000:.2f} | {np.percentile(unloaded, 90) * 1000:.2f} | - |")
    print(f"| loaded | {np.median(loaded) * 1000:.2f} | {np.percentile(loaded, 90) * 1000:.2f} "
          f"| {sum(done) / max(seconds, 1e-9):.0f} |")
    print(f"loaded p50 / unloaded p50 = {ratio:.1f}x (goal: at most 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
