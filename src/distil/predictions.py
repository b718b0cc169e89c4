"""Predictions as a table a team can join back: every input row, in order, with its columns.

``distil predict`` reads an input file by the artifact's ``[input]`` rule (the same texts the students
were trained on), predicts each unique text once, and writes one output row per input row: the input
columns (all, or the ones named), then ``label``, ``score`` (the calibrated probability of ``label``),
``source`` (``student``, or ``skipped`` for a row without a usable text: empty or not text, whose
``label`` and ``score`` are empty) and, on request, one ``p_<label>`` column per label.  The format
follows the output's suffix (``.csv``, ``.parquet``, ``.jsonl``); files are written atomically.

:func:`predict_file` streams: the input is read, predicted and written in chunks of ``chunk_rows``
rows (:func:`distil.data.iter_table_chunks`), so a file of any size never sits in memory whole; each
chunk's unique texts are predicted once.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from distil.data import (
    CHUNK_ROWS,
    InputReport,
    Inputs,
    Table,
    atomic_path,
    extract_texts,
    iter_table_chunks,
    text_rule,
)
from distil.errors import DataError

if TYPE_CHECKING:
    from distil.artifact import Artifact

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
    inputs: Inputs | Sequence[int],
    preds: Sequence[dict[str, Any]],
    *,
    columns: Sequence[str] | None = None,
    probs: bool = False,
) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, one dict per input row): the kept input columns, then the prediction's.

    ``inputs``: the rows' positions in ``preds`` (-1: no usable text), or the :class:`Inputs` holding them.
    """
    kept = _kept_columns(table, columns)
    positions = inputs.rows if isinstance(inputs, Inputs) else inputs
    labels = list(preds[0]["probs"]) if preds and probs else []
    names = [*kept, *OUTPUT_COLUMNS, *(f"p_{lab}" for lab in labels)]
    _check_collisions(table, kept, names[len(kept):])
    rows = []
    for row, pos in zip(table.rows, positions, strict=True):
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


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    """One JSON object per row and line (values that are not JSON types as their text)."""
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)


@dataclass
class PredictSummary:
    """What :func:`predict_file` read and wrote."""

    rows: int = 0
    predicted: int = 0
    skipped: int = 0
    columns: list[str] = field(default_factory=list)
    out: Path | None = None
    report: InputReport = field(default_factory=InputReport)


def predict_file(
    artifact_dir: str | Path | Artifact,
    inputs: str | Path,
    out: str | Path | None,
    *,
    text_column: str | None = None,
    columns: Sequence[str] | None = None,
    probs: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    stream: TextIO | None = None,
    progress: Callable[[int], None] | None = None,
) -> PredictSummary:
    """Predict every row of ``inputs`` with the artifact's chosen student, chunk by chunk, into ``out``
    (CSV, Parquet or JSONL by its suffix, written atomically) or as JSONL to ``stream``.

    The texts are made by the artifact's ``[input]`` rule (or ``text_column``); ``progress(rows)`` is
    called after each chunk with the rows done so far.
    """
    from distil.artifact import Artifact, load_artifact

    art = artifact_dir if isinstance(artifact_dir, Artifact) else load_artifact(artifact_dir)
    fields, render = text_rule(art.input_spec(), text_column)
    student = art.student()
    summary = PredictSummary(out=Path(out) if out is not None else None)
    chunks = iter_table_chunks(inputs, chunk_rows)
    if out is None:
        _predict_chunks(chunks, _JsonlSink(stream or sys.stdout), student, art.labels, fields, render,
                        columns, probs, summary, progress)
        return summary
    fmt = output_format(out)
    with atomic_path(Path(out), what="predictions") as tmp:
        sink = _ParquetSink(tmp) if fmt == ".parquet" else _TextSink(tmp, fmt)
        try:
            _predict_chunks(chunks, sink, student, art.labels, fields, render, columns, probs, summary, progress)
        finally:
            sink.close()
    return summary


