"""A content-addressed cache of sentence embeddings, so no text is embedded twice by one encoder.

Embeddings of a text depend on the encoder's weights, its ``max_seq_length`` and whether rows are
L2-normalised: one SQLite file per such configuration, ``<cache>/embeddings/<config>.sqlite``,
keyed by the sha256 of the text (raw texts are not stored).

The cache is **opt-in per call site**, through :func:`caching`: fitting the teacher's head,
labeling through the journal, training students and measuring their quality turn it on; timing
never does (a cached embedding would make a prediction look free), and neither does serving (it
would write every request to disk).  ``DISTIL_EMBED_CACHE=0`` turns it off everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("distil_embed_cache", default=False)
_LOCK = threading.Lock()


@contextlib.contextmanager
def caching(enabled: bool = True) -> Iterator[None]:
    """Turn the embedding cache on (or, with ``enabled=False``, off) inside the ``with`` block."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def active() -> bool:
    """Whether encoders should use the cache here and now."""
    return _ENABLED.get() and os.environ.get("DISTIL_EMBED_CACHE", "1") != "0"


def text_key(text: str) -> bytes:
    """The cache key of a text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """Embeddings of one encoder configuration in one SQLite file (WAL; safe across processes)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, dim INTEGER, vec BLOB)")

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Stored vectors for ``keys`` (missing keys are absent)."""
        found: dict[bytes, np.ndarray] = {}
        with _LOCK:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                for key, dim, vec in self._db.execute(
                    f"SELECT key, dim, vec FROM emb WHERE key IN ({marks})", chunk
                ):
                    arr = np.frombuffer(vec, dtype=np.float32)
                    if arr.size == dim:
                        found[bytes(key)] = arr
        return found

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        """Store vectors (one transaction; an existing key keeps its vector)."""
        rows = [(k, int(v.size), np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with _LOCK:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO emb(key, dim, vec) VALUES (?,?,?)", rows)
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the file."""
        self._db.close()


_OPEN: dict[Path, EmbeddingCache] = {}


def _open(path: Path) -> EmbeddingCache:
    """The process's one open cache for ``path`` (labeling calls the encoder once per small batch)."""
    with _LOCK:
        cache = _OPEN.get(path)
        if cache is None:
            cache = _OPEN[path] = EmbeddingCache(path)
        return cache


def cache_path(config: str) -> Path:
    """Where the cache file of an encoder configuration lives."""
    from distil.models import cache_dir

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in config)
    return cache_dir() / "embeddings" / f"{safe}.sqlite"


def encode_cached(
    texts: Sequence[str], config: str, encode: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """Embeddings of ``texts``: from the cache where stored, else from ``encode`` (then stored).

    Falls back to ``encode`` for everything when the cache cannot be opened or written (a full
    or read-only disk must not stop the work; it is logged).
    """
    if not texts:
        return encode([])
    keys = [text_key(t) for t in texts]
    try:
        cache = _open(cache_path(config))
    except (sqlite3.Error, OSError) as exc:
        log.warning("embedding cache unavailable (%s); embedding without it", exc)
        return encode(list(texts))
    text_of = dict(zip(keys, texts, strict=True))  # one text per key (a repeated text is embedded once)
    found = cache.get_many(list(text_of))
    todo = [k for k in text_of if k not in found]
    if todo:
        fresh = encode([text_of[k] for k in todo])
        new = {k: np.asarray(fresh[j], dtype=np.float32) for j, k in enumerate(todo)}
        try:
            cache.put_many(list(new.items()))
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not write the embedding cache (%s); results are not affected", exc)
        found.update(new)
    return np.stack([found[k] for k in keys]).astype(np.float32)
