"""A cheap ensemble of numpy students (the ``ensemble`` student): their calibrated log-probabilities averaged.

Students that see a text differently (hashed character n-grams, static token vectors, tuned
ones) make different mistakes; averaging their log-probabilities is right more often than
any one of them and ranks its own mistakes better, at the sum of their (small) costs.  Each member is
calibrated on the validation texts before the average (a member with sharper logits would
otherwise outvote the others), and the ensemble's own temperature is fitted by the ladder as
every student's is.  Only numpy students may be members, so prediction never imports torch.

A saved ensemble is a folder with ``student.json``, ``weights.safetensors`` (the members'
temperatures) and ``members/<name>/``, one saved student each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from distil.errors import ArtifactError, ConfigError
from distil.students.base import Student, load_student, student_class

MEMBERS_DIR = "members"


class EnsembleStudent(Student):
    """The mean of ``members``' calibrated log-probabilities; ``params`` maps a member to its parameters.

    ``reuse`` (not saved) maps a member name to a student already fitted on the same data — the
    ladder passes the members it trained before, so they are not trained twice.
    """

    name: ClassVar[str] = "ensemble"
    needs_torch: ClassVar[bool] = False
    _transient: ClassVar[tuple[str, ...]] = ("reuse",)

    def __init__(
        self,
        members: Sequence[str] = ("ngram", "static", "tuned"),
        params: dict[str, dict[str, Any]] | None = None,
        seed: int = 0,
        reuse: Mapping[str, Student] | None = None,
    ) -> None:
        self.members = members  # stored as given (scikit-learn's clone checks identity)
        self.params = params
        self.seed = seed
        self.reuse = reuse

    def _check_members(self) -> None:
        members = list(self.members)
        bad = [m for m in members if m == self.name or student_class(m).needs_torch]
        if len(members) < 2 or bad or len(set(members)) < len(members):
            raise ConfigError(
                f"ensemble student: expected two or more distinct numpy students as members, found {members}",
                hint="e.g. members=['ngram', 'tuned'] (encoder and finetune need torch to predict)",
            )

    def fit(
        self,
        texts: Sequence[str],
        probs: np.ndarray,
        *,
        labels: Sequence[str],
        val_texts: Sequence[str] | None = None,
        val_probs: np.ndarray | None = None,
        hard: bool = False,
    ) -> Self:
        """Fit every member on the same data, then calibrate each on the validation texts."""
        from distil.calibrate import fit_temperature

        self._check_members()
        p = self._start_fit(texts, probs, labels)
        self.members_: list[Student] = []
        temps = []
        for m in self.members:
            student = self._member(m, labels)
            if student is None:
                kwargs = {"seed": self.seed, **(self.params or {}).get(m, {})}
                student = student_class(m)(**kwargs).fit(
                    texts, p, labels=labels, val_texts=val_texts, val_probs=val_probs, hard=hard
                )
            has_val = val_texts is not None and val_probs is not None and len(val_texts) > 0
            temps.append(fit_temperature(student.predict_logits(val_texts), val_probs) if has_val else 1.0)  # type: ignore[arg-type]
            self.members_.append(student)
        self.member_temperatures_ = np.asarray(temps, dtype=np.float32)
        return self

    def _member(self, name: str, labels: Sequence[str]) -> Student | None:
        """The already-fitted member ``name`` from ``reuse`` when it fits these labels, else None."""
        found = (self.reuse or {}).get(name)
        if found is None or getattr(found, "classes_", None) != list(labels):
            return None
        return found

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Mean of the members' log-softmax(logits / their temperature), in numpy."""
        from distil.losses import log_softmax_np

        self._check_fitted()
        logp = [log_softmax_np(s.predict_logits(texts) / float(t))
                for s, t in zip(self.members_, self.member_temperatures_, strict=True)]
        return np.asarray(np.mean(logp, axis=0), dtype=np.float32)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """The members' features side by side, each L2-normalised (for out-of-distribution scores)."""
        self._check_fitted()
        parts = []
        for student in self.members_:
            x = student.features(texts)
            parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
        return np.asarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def size_bytes(self) -> int:
        """The members' weights together."""
        self._check_fitted()
        return int(sum(s.size_bytes() for s in self.members_))

    # -- persistence ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"member_temperatures": self.member_temperatures_}

    def _save_extra(self, folder: Path) -> None:
        for m, student in zip(self.members, self.members_, strict=True):
            student.save(folder / MEMBERS_DIR / m)

    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        if "member_temperatures" not in state:
            raise ArtifactError(f"{folder}/weights.safetensors: expected the tensor member_temperatures")
        temps = state["member_temperatures"].astype(np.float32)
        if len(temps) != len(self.members):
            raise ArtifactError(
                f"{folder}/weights.safetensors: {len(temps)} member temperatures for members {self.members}"
            )
        self.member_temperatures_ = temps
        self.members_ = [load_student(folder / MEMBERS_DIR / m) for m in self.members]
        for m, student in zip(self.members, self.members_, strict=True):
            if student.classes_ != self.classes_:
                raise ArtifactError(f"{folder / MEMBERS_DIR / m}: its classes differ from the ensemble's")


__all__ = ["EnsembleStudent"]
