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
