"""The function teacher: a team's Python callable as the teacher."""

from __future__ import annotations

import uuid
from pathlib import Path

import fixtures_teachers
import pytest

from distil.errors import ConfigError
from distil.task import Task
from distil.teachers import make_teacher
from distil.teachers.function import FunctionTeacher

LABELS = ["billing", "delivery", "other"]


def make(callable_: str, tmp_path: Path, **extra: object) -> FunctionTeacher:
    task = Task.from_dict(
        {"name": "t", "labels": LABELS, "teacher": {"kind": "function", "callable": callable_, **extra}},
        base_dir=tmp_path,
    )
    teacher = make_teacher(task)
    assert isinstance(teacher, FunctionTeacher)
    return teacher


def test_label_strings(tmp_path: Path) -> None:
    t = make("fixtures_teachers:by_keyword", tmp_path)
    answers = t.predict_batch(["an invoice I did not expect", "where is my parcel", "hello"])
    assert [a.status for a in answers] == ["done"] * 3
    assert [a.probs for a in answers] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert {a.method for a in answers} == {"function"}
    assert answers[0].raw == "billing"
    assert all(a.latency_ms >= 0 and a.cost == 0 for a in answers)


def test_dicts_are_normalised_and_missing_labels_are_zero(tmp_path: Path) -> None:
    t = make("fixtures_teachers:as_dicts", tmp_path)
    a, b = t.predict_batch(["invoice", "x"])
    assert a.probs == pytest.approx([0.75, 0.25, 0.0])
    assert b.probs == pytest.approx([0.0, 0.0, 1.0])


def test_lists_in_label_order(tmp_path: Path) -> None:
    t = make("fixtures_teachers:as_lists", tmp_path)
    a, b = t.predict_batch(["parcel", "x"])
    assert a.probs == pytest.approx([0.2, 0.7, 0.1])
    assert b.probs == pytest.approx([0.6, 0.2, 0.2])
    assert a.label_index == 1


def test_results_outside_the_contract_are_invalid_with_raw_kept(tmp_path: Path) -> None:
    t = make("fixtures_teachers:mixed_bad", tmp_path)
    keys = ["ok", "unknown label", "unknown key", "short list", "negative", "zeros", "none", "int"]
    answers = dict(zip(keys, t.predict_batch(keys), strict=True))
    assert answers["ok"].status == "done"
    for k in keys[1:]:
        assert answers[k].status == "invalid", k
        assert answers[k].probs is None
        assert answers[k].error
    assert answers["unknown label"].raw == "refunds"
    assert "refunds" in (answers["unknown key"].raw or "")
    assert "3 probabilities" in (answers["short list"].error or "")


def test_batch_exception_falls_back_to_items(tmp_path: Path) -> None:
    fixtures_teachers.CALLS.clear()
    t = make("fixtures_teachers:fails_on_boom", tmp_path, batch_size=4)
    answers = t.predict_batch(["a", "boom here", "c", "d", "e"])
    assert [a.status for a in answers] == ["done", "failed", "done", "done", "done"]
    assert "RuntimeError" in (answers[1].error or "") and "boom here" in (answers[1].error or "")
    # batch of 4 raised -> 4 single calls; then the last chunk of 1 succeeded.
    assert fixtures_teachers.CALLS == [4, 1, 1, 1, 1, 1]


def test_wrong_number_of_results_fails_each_item(tmp_path: Path) -> None:
    t = make("fixtures_teachers:wrong_length", tmp_path)
    answers = t.predict_batch(["a", "b"])
    assert [a.status for a in answers] == ["failed", "failed"]
    assert "returned 0 results for 1 texts" in (answers[0].error or "")


def test_dotted_attribute_and_identity(tmp_path: Path) -> None:
    t = make("fixtures_teachers:model.predict", tmp_path, version="7")
    assert t.predict_batch(["x"])[0].probs == [0.0, 1.0, 0.0]
    assert t.identity() == {"callable": "fixtures_teachers:model.predict", "version": "7"}
    other = make("fixtures_teachers:model.predict", tmp_path, version="8")
    assert t.fingerprint() != other.fingerprint()


def test_a_file_in_the_task_folder_is_run_when_named_by_its_path(tmp_path: Path) -> None:
    name = f"rules_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("def f(texts):\n    return ['other' for _ in texts]\n")
    t = make(f"{name}.py:f", tmp_path)
    assert t.predict_batch(["x"])[0].probs == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("fixtures_teachers:nope", "has no attribute 'nope'"),
        ("fixtures_teachers:NOT_CALLABLE", "not a callable"),
    ],
)
def test_bad_callable_is_a_config_error(tmp_path: Path, ref: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make(ref, tmp_path).predict_batch(["x"])  # imported when first asked (never on --dry-run)


def test_import_error_inside_the_module_names_the_reason(tmp_path: Path) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise ValueError('no config file')\n")
    with pytest.raises(ConfigError, match="no config file"):
        make(f"{name}.py:f", tmp_path).predict_batch(["x"])
