"""Small builders shared by the CLI/label tests."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from distil.task import Task

FUNCTION_TASK = """
name = "bank"
instruction = "Which kind of banking request is this?"
labels = ["card", "transfer", "cash", "other"]

[input]
fields = ["text"]

[teacher]
kind = "function"
callable = "teacher_fns:{fn}"
batch_size = {batch}
"""


def write_task(folder: Path, fn: str = "keyword", batch: int = 16) -> Path:
    """A task file in ``folder`` whose teacher is a keyword function from tests/teacher_fns.py."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.toml"
    path.write_text(FUNCTION_TASK.format(fn=fn, batch=batch), encoding="utf-8")
    return path


def write_banking_task(folder: Path, labels: Sequence[str]) -> Path:
    """A task file in ``folder`` for some banking77 intents with the oracle teacher ``banking_gold``."""
    folder.mkdir(parents=True, exist_ok=True)
    task = folder / "task.toml"
    task.write_text(
        f"name=\"b\"\nlabels={list(labels)!r}\n".replace("'", '"')
        + '[teacher]\nkind="function"\ncallable="teacher_fns:banking_gold"\n',
        encoding="utf-8",
    )
    return task


def load_task(folder: Path, fn: str = "keyword", batch: int = 16) -> Task:
    """Write and load the function-teacher task."""
    return Task.load(write_task(folder, fn, batch))


def write_csv(path: Path, rows: Sequence[dict[str, str]], columns: Sequence[str] = ("text",)) -> Path:
    """Write rows as CSV with the given header."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path
