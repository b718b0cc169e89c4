"""Static embeddings tuned end to end on the teacher's soft labels (the ``tuned`` student).

The ``static`` student keeps model2vec's token vectors fixed and trains a head on their mean.
This one starts from the same vectors and trains the vectors of the tokens the pool uses
together with the head, on the KD loss — what model2vec's own classifier does with hard labels,
here with the teacher's probabilities.  Only the rows of tokens seen in training move; every
other token keeps its distilled vector, so text with unseen words is embedded as before.

Training needs torch (a sparse embedding bag, as the ``ngram`` student's); prediction is the
static student's numpy path (normalised mean of the token rows, then the head), unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np

from distil.students.base import (
    EarlyStopping,
    _build_head,
    _head_arrays,
    _val_score,
    targets_for,
    torch_threads,
)
from distil.students.ngram import csr_batch
from distil.students.static import StaticStudent


class TunedStaticStudent(StaticStudent):
    """model2vec static embeddings whose used rows are trained with an MLP (or linear) head.

    Parameters as :class:`~distil.students.static.StaticStudent`, plus ``emb_lr`` (the sparse
    Adam rate for the token rows; the head uses ``lr``).
    """

    name: ClassVar[str] = "tuned"
    needs_torch: ClassVar[bool] = False

    def __init__(
        self,
        base: str = "all-MiniLM-L6-v2",
        pca_dims: int = 256,
        head: str = "mlp",
        hidden: int = 512,
        epochs: int = 40,
        lr: float = 2e-3,
        emb_lr: float = 5e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 32,
        temperature: float = 2.0,
        alpha: float = 0.5,
        patience: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(
            base=base, pca_dims=pca_dims, head=head, hidden=hidden, epochs=epochs, lr=lr,
            weight_decay=weight_decay, batch_size=batch_size, temperature=temperature, alpha=alpha,
            patience=patience, seed=seed,
        )
        self.emb_lr = emb_lr

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
        """Tune the token rows and the head together; keep the epoch best on validation agreement."""
        p = self._start_fit(texts, probs, labels)
        self._prepare()
        train = self.token_ids(texts)
        val = None
        if val_texts is not None and val_probs is not None and len(val_texts):
            val = (self.token_ids(val_texts), np.asarray(val_probs, dtype=np.float32))
        with torch_threads(1):
            rows, table, self.head_ = self._tune(train, targets_for(p, hard), val, hard)
        tuned = self.embeddings_.copy()
        tuned[rows] = table
        self.embeddings_ = tuned.astype(np.float16).astype(np.float32)  # what save() keeps
        return self

    def _tune(
        self,
        train: tuple[np.ndarray, np.ndarray],
        targets: np.ndarray,
        val: tuple[tuple[np.ndarray, np.ndarray], np.ndarray] | None,
        hard: bool,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(the token ids tuned, their new rows, the head's arrays)."""
        import torch

        from distil.losses import kd_loss

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        rows = np.unique(np.concatenate([train[0]] + ([val[0][0]] if val is not None else [])))
        local = _Remap(rows)
        net = _bag_net(self.embeddings_[rows], _build_head(self.head, self.embeddings_.shape[1],
                                                          targets.shape[1], self.hidden))
        opt_e = torch.optim.SparseAdam(list(net.bag.parameters()), lr=self.emb_lr)
        opt_h = torch.optim.AdamW(net.head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        t, a = (1.0, 0.0) if hard else (self.temperature, self.alpha)
        y = torch.from_numpy(targets.astype(np.float32))
        flat, indptr = local(train[0]), train[1]
        vx = None if val is None else _bag_input(local(val[0][0]), val[0][1], np.arange(len(val[1])))
        vp = None if val is None else torch.from_numpy(val[1])
        stopper = EarlyStopping(self.patience)
        for _epoch in range(self.epochs):
            net.train()
            order = rng.permutation(len(indptr) - 1)
            for i in range(0, len(order), self.batch_size):
                docs = order[i : i + self.batch_size]
                loss = kd_loss(net(_bag_input(flat, indptr, docs)), y[torch.from_numpy(docs)],
                               temperature=t, alpha=a)
                opt_e.zero_grad()
                opt_h.zero_grad()
                loss.backward()
                opt_e.step()  # type: ignore[no-untyped-call]
                opt_h.step()
            if vx is not None and vp is not None and stopper.stop(
                net, _val_score(net, vx, vp, temperature=self.temperature, alpha=self.alpha)
            ):
                break
        stopper.restore(net)
        table = net.bag.weight.detach().numpy().copy()
        return rows, table, _head_arrays(net.head, self.head)


class _Remap:
    """Global token ids → positions in the small table of the rows being tuned."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.rows, ids).astype(np.int64)


def _bag_input(flat: np.ndarray, indptr: np.ndarray, docs: np.ndarray) -> tuple[Any, Any]:
    """The torch (ids, offsets) pair of the texts ``docs``."""
    import torch

    ids, offs = csr_batch(flat, indptr, docs)
    return torch.from_numpy(ids), torch.from_numpy(offs)


def _bag_net(table: np.ndarray, head: Any) -> Any:
    """A torch module: mean of the token rows (a trainable sparse bag), L2-normalised, then the head."""
    import torch

    class BagNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = torch.nn.EmbeddingBag.from_pretrained(
                torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)),
                freeze=False, mode="mean", sparse=True,
            )
            self.head = head

        def forward(self, x: tuple[Any, Any]) -> Any:
            h = torch.nn.functional.normalize(self.bag(x[0], x[1]), dim=1, eps=1e-12)
            return self.head(h)

    return BagNet()


__all__ = ["TunedStaticStudent"]
