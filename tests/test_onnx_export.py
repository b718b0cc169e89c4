"""``distil export --onnx``: the encoder student through onnxruntime, parity with torch, served without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distil.artifact import load_artifact
from distil.errors import ConfigError
from distil.export import OnnxOptions, export_artifact

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TESTS = Path(__file__).resolve().parent
LABELS = ["card_arrival", "card_linking", "exchange_rate", "lost_or_stolen_card", "top_up_failed"]


def _labeled(n_per: int = 30) -> object:
    from conftest import banking77

    from distil.data import LabeledSet

    rows = [(t, lab) for t, lab in banking77("train") if lab in LABELS]
    by: dict[str, list[str]] = {lab: [] for lab in LABELS}
    for t, lab in rows:
        if len(by[lab]) < n_per:
            by[lab].append(t)
    texts = [t for lab in LABELS for t in by[lab]]
    gold = [lab for lab in LABELS for _ in by[lab]]
    probs = np.full((len(texts), len(LABELS)), 0.05, dtype=np.float32)
    probs[np.arange(len(texts)), [LABELS.index(g) for g in gold]] = 0.8
    return LabeledSet(texts=texts, probs=probs, labels=LABELS)


@pytest.fixture(scope="module")
def encoder_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small encoder (MiniLM + linear head) artifact on five banking77 intents."""
    from conftest import SHARED_DATA

    from distil.train import train

    if not (SHARED_DATA / "banking77" / "train.csv").exists():
        pytest.skip(f"banking77 not found under {SHARED_DATA}")
    out = tmp_path_factory.mktemp("onnx") / "art"
    train(_labeled(), out, students=["encoder"], seed=0, heldout_frac=0.4, params={"encoder": {"epochs": 30}})
    return out


def _distil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "distil", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_fp32_export_matches_torch_and_serves_without_torch(encoder_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    proc = _distil("export", str(encoder_artifact), "--out", str(out), "--onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "onnx fp32 parity" in proc.stdout and "max |Δp|" in proc.stdout
    rec = json.loads((out / "distil_config.json").read_text())["exported"]["onnx"]
    assert rec["quantize"] == "fp32" and rec["parity"]["agreement"] == 1.0
    assert rec["parity"]["max_abs_dp"] < 1e-4
    assert (out / "ladder" / "encoder" / "model.onnx").exists()
    texts = load_artifact(encoder_artifact).heldout().texts
    want = load_artifact(encoder_artifact).student().predict(texts)
    code = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from distil.artifact import load_artifact\n"
        f"art = load_artifact({str(out)!r}); texts = art.heldout().texts\n"
        "labels = art.student().predict(texts)\n"
        "assert sys.modules.get('torch') is None\n"
        "print(json.dumps(labels))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == want


@pytest.mark.slow
def test_int8_export_keeps_the_labels(encoder_artifact: Path, tmp_path: Path) -> None:
    res = export_artifact(encoder_artifact, tmp_path / "int8", onnx=OnnxOptions("int8", 0.95))
    rec = json.loads((res.out / "distil_config.json").read_text())["exported"]["onnx"]
    assert rec["parity"]["agreement"] >= 0.95
    size_int8 = (res.out / "ladder" / "encoder" / "model.onnx").stat().st_size
    assert size_int8 < 40e6  # fp32 MiniLM is ~90 MB


@pytest.mark.slow
def test_a_bound_the_export_cannot_meet_writes_nothing(encoder_artifact: Path, tmp_path: Path) -> None:
    from distil import onnx_export

    out = tmp_path / "refused"
    # agreement is at most 1.0; a monkeypatched bound above it must be refused
    parity = onnx_export.Parity(10, 0.1, 0.9, "int8", 0.99)
    with pytest.raises(ConfigError, match="refused"):
        onnx_export.refuse_below(parity)
    proc = _distil("export", str(encoder_artifact), "--out", str(out), "--onnx", "--quantize", "int8",
                   "--min-agreement", "1.01", cwd=tmp_path)
    assert proc.returncode == 2 and "--min-agreement" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".refused*"))


def test_refusal_leaves_no_folder(encoder_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distil import onnx_export

    def always_low(*a: object, **k: object) -> onnx_export.Parity:
        return onnx_export.Parity(5, 0.5, 0.2, "fp32", 0.999)

    monkeypatch.setattr(onnx_export, "check_parity", always_low)
    out = tmp_path / "low"
    with pytest.raises(ConfigError, match="below 0.999"):
        export_artifact(encoder_artifact, out, onnx=OnnxOptions())
    assert not out.exists() and not list(tmp_path.glob(".low*"))


@pytest.mark.slow
def test_a_finetune_member_exports_without_its_torch_encoder(tmp_path: Path) -> None:
    from conftest import SHARED_DATA

    from distil.train import train

    if not (SHARED_DATA / "banking77" / "train.csv").exists():
        pytest.skip(f"banking77 not found under {SHARED_DATA}")
    art = tmp_path / "ft"
    train(_labeled(12), art, students=["finetune"], seed=0, heldout_frac=0.4,
          params={"finetune": {"epochs": 1, "max_steps": 3, "batch_size": 8}})
    res = export_artifact(art, tmp_path / "out", onnx=OnnxOptions())
    rec = json.loads((res.out / "distil_config.json").read_text())["exported"]["onnx"]
    assert rec["source"] == "finetune" and rec["parity"]["agreement"] == 1.0 and rec["parity"]["max_abs_dp"] < 1e-4
    member = res.out / "ladder" / "finetune"
    assert not (member / "encoder").exists() and (member / "model.onnx").exists()
    texts = load_artifact(art).heldout().texts
    assert load_artifact(res.out).student().predict(texts) == load_artifact(art).student().predict(texts)


@pytest.mark.slow
def test_a_numpy_member_needs_no_onnx(tmp_path: Path, shared_data: Path) -> None:
    from distil.train import train

    art = tmp_path / "ngram"
    train(_labeled(10), art, students=["ngram"], seed=0, heldout_frac=0.3,
          params={"ngram": {"bits": 12, "dim": 8, "epochs": 2}})
    res = export_artifact(art, tmp_path / "out", onnx=OnnxOptions())
    assert res.onnx is not None and "not needed" in res.onnx
    assert "onnx" not in json.loads((res.out / "distil_config.json").read_text())["exported"]


def test_a_missing_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from distil import onnx_export
    from distil.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import then raises ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'distil\[onnx\]'"):
        onnx_export.require_onnx(export=True)
