"""The artifact folder that ``train()`` writes and everything downstream loads.

Layout::

    distil_config.json  format_version, labels, chosen, fingerprints (task, teacher, data), seed, the
                     task's [input] rule (``input``: fields, template, max_chars), ... (format 1 kept
                     this in ``config.json``; such artifacts still load)
    config.json      what Hugging Face tools read: ``id2label``/``label2id``, ``num_labels``,
                     ``model_type: distil`` and the chosen student
    labels.json      the label list (column order of every probability matrix)
    ladder.json      one record per trained student (agreement, ECE, latency, size, ...)
    README.md        the model card, with Hugging Face YAML metadata (library, pipeline tag, labels,
                     held-out metrics as model-index, fingerprints)
    heldout.parquet  the held-out teacher-labeled split (distil.data.write_labeled format)
    ladder/<name>/   each student's weights (student.json + weights.safetensors + extras)
    router.json, ood.npz   optional, written by distil.route
    train_texts.sha256     16-byte sha256 prefixes of every text the ladder saw (training and
                           held-out split), sorted; no raw text: ``distil eval`` counts test texts in it

Loading never unpickles; loading and predicting with an ngram or static student imports no torch.
A field that names a file (``chosen``, a ladder record's ``name``, the router's member) is a plain
folder name under ``ladder/``: one that would reach outside the artifact is an :class:`ArtifactError`.
``train()`` writes the folder whole into a temporary sibling and swaps it in, so a reader sees the
old artifact or the new one, never a mix.
"""

from __future__ import annotations

import glob
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.errors import ArtifactError

if TYPE_CHECKING:
    from distil.data import LabeledSet
    from distil.students.base import Student
    from distil.task import InputSpec

FORMAT_VERSION = 2
#: distil's own config (format 2 on); format 1 kept it in ``config.json``.
CONFIG_FILE = "distil_config.json"
#: The Hugging Face-shaped config (``id2label``, ``label2id``...), for the tools that look there.
HF_CONFIG_FILE = "config.json"
REQUIRED_FILES = (CONFIG_FILE, "labels.json", "ladder.json")
TRAIN_HASHES = "train_texts.sha256"
_HASH_BYTES = 16


def text_hash(text: str) -> bytes:
    """The first 16 bytes of a text's content key (what ``train_texts.sha256`` holds)."""
    from distil.embcache import text_key

    return text_key(text)[:_HASH_BYTES]


def write_train_hashes(folder: Path, texts: Sequence[str]) -> Path:
    """Write the sorted hash set of ``texts`` into ``folder/train_texts.sha256`` (atomically)."""
    from distil.data import atomic_write_bytes

    blob = b"".join(sorted({text_hash(t) for t in texts}))
    return atomic_write_bytes(folder / TRAIN_HASHES, blob, what="training-text hashes")


