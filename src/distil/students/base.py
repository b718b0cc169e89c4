"""The student contract (scikit-learn style) and what every student shares.

A student is an estimator: ``__init__`` only stores parameters, ``fit`` returns ``self``,
fitted state ends in ``_``, ``classes_`` fixes the column order of every probability matrix,
and ``predict_proba`` is calibrated (``softmax(logits / temperature_)``; ``temperature_`` is set
by :func:`distil.calibrate.fit_temperature` on held-out data).

A saved student is a folder: ``student.json`` (name, parameters, classes, temperature, format
version) and ``weights.safetensors`` (numpy arrays), plus whatever a student adds (a tokenizer).
Loading never unpickles.  This module imports no torch; the training helpers below import it
when they run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from distil.errors import ArtifactError, DataError

log = logging.getLogger("distil.students")

STUDENT_FORMAT_VERSION = 1
STUDENT_FILE = "student.json"
WEIGHTS_FILE = "weights.safetensors"

# name -> "module:Class"; imported lazily so that loading an ngram student never imports torch.
REGISTRY: dict[str, str] = {
    "ngram": "distil.students.ngram:NgramStudent",
    "static": "distil.students.static:StaticStudent",
    "encoder": "distil.students.encoder:EncoderStudent",
    "finetune": "distil.students.finetune:FinetuneStudent",
    "tuned": "distil.students.tuned:TunedStaticStudent",
    "ensemble": "distil.students.ensemble:EnsembleStudent",
    "onnx": "distil.onnx_export:OnnxStudent",  # written by distil export --onnx, never trained
}
LADDER = ("ngram", "static", "tuned", "ensemble", "encoder", "finetune")  # the default, cheapest first
TRAINABLE = tuple(name for name in REGISTRY if name != "onnx")  # what --students may name


def student_class(name: str) -> type[Student]:
    """The class registered under ``name`` (imports only that student's module)."""
    if name not in REGISTRY:
        from distil.errors import ConfigError

        raise ConfigError(f"unknown student {name!r}", hint=f"choose from {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    found: type[Student] = getattr(importlib.import_module(module), cls)
    return found


def load_student(folder: str | Path) -> Student:
    """Load a saved student of any kind from its folder (reads ``student.json`` to pick the class)."""
    meta = read_student_meta(Path(folder))
    return student_class(str(meta["name"])).load(Path(folder))


def read_student_meta(folder: Path) -> dict[str, Any]:
    """``student.json`` of a saved student; :class:`ArtifactError` naming the file if unusable."""
    path = folder / STUDENT_FILE
    if not path.exists():
        raise ArtifactError(f"{path}: missing", hint="the student folder is incomplete; train it again")
    try:
        meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > STUDENT_FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {version!r} is newer than this distil understands "
            f"({STUDENT_FORMAT_VERSION})",
            hint="upgrade distil to load this student",
        )
    for key in ("name", "params", "classes", "temperature"):
        if key not in meta:
            raise ArtifactError(f"{path}: key {key!r} missing")
    return meta


def softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    z = np.asarray(z, dtype=np.float32)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=axis, keepdims=True), dtype=np.float32)


