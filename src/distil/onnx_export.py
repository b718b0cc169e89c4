"""ONNX export of the transformer students (``encoder``, ``finetune``) and their torch-free runtime.

``distil export ART --out OUT --onnx [--quantize int8]`` turns the chosen member's sentence
encoder into ``OUT/ladder/<member>/model.onnx`` (token ids + attention mask → the pooled,
normalised sentence embedding; dynamic batch and sequence axes) plus ``tokenizer.json`` (the
``tokenizers`` library, with the member's truncation length).  The member's ``student.json`` then
names the :class:`OnnxStudent`, which predicts through onnxruntime: the head stays the numpy
:func:`~distil.students.base.head_forward`, so ``features`` (the OOD guard's input) and logits
match the torch student.  Loading and predicting with it imports no torch.

Before anything is written the copy is checked against the torch student on the artifact's
held-out texts (at most :data:`PARITY_TEXTS`): max |Δp| over the calibrated probabilities and the
share of identical labels.  Below the agreement bound the export is refused.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from distil.errors import ArtifactError, ConfigError, MissingExtra
from distil.students.base import STUDENT_FILE, Student, head_forward, read_student_meta

#: The members whose transformer is exported; the others are numpy already.
ONNX_MEMBERS = ("encoder", "finetune")
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
OPSET = 17
PARITY_TEXTS = 1000
#: Default label-agreement bounds: fp32 must reproduce the torch labels; int8 may flip a few near-ties.
DEFAULT_MIN_AGREEMENT = {"fp32": 0.999, "int8": 0.99}
QUANTIZE = ("fp32", "int8")


def require_onnx(export: bool) -> Any:
    """onnxruntime (and onnx when ``export``), or :class:`MissingExtra` naming ``distil[onnx]``."""
    import importlib

    for name in ("onnxruntime", "onnx") if export else ("onnxruntime",):
        try:
            importlib.import_module(name)
        except ImportError:
            raise MissingExtra(name, "onnx") from None
    return importlib.import_module("onnxruntime")


# ---------------------------------------------------------------------------------------------
# The runtime: tokenizers + onnxruntime + the numpy head.


class OnnxEncoder:
    """``tokenizer.json`` + ``model.onnx`` in ``folder``: texts → sentence embeddings, no torch."""

    def __init__(self, folder: Path, max_seq_length: int, batch_size: int = 64) -> None:
        from tokenizers import Tokenizer

        ort = require_onnx(export=False)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        if self.tokenizer.padding is None:  # written by _save_tokenizer with the model's pad token
            self.tokenizer.enable_padding()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings (n, d) float32, in batches of ``batch_size``."""
        out = [self._batch(list(texts[i : i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, 0), dtype=np.float32)

    def _batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in enc], dtype=np.int64),
        }
        (emb,) = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})
        return np.asarray(emb, dtype=np.float32)


