"""The tuned static student and the numpy ensemble: what tuning moves, save/load, numpy-only prediction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _distil_helpers import small_banking, tiny_static_model

from distil.errors import ArtifactError, ConfigError
from distil.students import load_student
from distil.students.base import softmax
from distil.students.ensemble import EnsembleStudent
from distil.students.ngram import NgramStudent
from distil.students.static import StaticStudent
from distil.students.tuned import TunedStaticStudent

ROOT = Path(__file__).resolve().parents[1]
FAST_NGRAM = {"bits": 12, "dim": 16, "epochs": 8}


def _split(ls, every: int = 4):  # type: ignore[no-untyped-def]
    val = [i for i in range(len(ls)) if i % every == 0]
    tr = [i for i in range(len(ls)) if i % every != 0]
    return ([ls.texts[i] for i in tr], ls.probs[tr], [ls.texts[i] for i in val], ls.probs[val])


def _agreement(student, texts, probs) -> float:  # type: ignore[no-untyped-def]
    return float(np.mean(student.predict_logits(texts).argmax(1) == probs.argmax(1)))


def test_tuning_the_rows_beats_a_frozen_table(tmp_path: Path) -> None:
    """On random word vectors a head alone learns little; tuning the rows the pool uses learns the task."""
    ls = small_banking()
    base = tiny_static_model(tmp_path / "m2v", ls.texts, dim=16)
    tr, trp, va, vap = _split(ls)
    frozen = StaticStudent(base=str(base), head="linear", epochs=40).fit(
        tr, trp, labels=ls.labels, val_texts=va, val_probs=vap
    )
    tuned = TunedStaticStudent(base=str(base), head="linear", epochs=40, lr=0.01, emb_lr=0.05).fit(
        tr, trp, labels=ls.labels, val_texts=va, val_probs=vap
    )
    a_frozen, a_tuned = _agreement(frozen, va, vap), _agreement(tuned, va, vap)
    assert a_tuned >= a_frozen + 0.1, (a_frozen, a_tuned)


def test_tuned_keeps_unseen_rows_and_round_trips(tmp_path: Path) -> None:
    ls = small_banking(n_classes=4, per_class=20)
    base = tiny_static_model(tmp_path / "m2v", [*ls.texts, "zebra quokka"], dim=16)
    tr, trp, va, _ = _split(ls)
    s = TunedStaticStudent(base=str(base), hidden=16, epochs=5).fit(tr, trp, labels=ls.labels)
    before = StaticStudent(base=str(base))
    before._prepare()
    unseen = before.tokenizer_.encode("zebra quokka", add_special_tokens=False).ids
    seen = before.tokenizer_.encode(tr[0], add_special_tokens=False).ids
    np.testing.assert_array_equal(s.embeddings_[unseen], before.embeddings_[unseen].astype(np.float16))
    assert not np.allclose(s.embeddings_[seen], before.embeddings_[seen])
    assert s.features(["", "zebra"]).shape == (2, 16)  # empty text → a zero vector, no crash
    s.save(tmp_path / "tu")
    t = load_student(tmp_path / "tu")
    assert isinstance(t, TunedStaticStudent) and t.get_params()["emb_lr"] == s.emb_lr
    np.testing.assert_allclose(t.predict_logits(va), s.predict_logits(va), rtol=1e-5, atol=1e-5)


def test_ensemble_averages_calibrated_members_and_reuses_fitted_ones(tmp_path: Path) -> None:
    ls = small_banking()
    base = tiny_static_model(tmp_path / "m2v", ls.texts, dim=16)
    tr, trp, va, vap = _split(ls)
    ngram = NgramStudent(**FAST_NGRAM).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    tuned_kw = {"base": str(base), "hidden": 16, "epochs": 10, "emb_lr": 0.05}
    ens = EnsembleStudent(
        members=["ngram", "tuned"], params={"ngram": FAST_NGRAM, "tuned": tuned_kw}, reuse={"ngram": ngram}
    ).fit(tr, trp, labels=ls.labels, val_texts=va, val_probs=vap)
    assert ens.members_[0] is ngram  # reused, not trained again
    assert isinstance(ens.members_[1], TunedStaticStudent)
    logp = ens.predict_logits(va)
    assert (np.exp(logp).sum(1) <= 1.0 + 1e-5).all()  # a geometric mean of distributions sums to at most 1
    manual = sum(
        np.log(np.clip(softmax(m.predict_logits(va) / t), 1e-30, 1))
        for m, t in zip(ens.members_, ens.member_temperatures_, strict=True)
    ) / 2
    np.testing.assert_allclose(logp, manual, rtol=1e-4, atol=1e-4)
    assert ens.features(va).shape == (len(va), 16 + 16)  # ngram dim + tuned dim
    assert ens.size_bytes() == ngram.size_bytes() + ens.members_[1].size_bytes()
    ens.save(tmp_path / "en")
    back = load_student(tmp_path / "en")
    assert "reuse" not in back.config_params()
    np.testing.assert_allclose(back.predict_proba(va), ens.predict_proba(va), rtol=1e-4, atol=1e-5)
    (tmp_path / "en" / "members" / "tuned" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        load_student(tmp_path / "en")


@pytest.mark.parametrize("members", [["ngram"], ["ngram", "encoder"], ["ngram", "ngram"], ["ngram", "ensemble"]])
def test_ensemble_refuses_bad_members(members: list[str]) -> None:
    ls = small_banking(n_classes=3, per_class=5)
    with pytest.raises(ConfigError, match="two or more distinct numpy students"):
        EnsembleStudent(members=members).fit(ls.texts, ls.probs, labels=ls.labels)


def test_tuned_and_ensemble_predict_without_torch(tmp_path: Path) -> None:
    ls = small_banking(n_classes=3, per_class=10)
    base = tiny_static_model(tmp_path / "m2v", ls.texts, dim=8)
    params = {"ngram": {"bits": 10, "dim": 8, "epochs": 1}, "tuned": {"base": str(base), "hidden": 8, "epochs": 2},
              "static": {"base": str(base), "hidden": 8, "epochs": 2}}
    EnsembleStudent(params=params).fit(ls.texts, ls.probs, labels=ls.labels).save(tmp_path / "en")
    TunedStaticStudent(**params["tuned"]).fit(ls.texts, ls.probs, labels=ls.labels).save(tmp_path / "tu")
    code = (
        "import sys\n"
        "from distil.students import load_student\n"
        f"for f in [{str(tmp_path / 'en')!r}, {str(tmp_path / 'tu')!r}]:\n"
        "    p = load_student(f).predict_proba(['my card was declined', ''])\n"
        "    assert p.shape == (2, 3), p.shape\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_crossfit_copies_of_an_ensemble_train_their_own_members(tmp_path: Path) -> None:
    """A fold's copy must not reuse members fitted on the whole pool (they saw the fold it scores)."""
    from distil.route import crossfit_scores

    ls = small_banking(n_classes=4, per_class=12)
    base = tiny_static_model(tmp_path / "m2v", ls.texts, dim=8)
    params = {"ngram": FAST_NGRAM, "tuned": {"base": str(base), "hidden": 8, "epochs": 3},
              "static": {"base": str(base), "hidden": 8, "epochs": 3}}
    whole = NgramStudent(**FAST_NGRAM).fit(ls.texts, ls.probs, labels=ls.labels)
    with_reuse = EnsembleStudent(params=params, reuse={"ngram": whole})
    fresh = EnsembleStudent(params=params)
    a = crossfit_scores(with_reuse, ls, folds=3)
    b = crossfit_scores(fresh, ls, folds=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_the_ladder_trains_each_member_of_an_ensemble_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distil.artifact import load_artifact
    from distil.train import train

    calls: list[int] = []
    real_fit = TunedStaticStudent.fit

    def counting_fit(self, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_fit(self, *a, **kw)

    monkeypatch.setattr(TunedStaticStudent, "fit", counting_fit)
    ls = small_banking(n_classes=4, per_class=20)
    base = tiny_static_model(tmp_path / "m2v", ls.texts, dim=8)
    params = {"ngram": FAST_NGRAM, "tuned": {"base": str(base), "hidden": 8, "epochs": 3},
              "static": {"base": str(base), "hidden": 8, "epochs": 3}}
    res = train(ls, tmp_path / "art", students=("ngram", "static", "tuned", "ensemble"), params=params, resume=False,
                routing={"calibration": "heldout"})  # no cross-fitted copies: only the ladder's fits count
    assert len(calls) == 1  # the ensemble reused the ladder's tuned member
    assert [r["name"] for r in res.ladder] == ["ngram", "static", "tuned", "ensemble"]
    art = load_artifact(tmp_path / "art")
    ens = art.student("ensemble")
    assert isinstance(ens, EnsembleStudent) and list(ens.members) == ["ngram", "static", "tuned"]
    np.testing.assert_allclose(ens.predict_proba(ls.texts[:5]).sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["ngram", "static", "tuned", "ensemble", "encoder", "finetune"])
def test_students_pass_sklearn_clone(name: str) -> None:
    """scikit-learn's clone rebuilds a student from get_params (no fitted state, same parameters)."""
    from sklearn.base import clone

    from distil.students import student_class

    student = student_class(name)(seed=7)
    copy = clone(student)
    assert type(copy) is type(student) and copy is not student
    assert copy.get_params() == student.get_params()
    assert copy.set_params(seed=3).seed == 3
    with pytest.raises(ConfigError, match="unknown parameter"):
        copy.set_params(colour="red")
