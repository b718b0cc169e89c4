"""Static token embeddings (model2vec) + a head trained with the KD loss.

The embeddings are distilled once from a local sentence encoder with
``model2vec.distill(model_name=<folder>, pca_dims=...)`` and cached under
``distil.models.cache_dir()/static/<hash>``; ``base`` may also name a folder that already holds
a model2vec model (``model.safetensors`` + ``tokenizer.json``).  A text's vector is the
normalised mean of its tokens' embeddings (the tokenizer runs through ``tokenizers``);
prediction is numpy alone and never imports torch.  The student folder holds its own copy of
the embedding matrix and tokenizer, so it needs nothing else to predict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from distil.errors import ArtifactError
from distil.students.base import HeadStudent
from distil.students.ngram import _mean_rows

log = logging.getLogger("distil.students")
TOKENIZER_FILE = "tokenizer.json"


def _is_model2vec_folder(p: Path) -> bool:
    """A folder written by model2vec's save_pretrained (it also writes modules.json for ST)."""
    cfg = p / "config.json"
    if not ((p / "model.safetensors").exists() and (p / TOKENIZER_FILE).exists() and cfg.exists()):
        return False
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "model2vec")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def static_base_path(base: str, pca_dims: int = 256) -> Path:
    """Folder of the model2vec model for ``base``: distilled once and cached, or given as a folder.

    ``base`` is a built-in encoder name (``all-MiniLM-L6-v2``), a sentence-transformers folder
    (distilled on first use; needs model2vec's ``distill`` extra, torch and transformers), or a
    folder that already holds a model2vec model.
    """
    p = Path(base).expanduser()
    if p.is_dir() and _is_model2vec_folder(p):
        return p
    from distil.models import cache_dir, model_path

    src = model_path(base)
    h = hashlib.sha256()
    h.update(json.dumps({"source": src.name, "pca_dims": pca_dims}).encode())
    for f in sorted(src.glob("*.json")) + sorted(src.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
    target = cache_dir() / "static" / h.hexdigest()[:16]
    if _is_model2vec_folder(target):
        return target
    try:
        from model2vec.distill import distill
    except ImportError as exc:
        from distil.errors import MissingExtra

        raise MissingExtra("model2vec[distill] (skeletoken)", "train") from exc
    from distil.progress import step

    with step(f"distilling static embeddings from {base} (once; cached in {target})"):
        model = distill(model_name=str(src), pca_dims=pca_dims)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        model.save_pretrained(Path(tmp) / "m")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(Path(tmp) / "m"), str(target))
    return target


class StaticStudent(HeadStudent):
    """model2vec static embeddings + a linear or MLP head (``head``), trained with the KD loss."""

    name: ClassVar[str] = "static"
    needs_torch: ClassVar[bool] = False

    def __init__(
        self,
        base: str = "all-MiniLM-L6-v2",
        pca_dims: int = 256,
        head: str = "mlp",
        hidden: int = 512,
        epochs: int = 80,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        temperature: float = 2.0,
        alpha: float = 0.5,
        patience: int = 8,
        seed: int = 0,
    ) -> None:
        self.base = base
        self.pca_dims = pca_dims
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

    # -- embeddings ------------------------------------------------------------------------------
    def _load_base(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        for f in ("model.safetensors", TOKENIZER_FILE):
            if not (folder / f).exists():
                raise ArtifactError(f"{folder / f}: missing (static embeddings)")
        state = load_file(str(folder / "model.safetensors"))
        if "embeddings" not in state:
            raise ArtifactError(f"{folder / 'model.safetensors'}: no 'embeddings' tensor")
        emb = state["embeddings"].astype(np.float32)
        if "weights" in state:  # model2vec's per-token weights, when not folded in
            emb = emb * state["weights"].astype(np.float32)[:, None]
        if "mapping" in state:  # vocabulary quantization: token id -> row
            emb = emb[state["mapping"].astype(np.int64)]
        self.embeddings_ = emb
        self._tokenizer_json = (folder / TOKENIZER_FILE).read_text(encoding="utf-8")
        self.tokenizer_ = Tokenizer.from_str(self._tokenizer_json)
        unk = None
        model = json.loads(self._tokenizer_json).get("model", {})
        if isinstance(model.get("unk_token"), str):
            unk = self.tokenizer_.token_to_id(model["unk_token"])
        self.unk_id_ = -1 if unk is None else int(unk)

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each text's token ids (unknown tokens dropped) as CSR: (flat ids, indptr of n + 1)."""
        if not hasattr(self, "embeddings_"):
            self._check_fitted()
        encs = self.tokenizer_.encode_batch_fast(list(texts), add_special_tokens=False)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        if self.unk_id_ >= 0:
            ids = [i[i != self.unk_id_] for i in ids]
        lens = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        return flat, indptr

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised mean static embedding of each text's tokens, (n, pca_dims) float32."""
        flat, indptr = self.token_ids(texts)
        x = _mean_rows(self.embeddings_, flat, indptr)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float32)

    def _prepare(self) -> None:
        """Load the static model (distilled and cached on first use)."""
        self._load_base(static_base_path(self.base, self.pca_dims))

    # -- persistence ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings_.astype(np.float16), **self.head_}

    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        if "embeddings" not in state or "head.w" not in state or "head.b" not in state:
            raise ArtifactError(f"{folder}/weights.safetensors: expected tensors embeddings, head.w, head.b")
        tok = folder / TOKENIZER_FILE
        if not tok.exists():
            raise ArtifactError(f"{tok}: missing", hint="the static student folder is incomplete")
        from tokenizers import Tokenizer

        self.embeddings_ = state["embeddings"].astype(np.float32)
        self.head_ = {k: v for k, v in state.items() if k.startswith("head.")}
        self._tokenizer_json = tok.read_text(encoding="utf-8")
        try:
            self.tokenizer_ = Tokenizer.from_str(self._tokenizer_json)
        except Exception as exc:
            raise ArtifactError(f"{tok}: not a readable tokenizer ({exc})") from None

    def _save_extra(self, folder: Path) -> None:
        (folder / TOKENIZER_FILE).write_text(self._tokenizer_json, encoding="utf-8")

    def _extra_meta(self) -> dict[str, Any]:
        return {"unk_id": self.unk_id_}

    def _set_extra_meta(self, meta: dict[str, Any]) -> None:
        self.unk_id_ = int(meta.get("unk_id", -1))


__all__ = ["StaticStudent", "static_base_path"]
