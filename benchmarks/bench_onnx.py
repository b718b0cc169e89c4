"""Torch fp32 vs ONNX fp32 vs ONNX int8 for the encoder student, side by side (distil export --onnx).

Trains a small encoder student (MiniLM + linear head) on banking77 intents (gold labels as the
teacher), exports it twice, then on the banking77 test texts of those intents measures: ms per
prediction at batch 1 (median), texts/s at batch 64 (median of repeats), label agreement and max
|Δp| against the torch student, the encoder file's size, and the peak RSS of a fresh process that
loads the artifact and predicts (torch imported vs onnxruntime only).

    .venv/bin/python benchmarks/bench_onnx.py [--labels 10] [--per-label 40] [--test 400]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTIL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "banking77"

_RSS = """
import json, sys
if sys.argv[2] == "onnx":
    sys.modules["torch"] = None
from distil.artifact import load_artifact
art = load_artifact(sys.argv[1]); texts = json.loads(sys.argv[3])
art.student().predict(texts)
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report the parent's peak
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
print(json.dumps({"rss_mb": hwm / 1024,
                  "torch": "torch" in sys.modules and sys.modules["torch"] is not None}))
"""


def read(split: str) -> list[tuple[str, str]]:
    """(text, label) rows of a banking77 split."""
    with (DATA / f"{split}.csv").open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def build(folder: Path, n_labels: int, per_label: int) -> tuple[Path, list[str]]:
    """Train the encoder artifact; (its folder, the chosen labels)."""
    from distil.data import LabeledSet
    from distil.train import train

    rows = read("train")
    labels = sorted({lab for _, lab in rows})[:n_labels]
    texts, gold = [], []
    for lab in labels:
        mine = [t for t, g in rows if g == lab][:per_label]
        texts += mine
        gold += [lab] * len(mine)
    probs = np.full((len(texts), len(labels)), 0.1 / (len(labels) - 1), dtype=np.float32)
    probs[np.arange(len(texts)), [labels.index(g) for g in gold]] = 0.9
    art = folder / "torch"
    train(LabeledSet(texts=texts, probs=probs, labels=labels), art, students=["encoder"], seed=0,
          heldout_frac=0.3, params={"encoder": {"epochs": 60}})
    return art, labels


def timing(student: object, texts: list[str], n1: int, reps: int) -> tuple[float, float]:
    """(median ms per text at batch 1, median texts/s at batch 64)."""
    predict = student.predict_proba  # type: ignore[attr-defined]
    predict(texts[:8])  # warm-up
    one = []
    for t in texts[:n1]:
        t0 = time.perf_counter()
        predict([t])
        one.append((time.perf_counter() - t0) * 1e3)
    rates = []
    batch = texts[:64]
    for _ in range(reps):
        t0 = time.perf_counter()
        predict(batch)
        rates.append(len(batch) / (time.perf_counter() - t0))
    return statistics.median(one), statistics.median(rates)


def peak_rss(art: Path, mode: str, texts: list[str]) -> dict[str, object]:
    """Peak RSS (MB) of a fresh process that loads ``art`` and predicts ``texts``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", _RSS, str(art), mode, json.dumps(texts)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run the comparison and print one table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--per-label", type=int, default=40)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--batch1", type=int, default=100, help="texts timed one at a time")
    ap.add_argument("--reps", type=int, default=7, help="batch-64 repeats")
    a = ap.parse_args()
    from distil.artifact import load_artifact
    from distil.export import OnnxOptions, export_artifact

    with tempfile.TemporaryDirectory() as tmp:
        art, labels = build(Path(tmp), a.labels, a.per_label)
        test = [t for t, g in read("test") if g in labels][: a.test]
        arts = {"torch fp32": art}
        for q in ("fp32", "int8"):
            res = export_artifact(art, Path(tmp) / q, onnx=OnnxOptions(q, 0.0))
            print(res.onnx)
            arts[f"onnx {q}"] = res.out
        ref = load_artifact(art).student().predict_proba(test)
        print(f"{len(test)} banking77 test texts, {len(labels)} intents; torch threads/ort default, "
              f"{os.cpu_count()} cpus")
        print(f"{'variant':<11} {'ms@b1':>7} {'texts/s@b64':>12} {'agree':>7} {'max|Δp|':>9} {'MB':>6} "
              f"{'peak RSS MB':>12} torch?")
        base = None
        for name, path in arts.items():
            st = load_artifact(path).student()
            p = st.predict_proba(test)
            ms, rate = timing(st, test, a.batch1, a.reps)
            base = base or (ms, rate)
            files = list((path / "ladder" / "encoder").glob("model.onnx"))
            mb = (files[0].stat().st_size if files else st.size_bytes()) / 1e6
            rss = peak_rss(path, "torch" if name.startswith("torch") else "onnx", test[:64])
            print(f"{name:<11} {ms:7.2f} {rate:12.1f} {np.mean(p.argmax(1) == ref.argmax(1)):7.4f} "
                  f"{np.abs(p - ref).max():9.2e} {mb:6.1f} {rss['rss_mb']:12.0f} {rss['torch']}"
                  f"   (x{base[0] / ms:.2f} latency, x{rate / base[1]:.2f} throughput vs torch)")


if __name__ == "__main__":
    main()
