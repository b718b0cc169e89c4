"""Students: estimator contract, save/load without pickle or torch, truncation, finetune resume."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from _distil_helpers import small_banking, tiny_static_model

from distil.errors import ArtifactError, ConfigError
from distil.students import load_student, student_class
from distil.students.ngram import NgramStudent, hash_features
from distil.students.static import StaticStudent

ROOT = Path(__file__).resolve().parents[1]
FAST_NGRAM = {"bits": 14, "dim": 16, "epochs": 8}


def _split(ls, every: int = 5):  # type: ignore[no-untyped-def]
    val = [i for i in range(len(ls)) if i % every == 0]
    tr = [i for i in range(len(ls)) if i % every != 0]
    return ([ls.texts[i] for i in tr], ls.probs[tr], [ls.texts[i] for i in val], ls.probs[val])


def test_hash_features_stable_and_grouped() -> None:
    b1, p1 = hash_features(["Hello world", "", "héllo"], bits=10)
    b2, p2 = hash_features(["Hello world", "", "héllo"], bits=10)
    assert np.array_equal(b1, b2) and np.array_equal(p1, p2)
    assert p1[2] - p1[1] == 0 or p1[2] - p1[1] > 0  # empty text → only padding n-grams at most
    assert (b1 >= 0).all() and (b1 < 2**10).all()
    # the same text alone gives the same buckets as inside a batch
    alone, _ = hash_features(["héllo"], bits=10)
    assert sorted(alone.tolist()) == sorted(b1[p1[2] : p1[3]].tolist())


def test_ngram_contract_fit_predict_save_load(tmp_path: Path) -> None:
    ls = small_banking()
    tr, trp, va, vap = _split(ls)
    s = NgramStudent(**FAST_NGRAM)
    assert not hasattr(s, "classes_")  # __init__ only stores parameters
    assert s.get_params()["bits"] == 14
    assert s.fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap) is s
    assert s.classes_ == ls.labels and s.temperature_ == 1.0
    proba = s.predict_proba(va)
    assert proba.shape == (len(va), len(ls.labels)) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    agreement = np.mean(proba.argmax(1) == vap.argmax(1))
    assert agreement > 0.6, agreement
    assert s.features(va).shape == (len(va), 16)
    s.temperature_ = 2.0
    s.save(tmp_path / "ng")
    assert not list((tmp_path / "ng").glob("*.pkl"))
    t = load_student(tmp_path / "ng")
    assert isinstance(t, NgramStudent) and t.temperature_ == 2.0
    np.testing.assert_allclose(t.predict_proba(va), s.predict_proba(va), rtol=1e-5, atol=1e-6)
    assert t.predict(va) == s.predict(va)
    assert s.size_bytes() == 2**14 * 16 * 2 + 16 * len(ls.labels) * 4 + len(ls.labels) * 4


def test_ngram_deterministic_for_seed() -> None:
    ls = small_banking(n_classes=4, per_class=15)
    a = NgramStudent(**FAST_NGRAM, seed=3).fit(ls.texts, ls.probs, labels=ls.labels)
    b = NgramStudent(**FAST_NGRAM, seed=3).fit(ls.texts, ls.probs, labels=ls.labels)
    np.testing.assert_array_equal(a.predict_logits(ls.texts), b.predict_logits(ls.texts))


def test_student_load_errors(tmp_path: Path) -> None:
    ls = small_banking(n_classes=3, per_class=10)
    s = NgramStudent(bits=10, dim=8, epochs=1).fit(ls.texts, ls.probs, labels=ls.labels)
    s.save(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / "student.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "a" / "student.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="newer"):
        load_student(tmp_path / "a")
    s.save(tmp_path / "b")
    (tmp_path / "b" / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        load_student(tmp_path / "b")
    with pytest.raises(ConfigError, match="unknown student"):
        student_class("gpt")


def test_static_with_tiny_model(tmp_path: Path) -> None:
    ls = small_banking()
    base = tiny_static_model(tmp_path / "m2v", ls.texts)
    tr, trp, va, vap = _split(ls)
    s = StaticStudent(base=str(base), head="linear", epochs=30).fit(
        tr, trp, labels=ls.labels, val_texts=va, val_probs=vap
    )
    assert s.features(["", "unknownword"]).shape == (2, 32)  # empty / all-unknown → zero vector, no crash
    agreement = np.mean(s.predict(va) == np.array(ls.labels)[vap.argmax(1)])
    assert agreement > 0.3, agreement  # random word vectors; chance is 0.125
    s.save(tmp_path / "st")
    assert (tmp_path / "st" / "tokenizer.json").exists()
    t = load_student(tmp_path / "st")
    np.testing.assert_allclose(t.predict_proba(va), s.predict_proba(va), rtol=1e-4, atol=1e-6)
    (tmp_path / "st" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        load_student(tmp_path / "st")


def test_ngram_and_static_predict_without_torch(tmp_path: Path) -> None:
    ls = small_banking(n_classes=3, per_class=10)
    NgramStudent(bits=10, dim=8, epochs=1).fit(ls.texts, ls.probs, labels=ls.labels).save(tmp_path / "ng")
    base = tiny_static_model(tmp_path / "m2v", ls.texts)
    StaticStudent(base=str(base), head="mlp", hidden=8, epochs=2).fit(
        ls.texts, ls.probs, labels=ls.labels
    ).save(tmp_path / "st")
    code = (
        "import sys\n"
        "from distil.students import load_student\n"
        f"for f in [{str(tmp_path / 'ng')!r}, {str(tmp_path / 'st')!r}]:\n"
        "    s = load_student(f)\n"
        "    p = s.predict_proba(['my card was declined', ''])\n"
        "    assert p.shape == (2, 3), p.shape\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


@pytest.mark.slow
def test_static_real_distillation(tmp_path: Path) -> None:
    """Distils (or reuses the cached) model2vec embeddings of all-MiniLM-L6-v2 (~30-200 s first time)."""
    pytest.importorskip("skeletoken")
    ls = small_banking()
    tr, trp, va, vap = _split(ls)
    s = StaticStudent(epochs=40).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    assert np.mean(s.predict_logits(va).argmax(1) == vap.argmax(1)) > 0.7
    assert s.features(va).shape == (len(va), 256)


@pytest.mark.slow
def test_encoder_student_and_truncation(tmp_path: Path) -> None:
    from distil.students.encoder import EncoderStudent, TruncationWarning

    ls = small_banking(n_classes=5, per_class=20)
    tr, trp, va, vap = _split(ls)
    s = EncoderStudent(max_seq_length=32).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    assert np.mean(s.predict_logits(va).argmax(1) == vap.argmax(1)) > 0.7
    with pytest.warns(TruncationWarning, match="longer than 32 tokens"):
        p = s.predict_proba(["card " * 500])
    assert p.shape == (1, 5)
    s.save(tmp_path / "enc")
    t = load_student(tmp_path / "enc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(t.predict_proba(va), s.predict_proba(va), rtol=1e-4, atol=1e-5)
    assert s.size_bytes() > 20e6  # the frozen encoder's weights count


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_finetune_checkpoint_resume_and_refusal(tmp_path: Path) -> None:
    from distil.students.finetune import FinetuneStudent

    ls = small_banking(n_classes=4, per_class=25)
    tr, trp, va, vap = _split(ls)
    ckpt = tmp_path / "ckpt"
    kw = {"max_seq_length": 24, "epochs": 2, "batch_size": 16, "checkpoint_dir": str(ckpt)}

    def stop(epoch: int) -> None:
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        FinetuneStudent(**kw, on_epoch_end=stop).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    state = json.loads((ckpt / "state.json").read_text())
    assert state["epoch"] == 1
    s = FinetuneStudent(**kw).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    assert s.resumed_from_ == 1
    assert [h["epoch"] for h in s.history_] == [1, 2]
    assert json.loads((ckpt / "state.json").read_text())["epoch"] == 2
    assert s.predict_proba(va).shape == (len(va), 4)
    # changed data → refused with a clear message
    with pytest.raises(ConfigError, match="other data"):
        FinetuneStudent(**kw).fit(tr[:-1], trp[:-1], labels=ls.labels, val_texts=va, val_probs=vap)
    # changed config → refused, naming the key
    with pytest.raises(ConfigError, match="lr"):
        FinetuneStudent(**{**kw, "lr": 1e-4}).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    s.save(tmp_path / "ft")
    t = load_student(tmp_path / "ft")
    np.testing.assert_allclose(t.predict_proba(va), s.predict_proba(va), rtol=1e-4, atol=1e-5)
