"""The ``local`` teacher: a sentence-transformers encoder on disk, zero-shot or with a fitted head.

Two modes, chosen by the task file's ``[teacher]`` section:

- **zero-shot** (no ``head``): each label is embedded as ``"label: description"``; a text's
  probabilities are ``softmax(cosine(text, label) / zero_shot_temperature)``;
- **head** (``head = ".distil/teacher_head"``): a linear head written by ``distil teacher fit``
  (:func:`distil.teacher_fit.fit_head`); probabilities are ``softmax(embedding @ W + b)``.

The model is loaded lazily, on the first batch, from :func:`distil.models.model_path` (built-in
names come from PyPI packages; nothing is fetched from a model hub) and runs on the CPU.

A head on disk is a folder with two files, no pickle:

- ``head.npz``: ``W`` (embedding_dim, n_classes) and ``b`` (n_classes,), float32;
- ``head.json``: ``classes`` (column order of ``W``), ``encoder`` (model name),
  ``encoder_fingerprint`` (see :func:`model_fingerprint`), ``normalize`` (whether embeddings were
  L2-normalised), ``max_seq_length``, ``embedding_dim`` and the fit's ``metrics``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.errors import ConfigError, require
from distil.models import file_sha256
from distil.progress import note
from distil.teachers.base import Answer, Teacher

if TYPE_CHECKING:
    from distil.task import LocalTeacherSpec, Task

log = logging.getLogger(__name__)

HEAD_FORMAT = "distil.teacher_head"
HEAD_VERSION = 1
HEAD_WEIGHTS = "head.npz"
HEAD_META = "head.json"

# Small files that define a sentence-transformers model (hashed whole) and weight files (sampled).
_CONFIG_FILES = (
    "config.json",
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "1_Pooling/config.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".pt")
_SAMPLE_BYTES = 1 << 20
# Loaded models are shared by every Encoder in the process and max_seq_length is set per call, so
# encode calls take turns (torch already uses every core for one call).
_ENCODE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8)
def _fingerprint_cached(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    root = Path(folder)
    h = hashlib.sha256()
    for name in _CONFIG_FILES:
        p = root / name
        if p.is_file():
            h.update(name.encode())
            h.update(file_sha256(p).encode())
    for rel, size, _mtime in stamp:
        h.update(f"{rel}:{size}".encode())
        with (root / rel).open("rb") as fh:
            # First, middle and last MiB: a fine-tune of the same architecture has the same size
            # and configs but different tensor bytes in every region.
            for offset in (0, max(size // 2 - _SAMPLE_BYTES // 2, 0), max(size - _SAMPLE_BYTES, 0)):
                fh.seek(offset)
                h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:24]


def model_fingerprint(folder: Path) -> str:
    """A cheap, stable fingerprint of a sentence-transformers folder.

    sha256 of the config/tokenizer files plus, for each weight file, its size and three sampled
    MiB (start, middle, end) — a few MiB read instead of hashing hundreds of MB on every run.
    """
    root = Path(folder)
    stamp = tuple(
        sorted(
            (str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime))
            for p in root.rglob("*")
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
        )
    )
    if not stamp and not (root / "modules.json").is_file():
        raise ConfigError(
            f"{root}: not a sentence-transformers folder (no modules.json and no weight files)",
            hint="use a folder saved with SentenceTransformer.save(), or a built-in name",
        )
    return _fingerprint_cached(str(root.resolve()), stamp)


@functools.lru_cache(maxsize=2)
def _load_model(folder: str) -> Any:
    st: Any = require("sentence_transformers", "local")
    hf_logging: Any = None
    bar_was_on = False
    try:  # transformers draws a "Loading weights" bar on stderr; not ours to show
        from transformers.utils import logging as hf_logging

        bar_was_on = bool(hf_logging.is_progress_bar_enabled())
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    try:
        return st.SentenceTransformer(folder, device="cpu", local_files_only=True)
    except TypeError:  # older sentence-transformers without local_files_only
        return st.SentenceTransformer(folder, device="cpu")
    finally:
        if hf_logging is not None and bar_was_on:
            hf_logging.enable_progress_bar()


class Encoder:
    """A sentence-transformers model on the CPU, loaded on first use and shared within the process.

    ``model`` is a built-in name (``all-mpnet-base-v2``, ``all-MiniLM-L6-v2``) or a folder.
    """

    def __init__(self, model: str, *, max_seq_length: int = 256, batch_size: int = 32) -> None:
        self.model = model
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self._path: Path | None = None
        self._fingerprint: str | None = None

    @property
    def path(self) -> Path:
        """The model folder (a built-in is assembled from its PyPI packages on first use)."""
        if self._path is None:
            from distil.models import model_path

            self._path = model_path(self.model)
        return self._path

    def fingerprint(self) -> str:
        """See :func:`model_fingerprint`; computed once per encoder."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.path)
        return self._fingerprint

    def load(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it the first time)."""
        return _load_model(str(self.path))

    def encode(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = True,
        progress: Callable[[int, int], None] | None = None,
        chunk: int = 256,
    ) -> np.ndarray:
        """Embeddings of ``texts`` as a float32 array (n, dim); rows L2-normalised if ``normalize``.

        ``progress(done, total)`` is called after each chunk of ``chunk`` texts.  Where the
        embedding cache is on (:func:`distil.embcache.caching`), texts this encoder configuration
        has embedded before are read from it and only the others are computed.
        """
        import distil.embcache as embcache

        def compute(xs: list[str]) -> np.ndarray:
            return self._encode(xs, normalize=normalize, progress=progress, chunk=chunk)

        if embcache.active():
            return embcache.encode_cached(texts, self.cache_config(normalize), compute)
        return compute(list(texts))

    def cache_config(self, normalize: bool) -> str:
        """The embedding-cache name of this configuration (model, fingerprint, length, normalisation)."""
        norm = "norm" if normalize else "raw"
        return f"{Path(self.model).name}-{self.fingerprint()}-len{self.max_seq_length}-{norm}"

    def _encode(
        self,
        texts: Sequence[str],
        *,
        normalize: bool,
        progress: Callable[[int, int], None] | None,
        chunk: int,
    ) -> np.ndarray:
        model = self.load()
        out: list[np.ndarray] = []
        total = len(texts)
        t0 = time.perf_counter()
        with _ENCODE_LOCK:
            # The model object is shared in the process: set our length for the duration of the call.
            previous = model.max_seq_length
            model.max_seq_length = self.max_seq_length
            try:
                for start in range(0, total, chunk):
                    part = list(texts[start : start + chunk])
                    emb = model.encode(
                        part,
                        batch_size=self.batch_size,
                        convert_to_numpy=True,
                        normalize_embeddings=normalize,
                        show_progress_bar=False,
                    )
                    out.append(np.asarray(emb, dtype=np.float32).reshape(len(part), -1))
                    done = min(start + chunk, total)
                    if progress is not None:
                        progress(done, total)
                    if total > chunk:
                        rate = done / max(time.perf_counter() - t0, 1e-9)
                        note("    embedded %d/%d texts with %s (%.1f texts/s)", done, total, self.model, rate)
            finally:
                model.max_seq_length = previous
        if not out:
            dim = int(model.get_sentence_embedding_dimension() or 0)
            return np.zeros((0, dim), dtype=np.float32)
        return np.concatenate(out, axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable, in float64."""
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# The head on disk.


