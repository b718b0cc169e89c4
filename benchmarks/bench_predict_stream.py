"""`distil predict` on a large CSV: streamed in chunks (now) against read whole (the old path), same run.

Generates N rows (ticket id + a banking77 text with a row-specific suffix, so no two texts repeat),
trains a small ngram artifact, then runs each path in its own process and reports wall seconds and
peak resident memory (ru_maxrss of the child).  The old path, the one `distil predict` took before
streaming, is the same code with the whole file as one chunk: every row in Python dicts, one
prediction over every text, one write.

    .venv/bin/python benchmarks/bench_predict_stream.py [--rows 300000]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

OLD = """
import sys
from distil.predictions import predict_file
art, src, out = sys.argv[1:4]
predict_file(art, src, out, chunk_rows=10**12)
"""
NEW = """
import sys
from distil.predictions import predict_file
art, src, out, chunk = sys.argv[1:5]
predict_file(art, src, out, chunk_rows=int(chunk))
"""


def _child(code: str, *args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process running ``code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run([sys.executable, "-c", code, *args], check=True, env=env)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def main() -> None:
    """Build the data and the artifact, run both paths (new first, so the old one's peak is its own)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    args = ap.parse_args()
    from _distil_helpers import small_banking

    from distil.train import train

    work = Path(tempfile.mkdtemp(prefix="distil-stream-"))
    ls = small_banking(n_classes=8, per_class=30)
    art = work / "students"
    train(ls, art, students=("ngram",), params={"ngram": {"bits": 14, "dim": 16, "epochs": 3}},
          routing={"calibration": "heldout"})
    src = work / "tickets.csv"
    with src.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ticket_id", "text"])
        for i in range(args.rows):
            w.writerow([f"T{i:08d}", f"{ls.texts[i % len(ls.texts)]} (ref {i})"])
    size_mb = src.stat().st_size / 1e6
    chunks = (10_000, 50_000)
    new = {c: _child(NEW, str(art), str(src), str(work / f"new{c}.csv"), str(c)) for c in chunks}
    old = _child(OLD, str(art), str(src), str(work / "old.csv"))
    labels_differ, score_diff = _compare(work / "old.csv", work / f"new{chunks[0]}.csv")
    print(f"{args.rows} rows, {size_mb:.1f} MB CSV; streamed vs whole: {labels_differ} labels differ, "
          f"max |score difference| {score_diff:.1e} (float32 rounding by batch size)\n")
    print("| path | wall s | peak RSS MB |")
    print("|---|---|---|")
    print(f"| read whole (before) | {old[0]:.1f} | {old[1]:.0f} |")
    for c in chunks:
        print(f"| streamed, {c:,}-row chunks | {new[c][0]:.1f} | {new[c][1]:.0f} |")
    best = new[chunks[0]]
    print(f"\nratio before / {chunks[0]:,}-row chunks: wall {old[0] / best[0]:.2f}x, memory {old[1] / best[1]:.2f}x")


def _compare(a: Path, b: Path) -> tuple[int, float]:
    with a.open(encoding="utf-8", newline="") as fa, b.open(encoding="utf-8", newline="") as fb:
        pairs = list(zip(csv.DictReader(fa), csv.DictReader(fb), strict=True))
    return (sum(x["label"] != y["label"] or x["ticket_id"] != y["ticket_id"] for x, y in pairs),
            max(abs(float(x["score"]) - float(y["score"])) for x, y in pairs))


if __name__ == "__main__":
    main()
