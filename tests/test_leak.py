"""Numbers that cannot leak: what `distil eval` and `--valid` asked the teacher is never trained on.

The regression from the architecture issue: label 100 texts → train → eval on 60 others → train
again. Before, the second training used 160 texts (the test file's answers came from the same
journal); it must use the same 100, and eval must say how many test texts the student saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_banking_task, write_csv

from distil.journal import Journal
from distil.label import label, labeled_set
from distil.task import Task

TESTS = Path(__file__).resolve().parent
LABELS = ["card_arrival", "exchange_rate", "pin_blocked"]


def distil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "DISTIL_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "distil", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _task_file(tmp_path: Path) -> Path:
    return write_banking_task(tmp_path / "t", LABELS)


def _rows() -> list[tuple[str, str]]:
    from conftest import banking77

    by_label = [[(t, lab) for t, lab in banking77("train") if lab == want] for want in LABELS]
    return [r for trio in zip(*by_label, strict=False) for r in trio]  # interleaved: every slice has all 3


def test_eval_and_valid_answers_are_not_training_data(tmp_path: Path) -> None:
    task = Task.load(_task_file(tmp_path))
    rows = _rows()
    pool, test, valid = rows[:100], rows[100:160], rows[160:200]
    with Journal(task.journal_path) as j:
        label(task, [t for t, _ in pool], journal=j)
        label(task, [t for t, _ in test], journal=j, source="eval")
        label(task, [t for t, _ in valid], journal=j, source="valid")
        assert len(labeled_set(task, journal=j)) == 100
        assert len(labeled_set(task, journal=j, include=("eval",))) == 160
        assert len(labeled_set(task, journal=j, include=("eval", "valid"))) == 200
        # a test text that the team later labels for training on purpose becomes training data
        label(task, [test[0][0]], journal=j)
        assert test[0][0] in labeled_set(task, journal=j).texts
        assert j.uses()[next(r.key for r in j.rows() if r.text == test[0][0])] == {"eval", "label"}


@pytest.mark.slow
def test_label_train_eval_train_trains_on_the_same_texts(tmp_path: Path) -> None:
    task = _task_file(tmp_path)
    rows = _rows()
    pool = write_csv(tmp_path / "pool.csv", [{"text": t} for t, _ in rows[:100]])
    test = write_csv(tmp_path / "test.csv", [{"text": t, "intent": g} for t, g in rows[100:160]],
                     columns=("text", "intent"))
    assert distil("label", str(task), str(pool), cwd=tmp_path).returncode == 0
    first = distil("train", str(task), "--out", str(tmp_path / "s1"), "--students", "ngram", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    ev = distil("eval", str(tmp_path / "s1"), str(test), "--task", str(task), "--label-column", "intent",
                "--out", str(tmp_path / "e1"), cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads((tmp_path / "e1" / "metrics.json").read_text())
    assert metrics["overlap"] == {"n_test_texts": 60, "seen_in_training": 0, "checked": True}
    assert not metrics["verdict_withheld"]
    second = distil("train", str(task), "--out", str(tmp_path / "s2"), "--students", "ngram", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    cfg1 = json.loads((tmp_path / "s1" / "distil_config.json").read_text())
    cfg2 = json.loads((tmp_path / "s2" / "distil_config.json").read_text())
    assert cfg1["n_train"] + cfg1["n_heldout"] == cfg2["n_train"] + cfg2["n_heldout"] == 100
    assert cfg1["data_fingerprint"] == cfg2["data_fingerprint"]

    # asked by name, the test answers are trained on — and eval then withholds its verdict
    leaky = distil("train", str(task), "--out", str(tmp_path / "s3"), "--students", "ngram",
                   "--include-source", "eval", cwd=tmp_path)
    assert leaky.returncode == 0, leaky.stderr
    cfg3 = json.loads((tmp_path / "s3" / "distil_config.json").read_text())
    assert cfg3["n_train"] + cfg3["n_heldout"] == 160
    ev3 = distil("eval", str(tmp_path / "s3"), str(test), "--task", str(task), "--label-column", "intent",
                 "--out", str(tmp_path / "e3"), cwd=tmp_path)
    assert ev3.returncode == 2, ev3.stderr
    assert "No verdict: 60 of 60 test texts were in the student's training data" in ev3.stdout
    m3 = json.loads((tmp_path / "e3" / "metrics.json").read_text())
    assert m3["verdict_withheld"] and m3["overlap"]["seen_in_training"] == 60
    anyway = distil("eval", str(tmp_path / "s3"), str(test), "--task", str(task), "--label-column", "intent",
                    "--out", str(tmp_path / "e4"), "--allow-overlap", cwd=tmp_path)
    assert anyway.returncode == 0 and "keeps" in anyway.stdout
