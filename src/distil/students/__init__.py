"""Students, from cheapest to strongest: ``ngram``, ``static``, ``tuned``, ``ensemble``, ``encoder``, ``finetune``.

Importing this package imports no torch; each student's module is imported when it is used.
"""

from __future__ import annotations

from distil.students.base import LADDER, REGISTRY, Student, load_student, student_class

__all__ = ["LADDER", "REGISTRY", "Student", "load_student", "student_class"]
