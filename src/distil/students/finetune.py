"""The strongest student: a sentence encoder (all-MiniLM-L6-v2) fine-tuned end to end with the KD loss.

Training checkpoints at the end of every epoch into ``checkpoint_dir`` (encoder weights via
sentence-transformers' safetensors save, head and AdamW state in safetensors, progress in
``state.json``).  A later ``fit`` with ``resume=True`` continues after the last finished epoch,
and refuses with :class:`~distil.errors.ConfigError` if the training data or the configuration
changed since the checkpoint was written.  Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from distil.errors import ArtifactError, ConfigError
from distil.students.base import Student, head_forward, targets_for
from distil.students.encoder import embedding_dim, warn_truncated

log = logging.getLogger("distil.students")
STATE_FILE = "state.json"


def data_fingerprint(
    texts: Sequence[str],
    probs: np.ndarray,
    labels: Sequence[str],
    val_texts: Sequence[str] | None,
    val_probs: np.ndarray | None,
    hard: bool,
) -> str:
    """Hash of everything the fine-tuning run reads (texts, rounded probs, labels, validation, hard)."""
    h = hashlib.sha256()
    h.update(json.dumps({"labels": list(labels), "hard": hard}).encode())
    for part in (texts, val_texts or []):
        for t in part:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x01")
    h.update(np.round(np.asarray(probs, dtype=np.float32), 5).tobytes())
    if val_probs is not None:
        h.update(np.round(np.asarray(val_probs, dtype=np.float32), 5).tobytes())
    return h.hexdigest()[:16]


@dataclass
class _Progress:
    """Where a fine-tuning run stands: epochs finished, optimizer steps, history, best validation agreement."""

    epoch: int = 0
    steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_agree: float = -1.0
    done: bool = False  # max_steps reached


class FinetuneStudent(Student):
    """MiniLM fine-tuned end to end (+ linear head) with the KD loss; checkpoints and resumes.

    ``max_steps`` caps the optimizer steps of the whole run (for benchmarks); ``checkpoint_dir``
    (none = no checkpoints), ``resume`` and ``on_epoch_end(epoch)`` are run settings, not part
    of the saved configuration.
    """

    name: ClassVar[str] = "finetune"
    needs_torch: ClassVar[bool] = True
    _transient: ClassVar[tuple[str, ...]] = ("checkpoint_dir", "resume", "on_epoch_end")

    def __init__(
        self,
        base: str = "all-MiniLM-L6-v2",
        max_seq_length: int = 128,
        epochs: int = 3,
        lr: float = 5e-5,
        head_lr: float = 2e-3,
        weight_decay: float = 0.01,
        batch_size: int = 16,
        temperature: float = 2.0,
        alpha: float = 0.5,
        max_steps: int | None = None,
        seed: int = 0,
        checkpoint_dir: str | None = None,
        resume: bool = True,
        on_epoch_end: Callable[[int], None] | None = None,
    ) -> None:
        self.base = base
        self.max_seq_length = max_seq_length
        self.epochs = epochs
        self.lr = lr
        self.head_lr = head_lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.temperature = temperature
        self.alpha = alpha
        self.max_steps = max_steps
        self.seed = seed
        self.checkpoint_dir = checkpoint_dir
        self.resume = resume
        self.on_epoch_end = on_epoch_end

    # -- checkpoints ---------------------------------------------------------------------------
    def _check_resumable(self, ckpt: Path, fp: str) -> dict[str, Any] | None:
        state_path = ckpt / STATE_FILE
        if not state_path.exists():
            return None
        if not self.resume:
            shutil.rmtree(ckpt)
            return None
        state: dict[str, Any] = json.loads(state_path.read_text(encoding="utf-8"))
        if state.get("data_fingerprint") != fp:
            raise ConfigError(
                f"{state_path}: the checkpoint was trained on other data (fingerprint "
                f"{state.get('data_fingerprint')}, now {fp}); refusing to resume",
                hint="start fresh with resume=False (distil train --no-resume) or delete that folder",
            )
        if state.get("config") != self.config_params():
            changed = sorted(
                k
                for k in set(state.get("config", {})) | set(self.config_params())
                if state.get("config", {}).get(k) != self.config_params().get(k)
            )
            raise ConfigError(
                f"{state_path}: the checkpoint was written with another configuration "
                f"(changed: {', '.join(changed)}); refusing to resume",
                hint="start fresh with resume=False (distil train --no-resume) or delete that folder",
            )
        return state

    @staticmethod
    def _save_opt(opt: Any, path: Path) -> None:
        from safetensors.torch import save_file

        sd = opt.state_dict()
        tensors = {}
        for idx, st in sd["state"].items():
            for key, val in st.items():
                tensors[f"{idx}.{key}"] = val.detach().reshape(-1).contiguous().clone()
        save_file(tensors, str(path))
        groups = [
            {k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
            for g in sd["param_groups"]
        ]
        path.with_suffix(".json").write_text(json.dumps(groups), encoding="utf-8")

    @staticmethod
    def _load_opt(opt: Any, path: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        groups = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        state: dict[int, dict[str, Any]] = {}
        for name, val in tensors.items():
            pos, key = name.split(".", 1)
            state.setdefault(int(pos), {})[key] = val.reshape(()) if key == "step" else val
        params = [q for g in opt.param_groups for q in g["params"]]
        for idx, st in state.items():
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in st:
                    st[key] = st[key].reshape(params[idx].shape)
        opt.load_state_dict({"state": state, "param_groups": groups})

    # -- training --------------------------------------------------------------------------------
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
        """Fine-tune encoder + head; checkpoint each epoch; keep the epoch best on validation."""
        import torch

        p = self._start_fit(texts, probs, labels)
        fp = data_fingerprint(texts, p, labels, val_texts, val_probs, hard)
        ckpt = Path(self.checkpoint_dir) if self.checkpoint_dir else None
        state = self._check_resumable(ckpt, fp) if ckpt is not None else None
        model, head, opt = self._build(ckpt if state is not None else None, len(labels))
        prog = self._resume(ckpt, state, head, opt)
        self.resumed_from_ = prog.epoch
        warn_truncated(model.tokenizer, texts, self.max_seq_length, "finetune student")
        targets = torch.from_numpy(targets_for(p, hard))
        texts = list(texts)
        prog.done = self.max_steps is not None and prog.steps >= self.max_steps
        for epoch in range(prog.epoch, self.epochs):
            if prog.done:
                break
            loss = self._train_epoch(model, head, opt, texts, targets, epoch, prog, hard)
            improved = self._end_epoch(model, head, epoch, loss, prog, val_texts, val_probs)
            self._keep_epoch(ckpt, model, head, opt, improved, prog, fp)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1)
        model = self._restore_best(ckpt, model, head)
        model.eval()
        self.model_, self.head_ = model, self._head_numpy(head)
        self.history_ = prog.history
        self.steps_ = prog.steps
        return self

    def _build(self, resume_from: Path | None, k: int) -> tuple[Any, Any, Any]:
        """The encoder (the base model, or the last checkpoint's in ``resume_from``), a linear head, AdamW."""
        import torch
        from sentence_transformers import SentenceTransformer

        from distil.models import model_path

        torch.manual_seed(self.seed)
        src = resume_from / "last" / "encoder" if resume_from is not None else model_path(self.base)
        model = SentenceTransformer(str(src), device="cpu")
        model.max_seq_length = self.max_seq_length
        head = torch.nn.Linear(embedding_dim(model), k)
        opt = torch.optim.AdamW(
            [
                {"params": list(model.parameters()), "lr": self.lr},
                {"params": list(head.parameters()), "lr": self.head_lr},
            ],
            weight_decay=self.weight_decay,
        )
        return model, head, opt

    def _resume(self, ckpt: Path | None, state: dict[str, Any] | None, head: Any, opt: Any) -> _Progress:
        """Where the run stands: fresh, or after the checkpoint's last epoch (head and optimizer restored)."""
        if state is None or ckpt is None:
            return _Progress()
        from safetensors.torch import load_file

        head.load_state_dict(load_file(str(ckpt / "last" / "head.safetensors")))
        self._load_opt(opt, ckpt / "last" / "optim.safetensors")
        prog = _Progress(
            epoch=int(state["epoch"]),
            steps=int(state["steps"]),
            history=list(state["history"]),
            best_agree=float(state.get("best_agreement", -1.0)),
        )
        log.info("finetune: resuming after epoch %d from %s", prog.epoch, ckpt)
        return prog

    def _train_epoch(
        self, model: Any, head: Any, opt: Any, texts: list[str], targets: Any, epoch: int, prog: _Progress, hard: bool
    ) -> float:
        """One seeded pass over ``texts`` (stopping at ``max_steps``); the last batch's loss."""
        import torch

        from distil.losses import kd_loss

        t, a = (1.0, 0.0) if hard else (self.temperature, self.alpha)
        torch.manual_seed(self.seed * 1000 + epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(texts))
        model.train()
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            feats = model.tokenize([texts[j] for j in idx])
            emb = model(feats)["sentence_embedding"]
            loss = kd_loss(head(emb), targets[torch.from_numpy(idx)], temperature=t, alpha=a)
            opt.zero_grad()
            loss.backward()
            opt.step()
            prog.steps += 1
            if self.max_steps is not None and prog.steps >= self.max_steps:
                prog.done = True
                break
        return float(loss.detach())

    def _end_epoch(
        self,
        model: Any,
        head: Any,
        epoch: int,
        loss: float,
        prog: _Progress,
        val_texts: Sequence[str] | None,
        val_probs: np.ndarray | None,
    ) -> bool:
        """Add the epoch to the history; whether it is the best on validation so far (True without one)."""
        model.eval()
        self.model_, self.head_ = model, self._head_numpy(head)
        rec: dict[str, float] = {"epoch": epoch + 1, "steps": prog.steps, "loss": loss}
        improved = True
        if val_texts is not None and val_probs is not None and len(val_texts):
            agree = float(np.mean(self.predict_logits(val_texts).argmax(1) == np.asarray(val_probs).argmax(1)))
            rec["val_agreement"] = agree
            improved = agree > prog.best_agree
            prog.best_agree = max(prog.best_agree, agree)
        prog.history.append(rec)
        prog.epoch = epoch + 1
        return improved

    def _keep_epoch(
        self, ckpt: Path | None, model: Any, head: Any, opt: Any, improved: bool, prog: _Progress, fp: str
    ) -> None:
        """Checkpoint the finished epoch (``last``, and ``best`` when improved); without checkpoints keep
        the best weights in memory."""
        if ckpt is not None:
            self._write_checkpoint(ckpt, model, head, opt, improved, prog, fp)
        elif improved:
            self._best_mem = (
                {k: v.detach().clone() for k, v in model.state_dict().items()},
                {k: v.detach().clone() for k, v in head.state_dict().items()},
            )

    def _write_checkpoint(
        self, ckpt: Path, model: Any, head: Any, opt: Any, improved: bool, prog: _Progress, fp: str
    ) -> None:
        from safetensors.torch import save_file

        last = ckpt / "last"
        tmp = ckpt / "last.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        model.save(str(tmp / "encoder"))
        save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(tmp / "head.safetensors"))
        self._save_opt(opt, tmp / "optim.safetensors")
        if improved:
            if (ckpt / "best").exists():
                shutil.rmtree(ckpt / "best")
            shutil.copytree(tmp, ckpt / "best")
        if last.exists():
            shutil.rmtree(last)
        tmp.rename(last)
        st = {
            "epoch": prog.epoch,
            "steps": prog.steps,
            "history": prog.history,
            "best_agreement": prog.best_agree,
            "data_fingerprint": fp,
            "config": self.config_params(),
        }
        (ckpt / STATE_FILE).write_text(json.dumps(st, indent=2), encoding="utf-8")

    def _restore_best(self, ckpt: Path | None, model: Any, head: Any) -> Any:
        """The encoder of the epoch best on validation (``head`` restored in place)."""
        if ckpt is not None and (ckpt / "best").exists():
            from safetensors.torch import load_file
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(ckpt / "best" / "encoder"), device="cpu")
            model.max_seq_length = self.max_seq_length
            head.load_state_dict(load_file(str(ckpt / "best" / "head.safetensors")))
        elif getattr(self, "_best_mem", None) is not None:
            model.load_state_dict(self._best_mem[0])
            head.load_state_dict(self._best_mem[1])
            del self._best_mem
        return model

    @staticmethod
    def _head_numpy(head: Any) -> dict[str, np.ndarray]:
        return {
            "head.w": head.weight.detach().numpy().T.copy(),
            "head.b": head.bias.detach().numpy().copy(),
        }

    # -- prediction --------------------------------------------------------------------------------
    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings of the fine-tuned encoder, (n, d) float32."""
        self._check_fitted()
        if not len(texts):
            return np.zeros((0, self.head_["head.w"].shape[0]), dtype=np.float32)
        warn_truncated(self.model_.tokenizer, texts, self.max_seq_length, "finetune student")
        emb = self.model_.encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits: head(fine-tuned encoder(texts))."""
        return head_forward(self.head_, self.features(texts))

    # -- persistence -------------------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return dict(self.head_)

    def _save_extra(self, folder: Path) -> None:
        enc = folder / "encoder"
        if enc.exists():
            shutil.rmtree(enc)
        self.model_.save(str(enc))

    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        if "head.w" not in state or "head.b" not in state:
            raise ArtifactError(f"{folder}/weights.safetensors: expected tensors head.w and head.b")
        enc = folder / "encoder"
        if not (enc / "modules.json").exists():
            raise ArtifactError(f"{enc}/modules.json: missing (the fine-tuned encoder)")
        from sentence_transformers import SentenceTransformer

        self.head_ = dict(state)
        self.model_ = SentenceTransformer(str(enc), device="cpu")
        self.model_.max_seq_length = self.max_seq_length

    def _extra_meta(self) -> dict[str, Any]:
        return {"history": getattr(self, "history_", []), "steps": int(getattr(self, "steps_", 0))}

    def _set_extra_meta(self, meta: dict[str, Any]) -> None:
        self.history_ = list(meta.get("history", []))
        self.steps_ = int(meta.get("steps", 0))

    def size_bytes(self) -> int:
        """Head bytes + the fine-tuned encoder's weights."""
        total = super().size_bytes()
        for t in self.model_.state_dict().values():
            total += int(t.numel() * t.element_size())
        return total
