"""Soft labels by label name against soft labels by short key, from a real LLM (llama.cpp + SmolLM2-135M).

The 24 banking77 intents that share their first word with another (card x10, top_up x6, pending x4,
transfer x4), 120 test texts of those intents, each asked twice: ``label_keys = "names"`` (the answer
is the label; probability on an alternative token shared by several labels is split evenly between
them) and ``label_keys = "letters"`` (the answer is a one-token key).  Prints, side by side: the mean
probability split evenly per answer, the answers with at least 5% split, and accuracy against gold
(SmolLM2-135M is a weak classifier: the accuracy says the keys do not confuse it, nothing more).

    .venv/bin/python benchmarks/bench_label_keys.py [--texts 120]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import banking77  # noqa: E402
from llm_server import missing_reason, start_llm_server  # noqa: E402

from distil.task import Task  # noqa: E402
from distil.teachers.openai import OpenAITeacher  # noqa: E402

PREFIXES = ("card", "top_up", "pending", "transfer")


def _task(base_url: str, labels: list[str], mode: str, folder: Path) -> Task:
    teacher = {"kind": "openai", "model": "smollm2-135m", "base_url": base_url, "api_key_env": "DISTIL_BENCH_NO_KEY",
               "concurrency": 2, "max_tokens": 40, "timeout_s": 120, "probs": "logprobs", "label_keys": mode}
    return Task.from_dict({"name": "banking-shared", "labels": labels, "teacher": teacher,
                           "instruction": "Which banking intent does this customer message express?"},
                          base_dir=folder)


def main() -> None:
    """Run both modes on the same texts and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=120)
    args = ap.parse_args()
    if (why := missing_reason()) is not None:
        sys.exit(f"cannot run: {why}")
    labels = sorted({lab for _, lab in banking77("train") if lab.startswith(PREFIXES)})
    rows = [(t, lab) for t, lab in banking77("test") if lab in labels][: args.texts]
    server = start_llm_server()
    print(f"{len(labels)} labels, {len(rows)} texts, SmolLM2-135M on llama.cpp\n")
    print("| label_keys | done | mean split probability | answers with >= 5% split | accuracy vs gold |")
    print("|---|---|---|---|---|")
    try:
        for mode in ("names", "letters"):
            task = _task(server.base_url, labels, mode, Path(tempfile.mkdtemp()))
            teacher = OpenAITeacher(task.teacher, task)  # type: ignore[arg-type]
            answers = teacher.predict_batch([t for t, _ in rows])
            teacher.close()
            done = [(a, gold) for a, (_, gold) in zip(answers, rows, strict=True) if a.status == "done" and a.probs]
            split = [float(a.extra.get("split_mass", 0.0)) for a, _ in done]
            right = sum(labels[max(range(len(labels)), key=lambda i, a=a: a.probs[i])] == g for a, g in done)
            print(f"| {mode} | {len(done)}/{len(rows)} | {statistics.mean(split):.4f} | "
                  f"{sum(s >= 0.05 for s in split)} | {right / max(len(done), 1):.3f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
