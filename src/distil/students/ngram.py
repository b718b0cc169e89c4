"""The cheapest student: hashed word and character n-grams, fastText style.

Each text is lower-cased; its word 1..2-grams and character 3..5-grams are hashed (a stable
64-bit polynomial hash, mixed with splitmix64, independent of ``PYTHONHASHSEED``) into
``2**bits`` buckets.  A text's vector is the mean of its buckets' embeddings; a linear layer
maps it to logits (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification").

Training uses torch (an ``EmbeddingBag`` with sparse gradients) and the KD loss; prediction is
numpy alone, vectorised over the whole batch (hashing included), so loading and predicting
never import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from distil.students.base import Student, targets_for, torch_threads

_P = np.uint64(1_000_003)  # polynomial base for byte strings
_Q = np.uint64(0x9E3779B97F4A7C15)  # combines two word hashes into a bigram hash
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)

# bytes that belong to a word: ASCII letters/digits, and every byte of a multi-byte UTF-8 character
_WORD_BYTE = np.zeros(256, dtype=bool)
for _c in b"abcdefghijklmnopqrstuvwxyz0123456789":
    _WORD_BYTE[_c] = True
_WORD_BYTE[128:] = True


def _mix(h: np.ndarray, salt: int, bits: int) -> np.ndarray:
    """splitmix64 finaliser of ``h ^ salt``, top ``bits`` bits → bucket index."""
    with np.errstate(over="ignore"):
        x = h ^ np.uint64(salt)
        x = (x ^ (x >> _S30)) * _M1
        x = (x ^ (x >> _S27)) * _M2
        x = x ^ (x >> _S31)
    return (x >> np.uint64(64 - bits)).astype(np.int64)


def hash_features(
    texts: Sequence[str], *, bits: int, word_ngrams: int = 2, char_min: int = 3, char_max: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Bucket indices of every text's n-grams, grouped by text.

    Returns ``(buckets, indptr)``: text ``i`` owns ``buckets[indptr[i]:indptr[i+1]]`` (CSR layout).
    """
    n = len(texts)
    enc = [(" " + t.lower() + " ").encode("utf-8") for t in texts]
    lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=n)
    buf = np.frombuffer(b"".join(enc), dtype=np.uint8).astype(np.uint64)
    doc = np.repeat(np.arange(n, dtype=np.int64), lens)
    parts: list[np.ndarray] = []
    docs: list[np.ndarray] = []
    with np.errstate(over="ignore"):
        _char_ngrams(buf, doc, char_min, char_max, bits, parts, docs)
        _word_ngrams(buf, doc, word_ngrams, bits, parts, docs)
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(n + 1, dtype=np.int64)
    all_docs = np.concatenate(docs)
    order = np.argsort(all_docs, kind="stable")
    buckets = np.concatenate(parts)[order]
    counts = np.bincount(all_docs, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return buckets, indptr


def _char_ngrams(
    buf: np.ndarray, doc: np.ndarray, char_min: int, char_max: int, bits: int,
    parts: list[np.ndarray], docs: list[np.ndarray],
) -> None:
    """Append the buckets (and owning texts) of character ``char_min..char_max``-grams within one text.

    The hash of length m+1 extends the one of length m.
    """
    total = len(buf)
    if total < char_min:
        return
    h = buf[: total - char_min + 1].copy()
    for j in range(1, char_min):
        h = h * _P + buf[j : total - char_min + 1 + j]
    for m in range(char_min, char_max + 1):
        if m > char_min:
            if total < m:
                break
            h = h[: total - m + 1] * _P + buf[m - 1 :]
        starts = np.arange(total - m + 1)
        ok = doc[starts] == doc[starts + m - 1]
        parts.append(_mix(h[ok], 0x100 + m, bits))
        docs.append(doc[: total - m + 1][ok])


def _word_ngrams(
    buf: np.ndarray, doc: np.ndarray, word_ngrams: int, bits: int, parts: list[np.ndarray], docs: list[np.ndarray]
) -> None:
    """Append the buckets (and owning texts) of word 1..``word_ngrams``-grams within one text.

    Words are maximal runs of word bytes; a word's hash is Σ byte · P^(offset in word).
    """
    is_word = _WORD_BYTE[buf.astype(np.uint8)]
    if not is_word.any():
        return
    pos = np.flatnonzero(is_word)
    start_flag = np.ones(len(pos), dtype=bool)
    start_flag[1:] = pos[1:] != pos[:-1] + 1
    wstart = np.flatnonzero(start_flag)
    offset = np.arange(len(pos)) - np.repeat(wstart, np.diff(np.append(wstart, len(pos))))
    maxlen = int(offset.max()) + 1
    powers = np.cumprod(np.full(maxlen, _P, dtype=np.uint64))
    powers = np.concatenate([np.ones(1, dtype=np.uint64), powers[:-1]])
    wh = np.add.reduceat(buf[pos] * powers[offset], wstart)
    wdoc = doc[pos[wstart]]
    parts.append(_mix(wh, 0x201, bits))
    docs.append(wdoc)
    for g in range(2, word_ngrams + 1):
        if len(wh) < g:
            break
        gh = wh[: len(wh) - g + 1].copy()
        same = np.ones(len(gh), dtype=bool)
        for j in range(1, g):
            gh = gh * _Q + wh[j : len(wh) - g + 1 + j]
            same &= wdoc[: len(wh) - g + 1] == wdoc[j : len(wh) - g + 1 + j]
        parts.append(_mix(gh[same], 0x200 + g, bits))
        docs.append(wdoc[: len(wh) - g + 1][same])


def _mean_rows(table: np.ndarray, buckets: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Mean of ``table[buckets]`` per CSR segment (zeros for an empty segment), float32."""
    n = len(indptr) - 1
    out = np.zeros((n, table.shape[1]), dtype=np.float32)
    counts = np.diff(indptr)
    nz = counts > 0
    if len(buckets):
        rows = table[buckets].astype(np.float32, copy=False)
        out[nz] = np.add.reduceat(rows, indptr[:-1][nz], axis=0)
        out[nz] /= counts[nz, None]
    return out


def csr_batch(flat: np.ndarray, indptr: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``docs`` of a CSR (flat ids, indptr) as EmbeddingBag input: (ids, offsets)."""
    segs = [flat[indptr[d] : indptr[d + 1]] for d in docs]
    offs = np.zeros(len(segs), dtype=np.int64)
    np.cumsum([len(s) for s in segs[:-1]], out=offs[1:])
    ids = np.concatenate(segs) if segs else np.zeros(0, dtype=np.int64)
    return ids.astype(np.int64, copy=False), offs


class NgramStudent(Student):
    """fastText-style classifier on hashed word 1..``word_ngrams``-grams + char n-grams.

    Parameters: ``bits`` (2**bits buckets), ``dim`` (embedding size), ``word_ngrams``,
    ``char_min``/``char_max``, ``epochs`` (upper bound; early stopping on validation agreement),
    ``lr``, ``batch_size``, ``temperature``/``alpha`` of the KD loss, ``patience``, ``seed``.
    The embedding table is stored as float16 and held as float32 in memory (faster gathers).
    """

    name: ClassVar[str] = "ngram"
    needs_torch: ClassVar[bool] = False

    def __init__(
        self,
        bits: int = 18,
        dim: int = 32,
        word_ngrams: int = 2,
        char_min: int = 3,
        char_max: int = 5,
        epochs: int = 30,
        lr: float = 0.01,
        batch_size: int = 32,
        temperature: float = 2.0,
        alpha: float = 0.5,
        patience: int = 4,
        seed: int = 0,
    ) -> None:
        self.bits = bits
        self.dim = dim
        self.word_ngrams = word_ngrams
        self.char_min = char_min
        self.char_max = char_max
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.temperature = temperature
        self.alpha = alpha
        self.patience = patience
        self.seed = seed

    def _hash(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return hash_features(
            texts,
            bits=self.bits,
            word_ngrams=self.word_ngrams,
            char_min=self.char_min,
            char_max=self.char_max,
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
        """Train with the KD loss (torch, sparse Adam); keep the epoch best on validation agreement."""
        with torch_threads(1):
            return self._fit(texts, probs, labels, val_texts, val_probs, hard)

    def _fit(
        self,
        texts: Sequence[str],
        probs: np.ndarray,
        labels: Sequence[str],
        val_texts: Sequence[str] | None,
        val_probs: np.ndarray | None,
        hard: bool,
    ) -> Self:
        import torch

        from distil.losses import kd_loss

        p = self._start_fit(texts, probs, labels)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        k = len(labels)
        emb = torch.nn.EmbeddingBag(2**self.bits, self.dim, mode="mean", sparse=True)
        torch.nn.init.uniform_(emb.weight, -1.0 / self.dim, 1.0 / self.dim)
        lin = torch.nn.Linear(self.dim, k)
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
        opt_e = torch.optim.SparseAdam(list(emb.parameters()), lr=self.lr)
        opt_l = torch.optim.Adam(lin.parameters(), lr=self.lr)
        t, a = (1.0, 0.0) if hard else (self.temperature, self.alpha)
        targets = torch.from_numpy(targets_for(p, hard))
        buckets, indptr = self._hash(texts)
        val = None
        if val_texts is not None and val_probs is not None and len(val_texts):
            vb, vptr = self._hash(val_texts)
            val = (torch.from_numpy(vb), torch.from_numpy(vptr[:-1].copy()), np.asarray(val_probs))
        best: tuple[float, float] | None = None
        best_state: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        bad = 0
        for _epoch in range(self.epochs):
            order = rng.permutation(len(texts))
            for i in range(0, len(order), self.batch_size):
                docs = order[i : i + self.batch_size]
                ids, offs = csr_batch(buckets, indptr, docs)
                z = lin(emb(torch.from_numpy(ids), torch.from_numpy(offs)))
                loss = kd_loss(z, targets[torch.from_numpy(docs)], temperature=t, alpha=a)
                opt_e.zero_grad()
                opt_l.zero_grad()
                loss.backward()
                opt_e.step()  # type: ignore[no-untyped-call]
                opt_l.step()
            if val is None:
                continue
            with torch.no_grad():
                vz = lin(emb(val[0], val[1])).numpy()
            vp = val[2]
            agree = float(np.mean(vz.argmax(1) == vp.argmax(1)))
            vloss = float(kd_loss(vz, vp, temperature=self.temperature, alpha=self.alpha))
            if best is None or (agree, -vloss) > best:
                best, bad = (agree, -vloss), 0
                best_state = (
                    emb.weight.detach().numpy().copy(),
                    lin.weight.detach().numpy().T.copy(),
                    lin.bias.detach().numpy().copy(),
                )
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is None:
            best_state = (
                emb.weight.detach().numpy().copy(),
                lin.weight.detach().numpy().T.copy(),
                lin.bias.detach().numpy().copy(),
            )
        self.embeddings_ = best_state[0].astype(np.float16).astype(np.float32)
        self.w_ = best_state[1].astype(np.float32)
        self.b_ = best_state[2].astype(np.float32)
        self.epochs_run_ = _epoch + 1 if self.epochs else 0
        return self

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Mean bucket embedding of each text, (n, dim) float32."""
        self._check_fitted()
        buckets, indptr = self._hash(texts)
        return _mean_rows(self.embeddings_, buckets, indptr)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits in numpy: mean embedding @ W + b."""
        return np.asarray(self.features(texts) @ self.w_ + self.b_, dtype=np.float32)

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings_.astype(np.float16), "w": self.w_, "b": self.b_}

    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        from distil.errors import ArtifactError

        for key in ("embeddings", "w", "b"):
            if key not in state:
                raise ArtifactError(f"{folder}/weights.safetensors: tensor {key!r} missing")
        if state["embeddings"].shape != (2**self.bits, self.dim):
            raise ArtifactError(
                f"{folder}/weights.safetensors: embeddings of shape {state['embeddings'].shape}, "
                f"expected {(2**self.bits, self.dim)}"
            )
        self.embeddings_ = state["embeddings"].astype(np.float32)
        self.w_ = state["w"]
        self.b_ = state["b"]

    def _extra_meta(self) -> dict[str, Any]:
        return {"epochs_run": int(getattr(self, "epochs_run_", 0))}

    def _set_extra_meta(self, meta: dict[str, Any]) -> None:
        self.epochs_run_ = int(meta.get("epochs_run", 0))
