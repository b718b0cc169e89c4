"""Data in and out: CSV, JSONL, Parquet and Hugging Face datasets saved to disk.

Readers check what they read and report problems with the file, row and
column: an empty file, a missing column, a binary or non-UTF-8 file.  Empty,
duplicate and non-text rows are counted in :class:`InputReport`, never silently
dropped or crashed on.

Row numbers in messages are 1-based data rows (the CSV header is not counted;
a JSONL row is its line number).

Every file distil writes goes through :func:`atomic_path` (or :func:`atomic_write_bytes` /
:func:`atomic_write_text`): written to a temporary sibling, flushed to disk, then renamed over the
target, so an interruption leaves the old file or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import DataError, storage_error

FORMATS = ("csv", "jsonl", "parquet", "hf")


# ---------------------------------------------------------------------------------------------
# Writing files so that an interruption never leaves a half-written one.


def ensure_folder(folder: str | Path, *, what: str = "folder") -> Path:
    """Create ``folder`` (and its parents) if needed; :class:`StorageError` says why it cannot be."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise storage_error(exc, f"create the {what}") from None
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a temporary file or folder it left is still in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _sweep_stale(target: Path) -> None:
    """Remove temporary siblings of ``target`` left by writers that were killed (their pid is gone)."""
    for name in glob.glob(glob.escape(str(target.parent / f".{target.name}.")) + "*.tmp"):
        pid = Path(name).name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(name)


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush ``path`` to disk (a folder's entry list too, where the platform allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0))
    except OSError:
        if folder:
            return  # e.g. Windows cannot open a folder; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not folder:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, what: str = "file") -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; on success it is flushed and renamed over ``path``.

    ``with atomic_path(p) as tmp: write(tmp)`` leaves ``p`` untouched until the write is complete; an
    exception (or a kill) leaves the old ``p`` as it was.  Temporary files of killed writers are
    swept on the next write of the same path; a link at ``path`` is written through.  An
    :class:`OSError` (permissions, a full disk) becomes a :class:`StorageError` naming ``what`` and
    the path.
    """
    target = Path(path)
    if target.is_symlink():  # write where the link points; the link stays
        target = target.resolve()
    ensure_folder(target.parent, what=f"folder for the {what}")
    _sweep_stale(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        if target.is_file():  # the new file keeps the old one's permissions
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            if exc.filename is None or str(exc.filename) == str(tmp):
                exc.filename = str(target)
            raise storage_error(exc, f"write the {what}") from None
        raise
    _fsync(target.parent, folder=True)


def atomic_write_bytes(path: str | Path, data: bytes, *, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    target = Path(path)
    with atomic_path(target, what=what) as tmp:
        tmp.write_bytes(data)
    return target


def atomic_write_text(path: str | Path, text: str, *, what: str = "file") -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_path`).

    A text that cannot be UTF-8 (a lone surrogate such as ``\\ud800``) is written with that
    character escaped (``\\ud800``) rather than failing after the work that produced it.
    """
    return atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"), what=what)


@dataclass
class Table:
    """Rows read from a file: column names and a list of dicts (values as read)."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    first_row: int = 1  # the file's data row number of ``rows[0]`` (a chunk of a file streamed in parts)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class InputReport:
    """What was found in an input file besides usable texts."""

    total: int = 0
    used: int = 0
    empty: list[int] = field(default_factory=list)
    non_text: list[int] = field(default_factory=list)
    duplicates: int = 0
    no_gold: list[int] = field(default_factory=list)  # rows with an empty gold cell (when gold is read)
    gold_conflicts: int = 0  # duplicate texts whose gold labels differ (the first is kept)

    def summary(self) -> str:
        """One line for the CLI."""
        parts = [f"{self.total} rows", f"{self.used} unique texts"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates (asked once)")
        if self.empty:
            parts.append(f"{len(self.empty)} empty (skipped; rows {_few(self.empty)})")
        if self.non_text:
            parts.append(f"{len(self.non_text)} not text (skipped; rows {_few(self.non_text)})")
        if self.no_gold:
            parts.append(f"{len(self.no_gold)} without a gold label (rows {_few(self.no_gold)})")
        if self.gold_conflicts:
            parts.append(f"{self.gold_conflicts} duplicates with a different gold label (the first is kept)")
        return ", ".join(parts)


def _few(rows: list[int], n: int = 5) -> str:
    head = ", ".join(map(str, rows[:n]))
    return head + (", …" if len(rows) > n else "")


def detect_format(path: Path) -> str:
    """csv | jsonl | parquet | hf, from the suffix (a folder is a saved HF dataset)."""
    if path.is_dir():
        return "hf"
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DataError(
        f"{path}: cannot tell the format from the suffix {suffix!r}",
        hint="use .csv, .jsonl, .parquet, or a folder written by datasets' save_to_disk",
    )


#: Suffixes a folder of input shards is read for (see :func:`expand_inputs`).
SHARD_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")


def expand_inputs(specs: Sequence[str | Path]) -> list[Path]:
    """The input files ``specs`` name, in order: a file; a folder of shards (its data files, sorted,
    subfolders included; a folder written by ``datasets``' ``save_to_disk`` is one input); a glob pattern."""
    out: list[Path] = []
    for spec in specs:
        out.extend(_expand_one(str(spec)))
    return list(dict.fromkeys(out))


def _expand_one(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir() and not (path / "state.json").exists():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SHARD_SUFFIXES
                       and not p.name.startswith(("_", ".")))
        if not found:
            raise DataError(f"{path}: a folder of inputs, and no {', '.join(SHARD_SUFFIXES)} file is in it",
                            hint="name the input files, or a folder that holds them")
        return found
    if path.exists() or not any(c in spec for c in "*?["):
        return [path]
    found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not found:
        raise DataError(f"{spec}: no file matches this pattern", hint="check the folder and the pattern")
    return found


def gold_text(value: Any) -> str | None:
    """A gold label cell as the label text, with one rule for every reader.

    Strings are stripped; whole numbers lose their ``.0`` (a parquet column of ``3.0`` is label
    ``"3"``, as the CSV cell ``3`` is); booleans are ``"True"``/``"False"``; other numbers are
    written as Python writes them.  Missing values and other types give None.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return None


def read_table(path: str | Path) -> Table:
    """Read a whole input file into a :class:`Table`; raise :class:`DataError` with the place.

    A file that cannot be read (permissions, a folder where a file was named) is a
    :class:`distil.errors.StorageError` naming the path.
    """
    p = Path(path)
    try:
        return _read_table(p)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(p)
        raise storage_error(exc, "read the input file") from None


def _read_table(p: Path) -> Table:
    return next(_iter_chunks(p, None))  # unchunked: the whole file is the one chunk (or the "no data rows" error)


#: Rows per chunk when an input file is streamed (:func:`iter_table_chunks`).
CHUNK_ROWS = 10_000


def iter_table_chunks(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[Table]:
    """An input file in chunks of up to ``chunk_rows`` data rows (``first_row`` numbers each chunk's first
    row), read by the same rules and with the same errors as :func:`read_table`, never whole in memory
    (a saved Hugging Face dataset comes as one chunk)."""
    p = Path(path)
    try:
        yield from _iter_chunks(p, chunk_rows)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(p)
        raise storage_error(exc, "read the input file") from None


def _iter_chunks(p: Path, chunk_rows: int | None) -> Iterator[Table]:
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    fmt = detect_format(p)
    if fmt != "hf" and p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty", hint="expected a header row and at least one data row")
    if fmt == "csv":
        chunks = _csv_chunks(p, chunk_rows)
    elif fmt == "jsonl":
        chunks = _jsonl_chunks(p, chunk_rows)
    elif fmt == "parquet":
        with p.open("rb"):  # unreadable → StorageError, not "not a Parquet file"
            pass
        chunks = _parquet_chunks(p, chunk_rows)
    else:
        chunks = iter([_read_hf(p)])
    seen_rows, last = False, None
    for chunk in chunks:
        last = chunk
        if chunk.rows:
            seen_rows = True
            yield chunk
    if not seen_rows:
        found = "a header" if last is not None and last.columns else "nothing"
        raise DataError(f"{p}: no data rows (found only {found})")


def _check_text_file(p: Path) -> None:
    with p.open("rb") as fh:
        if b"\x00" in fh.read(8192):
            raise DataError(f"{p}: looks like a binary file (NUL bytes), not text", hint="expected UTF-8 CSV/JSONL")


def _decode(p: Path) -> str:
    raw = p.read_bytes()
    if b"\x00" in raw[:8192]:
        raise DataError(f"{p}: looks like a binary file (NUL bytes), not text", hint="expected UTF-8 CSV/JSONL")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{p}: not UTF-8 at line {line}, column {col} (byte 0x{raw[exc.start]:02x})",
            hint="re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from None


def _csv_chunks(p: Path, chunk_rows: int | None) -> Iterator[Table]:
    """A CSV/TSV file read strictly: an unterminated quote is an error naming the line it starts on."""
    _check_text_file(p)
    try:
        yield from _csv_records(p, chunk_rows)
    except UnicodeDecodeError:
        _decode(p)  # raises the error naming the line and column
        raise


def _csv_records(p: Path, chunk_rows: int | None) -> Iterator[Table]:
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{p}: the file is empty") from None
        except csv.Error as exc:
            raise DataError(f"{p}: header row is not valid CSV ({exc})") from None
        header = [h.strip() for h in header]
        rows: list[dict[str, Any]] = []
        row_no, start, first = 0, reader.line_num + 1, 1
        try:
            for row_no, rec in enumerate(reader, start=1):
                if rec and len(rec) != len(header):
                    raise DataError(
                        f"{p}, row {row_no} (line {start}): expected {len(header)} fields as in the header, "
                        f"found {len(rec)}",
                        hint="quote fields that contain the delimiter",
                    )
                if rec:
                    rows.append(dict(zip(header, rec, strict=True)))
                start = reader.line_num + 1
                if chunk_rows is not None and len(rows) >= chunk_rows:
                    yield Table(p, header, rows, first)
                    first, rows = first + len(rows), []
        except csv.Error as exc:
            raise _csv_error(p, row_no + 1, start, reader.line_num, exc) from None
    yield Table(p, header, rows, first)


def _csv_error(p: Path, row_no: int, start: int, line: int, exc: csv.Error) -> DataError:
    """The error for a malformed CSV record: where it starts, and the usual cause."""
    msg = str(exc)
    if "unexpected end of data" in msg or "field larger than field limit" in msg:
        return DataError(
            f"{p}, row {row_no} (line {start}): a quoted field is never closed; the quote opened there "
            f"runs to line {line}" + (" (the end of the file)" if "end of data" in msg else f" ({msg})"),
            hint='close the quote, or double a quote that is part of the text ("")',
        )
    return DataError(
        f"{p}, row {row_no} (line {line}): not valid CSV ({msg})",
        hint='a quote inside a quoted field is written twice (""); quote the whole field',
    )


#: A JSON escape of a UTF-16 surrogate (``\ud800``–``\udfff``): the only way a JSON line can hold one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _jsonl_chunks(p: Path, chunk_rows: int | None) -> Iterator[Table]:
    """One JSON object per line; lines end at ``\\n`` only (``\\r\\n`` and blank lines are fine).

    Not ``str.splitlines()``: it also splits at U+2028, U+2029, U+0085 and other characters that
    JSON allows unescaped inside strings (and that :func:`write_labeled` writes as they are).  Streamed
    (``chunk_rows``), the file is read twice: once for the union of its keys (every chunk has all the
    columns), once for the rows.
    """
    _check_text_file(p)
    try:
        if chunk_rows is None:
            rows = [obj for _, obj in _json_objects(p)]
            columns: dict[str, None] = {}
            for obj in rows:
                columns.update(dict.fromkeys(obj))
            yield Table(p, list(columns), rows)
            return
        keys: dict[str, None] = {}
        for _, obj in _json_objects(p):
            keys.update(dict.fromkeys(obj))
        chunk: list[dict[str, Any]] = []
        first = 1
        for _, obj in _json_objects(p):
            chunk.append(obj)
            if len(chunk) >= chunk_rows:
                yield Table(p, list(keys), chunk, first)
                first, chunk = first + len(chunk), []
        yield Table(p, list(keys), chunk, first)
    except UnicodeDecodeError:
        _decode(p)  # raises the error naming the line and column
        raise


def _read_jsonl(p: Path) -> Table:
    """A whole JSONL file as one table (see :func:`_jsonl_chunks`)."""
    return next(_jsonl_chunks(p, None))


def _json_objects(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line."""
    with p.open(encoding="utf-8-sig", newline="\n") as fh:
        for i, line in enumerate(fh, start=1):
            body = line.removesuffix("\n")
            if body.strip(" \t\r"):
                yield i, _json_line(p, i, body)


def _json_line(p: Path, i: int, line: str) -> dict[str, Any]:
    """Line ``i`` of a JSONL file as a dict; :class:`DataError` names the line for anything else."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}, line {i}, column {exc.colno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise DataError(
            f"{p}, line {i}: nested too deeply to read (more than about {sys.getrecursionlimit()} levels "
            "of arrays or objects)",
            hint="flatten the record: distil reads a JSON object of text fields per line",
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{p}, line {i}: expected a JSON object per line, found {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(line):
        where = _lone_surrogate(obj)
        if where is not None:
            raise DataError(
                f"{p}, line {i}, key {where}: holds a lone UTF-16 surrogate escape (\\ud800–\\udfff without "
                "its pair), which is not a character",
                hint="fix the escape (a high surrogate \\ud800–\\udbff must be followed by a low one "
                "\\udc00–\\udfff) or remove it",
            )
    return obj


def _unencodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _lone_surrogate(obj: Any) -> str | None:
    """The key path (ASCII) of the first key or string in ``obj`` holding a lone surrogate, or None."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str) and _unencodable(value):
            return where or "(the record)"
        if isinstance(value, dict):
            for key, item in value.items():
                name = f"{where}.{ascii(key)[1:-1]}" if where else ascii(key)[1:-1]
                if _unencodable(key):
                    return name
                stack.append((name, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{j}]", item) for j, item in enumerate(value))
    return None


def _parquet_chunks(p: Path, chunk_rows: int | None) -> Iterator[Table]:
    import pyarrow.parquet as pq

    try:
        if chunk_rows is None:
            t = pq.read_table(p)
            yield Table(p, list(t.column_names), t.to_pylist())
            return
        f = pq.ParquetFile(p)
        names, first, sent = list(f.schema_arrow.names), 1, False
        for batch in f.iter_batches(batch_size=chunk_rows):
            rows = batch.to_pylist()
            yield Table(p, names, rows, first)
            first, sent = first + len(rows), True
        if not sent:
            yield Table(p, names, [], 1)
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises several types for broken files
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from None


def _read_hf(p: Path) -> Table:
    from distil.errors import require

    datasets: Any = require("datasets", "hf")
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as exc:
        raise DataError(f"{p}: not a Hugging Face dataset saved with save_to_disk ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise DataError(f"{p}: a DatasetDict without a 'train' split (found {list(ds)})")
        ds = ds["train"]
    return Table(p, list(ds.column_names), ds.to_list())


_COLUMN_HINTS = {
    "input": "set [input].fields in the task file, or pass --text-column",
    "gold label": "pass --label-column with one of those names (or leave it out where gold is optional)",
}


def require_columns(table: Table, columns: Sequence[str], *, what: str = "input") -> None:
    """Raise :class:`DataError` naming the missing columns and those that exist."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        named = f"column {missing[0]!r}" if len(missing) == 1 else f"columns {missing}"
        raise DataError(
            f"{table.path}: {what} {named} not found; the file has {table.columns}",
            hint=_COLUMN_HINTS.get(what, f"check the {what} column's name"),
        )


def extract_texts(
    table: Table, fields: Sequence[str], render: Any, *, require_text: bool = True
) -> tuple[list[str], list[int], InputReport]:
    """Texts for the given fields, rendered by ``render(row_dict) -> str``.

    Returns (unique texts in first-seen order, row index → unique position or -1, report).
    Empty and non-text rows map to -1 and are listed in the report (by the file's row numbers:
    ``table.first_row`` onwards).  ``require_text``: a table without any usable text is an error.
    """
    require_columns(table, fields)
    report = InputReport(total=len(table.rows))
    seen: dict[str, int] = {}
    uniques: list[str] = []
    mapping: list[int] = []
    for i, row in enumerate(table.rows, start=table.first_row):
        values: dict[str, str] = {}
        bad = False
        for f in fields:
            v = row.get(f)
            if v is None:
                v = ""
            if not isinstance(v, str):
                bad = True
                break
            values[f] = v
        if bad:
            report.non_text.append(i)
            mapping.append(-1)
            continue
        text = render(values).strip() if any(v.strip() for v in values.values()) else ""
        if not text:  # every field blank (a template alone is not a text) or rendered to nothing
            report.empty.append(i)
            mapping.append(-1)
            continue
        pos = seen.get(text)
        if pos is None:
            pos = seen[text] = len(uniques)
            uniques.append(text)
        else:
            report.duplicates += 1
        mapping.append(pos)
    report.used = len(uniques)
    if not uniques and require_text:
        raise DataError(
            f"{table.path}: every row is empty or not text in column(s) {list(fields)} "
            f"({len(report.empty)} empty, {len(report.non_text)} not text)"
        )
    return uniques, mapping, report


# ---------------------------------------------------------------------------------------------
# The one input reader every command uses.


@dataclass
class Inputs:
    """An input file read with the one rule every command shares.

    ``texts`` are the unique usable texts in first-seen order; ``rows[i]`` is the position in ``texts``
    of data row ``i + 1`` (-1 for an empty or non-text row); ``gold[i]`` its gold label (None where
    the cell is empty, or for every row when no gold column was asked for).
    """

    path: Path
    texts: list[str]
    rows: list[int]
    gold: list[str | None]
    fields: list[str]
    report: InputReport
    table: Table  # the rows as read (``distil predict`` writes them back with the predictions)

    def used_rows(self) -> list[int]:
        """0-based indices of the rows that have a usable text."""
        return [i for i, pos in enumerate(self.rows) if pos >= 0]

    def gold_by_text(self) -> dict[str, str]:
        """The first gold label of each unique text that has one."""
        out: dict[str, str] = {}
        for pos, g in zip(self.rows, self.gold, strict=True):
            if pos >= 0 and g is not None:
                out.setdefault(self.texts[pos], g)
        return out


def read_inputs(
    path: str | Path,
    spec: Any,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
    require_gold: bool = False,
) -> Inputs:
    """Read the texts (and gold labels) of an input file by one rule.

    Texts: without ``text_column``, ``spec`` (a task's ``[input]``: fields, template, ``max_chars``)
    renders each row; with it, that one column is the text, cut to ``spec.max_chars``.  Empty and
    non-text rows are skipped and listed in the report; duplicates are asked once.
    Gold (``label_column``): each cell is read by :func:`gold_text`; an empty cell means "no gold for
    this row" (listed in ``report.no_gold``); a value outside ``labels`` is an error naming the row.
    ``require_gold`` makes a file without any gold label an error.
    """
    table = read_table(path)
    fields, render = text_rule(spec, text_column)
    texts, rows, report = extract_texts(table, fields, render)
    gold: list[str | None] = [None] * len(rows)
    if label_column is not None:
        gold = _read_gold(table, rows, label_column, list(labels or []), report)
        if require_gold and not any(g is not None for g in gold):
            raise DataError(
                f"{table.path}: column {label_column!r} has no gold label in any row with a text",
                hint="fill the gold label column, or pass --label-column with the column that holds them",
            )
    return Inputs(table.path, texts, rows, gold, list(fields), report, table)


def text_rule(spec: Any, text_column: str | None) -> tuple[list[str], Any]:
    """The fields and the render function for one row: the task's rule (an ``[input]`` spec), or one named
    column cut to the rule's ``max_chars``."""
    if text_column is None:
        return list(spec.fields), spec.render
    max_chars = int(spec.max_chars)

    def render(row: dict[str, str]) -> str:
        return row[text_column][:max_chars]

    return [text_column], render


def _read_gold(
    table: Table, rows: list[int], column: str, labels: list[str], report: InputReport
) -> list[str | None]:
    """Gold label per row (None for empty cells); unknown labels raise with the row and a hint."""
    require_columns(table, [column], what="gold label")
    known = set(labels)
    first: dict[int, str] = {}
    gold: list[str | None] = []
    for row_no, (row, pos) in enumerate(zip(table.rows, rows, strict=True), start=1):
        value = _gold_cell(table, row_no, column, row.get(column)) if pos >= 0 else None
        if pos >= 0 and value is None:
            report.no_gold.append(row_no)
        elif value is not None:
            value = _as_known(value, known)
            if value not in known:
                raise _unknown_label(table, row_no, column, value, row.get(column), labels)
            if first.setdefault(pos, value) != value:
                report.gold_conflicts += 1
        gold.append(value)
    return gold


def _as_known(value: str, known: set[str]) -> str:
    """A numeric text such as ``"3.0"`` matches label ``"3"`` when the exact text is not a label."""
    if value in known:
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    whole = str(int(number)) if number.is_integer() else value
    return whole if whole in known else value


def _gold_cell(table: Table, row_no: int, column: str, raw: Any) -> str | None:
    """One gold cell as label text; None when empty (missing, blank or NaN)."""
    if raw is None or (isinstance(raw, float) and raw != raw):
        return None
    value = gold_text(raw)
    if value is None:
        raise DataError(
            f"{table.path}, row {row_no}, column {column!r}: expected a label (text or number), "
            f"found {type(raw).__name__}",
            hint="a gold label cell holds one label name",
        )
    return value or None


def _unknown_label(table: Table, row_no: int, column: str, value: str, raw: Any, labels: list[str]) -> DataError:
    near = {lab.lower(): lab for lab in labels}.get(value.lower())
    hint = (
        f"did you mean {near!r}? labels must match exactly"
        if near
        else "fix the value, or add the label to the task file's labels"
    )
    shown = repr(value) if isinstance(raw, str) else f"{raw!r} (read as {value!r})"
    listed = labels if len(labels) <= 12 else [*labels[:12], "…"]
    return DataError(
        f"{table.path}, row {row_no}, column {column!r}: gold label {shown} is not one of the task's "
        f"{len(labels)} labels {listed}",
        hint=hint,
    )


# ---------------------------------------------------------------------------------------------
# The labeled set: texts with the teacher's probabilities — what students train on.


@dataclass
class LabeledSet:
    """Texts with teacher probabilities over ``labels`` (columns in that order).

    ``gold`` holds gold labels where the user has them (else None entries).
    """

    texts: list[str]
    probs: np.ndarray  # shape (n, k), float32, rows sum to 1
    labels: list[str]
    gold: list[str | None] | None = None
    teacher: str = ""  # teacher fingerprint
    info: dict[str, Any] | None = None  # how it was made (strategy, rounds), stored with the set

    def __post_init__(self) -> None:
        self.probs = np.asarray(self.probs, dtype=np.float32)
        if self.probs.ndim != 2 or self.probs.shape != (len(self.texts), len(self.labels)):
            raise DataError(
                f"labeled set: expected probabilities of shape ({len(self.texts)}, {len(self.labels)}), "
                f"found {self.probs.shape}"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def hard(self) -> np.ndarray:
        """Teacher argmax as label indices."""
        return np.asarray(self.probs.argmax(axis=1), dtype=np.int64)

    @property
    def teacher_labels(self) -> list[str]:
        """Teacher argmax as label names."""
        return [self.labels[i] for i in self.hard]

    def fingerprint(self) -> str:
        """Hash of texts, probabilities (rounded) and labels: changes when the training data changes."""
        h = hashlib.sha256()
        h.update(json.dumps(self.labels).encode())
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        h.update(np.round(self.probs, 5).astype(np.float32).tobytes())
        return h.hexdigest()[:16]


def write_labeled(ls: LabeledSet, path: str | Path) -> Path:
    """Write text, teacher label and teacher probabilities to Parquet or JSONL (by suffix).

    Atomic (:func:`atomic_path`): an interrupted export leaves the previous file whole.  JSONL also
    gets ``<name>.info.json`` (teacher and how the set was made) when ``ls.info`` is set.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "parquet":
        with atomic_path(p, what="labeled set") as tmp:
            _write_parquet(ls, tmp)
    elif fmt == "jsonl":
        with atomic_path(p, what="labeled set") as tmp:
            _write_jsonl(ls, tmp)
        if ls.info:
            info = json.dumps({"teacher": ls.teacher, **ls.info}, indent=1)
            atomic_write_text(p.with_name(p.name + ".info.json"), info, what="labeled set's info")
    else:
        raise DataError(f"{p}: the labeled set is written as .parquet or .jsonl, not {fmt}")
    return p


def _write_parquet(ls: LabeledSet, path: Path) -> None:
    """The labeled set as one Parquet file; labels, teacher and info in the schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {
        "text": ls.texts,
        "teacher_label": ls.teacher_labels,
        "teacher_probs": [row.tolist() for row in ls.probs],
    }
    if ls.gold is not None:
        cols["gold"] = ls.gold
    table = pa.table(cols)
    meta = {
        b"distil.labels": json.dumps(ls.labels).encode(),
        b"distil.teacher": ls.teacher.encode(),
        b"distil.info": json.dumps(ls.info or {}).encode(),
    }
    pq.write_table(table.replace_schema_metadata(meta), path)


def _write_jsonl(ls: LabeledSet, path: Path) -> None:
    """The labeled set as JSONL: text, teacher label, ``{label: probability}`` (and gold) per line."""
    teacher_labels = ls.teacher_labels
    with path.open("w", encoding="utf-8", errors="backslashreplace", newline="\n") as fh:
        for i, text in enumerate(ls.texts):
            rec: dict[str, Any] = {
                "text": text,
                "teacher_label": teacher_labels[i],
                "teacher_probs": {lab: round(float(v), 6) for lab, v in zip(ls.labels, ls.probs[i], strict=True)},
            }
            if ls.gold is not None:
                rec["gold"] = ls.gold[i]
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def read_labeled(path: str | Path) -> LabeledSet:
    """Read a labeled set written by :func:`write_labeled`."""
    p = Path(path)
    fmt = detect_format(p)
    try:
        if fmt == "parquet":
            return _read_labeled_parquet(p)
        if fmt == "jsonl":
            return _read_labeled_jsonl(p)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(p)
        raise storage_error(exc, "read the labeled set") from None
    raise DataError(f"{p}: a labeled set is .parquet or .jsonl")


def _read_labeled_parquet(p: Path) -> LabeledSet:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with p.open("rb"):  # unreadable → StorageError, not "not a Parquet file"
        pass
    try:
        t = pq.read_table(p)
    except pa.ArrowException as exc:
        raise DataError(f"{p}: not a readable Parquet file ({exc})") from None
    meta = t.schema.metadata or {}
    if b"distil.labels" not in meta:
        raise DataError(f"{p}: not a distil labeled set (no label list in the Parquet metadata)")
    try:
        labels = json.loads(meta[b"distil.labels"])
        info = json.loads(meta.get(b"distil.info", b"{}")) or None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{p}: the distil metadata is not valid JSON ({type(exc).__name__})") from None
    d = t.to_pydict()
    return LabeledSet(
        texts=d["text"], probs=np.array(d["teacher_probs"], dtype=np.float32), labels=labels,
        gold=d.get("gold"), teacher=meta.get(b"distil.teacher", b"").decode(), info=info,
    )


def _read_labeled_jsonl(p: Path) -> LabeledSet:
    table = _read_jsonl(p)
    if not table.rows:
        raise DataError(f"{p}: no rows", hint="a labeled set written by distil label has one line per text")
    require_columns(table, ["text", "teacher_probs"], what="labeled-set")
    labels = list(table.rows[0]["teacher_probs"])
    probs = np.array([[r["teacher_probs"][lab] for lab in labels] for r in table.rows], dtype=np.float32)
    gold = [r.get("gold") for r in table.rows] if "gold" in table.columns else None
    return LabeledSet([r["text"] for r in table.rows], probs, labels, gold)
