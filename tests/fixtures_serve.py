"""Function teachers and small data for the serving and routing tests.

The teachers are real callables run through distil's ``function`` teacher: they read the text and
decide (keyword rules), or fail on purpose (``down``), or hang (``hang``), so the server's
fallback, journal and circuit-breaker paths run for real.  ``flaky`` fails while the file named by
``$DISTIL_TEST_TEACHER_DOWN`` exists, so a test can stop and restart the teacher.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from teacher_fns import LABELS, keyword

__all__ = ["LABELS", "keyword"]  # re-exported: tasks name them as fixtures_serve:keyword

_TEMPLATES = {
    "card": [
        "my {adj} card has not arrived yet", "the card payment was declined at the {place}",
        "how do I activate my new card", "my card got stuck in the machine at the {place}",
        "someone used my card without permission", "can I get a {adj} card for my child",
        "the card was charged twice by the {place}", "my card expired last {time}",
    ],
    "transfer": [
        "how long does a transfer to {country} take", "my transfer is still pending since {time}",
        "I sent a transfer to the wrong account", "why was my transfer to {country} declined",
        "can I cancel a transfer I made {time}", "the transfer fee to {country} is too high",
        "transfer money to my {adj} savings account", "the incoming transfer has not shown up",
    ],
    "cash": [
        "the atm at the {place} did not give me cash", "how much cash can I withdraw {time}",
        "I was charged a fee for cash at the atm", "the atm kept my cash at the {place}",
        "where can I withdraw cash in {country}", "the cash withdrawal shows twice since {time}",
        "atm gave me the wrong amount of cash", "is there a limit on cash at the {place}",
    ],
    "other": [
        "how do I change my address", "I want to close my account {time}",
        "what are your opening hours in {country}", "how do I verify my identity",
        "I forgot my password {time}", "can I open a {adj} account",
        "my phone number has changed", "the app keeps crashing at the {place}",
    ],
}
_FILL = {
    "adj": ["new", "virtual", "premium", "old", "blue", "business", "joint", "spare"],
    "place": ["supermarket", "airport", "station", "mall", "hotel", "petrol station", "bakery", "cinema"],
    "country": ["france", "spain", "the uk", "germany", "italy", "japan", "brazil", "canada"],
    "time": ["yesterday", "last week", "monday", "this morning", "two days ago", "today", "friday", "night"],
}

#: Inputs unlike anything above (cooking, weather, sport): for the OOD guard.
FOREIGN = [
    "what is the best recipe for a chocolate cake", "will it rain in the mountains this weekend",
    "who won the football match last night", "how many calories are in a banana smoothie",
    "recommend a good science fiction novel", "how do I tune a guitar string",
    "what time does the sun set in summer", "translate good morning into italian please",
]


def make_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct banking-like texts from templates (deterministic for a seed)."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    labels = list(_TEMPLATES)
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        lab = labels[len(out) % len(labels)]
        tpl = rng.choice(_TEMPLATES[lab])
        text = tpl.format(**{k: rng.choice(v) for k, v in _FILL.items()})
        if rng.random() < 0.3:
            text = rng.choice(["hi, ", "hello, ", "please help: ", "urgent: "]) + text
        out[text] = None
    return list(out)


def down(texts: list[str]) -> list[str]:
    """A teacher that is always down."""
    raise ConnectionError("teacher unreachable (test)")


def flaky(texts: list[str]) -> list[dict[str, float]]:
    """``keyword``, except it fails while the file named by $DISTIL_TEST_TEACHER_DOWN exists."""
    flag = os.environ.get("DISTIL_TEST_TEACHER_DOWN")
    if flag and Path(flag).exists():
        raise ConnectionError("teacher stopped (test)")
    return keyword(texts)


def hang(texts: list[str]) -> list[dict[str, float]]:
    """A teacher that answers after 2 seconds (longer than the tests' teacher timeout)."""
    time.sleep(2.0)
    return keyword(texts)


TASK_TOML = """
name = "bank-serve"
instruction = "Which kind of banking request is this?"
labels = ["card", "transfer", "cash", "other"]

[input]
fields = ["text"]

[teacher]
kind = "function"
callable = "fixtures_serve:{fn}"
batch_size = 64
"""


def write_task(folder: Path, fn: str = "keyword") -> Path:
    """A task.toml in ``folder`` whose teacher is one of the functions above."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.toml"
    path.write_text(TASK_TOML.format(fn=fn), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# A numpy-only student for fast tests of the router and the server (no torch, trains in ms).


def centroid_student(texts: list[str], probs: Any, labels: list[str], *, bits: int = 12, dim: int = 64,
                     scale: float = 12.0, seed: int = 0) -> Any:
    """Fit a :class:`CentroidStudent` (defined lazily so that importing this module stays light)."""
    return _centroid_cls()(bits=bits, dim=dim, scale=scale, seed=seed).fit(texts, probs, labels=labels)


def _centroid_cls() -> Any:
    import numpy as np

    from distil.students.base import Student
    from distil.students.ngram import _mean_rows, hash_features

    class CentroidStudent(Student):
        """Hashed n-gram features with a fixed random embedding; logits = scaled cosine to class means."""

        name = "centroid"
        needs_torch = False

        def __init__(self, bits: int = 12, dim: int = 64, scale: float = 12.0, seed: int = 0) -> None:
            self.bits = bits
            self.dim = dim
            self.scale = scale
            self.seed = seed

        def _table(self) -> Any:
            rng = np.random.default_rng(self.seed)
            return rng.standard_normal((2**self.bits, self.dim)).astype(np.float32)

        def fit(self, texts, probs, *, labels, val_texts=None, val_probs=None, hard=False):  # type: ignore[no-untyped-def]
            p = self._start_fit(texts, probs, labels)
            self.table_ = self._table()
            f = self.features(texts)
            w = p / np.maximum(p.sum(axis=0, keepdims=True), 1e-9)
            c = w.T @ f
            self.centroids_ = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)
            return self

        def features(self, texts):  # type: ignore[no-untyped-def]
            b, ip = hash_features(list(texts), bits=self.bits)
            f = _mean_rows(self.table_, b, ip)
            return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-9)

        def predict_logits(self, texts):  # type: ignore[no-untyped-def]
            return (self.scale * self.features(texts) @ self.centroids_.T).astype(np.float32)

        def _state(self):  # type: ignore[no-untyped-def]
            return {"centroids": self.centroids_}

        def _set_state(self, state, folder):  # type: ignore[no-untyped-def]
            self.centroids_ = state["centroids"]
            self.table_ = self._table()

    return CentroidStudent


def centroid_router() -> Any:
    """A router on a centroid student: trained on 500 texts, threshold and OOD guard fitted on 300 more."""
    import numpy as np

    from distil.route import OODDetector, Router, RouterConfig, calibrate_threshold

    texts = make_texts(800, seed=0)
    probs = teacher_probs(texts)
    st = centroid_student(texts[:500], probs[:500], LABELS)
    held = texts[500:]
    # k=1: templates without slots make only a few texts each (deduplicated), so the 5th neighbour of
    # "my phone number has changed" is far even though it is in distribution
    det = OODDetector(k=1).fit(st.features(texts[:500]), st.features(held))
    proba = st.predict_proba(held)
    conf = np.where(det.predict(st.features(held)), -np.inf, proba.max(1))
    th = calibrate_threshold(conf, proba.argmax(1) == probs[500:].argmax(1), target=0.95)
    return Router(st, RouterConfig(member="centroid", labels=LABELS, threshold=th, ood=det.params()), det)


def teacher_probs(texts: list[str]) -> Any:
    """The ``keyword`` teacher's probabilities as an (n, 4) float32 array in LABELS order."""
    import numpy as np

    raw = np.array([[d[lab] for lab in LABELS] for d in keyword(texts)], dtype=np.float32)
    return raw / raw.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# banking77: a function teacher that knows the gold labels, and a tiny ngram artifact trained on it

BANKING_CLASSES = 6  # the first N intents (sorted) make the subset


def _banking_rows() -> list[tuple[str, str]]:
    import csv

    from conftest import SHARED_DATA

    rows: list[tuple[str, str]] = []
    for split in ("train", "test"):
        path = SHARED_DATA / "banking77" / f"{split}.csv"
        with path.open(encoding="utf-8") as fh:
            rows += [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    return rows


def banking_labels() -> list[str]:
    """The intents of the subset, sorted."""
    return sorted({lab for _, lab in _banking_rows()})[:BANKING_CLASSES]


_GOLD: dict[str, str] = {}
_WORDS: dict[str, set[str]] = {}


def banking_gold(texts: list[str]) -> list[dict[str, float]]:
    """Teacher for the banking77 subset: the gold intent of a known text (0.9, the rest spread);
    for an unseen text, the intent whose known texts share the most words with it (softer)."""
    if not _GOLD:
        labels = banking_labels()
        for text, lab in _banking_rows():
            if lab in labels:
                _GOLD[text] = lab
                _WORDS.setdefault(lab, set()).update(text.lower().split())
    labels = banking_labels()
    out = []
    for t in texts:
        lab = _GOLD.get(t)
        sure = 0.9
        if lab is None:
            words = set(t.lower().split())
            lab = max(labels, key=lambda c: (len(words & _WORDS[c]), c))
            sure = 0.6
        rest = (1.0 - sure) / (len(labels) - 1)
        out.append({c: (sure if c == lab else rest) for c in labels})
    return out


BANKING_TASK = """
name = "banking-subset"
instruction = "Which banking intent is this?"
labels = {labels}

[input]
fields = ["text"]

[teacher]
kind = "function"
callable = "fixtures_serve:banking_gold"
batch_size = 256
"""


def write_banking_task(folder: Path) -> Path:
    """task.toml for the banking77 subset with the ``banking_gold`` function teacher."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.toml"
    path.write_text(BANKING_TASK.format(labels=json.dumps(banking_labels())), encoding="utf-8")
    return path


def banking_split(seed: int = 0) -> tuple[list[str], list[str]]:
    """(training pool from banking77 train, test texts from banking77 test) for the subset."""
    from conftest import banking77

    labels = set(banking_labels())
    train = [t for t, lab in banking77("train") if lab in labels]
    test = [t for t, lab in banking77("test") if lab in labels]
    return train, test


def build_banking_artifact(folder: Path) -> tuple[Path, Path, list[str], list[str]]:
    """Label the subset through the journal and train a small ngram artifact.

    Returns (artifact dir, task file, training texts, test texts).  Uses torch to train (slow).
    """
    from distil.label import label
    from distil.task import Task
    from distil.train import train

    task_path = write_banking_task(folder / "task")
    task = Task.load(task_path)
    pool, test = banking_split()
    res = label(task, pool)
    out = folder / "artifact"
    train(
        res.labeled, out, students=["ngram"], seed=0, heldout_frac=0.3,
        params={"ngram": {"bits": 14, "dim": 16, "epochs": 4}}, task_fingerprint=task.fingerprint(),
    )
    return out, task_path, pool, test


def banking_artifact_cached(tmp_path_factory: Any) -> tuple[Path, Path, list[str], list[str]]:
    """:func:`build_banking_artifact` once per test session (shared by the route and serve tests)."""
    import pytest
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "banking77" / "train.csv").exists():
        pytest.skip(f"banking77 not found under {SHARED_DATA}")
    root = Path(tmp_path_factory.getbasetemp()) / "banking_artifact"
    done = root / "built.json"
    if done.exists():
        pool, test = banking_split()
        return root / "artifact", root / "task" / "task.toml", pool, test
    if root.exists():
        import shutil

        shutil.rmtree(root)
    out = build_banking_artifact(root)
    done.write_text("{}", encoding="utf-8")
    return out


@contextmanager
def uvicorn_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port in a thread; yields its base URL."""
    import threading

    import uvicorn
    from llm_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
