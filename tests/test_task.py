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


def test_one_target_per_purpose_with_defaults(tmp_path: Path) -> None:
    t = _load(tmp_path, 'name="x"\nlabels=["a","b"]\n')
    assert (t.targets.min_retention, t.targets.max_cost_ratio, t.targets.routing_agreement) == (0.95, 0.01, 0.95)
    t = _load(tmp_path, 'name="x"\nlabels=["a","b"]\n[targets]\nrouting_agreement=0.9\nmin_retention=0.97\n')
    assert t.targets.routing_agreement == 0.9 and t.targets.min_retention == 0.97
    with pytest.raises(ConfigError, match="routing_agreement"):
        _load(tmp_path, 'name="x"\nlabels=["a","b"]\n[targets]\nrouting_agreement=1.0\n')


def test_train_task_fits_the_router_at_the_routing_target_not_the_selection_target(tmp_path: Path) -> None:
    import json

    from helpers import write_task

    from distil.label import label
    from distil.train import train_task

    task_file = write_task(tmp_path / "t")
    text = task_file.read_text() + "\n[targets]\nmin_agreement = 0.5\nrouting_agreement = 0.8\n"
    task_file.write_text(text)
    task = Task.load(task_file)
    words = ["card", "transfer", "cash", "atm", "hello"]
    texts = [f"{w} question number {i}" for i in range(40) for w in words]
    label(task, texts)
    res = train_task(task, tmp_path / "s", students=("ngram",), params={"ngram": {"bits": 12, "dim": 8, "epochs": 3}})
    router = json.loads((tmp_path / "s" / "router.json").read_text())
    assert router["threshold"]["target"] == 0.8
    assert json.loads((tmp_path / "s" / "distil_config.json").read_text())["target"] == 0.5
    assert res.router is not None
