"""Shared fixtures: where the public datasets live, small task files, offline settings."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["llm_server"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTIL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def banking77(split: str = "train") -> list[tuple[str, str]]:
    """(text, intent) rows of banking77 from ../shared/data; skips the test if absent."""
    path = SHARED_DATA / "banking77" / f"{split}.csv"
    if not path.exists():
        pytest.skip(f"banking77 not found at {path}")
    with path.open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def clinc150(split: str = "train") -> list[tuple[str, str]]:
    """(text, intent) rows of clinc150 (split: train/val/test/oos_train/oos_val/oos_test)."""
    path = SHARED_DATA / "clinc150" / "data_full.json"
    if not path.exists():
        pytest.skip(f"clinc150 not found at {path}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(t, lab) for t, lab in data[split]]


@pytest.fixture
def shared_data() -> Path:
    """Folder holding banking77/ and clinc150/."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def banking_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str], list[str]]:
    """A real ngram artifact on a banking77 subset, trained once per session (artifact, task, pool, test)."""
    import fixtures_serve

    return fixtures_serve.banking_artifact_cached(tmp_path_factory)
