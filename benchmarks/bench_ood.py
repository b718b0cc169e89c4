"""OOD-guard benchmark: how much off-topic text the student answers alone, by guard setting.

Two streams, an ``ngram+static`` artifact each (the ngram student routed, the guard in the static
member's space, as ``distil train`` does by default), a gold-oracle teacher:

* **banking77, 5 intents**: the task knows 5 of the 77 intents; 150 test messages of the other 72
  (near-domain: banking questions the task has no label for) plus three far ones are off-topic;
* **clinc150**: the 150 in-scope intents; the 1,000 out-of-scope test queries are off-topic.

Guards compared in one run (all k-NN, flagging at the 0.99 quantile of in-distribution scores):

* **before** — k = 10, the quantile of the held-out scores alone (the guard before this benchmark);
* **leave-one-out, k = 10** — the quantile over held-out *and* every reference text scored
  leave-one-out (thousands of scores instead of a few hundred);
* **leave-one-out, k = 3** — distil's default now; **k = 1** separates a little better still, but
  flags more in-scope traffic that is slightly unlike the training split (and so alarms ``drift``);
* **MiniLM space, k = 3** — the same guard on a frozen all-MiniLM-L6-v2 embedding (a stronger space
  that costs a transformer pass per request; ``--minilm`` to include it).

Per guard: AUROC (in-scope test vs off-topic), the in-scope and off-topic shares flagged, and the
off-topic share the student answers alone at the router's confidence threshold (target 0.95 and 0.99,
certified as ``distil train`` does).  Run::

    .venv/bin/python benchmarks/bench_ood.py [--sets banking5,clinc150] [--minilm] [--out runs/bench_ood]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tables import markdown_table

from distil.artifact import load_artifact
from distil.data import LabeledSet
from distil.route import OODDetector, Router, roc_auc
from distil.train import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
Embed = Callable[[list[str]], np.ndarray]


@dataclass
class Stream:
    name: str
    pool: list[tuple[str, str]]
    test: list[tuple[str, str]]
    off_topic: list[str]


def _csv(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def banking5(seed: int = 0) -> Stream:
    train_rows, test_rows = _csv(DATA / "banking77" / "train.csv"), _csv(DATA / "banking77" / "test.csv")
    rng = np.random.default_rng(seed)
    labels = set(rng.choice(sorted({g for _, g in train_rows}), 5, replace=False).tolist())
    others = [t for t, g in test_rows if g not in labels]
    off = [others[i] for i in rng.choice(len(others), 150, replace=False)]
    off += ["what is the weather in Paris", "tell me a joke", "who won the football game yesterday"]
    return Stream("banking77, 5 intents", [r for r in train_rows if r[1] in labels],
                  [r for r in test_rows if r[1] in labels], off)


def clinc150() -> Stream:
    d = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    return Stream("clinc150", [(t, g) for t, g in d["train"] + d["val"]], [(t, g) for t, g in d["test"]],
                  [t for t, _ in d["oos_test"]])


def artifact(stream: Stream, folder: Path) -> Path:
    """Train (once; reused when ``folder`` holds it) the ngram+static artifact on the gold-oracle teacher."""
    if (folder / "router.json").exists():
        return folder
    labels = sorted({g for _, g in stream.pool})
    texts = list(dict.fromkeys(t for t, _ in stream.pool))
    answer = dict(stream.pool)
    probs = np.full((len(texts), len(labels)), 0.1 / (len(labels) - 1), dtype=np.float32)
    probs[np.arange(len(texts)), [labels.index(answer[t]) for t in texts]] = 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(LabeledSet(texts, probs, labels, teacher="gold"), folder, students=("ngram", "static"),
              router_target=0.95)
    return folder


def guards(minilm: bool) -> dict[str, tuple[str, int, bool]]:
    """name → (space, k, leave-one-out)."""
    out = {"before (k=10, held-out quantile)": ("static", 10, False),
           "leave-one-out, k=10": ("static", 10, True), "leave-one-out, k=3 (default)": ("static", 3, True),
           "leave-one-out, k=1": ("static", 1, True)}
    if minilm:
        out["MiniLM space, k=3"] = ("minilm", 3, True)
    return out


def _minilm() -> Embed:
    from sentence_transformers import SentenceTransformer

    from distil.models import model_path

    model = SentenceTransformer(str(model_path("all-MiniLM-L6-v2")), device="cpu")
    return lambda texts: np.asarray(model.encode(texts, batch_size=128, normalize_embeddings=True))


def measure(stream: Stream, folder: Path, minilm: bool) -> list[list[str]]:
    art = load_artifact(folder)
    held = art.heldout().texts
    ref = [t for t in dict.fromkeys(t for t, _ in stream.pool) if t not in set(held)]
    test = [t for t, _ in stream.test]
    spaces: dict[str, Embed] = {"static": lambda texts: art.student("static").features(texts)}
    if minilm:
        spaces["minilm"] = _minilm()
    routed = art.student("ngram")
    conf_in, conf_off = routed.predict_proba(test).max(axis=1), routed.predict_proba(stream.off_topic).max(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thresholds = {t: Router.load(folder, target_agreement=t).threshold for t in (0.95, 0.99)}
    rows = []
    feats = {name: [f(x) for x in (ref, held, test, stream.off_topic)] for name, f in spaces.items()}
    for name, (space, k, loo) in guards(minilm).items():
        r, h, i, o = feats[space]
        det = OODDetector(k=k, quantile=0.99).fit(r, h)
        if not loo:
            det.threshold_ = float(np.quantile(det.score(h), 0.99, method="higher"))
        si, so = det.score(i), det.score(o)
        fi, fo = si > det.threshold_, so > det.threshold_
        local = [f"{float(((conf_off >= thr) & ~fo).mean()):.1%}" for thr in thresholds.values()]
        in_local = [f"{float(((conf_in >= thr) & ~fi).mean()):.1%}" for thr in thresholds.values()]
        rows.append([stream.name, name, f"{roc_auc(si, so):.4f}", f"{fi.mean():.1%}", f"{fo.mean():.1%}",
                     *[f"{a} / {b}" for a, b in zip(in_local, local, strict=True)]])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sets", default="banking5,clinc150")
    ap.add_argument("--out", default="runs/bench_ood")
    ap.add_argument("--minilm", action="store_true", help="also the guard in a frozen MiniLM space")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"datasets not found under {DATA}", file=sys.stderr)
        return 2
    makers: dict[str, Callable[[], Stream]] = {"banking5": banking5, "clinc150": clinc150}
    rows: list[list[str]] = []
    for name in args.sets.split(","):
        stream = makers[name]()
        rows += measure(stream, artifact(stream, Path(args.out) / name), args.minilm)
    header = ["data", "guard", "AUROC", "in-scope flagged", "off-topic flagged",
              "answered alone @0.95: in-scope / off-topic", "answered alone @0.99: in-scope / off-topic"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
