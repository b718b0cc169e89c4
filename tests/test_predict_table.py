"""`distil predict` writes every input row back, in order, with its columns: results a team can join."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _distil_helpers import small_banking

TESTS = Path(__file__).resolve().parent
ROWS = [
    {"ticket_id": "T1", "text": "my card has not arrived yet"},
    {"ticket_id": "T2", "text": ""},
    {"ticket_id": "T3", "text": "what is the exchange rate today"},
    {"ticket_id": "T4", "text": "my card has not arrived yet"},  # a duplicate: predicted once, written twice
]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from distil.train import train

    out = tmp_path_factory.mktemp("art") / "students"
    train(small_banking(n_classes=4, per_class=20), out, students=("ngram",), params={"ngram": {"bits": 12,
          "dim": 16, "epochs": 5}}, routing={"calibration": "heldout"})
    return out


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _predict(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "DISTIL_DEBUG": "", "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "distil", "predict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _read(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_every_row_comes_back_in_order_with_its_columns(artifact: Path, tmp_path: Path, suffix: str) -> None:
    inputs = _csv(tmp_path / "tickets.csv", ROWS)
    out = tmp_path / f"pred{suffix}"
    proc = _predict(str(artifact), str(inputs), "--out", str(out), "--probs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = _read(out)
    assert [r["ticket_id"] for r in got] == ["T1", "T2", "T3", "T4"]
    assert [r["source"] for r in got] == ["student", "skipped", "student", "student"]
    assert got[0]["label"] == got[3]["label"] and got[1]["label"] in (None, "")
    p_cols = [k for k in got[0] if str(k).startswith("p_")]
    assert len(p_cols) == 4
    assert np.isclose(sum(float(got[0][k]) for k in p_cols), 1.0, atol=1e-4)  # type: ignore[arg-type]
    assert float(got[0]["score"]) == pytest.approx(max(float(got[0][k]) for k in p_cols), rel=1e-5)  # type: ignore[arg-type]


def test_stdout_jsonl_and_chosen_columns(artifact: Path, tmp_path: Path) -> None:
    inputs = _csv(tmp_path / "tickets.csv", ROWS)
    proc = _predict(str(artifact), str(inputs), "--columns", "ticket_id", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [list(r) for r in got] == [["ticket_id", "label", "score", "source"]] * 4


@pytest.mark.parametrize(
    ("extra", "rows", "needles"),
    [
        (["--out", "pred.xlsx"], ROWS, ["pred.xlsx", ".csv, .parquet, .jsonl"]),
        (["--columns", "ticket,text"], ROWS, ["--columns", "'ticket'"]),
        ([], [{"text": "my card", "label": "x"}], ["['label']", "--columns"]),
    ],
)
def test_bad_requests_are_one_clear_line(artifact: Path, tmp_path: Path, extra: list[str],
                                         rows: list[dict[str, str]], needles: list[str]) -> None:
    inputs = _csv(tmp_path / "tickets.csv", rows)
    proc = _predict(str(artifact), str(inputs), *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    said = " ".join(proc.stderr.split())
    for n in needles:
        assert n in said, said
    assert not list(tmp_path.glob("pred*"))


def _write_input(path: Path, rows: list[dict[str, object]]) -> Path:
    if path.suffix == ".csv":
        return _csv(path, rows)  # type: ignore[arg-type]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix_in", [".csv", ".parquet", ".jsonl"])
@pytest.mark.parametrize("suffix_out", [".csv", ".parquet", ".jsonl"])
def test_streamed_in_small_chunks_the_output_is_the_same_row_for_row(
    artifact: Path, tmp_path: Path, suffix_in: str, suffix_out: str
) -> None:
    from distil.predictions import predict_file

    texts = ["my card has not arrived yet", "what is the exchange rate today", "", "I lost my card", "   "]
    rows = [{"ticket_id": f"T{i}", "text": texts[i % len(texts)]} for i in range(53)]  # repeats across chunks
    src = _write_input(tmp_path / f"in{suffix_in}", rows)  # type: ignore[arg-type]
    whole = predict_file(artifact, src, tmp_path / f"whole{suffix_out}", probs=True)
    seen: list[int] = []
    parts = predict_file(artifact, src, tmp_path / f"parts{suffix_out}", probs=True, chunk_rows=7,
                         progress=seen.append)
    assert _read(tmp_path / f"whole{suffix_out}") == _read(tmp_path / f"parts{suffix_out}")
    assert seen == [7, 14, 21, 28, 35, 42, 49, 53]
    assert parts.rows == whole.rows == 53 and parts.skipped == whole.skipped == 21
    # rows with no text are reported by their row numbers in the file, whatever the chunk
    assert parts.report.empty == whole.report.empty == [i + 1 for i in range(53) if i % 5 in (2, 4)]


def test_a_bad_row_late_in_a_streamed_file_names_it_and_writes_nothing(artifact: Path, tmp_path: Path) -> None:
    from distil.errors import DataError
    from distil.predictions import predict_file

    good = "".join(f"T{i},my card has not arrived yet\n" for i in range(40))
    src = tmp_path / "in.csv"
    src.write_text("ticket_id,text\n" + good + 'T40,"an unclosed quote\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"row 41 \(line 42\): a quoted field is never closed"):
        predict_file(artifact, src, tmp_path / "out.csv", chunk_rows=8)
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv*"))
