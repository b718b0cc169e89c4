"""Exact label probabilities: short label keys (``label_keys``) against the split-by-first-token path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from distil.errors import ConfigError
from distil.label import LabelStats, _count, split_label_check
from distil.task import Task
from distil.teachers.base import Answer
from distil.teachers.openai import OpenAITeacher, answer_keys, label_probs_from_logprobs

LABELS = ["card_arrival", "card_linking", "top_up_failed"]


def _item(token: str, alts: dict[str, float]) -> dict[str, Any]:
    return {"token": token, "logprob": math.log(alts.get(token, 1.0)),
            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alts.items()]}


def _task(tmp_path: Path, labels: list[str], **teacher: Any) -> Task:
    spec = {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "NO_KEY", **teacher}
    return Task.from_dict({"name": "t", "labels": labels, "teacher": spec}, base_dir=tmp_path)


def test_names_split_a_shared_first_token_evenly_and_keys_do_not() -> None:
    head = _item('{"label": "', {'{"label": "': 1.0})
    by_name = [head, _item("top", {"top": 0.5, "card": 0.5}), _item("_up_failed", {"_up_failed": 1.0}),
               _item('"}', {'"}': 1.0})]
    stats: dict[str, float] = {}
    probs, why = label_probs_from_logprobs(by_name, LABELS, stats=stats)
    assert why == "" and probs == pytest.approx([0.25, 0.25, 0.5])  # card_arrival and card_linking: flat
    assert stats["split_mass"] == pytest.approx(0.5)
    by_key = [head, _item("C", {"C": 0.5, "A": 0.3, "B": 0.2}), _item('"}', {'"}': 1.0})]
    stats = {}
    probs, why = label_probs_from_logprobs(by_key, answer_keys(LABELS, "letters"), stats=stats)
    assert why == "" and probs == pytest.approx([0.3, 0.2, 0.5])  # each label its own probability
    assert stats["split_mass"] == 0.0


def test_keys_in_the_prompt_schema_parser_and_identity(tmp_path: Path) -> None:
    task = _task(tmp_path, LABELS, label_keys="auto")
    keyed = OpenAITeacher(task.teacher, task)  # type: ignore[arg-type]
    assert keyed.answers == ["A", "B", "C"]
    assert "- A: card_arrival" in keyed.system_prompt and "- C: top_up_failed" in keyed.system_prompt
    assert '{"label": "<key>"}' in keyed.system_prompt
    assert keyed.schema["properties"]["label"]["enum"] == ["A", "B", "C"]
    for said, meant in [('{"label": "B"}', "card_linking"), ("b", "card_linking"), ('"C"', "top_up_failed"),
                        ('{"label": "card_arrival"}', "card_arrival"), ('{"label": "D"}', None)]:
        assert keyed._parse(said) == meant, said
    assert keyed.identity()["label_keys"] == "auto"
    plain_task = _task(tmp_path, LABELS)
    plain = OpenAITeacher(plain_task.teacher, plain_task)  # type: ignore[arg-type]
    assert "label_keys" not in plain.identity()  # journals written before label keys keep their keys
    assert plain.prompt_sha() != keyed.prompt_sha()
    many = [f"intent_{i}" for i in range(77)]
    assert answer_keys(many, "auto")[:3] == ["1", "2", "3"] and answer_keys(many, "auto")[-1] == "77"
    with pytest.raises((ConfigError, ValueError), match="26 keys"):
        _task(tmp_path, many, label_keys="letters")
    keyed.close()
    plain.close()


def test_label_says_when_answers_were_split() -> None:
    stats = LabelStats()
    for i in range(40):
        split = 0.3 if i % 3 == 0 else 0.0
        _count(stats, Answer("done", probs=[0.5, 0.5], method="logprobs", extra={"split_mass": split}))
    assert stats.logprob_answers == 40 and stats.split_answers == 14
    warning = split_label_check(stats)
    assert warning is not None and "14 of 40" in warning and 'label_keys = "auto"' in warning
    exact = LabelStats()
    for _ in range(40):
        _count(exact, Answer("done", probs=[0.5, 0.5], method="logprobs", extra={"split_mass": 0.0}))
    assert split_label_check(exact) is None