class OnnxStudent(Student):
    """An exported ``encoder``/``finetune`` student: onnxruntime encoder + the numpy head (no torch).

    ``source`` is the member it was exported from, ``quantize`` ``fp32`` or ``int8``.
    """

    name: ClassVar[str] = "onnx"
    needs_torch: ClassVar[bool] = False

    def __init__(self, source: str = "encoder", quantize: str = "fp32", max_seq_length: int = 128,
                 batch_size: int = 64) -> None:
        self.source = source
        self.quantize = quantize
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size

    def fit(self, texts: Sequence[str], probs: np.ndarray, *, labels: Sequence[str],
            val_texts: Sequence[str] | None = None, val_probs: np.ndarray | None = None,
            hard: bool = False) -> Self:
        """Not trainable: export a trained ``encoder``/``finetune`` member with ``distil export --onnx``."""
        raise ConfigError("an onnx student is exported, not trained", hint="train an encoder or finetune student, "
                          "then run distil export ART --out OUT --onnx")

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings from onnxruntime, (n, d) float32."""
        self._check_fitted()
        if not len(texts):
            return np.zeros((0, self.head_["head.w"].shape[0]), dtype=np.float32)
        return self.encoder_.encode(list(texts))

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits: the numpy head on the onnxruntime embeddings."""
        return head_forward(self.head_, self.features(texts))

    def _state(self) -> dict[str, np.ndarray]:
        return dict(self.head_)

    def _set_state(self, state: dict[str, np.ndarray], folder: Path) -> None:
        for name in (ONNX_FILE, TOKENIZER_FILE):
            if not (folder / name).exists():
                raise ArtifactError(f"{folder / name}: missing (the ONNX export)", hint="export the artifact again")
        if "head.w" not in state or "head.b" not in state:
            raise ArtifactError(f"{folder}/weights.safetensors: expected tensors head.w and head.b")
        self.head_ = dict(state)
        self.encoder_ = OnnxEncoder(folder, self.max_seq_length, self.batch_size)
        self.folder_ = folder

    def size_bytes(self) -> int:
        """Head bytes + the ONNX model file."""
        return super().size_bytes() + int((self.folder_ / ONNX_FILE).stat().st_size)


# ---------------------------------------------------------------------------------------------
# Export: torch → ONNX (+ int8), and the parity check.


@dataclass
class Parity:
    """How the ONNX member compares with the torch one on ``n`` held-out texts."""

    n: int
    max_abs_dp: float
    agreement: float
    quantize: str
    bound: float

    def summary(self) -> str:
        """One line for ``distil export``."""
        return (f"onnx {self.quantize} parity on {self.n} held-out texts: max |Δp| {self.max_abs_dp:.2e}, "
                f"label agreement {self.agreement:.4f} (bound {self.bound:g})")

    def as_dict(self) -> dict[str, Any]:
        """What the copy's config records."""
        return {"texts": self.n, "max_abs_dp": self.max_abs_dp, "agreement": self.agreement, "bound": self.bound}


def _sentence_model(student: Student) -> Any:
    """The SentenceTransformer behind an encoder or finetune student (loaded)."""
    st: Any = student  # an EncoderStudent or a FinetuneStudent
    if st.name == "finetune":
        return st.model_
    from distil.students.encoder import _shared_encoder

    return _shared_encoder(st.base, st.max_seq_length, st.encode_batch_size).load()


def _mean_pooling(cfg: dict[str, Any]) -> bool:
    """Whether a Pooling config is plain mean pooling (sentence-transformers 6 ``pooling_mode``, or the older flags)."""
    if "pooling_mode" in cfg:
        return cfg["pooling_mode"] in ("mean", ["mean"])
    flags = {k: bool(v) for k, v in cfg.items() if k.startswith("pooling_mode")}
    return bool(flags.get("pooling_mode_mean_tokens")) and sum(flags.values()) == 1


def _check_pooling(model: Any, where: str) -> bool:
    """Refuse an encoder whose pooling is not mean pooling; whether it ends with a Normalize module."""
    mods = [type(m).__name__ for m in model]
    pooling = model[1] if len(mods) > 1 and mods[1] == "Pooling" else None
    cfg = pooling.get_config_dict() if pooling is not None else {}
    if mods[0] != "Transformer" or not _mean_pooling(cfg):
        raise ConfigError(f"{where}: ONNX export supports Transformer + mean Pooling encoders, found {mods} {cfg}",
                          hint="export without --onnx")
    return "Normalize" in mods[2:]