class Student(ABC):
    """A compact classifier trained on a teacher's probabilities (see the module docstring)."""

    name: ClassVar[str]
    needs_torch: ClassVar[bool]
    # Parameters that are not part of the saved config (callbacks, local paths).
    _transient: ClassVar[tuple[str, ...]] = ()

    classes_: list[str]
    temperature_: float

    # -- parameters (scikit-learn style) --------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters as stored on the instance (``deep`` is accepted for scikit-learn; no nesting)."""
        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self"}

    def set_params(self, **params: Any) -> Self:
        """Set constructor parameters by name (as scikit-learn's ``set_params``); unknown names are refused."""
        from distil.errors import ConfigError

        known = self.get_params()
        bad = sorted(set(params) - set(known))
        if bad:
            raise ConfigError(f"{type(self).__name__}: unknown parameter(s) {bad}", hint=f"choose from {sorted(known)}")
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def config_params(self) -> dict[str, Any]:
        """The parameters that define the model (saved in ``student.json``)."""
        return {k: v for k, v in self.get_params().items() if k not in self._transient}

    # -- the estimator API ------------------------------------------------------------------
    @abstractmethod
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
        """Train on teacher probabilities (columns in ``labels`` order); ``hard`` = argmax only."""

    @abstractmethod
    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated logits, shape (n, k), float32."""

    @abstractmethod
    def features(self, texts: Sequence[str]) -> np.ndarray:
        """What the head sees, shape (n, d), float32 (used for out-of-distribution scores)."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities: ``softmax(logits / temperature_)``, columns in ``classes_`` order."""
        self._check_fitted()
        return softmax(self.predict_logits(texts) / float(self.temperature_))

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable label of each text."""
        idx = self.predict_logits(texts).argmax(axis=1)
        return [self.classes_[i] for i in idx]

    # -- persistence -------------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Fitted arrays to save (names → numpy arrays)."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        """Restore fitted arrays read from ``folder`` (and any extra files there)."""

    def _save_extra(self, folder: Path) -> None:  # noqa: B027
        """Write files besides the weights (a tokenizer); default none."""

    def _extra_meta(self) -> dict[str, Any]:
        """Fitted scalars/lists besides classes and temperature, saved in ``student.json``."""
        return {}

    def _set_extra_meta(self, meta: dict[str, Any]) -> None:  # noqa: B027
        """Restore what :meth:`_extra_meta` saved."""

    def save(self, folder: Path) -> None:
        """Write ``student.json`` + ``weights.safetensors`` (+ extras) into ``folder``; no pickle."""
        from safetensors.numpy import save_file

        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(state, str(folder / WEIGHTS_FILE))
        self._save_extra(folder)
        meta = {
            "format_version": STUDENT_FORMAT_VERSION,
            "name": self.name,
            "params": self.config_params(),
            "classes": list(self.classes_),
            "temperature": float(self.temperature_),
            "extra": self._extra_meta(),
        }
        (folder / STUDENT_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Self:
        """Read a student saved by :meth:`save`; :class:`ArtifactError` names a missing/bad file."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta = read_student_meta(folder)
        if meta["name"] != cls.name:
            raise ArtifactError(
                f"{folder / STUDENT_FILE}: holds a {meta['name']!r} student, not {cls.name!r}",
                hint="use distil.students.load_student(folder) to load any kind",
            )
        wpath = folder / WEIGHTS_FILE
        if not wpath.exists():
            raise ArtifactError(f"{wpath}: missing", hint="the student folder is incomplete; train it again")
        try:
            state = load_file(str(wpath))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise ArtifactError(f"{wpath}: not a readable safetensors file ({exc})") from None
        try:
            obj = cls(**meta["params"])
        except TypeError as exc:
            raise ArtifactError(
                f"{folder / STUDENT_FILE}: parameters do not fit {cls.__name__} ({exc})"
            ) from None
        obj.classes_ = list(meta["classes"])
        obj.temperature_ = float(meta["temperature"])
        obj._set_extra_meta(dict(meta.get("extra") or {}))
        obj._set_state(state, folder)
        return obj

    def size_bytes(self) -> int:
        """Bytes of the weights this student needs to predict (saved arrays + any base model)."""
        self._check_fitted()
        return int(sum(np.asarray(v).nbytes for v in self._state().values()))

    # -- helpers ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            from distil.errors import DistilError

            raise DistilError(f"this {type(self).__name__} is not fitted yet; call fit() or load()")

    def _start_fit(self, texts: Sequence[str], probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Check fit inputs, set ``classes_`` and ``temperature_``; return probs as float32."""
        p = np.asarray(probs, dtype=np.float32)
        if p.ndim != 2 or p.shape != (len(texts), len(labels)):
            raise DataError(
                f"{self.name} student: expected probabilities of shape ({len(texts)}, {len(labels)}), "
                f"found {p.shape}"
            )
        if len(labels) < 2:
            raise DataError(f"{self.name} student: need at least 2 labels, found {list(labels)}")
        if len(texts) == 0:
            raise DataError(f"{self.name} student: no training texts")
        self.classes_ = list(labels)
        self.temperature_ = 1.0
        return p


class HeadStudent(Student):
    """A head on fixed features: :meth:`features` once, then :func:`fit_head` with the KD loss.

    Subclasses give ``features`` and the head's hyper-parameters as attributes; ``_prepare`` loads
    what ``features`` needs before training (nothing by default).
    """

    head: str
    hidden: int
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    temperature: float
    alpha: float
    patience: int
    seed: int
    head_: dict[str, np.ndarray]

    def _prepare(self) -> None:
        """Load what :meth:`features` needs before training; default nothing."""

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
        """Compute the features once, then train the head; early-stop on the validation texts if given."""
        p = self._start_fit(texts, probs, labels)
        self._prepare()
        x = self.features(texts)
        vx = self.features(val_texts) if val_texts is not None and len(val_texts) else None
        self.head_ = fit_head(
            x,
            p,
            head=self.head,
            hidden=self.hidden,
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            temperature=self.temperature,
            alpha=self.alpha,
            hard=hard,
            seed=self.seed,
            val_x=vx,
            val_probs=val_probs if vx is not None else None,
            patience=self.patience,
        )
        return self

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits in numpy: head(features)."""
        self._check_fitted()
        return head_forward(self.head_, self.features(texts))


def targets_for(probs: np.ndarray, hard: bool) -> np.ndarray:
    """The training targets: the teacher's probabilities, or one-hot argmax when ``hard``."""
    if not hard:
        return probs
    out = np.zeros_like(probs)
    out[np.arange(len(probs)), probs.argmax(axis=1)] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# A linear or MLP head on fixed features, trained with the KD loss (torch, imported on use),
# and its numpy forward pass.


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run small torch training with ``n`` threads (small ops gain nothing from more), then restore."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_head(
    x: np.ndarray,
    probs: np.ndarray,
    *,
    head: str = "linear",
    hidden: int = 256,
    epochs: int = 60,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    temperature: float = 2.0,
    alpha: float = 0.5,
    hard: bool = False,
    seed: int = 0,
    val_x: np.ndarray | None = None,
    val_probs: np.ndarray | None = None,
    patience: int = 8,
) -> dict[str, np.ndarray]:
    """Train a head on features ``x`` with :func:`distil.losses.kd_loss`; early-stop on validation.

    Early stopping keeps the epoch with the best validation agreement with the teacher (ties:
    lower validation KD loss).  ``hard`` trains on the teacher's argmax only (T=1, plain CE).
    Returns numpy weights for :func:`head_forward`.
    """
    with torch_threads(1):
        return _fit_head(**locals())


