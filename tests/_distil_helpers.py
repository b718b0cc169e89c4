"""Small seeded data for student/train tests: banking77 subsets with teacher-like soft labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import banking77

from distil.data import LabeledSet


def small_banking(n_classes: int = 8, per_class: int = 30, seed: int = 0, split: str = "train") -> LabeledSet:
    """``per_class`` texts of each of the first ``n_classes`` intents, with smoothed gold as teacher probs."""
    rows = banking77(split)
    labels = sorted({lab for _, lab in rows})[:n_classes]
    picked: list[tuple[str, str]] = []
    for lab in labels:
        picked += [r for r in rows if r[1] == lab][:per_class]
    rng = np.random.default_rng(seed)
    y = np.array([labels.index(lab) for _, lab in picked])
    p = rng.dirichlet(np.full(n_classes, 0.5), size=len(picked)) * 0.3
    p[np.arange(len(picked)), y] += 0.7
    return LabeledSet([t for t, _ in picked], p.astype(np.float32), labels, gold=[lab for _, lab in picked],
                      teacher="test-teacher")


def tiny_static_model(folder: Path, texts: list[str], dim: int = 32, seed: int = 0) -> Path:
    """A model2vec-format folder (word-level tokenizer + random embeddings) for fast tests."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = sorted({w for t in texts for w in t.lower().split()})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    emb = np.random.default_rng(seed).normal(size=(len(vocab), dim)).astype(np.float16)
    save_file({"embeddings": emb}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "model2vec", "hidden_dim": dim}))
    return folder