def _predict_chunks(
    chunks: Iterator[Table], sink: _Sink, student: Any, labels: list[str], fields: list[str], render: Any,
    columns: Sequence[str] | None, probs: bool, summary: PredictSummary, progress: Callable[[int], None] | None,
) -> None:
    """Read, predict and write each chunk; refuse a file without any usable text (nothing is written then)."""
    path: Path | None = None
    for chunk in chunks:
        path = chunk.path
        texts, mapping, report = extract_texts(chunk, fields, render, require_text=False)
        preds = _preds(student, labels, texts)
        names, rows = prediction_rows(chunk, mapping, preds, columns=columns, probs=probs)
        if probs and not preds:  # a chunk without a text still has the p_ columns
            names += [f"p_{lab}" for lab in labels]
        sink.write(names, rows)
        summary.rows += len(rows)
        summary.predicted += len(texts)
        summary.skipped += sum(1 for pos in mapping if pos < 0)
        summary.columns = names
        _merge(summary.report, report)
        if progress is not None:
            progress(summary.rows)
    if summary.predicted == 0:
        raise DataError(
            f"{path}: every row is empty or not text in column(s) {list(fields)} "
            f"({len(summary.report.empty)} empty, {len(summary.report.non_text)} not text)"
        )


def _preds(student: Any, labels: list[str], texts: list[str]) -> list[dict[str, Any]]:
    if not texts:
        return []
    out = []
    for row in student.predict_proba(texts):
        i = int(row.argmax())
        out.append({"label": labels[i], "confidence": float(row[i]),
                    "probs": {lab: float(p) for lab, p in zip(labels, row, strict=True)}})
    return out


def _merge(total: InputReport, part: InputReport) -> None:
    total.total += part.total
    total.used += part.used
    total.duplicates += part.duplicates
    total.empty += part.empty
    total.non_text += part.non_text


class _Sink:
    def write(self, names: list[str], rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close."""


class _JsonlSink(_Sink):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, names: list[str], rows: list[dict[str, Any]]) -> None:
        self.stream.write(jsonl_text(rows))


class _TextSink(_Sink):
    """CSV (the header once) or JSONL, appended chunk by chunk."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.fh = path.open("w", encoding="utf-8", errors="backslashreplace", newline="")
        self.fmt = fmt
        self.writer: csv.DictWriter[str] | None = None

    def write(self, names: list[str], rows: list[dict[str, Any]]) -> None:
        if self.fmt == ".jsonl":
            self.fh.write(jsonl_text(rows))
            return
        if self.writer is None:
            self.writer = csv.DictWriter(self.fh, fieldnames=names, lineterminator="\n")
            self.writer.writeheader()
        for r in rows:
            self.writer.writerow({k: ("" if v is None else v) for k, v in r.items()})

    def close(self) -> None:
        self.fh.close()


class _ParquetSink(_Sink):
    """One Parquet file written row group by row group; input columns as text unless every chunk agrees on a type."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: Any = None
        self.schema: Any = None

    def write(self, names: list[str], rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = _arrow_table(names, rows, self.schema)
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema)
        try:
            self.writer.write_table(table.cast(self.schema))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataError(
                f"a later chunk of the input has other value types than the first ({exc})",
                hint="write CSV or JSONL predictions, or make the column's values one type",
            ) from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _arrow_table(names: list[str], rows: list[dict[str, Any]], schema: Any) -> Any:
    """The rows as an Arrow table: prediction columns typed, input columns as read (text where mixed)."""
    import pyarrow as pa

    types: dict[str, Any] = {"label": pa.string(), "score": pa.float64(), "source": pa.string()}
    arrays = {}
    for n in names:
        values = [r.get(n) for r in rows]
        want = types.get(n) or (pa.float64() if n.startswith("p_") else None)
        if want is None and schema is not None:
            want = schema.field(n).type
        try:
            arrays[n] = pa.array(values, type=want)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[n] = pa.array([None if x is None else str(x) for x in values], type=pa.string())
        if arrays[n].type == pa.null():
            arrays[n] = arrays[n].cast(pa.string())
    return pa.table(arrays)


__all__ = ["PredictSummary", "jsonl_text", "output_format", "predict_file", "prediction_rows"]
