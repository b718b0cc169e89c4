"""The one input reader (distil.data.read_inputs): one rule for columns, templates, truncation, gold."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distil.data import read_inputs
from distil.errors import DataError
from distil.task import InputSpec

LABELS = ["1", "2", "3", "billing"]


def _csv(tmp_path: Path, text: str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_task_rule_renders_fields_with_the_template_and_cuts_to_max_chars(tmp_path: Path) -> None:
    path = _csv(tmp_path, "subject,body\nhi,there\nhi,there\n,\n")
    spec = InputSpec(fields=["subject", "body"], template="{subject}: {body}", max_chars=6)
    got = read_inputs(path, spec)
    assert got.texts == ["hi: th"]
    assert got.rows == [0, 0, -1]
    assert got.report.duplicates == 1 and got.report.empty == [3]
    assert got.fields == ["subject", "body"]


def test_a_named_text_column_replaces_the_fields_and_keeps_the_truncation(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,other\nabcdefgh,zz\n")
    got = read_inputs(path, InputSpec(max_chars=4), text_column="other")
    assert got.texts == ["zz"] and got.fields == ["other"]
    got = read_inputs(path, InputSpec(max_chars=4), text_column="text")
    assert got.texts == ["abcd"]


def test_a_missing_text_column_names_the_columns_the_file_has(tmp_path: Path) -> None:
    path = _csv(tmp_path, "body\nx\n")
    with pytest.raises(DataError, match=r"input column 'nope' not found; the file has \['body'\]"):
        read_inputs(path, InputSpec(), text_column="nope")


def test_gold_numbers_read_the_same_from_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path, "text,label\na,3\nb,3.0\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": v}) for t, v in [("a", 3), ("b", 3.0)]) + "\n")
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [3.0, 3.0]}), parquet)
    for path in (csv_path, jsonl, parquet):
        got = read_inputs(path, InputSpec(), label_column="label", labels=LABELS)
        assert got.gold == ["3", "3"], path


def test_an_empty_gold_cell_means_no_gold_for_that_row(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,label\na,billing\nb,\nc,  \n")
    got = read_inputs(path, InputSpec(), label_column="label", labels=LABELS)
    assert got.gold == ["billing", None, None]
    assert got.report.no_gold == [2, 3]
    assert got.gold_by_text() == {"a": "billing"}
    assert "2 without a gold label" in got.report.summary()


def test_nan_gold_in_parquet_is_no_gold(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [1.0, float("nan")]}), path)
    got = read_inputs(path, InputSpec(), label_column="label", labels=LABELS)
    assert got.gold == ["1", None]


def test_an_unknown_gold_label_names_row_column_and_the_near_match(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,label\na,billing\nb,Billing\n")
    with pytest.raises(DataError, match=r"row 2, column 'label': gold label 'Billing' is not one") as info:
        read_inputs(path, InputSpec(), label_column="label", labels=LABELS)
    assert "did you mean 'billing'" in (info.value.hint or "")


def test_a_gold_cell_that_is_not_a_label_is_an_error_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a", "label": "1"}\n{"text": "b", "label": {"x": 1}}\n')
    with pytest.raises(DataError, match=r"line|row 2, column 'label': expected a label"):
        read_inputs(path, InputSpec(), label_column="label", labels=LABELS)


def test_require_gold_refuses_a_file_without_any_gold(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,label\na,\nb,\n")
    with pytest.raises(DataError, match="no gold label in any row"):
        read_inputs(path, InputSpec(), label_column="label", labels=LABELS, require_gold=True)


def test_duplicates_with_different_gold_are_counted_and_the_first_kept(tmp_path: Path) -> None:
    path = _csv(tmp_path, "text,label\na,1\na,2\na,1\n")
    got = read_inputs(path, InputSpec(), label_column="label", labels=LABELS)
    assert got.report.gold_conflicts == 1
    assert got.gold_by_text() == {"a": "1"}
    assert got.used_rows() == [0, 1, 2]
