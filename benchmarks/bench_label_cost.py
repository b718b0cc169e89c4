"""Dollars per 1,000 labels for one pool: the chat API, the Batch API, and the chat API with prompt caching.

The pool is banking77's test texts (77 labels, so the instruction + label list is a long shared prefix).
Tokens are distil's own pre-send estimate (UTF-8 bytes / 3 plus the message overhead: the number a budget
reserves, on the safe side of what a tokenizer counts); prices are the built-in dated table
(:data:`distil.cost.DEFAULT_PRICES`, read on :data:`distil.cost.PRICES_READ_ON`), output at ``max_tokens``.
Caching bills the system message at the cached-input price; OpenAI caches a prefix of 1,024 tokens or
more, so a shorter prompt gets no discount (shown in the table).

    .venv/bin/python benchmarks/bench_label_cost.py
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import banking77  # noqa: E402

from distil.cost import DEFAULT_PRICES, PRICES_READ_ON  # noqa: E402
from distil.task import Task  # noqa: E402
from distil.teachers.batch import BATCH_DISCOUNT  # noqa: E402
from distil.teachers.openai import BYTES_PER_TOKEN, OpenAITeacher  # noqa: E402

CACHE_MIN_TOKENS = 1024
MODELS = ("gpt-4o-mini", "gpt-4.1-nano", "gpt-4.1-mini", "gpt-4o")


def main() -> None:
    """Print one table: model × label_keys → $ per 1,000 labels by the three routes."""
    rows = banking77("test")
    labels = sorted({lab for _, lab in rows})
    texts = [t for t, _ in rows]
    train = banking77("train")
    examples = {lab: [t for t, g in train if g == lab][:2] for lab in labels}  # 2 gold examples per label
    print(f"banking77 test pool: {len(texts)} texts, {len(labels)} labels; prices read on {PRICES_READ_ON}\n")
    print("| model | label_keys | prompt tokens (shared) | chat $/1k | batch $/1k | chat + cache $/1k |")
    print("|---|---|---|---|---|---|")
    for model in MODELS:
        price = DEFAULT_PRICES[model]
        for keys, shots in (("names", False), ("auto", False), ("auto", True)):
            spec = {"kind": "openai", "model": model, "api_key_env": "DISTIL_BENCH_NO_KEY", "label_keys": keys,
                    "max_tokens": 16}
            task = Task.from_dict({"name": "banking77", "labels": labels, "teacher": spec,
                                   **({"examples": examples} if shots else {})})
            teacher = OpenAITeacher(task.teacher, task)  # type: ignore[arg-type]
            shared = math.ceil(len(teacher.system_prompt.encode()) / BYTES_PER_TOKEN)
            per = [teacher._estimate_tokens_in(t) for t in texts]
            chat = statistics.mean(price.tokens_cost(n, spec["max_tokens"]) for n in per) * 1000
            cached = shared if shared >= CACHE_MIN_TOKENS else 0
            cache = statistics.mean(price.tokens_cost(n, spec["max_tokens"], cached) for n in per) * 1000
            note = "" if cached else " (prefix < 1,024: no cache)"
            how = keys + (" + 2 examples/label" if shots else "")
            print(f"| {model} | {how} | {shared} | {chat:.4f} | {chat * BATCH_DISCOUNT:.4f} | {cache:.4f}{note} |")
            teacher.close()


if __name__ == "__main__":
    main()