@dataclass
class Head:
    """A linear head over sentence embeddings: ``probs = softmax(emb @ W + b)``, columns = ``classes``."""

    W: np.ndarray
    b: np.ndarray
    classes: list[str]
    encoder: str
    encoder_fingerprint: str
    normalize: bool = True
    max_seq_length: int = 256
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        """Probabilities (n, len(classes)) for embeddings (n, dim)."""
        return softmax(np.asarray(emb, dtype=np.float64) @ self.W.astype(np.float64) + self.b)

    def save(self, folder: Path) -> Path:
        """Write ``head.npz`` and ``head.json`` into ``folder``; return the folder."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (HEAD_WEIGHTS + ".tmp.npz")
        np.savez(tmp, W=self.W.astype(np.float32), b=self.b.astype(np.float32))
        tmp.replace(folder / HEAD_WEIGHTS)
        meta = {
            "format": HEAD_FORMAT,
            "version": HEAD_VERSION,
            "classes": self.classes,
            "encoder": self.encoder,
            "encoder_fingerprint": self.encoder_fingerprint,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "embedding_dim": int(self.W.shape[0]),
            "metrics": self.metrics,
        }
        tmp_meta = folder / (HEAD_META + ".tmp")
        tmp_meta.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp_meta.replace(folder / HEAD_META)
        self.sha256 = head_sha256(folder)
        return folder

    @classmethod
    def load(cls, path: Path) -> Head:
        """Read a head folder (or its ``head.json`` / ``head.npz``); ConfigError says what is wrong."""
        folder = path.parent if path.is_file() and path.name in (HEAD_META, HEAD_WEIGHTS) else path
        fix = "write it with: distil teacher fit TASK.toml LABELED.csv --label-column COLUMN"
        if not folder.is_dir():
            raise ConfigError(f"teacher head {str(folder)!r} not found", hint=fix)
        missing = [n for n in (HEAD_WEIGHTS, HEAD_META) if not (folder / n).is_file()]
        if missing:
            raise ConfigError(f"teacher head {str(folder)!r} is incomplete: {missing} missing", hint=fix)
        try:
            meta = json.loads((folder / HEAD_META).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{folder / HEAD_META}: not valid JSON ({exc})", hint=fix) from None
        if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
            raise ConfigError(f"{folder / HEAD_META}: not a distil teacher head (format != {HEAD_FORMAT!r})")
        if int(meta.get("version", 0)) > HEAD_VERSION:
            raise ConfigError(
                f"{folder}: head format version {meta.get('version')} is newer than this distil "
                f"understands ({HEAD_VERSION})",
                hint="upgrade distil, or refit the head with this version",
            )
        try:
            with np.load(folder / HEAD_WEIGHTS, allow_pickle=False) as npz:
                W = np.asarray(npz["W"], dtype=np.float32)
                b = np.asarray(npz["b"], dtype=np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{folder / HEAD_WEIGHTS}: unreadable head weights ({exc})", hint=fix) from None
        classes = [str(c) for c in meta.get("classes", [])]
        if W.ndim != 2 or b.shape != (W.shape[1],) or W.shape[1] != len(classes):
            raise ConfigError(
                f"{folder}: head shapes disagree: W {W.shape}, b {b.shape}, {len(classes)} classes",
                hint=fix,
            )
        return cls(
            W=W,
            b=b,
            classes=classes,
            encoder=str(meta.get("encoder", "")),
            encoder_fingerprint=str(meta.get("encoder_fingerprint", "")),
            normalize=bool(meta.get("normalize", True)),
            max_seq_length=int(meta.get("max_seq_length", 256)),
            metrics=dict(meta.get("metrics", {})),
            sha256=head_sha256(folder),
        )

    def aligned_to(self, labels: Sequence[str], where: str) -> Head:
        """This head with columns in ``labels`` order; ConfigError if the label sets differ."""
        if list(labels) == self.classes:
            return self
        if set(labels) != set(self.classes) or len(labels) != len(self.classes):
            missing = [lab for lab in labels if lab not in self.classes]
            extra = [c for c in self.classes if c not in labels]
            raise ConfigError(
                f"teacher head {where} was fitted for other labels: the task has {list(labels)}, "
                f"the head has {self.classes} (missing from the head: {missing}; not in the task: {extra})",
                hint="refit it for this task's labels: "
                "distil teacher fit TASK.toml LABELED.csv --label-column COLUMN",
            )
        order = [self.classes.index(lab) for lab in labels]
        return Head(
            W=self.W[:, order], b=self.b[order], classes=list(labels), encoder=self.encoder,
            encoder_fingerprint=self.encoder_fingerprint, normalize=self.normalize,
            max_seq_length=self.max_seq_length, metrics=self.metrics, sha256=self.sha256,
        )


def head_sha256(folder: Path) -> str:
    """sha256 over the head's two files (their names and bytes)."""
    h = hashlib.sha256()
    for name in (HEAD_WEIGHTS, HEAD_META):
        h.update(name.encode())
        h.update(file_sha256(folder / name).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The teacher.


class LocalTeacher(Teacher):
    """A sentence encoder on this machine, zero-shot over label descriptions or with a fitted head."""

    kind = "local"

    def __init__(self, spec: LocalTeacherSpec, task: Task) -> None:
        super().__init__(task.label_names)
        self.spec = spec
        self.task = task
        self.encoder = Encoder(spec.model, max_seq_length=spec.max_seq_length, batch_size=spec.batch_size)
        self.head_path: Path | None = task.resolve(spec.head) if spec.head else None
        self.head: Head | None = None
        if self.head_path is not None:
            self.head = Head.load(self.head_path).aligned_to(self.labels, repr(spec.head))
        self._label_emb: np.ndarray | None = None
        self._checked_encoder = False

    @property
    def mode(self) -> str:
        """"head" or "zeroshot"."""
        return "head" if self.head is not None else "zeroshot"

    def _label_prompts(self) -> list[str]:
        desc = self.task.label_descriptions
        return [lab if desc[lab] == lab else f"{lab}: {desc[lab]}" for lab in self.labels]

    def identity(self) -> dict[str, Any]:
        """Model, its fingerprint, max length, mode, and the head's sha256 or the zero-shot prompts."""
        ident: dict[str, Any] = {
            "model": self.spec.model,
            "model_fingerprint": self.encoder.fingerprint(),
            "max_seq_length": self.spec.max_seq_length,
            "mode": self.mode,
        }
        if self.head is not None:
            ident["head_sha256"] = self.head.sha256
        else:
            ident["temperature"] = self.spec.zero_shot_temperature
            ident["label_prompts"] = self._label_prompts()
        return ident

    def describe(self) -> str:
        """E.g. ``local:all-mpnet-base-v2+head``."""
        name = Path(self.spec.model).name
        return f"local:{name}+head" if self.head is not None else f"local:{name} zero-shot"

    def prices_known(self) -> bool:
        """True: a local encoder is not billed per call (its CPU time is priced in reports, not in budgets)."""
        return True

    def _check_encoder(self) -> None:
        if self._checked_encoder or self.head is None:
            return
        fp = self.encoder.fingerprint()
        if self.head.encoder_fingerprint and self.head.encoder_fingerprint != fp:
            raise ConfigError(
                f"teacher head {self.spec.head!r} was fitted on the encoder {self.head.encoder!r} "
                f"(fingerprint {self.head.encoder_fingerprint}), but [teacher].model is "
                f"{self.spec.model!r} (fingerprint {fp})",
                hint="set [teacher].model to the head's encoder, or refit the head: distil teacher fit ...",
            )
        if self.head.max_seq_length != self.spec.max_seq_length:
            log.warning(
                "teacher head was fitted with max_seq_length=%d, the task uses %d",
                self.head.max_seq_length, self.spec.max_seq_length,
            )
        self._checked_encoder = True

    def _probs(self, texts: Sequence[str]) -> np.ndarray:
        if self.head is not None:
            emb = self.encoder.encode(texts, normalize=self.head.normalize)
            return self.head.predict_proba(emb)
        if self._label_emb is None:
            self._label_emb = self.encoder.encode(self._label_prompts(), normalize=True)
        emb = self.encoder.encode(texts, normalize=True)
        sims = emb.astype(np.float64) @ self._label_emb.astype(np.float64).T
        return softmax(sims / self.spec.zero_shot_temperature)

    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        """One Answer per text; a batch that fails is retried item by item, a failing item is ``failed``."""
        if not texts:
            return []
        self._check_encoder()
        self.encoder.load()  # a missing package or broken model is a configuration error, not an item's
        method: Any = self.mode
        wall0, cpu0 = time.perf_counter(), time.process_time()
        try:
            rows: list[np.ndarray | Exception] = list(self._probs(texts))
        except Exception as exc:
            log.warning("local teacher batch of %d failed (%s); retrying one by one", len(texts), exc)
            rows = []
            for t in texts:
                try:
                    rows.append(self._probs([t])[0])
                except Exception as item_exc:
                    rows.append(item_exc)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        n = len(texts)
        latency_ms = wall * 1000.0 / n
        cost = cpu * self.spec.price_per_core_hour / 3600.0 / n
        answers: list[Answer] = []
        for row in rows:
            if isinstance(row, Exception):
                answers.append(
                    Answer(status="failed", error=f"{type(row).__name__}: {row}", method=method,
                           latency_ms=latency_ms, cost=cost)
                )
                continue
            probs = [float(v) for v in row]
            answers.append(
                Answer(status="done", probs=probs, method=method, latency_ms=latency_ms, cost=cost)
            )
        return answers
