"""The test file: its texts, the row of each text, and the gold labels if the file has them.

:func:`_read_test` reads the test file with the reader every command shares
(:func:`distil.data.read_inputs`); :func:`dataset_fingerprint` names what was evaluated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distil.data import read_inputs
from distil.task import Task

__all__ = ["dataset_fingerprint"]


@dataclass
class _TestSet:
    """The test file as read: unique texts, the text of every usable row, gold labels."""

    path: Path
    uniques: list[str]  # unique texts
    rows: np.ndarray  # (n_rows,) index into uniques for every usable row
    row_numbers: list[int]  # 1-based data row of every usable row
    gold: np.ndarray | None  # (n_rows,) label index, -1 where the row has no gold label
    skipped_rows: int
    text_fields: list[str]



def _read_test(
    path: Path, task: Task, *, text_column: str | None, label_column: str | None
) -> _TestSet:
    """Read the test file by the one input rule (:func:`distil.data.read_inputs`).

    Texts from the task's ``[input]`` (or ``text_column`` alone); gold from ``label_column``, where
    an empty cell means "no gold for this row".  Raises :class:`DataError` for an empty file, a
    missing column or a gold label outside the task.
    """
    got = read_inputs(path, task.input, text_column=text_column, label_column=label_column, labels=task.label_names)
    keep = got.used_rows()
    gold = None
    if label_column is not None:
        index = {name: j for j, name in enumerate(task.label_names)}
        gold = np.array([-1 if got.gold[i] is None else index[str(got.gold[i])] for i in keep], dtype=np.int64)
    return _TestSet(
        path=Path(path),
        uniques=got.texts,
        rows=np.array([got.rows[i] for i in keep], dtype=np.int64),
        row_numbers=[i + 1 for i in keep],
        gold=gold,
        skipped_rows=len(got.report.empty) + len(got.report.non_text),
        text_fields=got.fields,
    )


def dataset_fingerprint(uniques: list[str], rows: np.ndarray, gold: np.ndarray | None, labels: list[str]) -> str:
    """Hash of the evaluated texts in row order and their gold labels (if any)."""
    h = hashlib.sha256()
    for r in rows:
        h.update(uniques[int(r)].encode("utf-8"))
        h.update(b"\x00")
    if gold is not None:
        h.update(json.dumps([labels[g] if g >= 0 else None for g in gold.tolist()]).encode())
    return h.hexdigest()[:16]