def _wrapper(model: Any, normalize: bool) -> Any:
    """A torch module: (input_ids, attention_mask, token_type_ids) → mean-pooled (normalised) embedding."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model[0].auto_model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(emb, p=2.0, dim=1) if normalize else emb

    return Pooled().eval()


def _export_graph(model: Any, normalize: bool, path: Path) -> None:
    """torch.onnx.export of the pooled encoder, dynamic batch and sequence axes."""
    import torch

    ids = torch.ones((2, 8), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so that no all-ones shortcut of the attention mask is traced
    args = (ids, mask, torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant Python booleans (checked by the parity run)
        torch.onnx.export(_wrapper(model, normalize), args, str(path), input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _quantize(path: Path) -> None:
    """Replace ``path`` by its int8 dynamic quantisation (weights int8 per output channel, activations
    quantised on the fly); per-channel scales keep more labels than one scale per tensor (1.000 vs 0.983
    held-out agreement on banking77, benchmarks/bench_onnx.py)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    tmp = path.with_name("model.int8.onnx")
    quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    tmp.replace(path)


def _save_tokenizer(hf_tokenizer: Any, max_len: int, path: Path) -> None:
    """The fast tokenizer as ``tokenizer.json``, with the model's pad token and the member's truncation."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(pad_id=int(hf_tokenizer.pad_token_id or 0), pad_token=str(hf_tokenizer.pad_token or "[PAD]"))
    tok.save(str(path))


def write_onnx_member(student: Student, folder: Path, quantize: str) -> None:
    """Turn the staged member folder of ``student`` into an :class:`OnnxStudent` folder."""
    model = _sentence_model(student)
    has_normalize = _check_pooling(model, str(folder))
    normalize = student.name == "encoder" or has_normalize  # the encoder student always normalises
    _export_graph(model, normalize, folder / ONNX_FILE)
    if quantize == "int8":
        _quantize(folder / ONNX_FILE)
    _save_tokenizer(model.tokenizer, int(vars(student)["max_seq_length"]), folder / TOKENIZER_FILE)
    if (folder / "encoder").is_dir():  # the finetune member's torch weights: not needed any more
        shutil.rmtree(folder / "encoder")
    meta = read_student_meta(folder)
    meta["name"] = OnnxStudent.name
    meta["params"] = {"source": student.name, "quantize": quantize,
                      "max_seq_length": int(vars(student)["max_seq_length"]), "batch_size": 64}
    (folder / STUDENT_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def check_parity(torch_student: Student, folder: Path, texts: Sequence[str], quantize: str, bound: float) -> Parity:
    """Compare the exported member in ``folder`` with ``torch_student`` on ``texts`` (capped)."""
    sample = list(texts)[:PARITY_TEXTS]
    onnx_student = OnnxStudent.load(folder)
    p_torch = torch_student.predict_proba(sample)
    p_onnx = onnx_student.predict_proba(sample)
    dp = float(np.abs(p_torch - p_onnx).max()) if len(sample) else 0.0
    agree = float(np.mean(p_torch.argmax(1) == p_onnx.argmax(1))) if len(sample) else 1.0
    return Parity(len(sample), dp, agree, quantize, bound)


def min_agreement(quantize: str, given: float | None) -> float:
    """The agreement bound: ``given``, or :data:`DEFAULT_MIN_AGREEMENT` for the quantisation."""
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r}: unknown", hint=f"choose from {', '.join(QUANTIZE)}")
    bound = DEFAULT_MIN_AGREEMENT[quantize] if given is None else float(given)
    if not 0.0 <= bound <= 1.0:
        raise ConfigError(f"--min-agreement {bound:g}: must lie in [0, 1]", hint="e.g. 0.99")
    return bound


def refuse_below(parity: Parity) -> None:
    """Raise :class:`ConfigError` when the parity's agreement is below its bound."""
    if parity.agreement < parity.bound:
        raise ConfigError(
            f"onnx {parity.quantize} export refused: label agreement with the torch student "
            f"{parity.agreement:.4f} on {parity.n} held-out texts is below {parity.bound:g} "
            f"(max |Δp| {parity.max_abs_dp:.2e}); nothing written",
            hint="export fp32 instead of int8, or lower --min-agreement if that agreement is acceptable",
        )