def _fit_head(
    x: np.ndarray,
    probs: np.ndarray,
    *,
    head: str,
    hidden: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    temperature: float,
    alpha: float,
    hard: bool,
    seed: int,
    val_x: np.ndarray | None,
    val_probs: np.ndarray | None,
    patience: int,
) -> dict[str, np.ndarray]:
    import torch

    from distil.losses import kd_loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _build_head(head, x.shape[1], probs.shape[1], hidden)
    t, a = (1.0, 0.0) if hard else (temperature, alpha)
    targets = torch.from_numpy(targets_for(probs, hard).astype(np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    vx = torch.from_numpy(np.ascontiguousarray(val_x, dtype=np.float32)) if val_x is not None else None
    vp = torch.from_numpy(np.asarray(val_probs, dtype=np.float32)) if val_probs is not None else None
    stopper = EarlyStopping(patience)
    for _epoch in range(epochs):
        net.train()
        order = rng.permutation(len(xt))
        for i in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[i : i + batch_size])
            loss = kd_loss(net(xt[idx]), targets[idx], temperature=t, alpha=a)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if vx is not None and vp is not None and stopper.stop(net, _val_score(net, vx, vp, temperature=temperature,
                                                                               alpha=alpha)):
            break
    stopper.restore(net)
    return _head_arrays(net, head)


class EarlyStopping:
    """Keep the torch module's best epoch by a validation score (higher is better); stop after ``patience`` worse."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: tuple[float, float] | None = None
        self.best_state: dict[str, Any] = {}
        self.bad = 0

    def stop(self, net: Any, score: tuple[float, float]) -> bool:
        """Record this epoch's ``score`` (a copy of ``net``'s weights when it is the best); True: stop now."""
        if self.best is None or score > self.best:
            self.best, self.bad = score, 0
            self.best_state = {n: v.detach().clone() for n, v in net.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, net: Any) -> None:
        """Load the best epoch's weights into ``net`` (nothing when no epoch was scored)."""
        if self.best_state:
            net.load_state_dict(self.best_state)


def _build_head(head: str, d: int, k: int, hidden: int) -> Any:
    """A ``linear`` (d → k) or ``mlp`` (d → hidden → ReLU → k) torch head."""
    import torch

    if head == "linear":
        return torch.nn.Linear(d, k)
    if head == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, k))
    from distil.errors import ConfigError

    raise ConfigError(f"head must be 'linear' or 'mlp', found {head!r}")


def _val_score(net: Any, vx: Any, vp: Any, *, temperature: float, alpha: float) -> tuple[float, float]:
    """(validation agreement with the teacher, minus validation KD loss): higher is better."""
    import torch

    from distil.losses import kd_loss

    net.eval()
    with torch.no_grad():
        vz = net(vx)
        agree = float((vz.argmax(1) == vp.argmax(1)).float().mean())
        vloss = float(kd_loss(vz, vp, temperature=temperature, alpha=alpha))
    return agree, -vloss


def _head_arrays(net: Any, head: str) -> dict[str, np.ndarray]:
    """The trained head's weights as the numpy arrays :func:`head_forward` reads."""
    sd = net.state_dict()
    if head == "linear":
        return {"head.w": sd["weight"].numpy().T.copy(), "head.b": sd["bias"].numpy().copy()}
    return {
        "head.w1": sd["0.weight"].numpy().T.copy(),
        "head.b1": sd["0.bias"].numpy().copy(),
        "head.w": sd["2.weight"].numpy().T.copy(),
        "head.b": sd["2.bias"].numpy().copy(),
    }


def head_forward(state: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of a head trained by :func:`fit_head`, in numpy."""
    h = np.asarray(x, dtype=np.float32)
    if "head.w1" in state:
        h = np.maximum(h @ state["head.w1"] + state["head.b1"], 0.0)
    return np.asarray(h @ state["head.w"] + state["head.b"], dtype=np.float32)


ProgressFn = Callable[[str], None]
