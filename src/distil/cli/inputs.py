"""Reading the commands' input files: the task file, and the texts (the one place the CLI reads them).

Every command reads its input file with :func:`distil.data.read_inputs` (one rule for columns,
templates, truncation and gold labels): :func:`read_task_texts` (``label``) by the task's ``[input]``
rule, :func:`read_artifact_texts` (``predict``, ``drift``) by the rule the artifact was trained with;
``--text-column`` replaces the fields with one column in both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from distil.cli.display import console

if TYPE_CHECKING:
    from distil.data import InputReport, Inputs
    from distil.task import Task


def load_task(path: str) -> Task:
    """The task defined by the task file at ``path``."""
    from distil.task import Task

    return Task.load(path)


def read_task_texts(task: Task, paths: str | list[str], text_column: str | None) -> list[str]:
    """The input texts of ``paths`` (files, folders of shards, glob patterns) for ``task`` (its fields, or
    ``text_column``), in order; prints each file's report."""
    from distil.data import expand_inputs, read_inputs

    texts: list[str] = []
    for path in expand_inputs([paths] if isinstance(paths, str) else paths):
        got = read_inputs(path, task.input, text_column=text_column)
        console.print(f"[bold]{path}[/]: {got.report.summary()}")
        texts.extend(got.texts)
    return texts


def read_artifact_inputs(artifact: str, path: str, text_column: str | None) -> Inputs:
    """``path`` read as the artifact's students were trained to read it (its ``[input]`` rule)."""
    from distil.artifact import load_artifact
    from distil.data import read_inputs

    return read_inputs(path, load_artifact(Path(artifact)).input_spec(), text_column=text_column)


def read_artifact_texts(artifact: str, path: str, text_column: str | None) -> tuple[list[str], InputReport]:
    """The unique texts of ``path`` read as the artifact's students were trained to read them."""
    got = read_artifact_inputs(artifact, path, text_column)
    return got.texts, got.report
