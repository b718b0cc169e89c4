"""train(): held-out split, calibration, selection, the artifact folder, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _distil_helpers import small_banking, tiny_static_model

from distil.artifact import load_artifact, predict
from distil.data import LabeledSet, read_labeled
from distil.errors import ArtifactError, ConfigError, DataError
from distil.train import split_heldout, train

NGRAM = {"bits": 13, "dim": 16, "epochs": 10}


def _params(tmp_path: Path, ls: LabeledSet) -> dict[str, dict[str, Any]]:
    base = tiny_static_model(tmp_path / "m2v", ls.texts)
    return {"ngram": NGRAM, "static": {"base": str(base), "head": "linear", "epochs": 30}}


def test_split_is_stratified_seeded_and_disjoint() -> None:
    hard = np.repeat(np.arange(4), [40, 20, 10, 1])
    tr, ho = split_heldout(hard, 0.25, seed=0)
    assert set(tr).isdisjoint(ho) and len(tr) + len(ho) == len(hard)
    assert [int((hard[ho] == c).sum()) for c in range(4)] == [10, 5, 3, 0]  # singleton stays in training
    _, ho2 = split_heldout(hard, 0.25, seed=0)
    assert np.array_equal(ho, ho2)
    assert not np.array_equal(ho, split_heldout(hard, 0.25, seed=1)[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, LabeledSet, Path]:
    tmp = tmp_path_factory.mktemp("train")
    ls = small_banking(n_classes=6, per_class=30)
    msgs: list[str] = []
    res = train(ls, tmp / "art", students=("ngram", "static"), target=0.0, params=_params(tmp, ls),
                progress=msgs.append, task_fingerprint="task123")
    assert any("training ngram" in m for m in msgs)
    return res, ls, tmp / "art"


def test_artifact_folder_and_selection(trained: tuple[Any, LabeledSet, Path]) -> None:
    res, ls, out = trained
    for f in ("distil_config.json", "labels.json", "ladder.json", "README.md", "heldout.parquet",
              "ladder/ngram/student.json", "ladder/static/weights.safetensors",
              "router.json", "ood.npz", "train_texts.sha256"):  # train() always fits the router
        assert (out / f).exists(), f
    cfg = json.loads((out / "distil_config.json").read_text())
    assert cfg["data_fingerprint"] == ls.fingerprint()
    assert cfg["teacher_fingerprint"] == "test-teacher" and cfg["task_fingerprint"] == "task123"
    assert cfg["format_version"] == 2 and cfg["labels"] == ls.labels
    # target 0: every student qualifies, so the cheapest by measured CPU ms/pred is chosen
    cheapest = min(res.ladder, key=lambda r: r["ms_per_pred"])
    assert res.chosen == cheapest["name"] == cfg["chosen"]
    assert sum(r["chosen"] for r in res.ladder) == 1
    for r in res.ladder:
        assert 0.0 <= r["agreement"] <= 1.0 and r["temperature"] > 0 and r["size_mb"] > 0
        assert r["ece"] <= r["ece_before"] + 0.05  # temperature scaling does not make calibration much worse
    art = load_artifact(out)
    assert art.members() == ["ngram", "static"] and art.labels == ls.labels
    held = art.heldout()
    assert len(held) == res.n_heldout and res.n_train + res.n_heldout == len(ls)
    assert set(held.texts) <= set(ls.texts)
    # the recorded agreement is reproducible from the stored student and held-out set
    st = art.student("ngram")
    rec = next(r for r in res.ladder if r["name"] == "ngram")
    assert np.mean(st.predict_proba(held.texts).argmax(1) == held.hard) == pytest.approx(rec["agreement"])
    assert st.temperature_ == pytest.approx(rec["temperature"])
    out_rows = predict(out, ["I lost my card", "how do I top up?"])
    assert len(out_rows) == 2 and out_rows[0]["label"] in ls.labels
    assert sum(out_rows[0]["probs"].values()) == pytest.approx(1.0, rel=1e-4)
    card = (out / "README.md").read_text()
    assert ls.fingerprint() in card and "test-teacher" in card and "load_artifact" in card


def test_the_router_is_certified_on_out_of_fold_scores_of_the_whole_pool(
    trained: tuple[Any, LabeledSet, Path],
) -> None:
    from distil.route import load_calibration

    _res, ls, out = trained
    router = json.loads((out / "router.json").read_text())
    assert router["info"]["calibration"] == "crossfit" and router["info"]["folds"] == 5
    assert router["info"]["calibration_n"] == len(ls) == router["threshold"]["n"]
    assert router["threshold"]["method"] == "ltt-fallback"
    stored = load_calibration(out)
    assert stored is not None and stored[0].shape == (len(ls),) and stored[2] == "crossfit"


def test_deterministic_for_seed(tmp_path: Path, trained: tuple[Any, LabeledSet, Path]) -> None:
    res, ls, _ = trained
    again = train(ls, tmp_path / "again", students=("ngram",), target=0.0, params={"ngram": NGRAM})
    first = next(r for r in res.ladder if r["name"] == "ngram")
    assert again.ladder[0]["agreement"] == first["agreement"]
    assert again.ladder[0]["temperature"] == first["temperature"]


def test_no_student_meets_target_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ls = small_banking(n_classes=4, per_class=15)
    res = train(ls, tmp_path / "a", students=("ngram",), target=1.01, params={"ngram": NGRAM})
    assert res.chosen == "ngram"
    assert any("no student reached the target" in w for w in res.warnings)
    assert "no student reached the target" in caplog.text


def test_few_labels_for_a_class_warns_naming_it(tmp_path: Path) -> None:
    ls = small_banking(n_classes=4, per_class=15)
    rare = ls.labels[3]
    keep = [i for i in range(len(ls)) if ls.hard[i] != 3][:] + [i for i in range(len(ls)) if ls.hard[i] == 3][:3]
    sub = LabeledSet([ls.texts[i] for i in keep], ls.probs[keep], ls.labels)
    res = train(sub, tmp_path / "a", students=("ngram",), target=0.0, params={"ngram": NGRAM})
    assert any(repr(rare) in w and "fewer than" in w for w in res.warnings)


def test_single_class_and_empty_texts_are_clear_errors(tmp_path: Path) -> None:
    p = np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (10, 1))
    with pytest.raises(DataError, match="same label 'a'"):
        train(LabeledSet([f"text {i}" for i in range(10)], p, ["a", "b"]), tmp_path / "x", students=("ngram",))
    with pytest.raises(DataError, match="all 10 texts are empty"):
        train(LabeledSet([" "] * 10, p, ["a", "b"]), tmp_path / "y", students=("ngram",))


def test_the_artifact_is_shaped_for_hugging_face_tools(trained: tuple[Any, LabeledSet, Path], tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    res, ls, out = trained
    hf = json.loads((out / "config.json").read_text())
    assert hf["id2label"] == {str(i): lab for i, lab in enumerate(ls.labels)}
    assert hf["label2id"] == {lab: i for i, lab in enumerate(ls.labels)} and hf["num_labels"] == len(ls.labels)
    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "distil" and meta["pipeline_tag"] == "text-classification"
    assert meta["distil"]["labels"] == ls.labels and meta["distil"]["data_fingerprint"] == ls.fingerprint()
    results = {r.metric_type: r.metric_value for r in card.data.eval_results or []}
    chosen = next(r for r in res.ladder if r["chosen"])
    assert results == {"agreement": pytest.approx(chosen["agreement"]), "ece": pytest.approx(chosen["ece"])}
    assert "# distil student" in card.text
    # no absolute path leaves with the artifact
    assert not any(Path(v).is_absolute() for k, v in json.loads((out / "distil_config.json").read_text()).items()
                   if k.endswith("path") and isinstance(v, str) and v)


def test_a_format_1_artifact_still_loads(trained: tuple[Any, LabeledSet, Path], tmp_path: Path) -> None:
    import shutil

    _, ls, out = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    cfg = json.loads((old / "distil_config.json").read_text())
    (old / "distil_config.json").unlink()
    (old / "config.json").write_text(json.dumps({**cfg, "format_version": 1}))
    art = load_artifact(old)
    assert art.config["format_version"] == 1 and art.labels == ls.labels
    assert predict(old, ["I lost my card"])[0]["label"] in ls.labels


def test_broken_artifacts_name_the_file(tmp_path: Path, trained: tuple[Any, LabeledSet, Path]) -> None:
    import shutil

    _, _, out = trained
    for name in ("ladder.json", "labels.json", "distil_config.json"):
        bad = tmp_path / name
        shutil.copytree(out, bad)
        (bad / name).unlink()
        with pytest.raises(ArtifactError, match=name):
            load_artifact(bad)
    newer = tmp_path / "newer"
    shutil.copytree(out, newer)
    cfg = json.loads((newer / "distil_config.json").read_text())
    cfg["format_version"] = 3
    (newer / "distil_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="distil_config.json: format_version 3 is newer"):
        load_artifact(newer)
    gone = tmp_path / "gone"
    shutil.copytree(out, gone)
    (gone / "heldout.parquet").unlink()
    with pytest.raises(ArtifactError, match="heldout.parquet"):
        load_artifact(gone).heldout()


def test_train_task_uses_the_journal_labeled_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distil.label
    from distil.task import Task
    from distil.train import train_task

    ls = small_banking(n_classes=3, per_class=12)
    task = Task.from_dict({"name": "t", "labels": ls.labels, "targets": {"min_agreement": 0.5, "min_retention": 0.6}},
                          base_dir=tmp_path)
    monkeypatch.setattr(distil.label, "labeled_set", lambda t, **kw: ls)
    res = train_task(task, students=("ngram",), params={"ngram": NGRAM})
    assert res.out == task.work_path / "student"
    cfg = json.loads((res.out / "distil_config.json").read_text())
    assert cfg["target"] == 0.5 and cfg["retention_target"] == 0.6  # two measures, two settings
    assert cfg["task_fingerprint"] == task.fingerprint()
    assert read_labeled(res.out / "heldout.parquet").labels == ls.labels


def test_gold_validation_set_drives_selection(tmp_path: Path) -> None:
    ls = small_banking(n_classes=4, per_class=25)
    more = small_banking(n_classes=4, per_class=40, seed=1)
    keep = [i for i in range(len(more)) if i % 40 >= 25]  # 15 per class, none of them in the training set
    assert not set(more.texts[i] for i in keep) & set(ls.texts)
    val = LabeledSet([more.texts[i] for i in keep], more.probs[keep], more.labels,
                     gold=[(more.gold or [])[i] for i in keep])
    # the "teacher" is wrong on every 4th validation text: retention can exceed agreement
    gold = list(val.gold or [])
    for i in range(0, len(gold), 4):
        gold[i] = val.labels[(val.labels.index(gold[i]) + 1) % 4]
    val = LabeledSet(val.texts, val.probs, val.labels, gold=gold)
    res = train(ls, tmp_path / "v", students=("ngram",), target=0.5, params={"ngram": NGRAM}, validation=val)
    rec = res.ladder[0]
    teacher_acc = float(np.mean(val.probs.argmax(1) == np.array([val.labels.index(g) for g in gold])))
    assert teacher_acc == pytest.approx(0.75, abs=0.02)
    assert rec["val_retention"] == pytest.approx(rec["val_gold_acc"] / teacher_acc, rel=1e-4)
    cfg = json.loads((tmp_path / "v" / "distil_config.json").read_text())
    assert cfg["selected_by"] == "val_retention" and cfg["validation"]["n"] == len(val)
    with pytest.raises(DataError, match="gold"):
        train(ls, tmp_path / "w", students=("ngram",), params={"ngram": NGRAM},
              validation=LabeledSet(val.texts, val.probs, val.labels))


def test_serving_recertifies_a_new_target_on_the_stored_scores(trained: tuple[Any, LabeledSet, Path]) -> None:
    from distil.route import Router

    _res, ls, out = trained
    router = Router.load(out, target_agreement=0.6, level=0.9)
    th = router.config.threshold
    assert th.n == len(ls) and th.target == 0.6 and th.level == 0.9  # all the cross-fitted scores, not the held-out
    with pytest.raises(ConfigError, match=r"between 0.5 and 1"):
        Router.load(out, target_agreement=0.6, level=0.3)


def test_the_ood_guard_scores_meaning_when_a_semantic_member_exists(
    trained: tuple[Any, LabeledSet, Path], tmp_path: Path
) -> None:
    import shutil

    from distil.route import Router, fit_router

    _res, ls, shared = trained
    out = Path(shutil.copytree(shared, tmp_path / "art"))  # refitting must not change the shared artifact
    cfg = fit_router(out, ls.texts, member="ngram", target_agreement=0.6, labeled=ls)
    assert cfg.member == "ngram" and cfg.ood is not None and cfg.ood["space"] == "static"
    router = Router.load(out)
    assert router.student is not router.ood_student and router.ood_student.name == "static"
    own = fit_router(out, ls.texts, member="ngram", target_agreement=0.6, ood_space="ngram")
    assert own.ood is not None and own.ood["space"] == "ngram"
    with pytest.raises(ConfigError, match="not a member"):
        fit_router(out, ls.texts, member="ngram", target_agreement=0.6, ood_space="encoder")
