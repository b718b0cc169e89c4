"""What is evaluated against what: the task, the student's label order, the texts it was trained on.

:func:`resolve_task` finds the task an artifact is evaluated for, :func:`align_columns` maps a
student's label order onto the task's, and :func:`overlap` counts test texts the ladder saw in
training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.artifact import config_path
from distil.errors import ArtifactError, ConfigError
from distil.task import Task

if TYPE_CHECKING:
    from distil.artifact import Artifact

__all__ = ["align_columns", "overlap", "resolve_task"]


def resolve_task(task: Task | str | Path | None, artifact: Artifact) -> Task:
    """The given task, else the one stored with the artifact, else a ``task.toml`` found nearby.

    Nearby: the current folder, then the artifact's folder and up to three folders above it
    (the default artifact lives in ``<task folder>/.distil/student``).  A found task is used
    only if its fingerprint equals the one the artifact was trained for or, when the artifact
    records none, if its labels are the artifact's labels.
    """
    if isinstance(task, Task):
        return task
    if task is not None:
        return Task.load(task)
    return _stored_task(artifact) or _nearby_task(artifact)


def _stored_task(artifact: Artifact) -> Task | None:
    """The task the artifact stores: its ``task.toml``, the recorded task path, or config.json's copy."""
    root = Path(artifact.path).resolve()
    stored = root / "task.toml"
    if stored.exists():
        return Task.load(stored)
    stored_path = artifact.config.get("task_path")  # relative to the artifact (absolute before format 2)
    if isinstance(stored_path, str) and stored_path and (root / stored_path).exists():
        return Task.load(root / stored_path)
    raw = artifact.config.get("task")
    if isinstance(raw, dict):
        return Task.from_dict(raw, source=f"{config_path(root)} [task]")
    return None


def _nearby_task(artifact: Artifact) -> Task:
    """A ``task.toml`` near the artifact that matches it, or :class:`ConfigError` naming where it looked."""
    root = Path(artifact.path).resolve()
    looked: list[str] = []
    for folder in [Path.cwd(), root, *list(root.parents)[:3]]:
        cand = folder / "task.toml"
        if str(cand) in looked:
            continue
        looked.append(str(cand))
        found = _matching_task(cand, artifact)
        if found is not None:
            return found
    raise ConfigError(
        f"{root}: no task given, and no task.toml matching this artifact was found "
        f"(looked at {', '.join(looked)})",
        hint="pass the task file: distil eval STUDENTS TEST --task task.toml",
    )


def _matching_task(path: Path, artifact: Artifact) -> Task | None:
    """The task in ``path`` if it exists, loads and is the one the artifact was trained for."""
    if not path.exists():
        return None
    try:
        found = Task.load(path)
    except ConfigError:
        return None
    wanted = artifact.config.get("task_fingerprint") or None
    if wanted:
        return found if found.fingerprint() == wanted else None
    return found if found.label_names == list(artifact.labels) else None


def align_columns(artifact_labels: list[str], task_labels: list[str], where: str) -> np.ndarray | None:
    """Column permutation from artifact order to task order (None when identical)."""
    if artifact_labels == task_labels:
        return None
    if sorted(artifact_labels) != sorted(task_labels):
        missing = [x for x in task_labels if x not in artifact_labels]
        extra = [x for x in artifact_labels if x not in task_labels]
        raise ArtifactError(
            f"{where}: the student's labels do not match the task's "
            f"(task labels missing from the student: {missing[:5]}; "
            f"student labels not in the task: {extra[:5]})",
            hint="evaluate with the task the student was trained for, or train again",
        )
    pos = {name: j for j, name in enumerate(artifact_labels)}
    return np.array([pos[name] for name in task_labels], dtype=np.int64)


def overlap(art: Artifact, uniques: Sequence[str], warnings: list[str]) -> dict[str, Any]:
    """How many distinct test texts are in the artifact's training hash set (None: not recorded)."""
    from distil.artifact import text_hash

    seen = art.train_hashes()
    if seen is None:
        return {"n_test_texts": len(uniques), "seen_in_training": None, "checked": False}
    n = sum(text_hash(u) in seen for u in uniques)
    if n:
        warnings.append(
            f"{n} of {len(uniques)} test texts were in the student's training data: its figures on them are inflated"
        )
    return {"n_test_texts": len(uniques), "seen_in_training": n, "checked": True}