def config_path(root: Path) -> Path:
    """Where an artifact keeps distil's config: ``distil_config.json``, or ``config.json`` in format 1."""
    own, old = root / CONFIG_FILE, root / HF_CONFIG_FILE
    if own.exists() or not old.exists():
        return own
    try:
        legacy = "format_version" in json.loads(old.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        legacy = False
    return old if legacy else own


def hf_config(labels: Sequence[str], chosen: str) -> dict[str, Any]:
    """``config.json`` as Hugging Face tools read it: the label maps, the label count, what the model is."""
    return {
        "model_type": "distil",
        "architectures": [f"distil:{chosen}"],
        "problem_type": "single_label_classification",
        "num_labels": len(labels),
        "id2label": {str(i): lab for i, lab in enumerate(labels)},
        "label2id": {lab: i for i, lab in enumerate(labels)},
        "distil_config": CONFIG_FILE,
    }


def member_folder(root: Path, name: object, *, source: str = CONFIG_FILE) -> Path:
    """``root/ladder/<name>`` for a member name read from the artifact; :class:`ArtifactError` when
    ``name`` is not a plain folder name or the folder (through a link) lies outside the artifact."""
    plain = (
        isinstance(name, str) and name not in ("", ".", "..") and "\x00" not in name
        and not any(sep in name for sep in ("/", "\\", ":"))
    )
    folder = root / "ladder" / str(name)
    if plain and (not folder.exists() or folder.resolve().is_relative_to(root.resolve())):
        return folder
    raise ArtifactError(
        f"{root / source}: member name {str(name)[:80]!r} does not name a folder inside {root / 'ladder'}",
        hint="an artifact names its students by plain folder names; retrain it with distil train",
    )


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise ArtifactError(
            f"{path}: missing from the artifact folder",
            hint="the artifact is incomplete; run `distil train` again to rewrite it",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ArtifactError(
            f"{path}: nested too deeply to read (more than about {sys.getrecursionlimit()} levels)",
            hint="the file is not one distil wrote; run `distil train` again to rewrite it",
        ) from None
    except OSError as exc:
        from distil.errors import storage_error

        raise storage_error(exc, "read the artifact") from None


@dataclass
class Artifact:
    """A trained student ladder on disk (see the module docstring for the layout)."""

    path: Path
    config: dict[str, Any]
    labels: list[str]
    chosen: str
    ladder: list[dict[str, Any]]
    _cache: dict[str, Student] = field(default_factory=dict, repr=False)

    def members(self) -> list[str]:
        """Names of the ladder members whose weights are stored under ``ladder/<name>/``."""
        names = [r.get("name") if isinstance(r, dict) else None for r in self.ladder]
        return [
            str(n) for n in names if (member_folder(self.path, n, source="ladder.json") / "student.json").exists()
        ]

    def student(self, name: str | None = None) -> Student:
        """The chosen student (or ``name``), loaded once; imports torch only if that student needs it."""
        from distil.students.base import load_student

        key = name or self.chosen
        if key not in self._cache:
            folder = member_folder(self.path, key, source=CONFIG_FILE if name is None else "ladder")
            if not folder.is_dir():
                raise ArtifactError(
                    f"{folder}: no student {key!r} in this artifact",
                    hint=f"stored members: {', '.join(self.members()) or 'none'}",
                )
            student = load_student(folder)
            if list(student.classes_) != self.labels:
                raise ArtifactError(f"{folder}/student.json: classes differ from {self.path / 'labels.json'}")
            self._cache[key] = student
        return self._cache[key]

    def train_hashes(self) -> set[bytes] | None:
        """The hash set of the texts the ladder saw, or None for an artifact written before it existed."""
        path = self.path / TRAIN_HASHES
        if not path.exists():
            return None
        blob = path.read_bytes()
        if len(blob) % _HASH_BYTES:
            raise ArtifactError(f"{path}: {len(blob)} bytes is not a whole number of {_HASH_BYTES}-byte hashes")
        return {blob[i : i + _HASH_BYTES] for i in range(0, len(blob), _HASH_BYTES)}

    def input_spec(self) -> InputSpec:
        """The ``[input]`` rule the ladder was trained with (fields, template, ``max_chars``).

        An artifact written before the rule was stored reads one ``text`` column.
        """
        from pydantic import ValidationError

        from distil.task import InputSpec

        try:
            return InputSpec.model_validate(self.config.get("input") or {})
        except ValidationError as exc:
            raise ArtifactError(
                f"{config_path(self.path)}: the stored [input] rule is not valid ({exc.errors()[0]['msg']})",
                hint="retrain the artifact with distil train",
            ) from None

    def heldout(self) -> LabeledSet:
        """The held-out teacher-labeled split that drove early stopping, calibration and selection."""
        from distil.data import read_labeled

        p = self.path / "heldout.parquet"
        if not p.exists() and self.config.get("exported"):
            raise ArtifactError(
                f"{p}: this artifact was exported without its held-out texts (distil export --no-heldout)",
                hint="run this on the full artifact the copy was made from",
            )
        if not p.exists():
            raise ArtifactError(f"{p}: missing from the artifact folder", hint="run `distil train` again")
        return read_labeled(p)


def load_artifact(path: str | Path) -> Artifact:
    """Read an artifact folder; :class:`ArtifactError` names a missing file or a newer format."""
    root = Path(path)
    if not root.is_dir():
        left = sorted(root.parent.glob(f".{glob.escape(root.name)}.old-*")) if root.name else []
        raise ArtifactError(
            f"{root}: not an artifact folder (no such directory)",
            hint=f"a retrain was interrupted while swapping folders: rename {left[-1]} to {root}"
            if left else "train one with `distil train`",
        )
    cfg_path = config_path(root)
    if not isinstance(config := _read_json(cfg_path), dict):
        raise ArtifactError(f"{cfg_path}: expected a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{cfg_path}: no integer 'format_version'")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{cfg_path}: format_version {version} is newer than this distil "
            f"understands ({FORMAT_VERSION})",
            hint="upgrade distil to load this artifact",
        )
    labels = _read_json(root / "labels.json")
    ladder = _read_json(root / "ladder.json")
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ArtifactError(f"{root / 'labels.json'}: expected a JSON list of label names")
    if not isinstance(ladder, list):
        raise ArtifactError(f"{root / 'ladder.json'}: expected a JSON list of records")
    chosen = member_folder(root, config.get("chosen"), source=cfg_path.name).name
    if not (root / "ladder" / chosen / "student.json").exists():
        raise ArtifactError(
            f"{root / 'ladder' / str(chosen) / 'student.json'}: the chosen student's files are missing",
            hint="the artifact is incomplete; run `distil train` again",
        )
    return Artifact(path=root, config=config, labels=labels, chosen=chosen, ladder=ladder)


#: A Hugging Face Hub model id: ``owner/name`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def load(source: str | Path, *, revision: str | None = None) -> Artifact:
    """An artifact from a folder, or from the Hugging Face Hub by its id (``owner/name``) through
    ``huggingface_hub.snapshot_download`` (the local cache first; offline with ``HF_HUB_OFFLINE=1``).

    A folder that exists wins over a Hub id of the same spelling.
    """
    return load_artifact(artifact_folder(source, revision=revision))


def artifact_folder(source: str | Path, *, revision: str | None = None) -> Path:
    """The local folder of an artifact named by its folder or its Hugging Face Hub id (see :func:`load`)."""
    path = Path(source)
    if path.is_dir() or not _HUB_ID.fullmatch(str(source)):
        return path
    from distil.errors import require

    hub: Any = require("huggingface_hub", "hub")
    try:
        return Path(hub.snapshot_download(repo_id=str(source), revision=revision))
    except hub.errors.LocalEntryNotFoundError:
        raise ArtifactError(
            f"{source}: not a folder, and not in the local Hugging Face cache (the Hub is offline or unreachable)",
            hint="download it once online (unset HF_HUB_OFFLINE), or pass the artifact's folder",
        ) from None
    except (hub.errors.RepositoryNotFoundError, hub.errors.RevisionNotFoundError) as exc:
        raise ArtifactError(f"{source}: no such model on the Hugging Face Hub ({type(exc).__name__})",
                            hint="check the id and revision, and that your token may read it") from None


def predict(
    artifact_dir: str | Path, texts: Sequence[str], *, student: str | None = None
) -> list[dict[str, Any]]:
    """Label and calibrated probabilities for each text, from the chosen student (or ``student``).

    Returns ``[{"label": str, "confidence": float, "probs": {label: p}}, ...]``.
    """
    art = load_artifact(artifact_dir)
    st = art.student(student)
    probs = st.predict_proba(list(texts))
    out = []
    for row in probs:
        i = int(row.argmax())
        out.append(
            {
                "label": art.labels[i],
                "confidence": float(row[i]),
                "probs": {lab: float(p) for lab, p in zip(art.labels, row, strict=True)},
            }
        )
    return out
