"""Predictions as a table a team can join back: every input row, in order, with its columns.

``distil predict`` reads an input file by the artifact's ``[input]`` rule (the same texts the students
were trained on), predicts each unique text once, and writes one output row per input row: the input
columns (all, or the ones named), then ``label``, ``score`` (the calibrated probability of ``label``),
``source`` (``student``, or ``skipped`` for a row without a usable text: empty or not text, whose
``label`` and ``score`` are empty) and, on request, one ``p_<label>`` column per label.  The format
follows the output's suffix (``.csv``, ``.parquet``, ``.jsonl``); files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distil.data import Inputs, Table, atomic_path
from distil.errors import DataError

OUTPUT_COLUMNS = ("label", "score", "source")
FORMATS = (".csv", ".parquet", ".jsonl")


def output_format(path: str | Path) -> str:
    """The format of an output path by its suffix; :class:`DataError` for any other suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(
            f"{path}: predictions are written as {', '.join(FORMATS)}, not {suffix or 'a file without a suffix'!r}",
            hint="name the output file e.g. predictions.csv",
        )
    return suffix


def prediction_rows(
    table: Table,
    inputs: Inputs,
    preds: Sequence[dict[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    probs: bool = False,
) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, one dict per input row): the kept input columns, then the prediction's."""
    kept = _kept_columns(table, columns)
    labels = list(preds[0]["probs"]) if preds and probs else []
    names = [*kept, *OUTPUT_COLUMNS, *(f"p_{lab}" for lab in labels)]
    _check_collisions(table, kept, names[len(kept):])
    rows = []
    for row, pos in zip(table.rows, inputs.rows, strict=True):
        out = {c: row.get(c) for c in kept}
        if pos < 0:
            out.update(label=None, score=None, source="skipped", **{f"p_{lab}": None for lab in labels})
        else:
            p = preds[pos]
            out.update(label=p["label"], score=p["confidence"], source="student",
                       **{f"p_{lab}": p["probs"][lab] for lab in labels})
        rows.append(out)
    return names, rows


def _kept_columns(table: Table, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return list(table.columns)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(
            f"{table.path}: --columns names {missing}, not columns of the file (it has {table.columns})",
            hint="name columns the input file has, comma-separated",
        )
    return list(columns)


def _check_collisions(table: Table, kept: list[str], added: list[str]) -> None:
    clash = [c for c in kept if c in added]
    if clash:
        raise DataError(
            f"{table.path}: the input's column(s) {clash} would be overwritten by the prediction's",
            hint="leave them out with --columns (name the columns to keep), or rename them in the file",
        )


def write_predictions(path: str | Path, names: list[str], rows: list[dict[str, Any]]) -> Path:
    """Write the rows as CSV, Parquet or JSONL by the suffix of ``path``, atomically."""
    fmt = output_format(path)
    target = Path(path)
    with atomic_path(target, what="predictions") as tmp:
        if fmt == ".parquet":
            _write_parquet(tmp, names, rows)
        elif fmt == ".csv":
            tmp.write_text(_csv_text(names, rows), encoding="utf-8", errors="backslashreplace", newline="")
        else:
            tmp.write_text(jsonl_text(rows), encoding="utf-8", errors="backslashreplace", newline="")
    return target


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    """One JSON object per row and line (values that are not JSON types as their text)."""
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)


def _csv_text(names: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _write_parquet(path: Path, names: list[str], rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {n: [r.get(n) for r in rows] for n in names}
    try:
        table = pa.table(cols)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an input column of mixed types: keep it as text
        table = pa.table({n: v if n in OUTPUT_COLUMNS or n.startswith("p_") else
                          [None if x is None else str(x) for x in v] for n, v in cols.items()})
    pq.write_table(table, path)


__all__ = ["jsonl_text", "output_format", "prediction_rows", "write_predictions"]
