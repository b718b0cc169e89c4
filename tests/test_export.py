"""``distil export``: a copy without the held-out texts or the OOD reference, saying what is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write_csv

from distil.artifact import load_artifact
from distil.route import Router

TESTS = Path(__file__).resolve().parent


def _distil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent / "src"), str(TESTS)]), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "distil", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_export_leaves_out_the_texts_and_the_guard_and_says_what_is_lost(
    banking_artifact: tuple[Path, Path, list[str], list[str]], tmp_path: Path
) -> None:
    from huggingface_hub import ModelCard

    src, _, _, test = banking_artifact
    art = tmp_path / "art"
    shutil.copytree(src, art)
    ship = tmp_path / "ship"
    proc = _distil("export", str(art), "--out", str(ship), "--no-heldout", "--no-ood-reference", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "left out heldout.parquet" in proc.stdout and "left out ood.npz" in proc.stdout
    assert not (ship / "heldout.parquet").exists() and not (ship / "ood.npz").exists()
    assert (art / "heldout.parquet").exists() and (art / "ood.npz").exists()  # the original is untouched
    card = ModelCard.load(ship / "README.md")
    assert card.data.to_dict()["library_name"] == "distil" and "## Left out of this copy" in card.text
    # the copy serves the same answers, without the guard
    full, shipped = Router.load(art), Router.load(ship)
    assert full.ood is not None and shipped.ood is None
    a = load_artifact(art).student().predict_proba(test[:50])
    b = load_artifact(ship).student().predict_proba(test[:50])
    assert np.array_equal(a, b)
    # what needs the held-out texts says so plainly
    recent = write_csv(tmp_path / "recent.csv", [{"text": t} for t in test[:40]])
    drift = _distil("drift", str(ship), str(recent), cwd=tmp_path)
    assert drift.returncode != 0 and "Traceback" not in drift.stderr
    assert "exported without its held-out texts" in drift.stderr
    # a full copy keeps everything; an occupied target is refused
    whole = _distil("export", str(art), "--out", str(tmp_path / "whole"), cwd=tmp_path)
    assert whole.returncode == 0 and (tmp_path / "whole" / "heldout.parquet").exists()
    again = _distil("export", str(art), "--out", str(ship), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_distil_load_reads_a_folder_or_a_hub_id_from_the_local_cache_offline(
    banking_artifact: tuple[Path, Path, list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub's cache layout (models--owner--name/refs/main → snapshots/<commit>/), as huggingface_hub
    documents it, filled with an exported artifact; HF_HUB_OFFLINE=1, so nothing is fetched."""
    import distil
    from distil.errors import ArtifactError

    src, _, _, test = banking_artifact
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--tickets-router"
    shutil.copytree(src, repo / "snapshots" / commit, ignore=shutil.ignore_patterns(".*"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    from_hub = distil.load("acme/tickets-router")
    from_folder = distil.load(src)
    assert from_hub.path == repo / "snapshots" / commit and from_hub.labels == from_folder.labels
    assert np.array_equal(from_hub.student().predict_proba(test[:20]), from_folder.student().predict_proba(test[:20]))
    with pytest.raises(ArtifactError, match="not in the local Hugging Face cache"):
        distil.load("acme/not-downloaded")
    # the command line takes the same id wherever it takes an artifact folder
    from distil.cli import main

    inputs = tmp_path / "in.csv"
    inputs.write_text("text\n" + "\n".join(f'"{t}"' for t in test[:5]) + "\n", encoding="utf-8")
    assert main(["predict", "acme/tickets-router", str(inputs), "--out", str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text(encoding="utf-8").count("\n") == 6
    assert main(["predict", "acme/not-downloaded", str(inputs)]) == 6  # ArtifactError, one line
    with pytest.raises(ArtifactError, match="not an artifact folder"):
        distil.load(tmp_path / "no" / "such" / "folder")
