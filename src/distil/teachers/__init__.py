"""Teachers: ``openai`` (any OpenAI-compatible endpoint), ``local`` (an encoder on disk), ``function``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distil.errors import ConfigError
from distil.teachers.base import Answer, Teacher

if TYPE_CHECKING:
    from distil.task import Task

__all__ = ["Answer", "Teacher", "make_teacher"]


def make_teacher(task: Task) -> Teacher:
    """Build the teacher the task file names (imports only what that kind needs)."""
    spec = task.teacher
    if spec is None:
        raise ConfigError(
            f"task {task.name!r} has no [teacher] section",
            hint="add one (kind = openai | local | function); `distil init` shows examples",
        )
    if spec.kind == "openai":
        from distil.teachers.openai import OpenAITeacher

        return OpenAITeacher(spec, task)
    if spec.kind == "local":
        from distil.teachers.local import LocalTeacher

        return LocalTeacher(spec, task)
    from distil.teachers.function import FunctionTeacher

    return FunctionTeacher(spec, task)
