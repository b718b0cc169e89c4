"""Resources in one place: a task's teacher, built once, and its journal, opened once.

The verbs (:func:`distil.label.label`, :func:`distil.evaluate.evaluate`, ...) stay functions that
take a teacher and a journal; a :class:`Workspace` is what hands them the same two objects for a
whole run, so one ``distil run`` builds its teacher (and runs an LLM teacher's capability probe)
once, and closes what it built::

    with Workspace(task) as ws:
        label(ws.task, texts, teacher=ws.teacher, journal=ws.journal)
        evaluate(artifact, test, task=ws.task, teacher=ws.teacher, journal=ws.journal)

Both are built lazily: a command that never asks the teacher never builds it.  A verb called with a
teacher or journal of its own opens ``Workspace(task, teacher=..., journal=...)``: what it was lent
is used and left open, what it had to build is closed when it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distil.journal import Journal
    from distil.task import Task
    from distil.teachers.base import Teacher


class Workspace:
    """The teacher and the journal of one task, shared by every step of a run."""

    def __init__(self, task: Task, *, teacher: Teacher | None = None, journal: Journal | None = None) -> None:
        """``teacher``/``journal`` given are lent: used as they are and never closed here."""
        self.task = task
        self._teacher: Teacher | None = teacher
        self._journal: Journal | None = journal
        self._lent = (teacher is not None, journal is not None)

    @property
    def teacher(self) -> Teacher:
        """The task's teacher, built on first use."""
        if self._teacher is None:
            from distil.teachers import make_teacher

            self._teacher = make_teacher(self.task)
        return self._teacher

    @property
    def journal(self) -> Journal:
        """The task's journal, opened on first use."""
        if self._journal is None:
            from distil.journal import Journal

            self._journal = Journal(self.task.journal_path)
        return self._journal

    def close(self) -> None:
        """Close what this workspace built (the teacher's connections, the journal)."""
        teacher = None if self._lent[0] else self._teacher
        journal = None if self._lent[1] else self._journal
        self._teacher = self._journal = None
        try:
            if teacher is not None:
                teacher.close()
        finally:
            if journal is not None:
                journal.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
