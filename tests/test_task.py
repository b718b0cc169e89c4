"""Task files: typed, validated, unknown keys named."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.cli import main
from distil.errors import ConfigError
from distil.task import Task


def _load(tmp_path: Path, text: str) -> Task:
    p = tmp_path / "task.toml"
    p.write_text(text, encoding="utf-8")
    return Task.load(p)


def test_labels_as_list_and_table(tmp_path: Path) -> None:
    t = _load(tmp_path, 'name="x"\nlabels=["a","b"]\n')
    assert t.label_names == ["a", "b"]
    assert t.label_descriptions == {"a": "a", "b": "b"}
    t = _load(tmp_path, 'name="x"\n[labels]\na="first"\nb="second"\n')
    assert t.label_names == ["a", "b"]
    assert t.label_descriptions["b"] == "second"
    assert t.work_path == tmp_path.resolve() / ".distil"


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'lables'"):
        _load(tmp_path, 'name="x"\nlabels=["a","b"]\nlables=["c"]\n')


def test_unknown_teacher_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'teacher\.modle'"):
        _load(tmp_path, 'name="x"\nlabels=["a","b"]\n[teacher]\nkind="openai"\nmodel="m"\nmodle="m"\n')


def test_bad_teacher_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind"):
        _load(tmp_path, 'name="x"\nlabels=["a","b"]\n[teacher]\nkind="gpt"\n')


def test_duplicate_and_single_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate labels"):
        _load(tmp_path, 'name="x"\nlabels=["a","a"]\n')
    with pytest.raises(ConfigError, match="at least 2 labels"):
        _load(tmp_path, 'name="x"\nlabels=["a"]\n')


def test_template_must_name_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="body"):
        _load(tmp_path, 'name="x"\nlabels=["a","b"]\n[input]\nfields=["subject"]\ntemplate="{subject} {body}"\n')
    t = _load(
        tmp_path, 'name="x"\nlabels=["a","b"]\n[input]\nfields=["subject","body"]\ntemplate="{subject}: {body}"\n'
    )
    assert t.input.render({"subject": "S", "body": "B"}) == "S: B"


def test_not_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        _load(tmp_path, "name = \n")


def test_init_writes_a_valid_commented_file(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "complaints")]) == 0
    path = tmp_path / "complaints" / "task.toml"
    text = path.read_text(encoding="utf-8")
    assert text.count("#") > 10
    task = Task.load(path)
    assert task.name == "complaints"
    assert task.teacher is not None and task.teacher.kind == "openai"
    assert main(["init", str(tmp_path / "complaints")]) == 2  # refuses to overwrite
