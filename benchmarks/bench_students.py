"""Benchmark the student ladder against a real teacher (not run in CI).

For banking77 and clinc150 (in-scope) from ../shared/data: gold train is split into two
disjoint halves; the teacher is all-mpnet-base-v2 + a logistic-regression head fitted on half
A; it labels half B (soft probabilities); students train on those only; everything is scored on
the gold test split.  mpnet embeddings are cached in benchmarks/results/*.npz.

    .venv/bin/python benchmarks/bench_students.py [--embed-only] [--datasets banking77,clinc150,clinc150-full]
        [--finetune-steps 300] [--students ngram,static,tuned,ensemble,encoder] [--with-hard]
        [--extra-static all-mpnet-base-v2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
CLINC_TRAIN_CAP = 6000
CLINC_TEST_CAP = 3000


CAP = int(os.environ.get("BENCH_CAP", "0"))  # smoke runs: cap train and test sizes


def load(name: str, full: bool = False) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, test) rows of (text, label); clinc150 subsampled (seeded) to keep the teacher quick.

    ``full=True`` (or the name ``clinc150-full``) keeps all of clinc150's in-scope train (15,000) and
    test (4,500) queries.
    """
    if name == "banking77":

        def rd(split: str) -> list[tuple[str, str]]:
            with (DATA / "banking77" / f"{split}.csv").open(encoding="utf-8") as fh:
                return [(r["text"], r["category"]) for r in csv.DictReader(fh)]

        tr0, te0 = rd("train"), rd("test")
        if CAP:
            rng0 = np.random.default_rng(0)
            tr0 = [tr0[i] for i in sorted(rng0.permutation(len(tr0))[:CAP])]
            te0 = [te0[i] for i in sorted(rng0.permutation(len(te0))[: CAP // 3])]
        return tr0, te0
    full = full or name == "clinc150-full"  # the whole in-scope train split (pool 7,500 = 50 per class)
    data = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(0)
    tr = [tuple(x) for x in data["train"]]
    te = [tuple(x) for x in data["test"]]
    if full:
        return tr, te  # type: ignore[return-value]
    tr = [tr[i] for i in sorted(rng.permutation(len(tr))[:CLINC_TRAIN_CAP])]
    te = [te[i] for i in sorted(rng.permutation(len(te))[:CLINC_TEST_CAP])]
    return tr, te  # type: ignore[return-value]


def mpnet_embed(name: str, split: str, texts: list[str]) -> np.ndarray:
    """mpnet embeddings, cached on disk by dataset/split (checked against the texts' hash)."""
    import hashlib

    RESULTS.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    path = RESULTS / f"mpnet_{name}_{split}_{key}.npz"
    if path.exists():
        return np.load(path)["emb"]
    from sentence_transformers import SentenceTransformer

    from distil.models import model_path

    model = SentenceTransformer(str(model_path("all-mpnet-base-v2")), device="cpu")
    t0 = time.time()
    emb = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    print(f"[{name}/{split}] embedded {len(texts)} texts in {time.time() - t0:.0f}s", flush=True)
    np.savez(path, emb=emb.astype(np.float32), seconds=time.time() - t0)
    return np.asarray(emb, dtype=np.float32)


def halves(train: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
    """Two disjoint seeded halves of the gold train split."""
    idx = np.random.default_rng(1).permutation(len(train))
    return sorted(idx[: len(idx) // 2].tolist()), sorted(idx[len(idx) // 2 :].tolist())


def timed(fn, texts: list[str], calls: int = 20) -> tuple[float, float]:
    """(median CPU ms per call at batch 1, predictions/s at batch 256 wall)."""
    fn(texts[:1])
    ts = []
    for i in range(calls):
        t0 = time.process_time()
        fn([texts[i % len(texts)]])
        ts.append(time.process_time() - t0)
    batch = [texts[i % len(texts)] for i in range(256)]
    t0 = time.perf_counter()
    fn(batch)
    return 1000 * float(np.median(ts)), 256 / (time.perf_counter() - t0)


def row(
    system: str,
    pred: list[str],
    gold: list[str],
    teacher_pred: list[str],
    teacher_acc: float,
    ms: float,
    pps: float,
    mb: float,
    train_s: float,
    note: str = "",
) -> dict:
    acc = float(np.mean([p == g for p, g in zip(pred, gold, strict=True)]))
    agree = float(np.mean([p == t for p, t in zip(pred, teacher_pred, strict=True)]))
    return {
        "system": system,
        "acc": acc,
        "agree": agree,
        "retention": acc / teacher_acc,
        "ms": ms,
        "pps": pps,
        "mb": mb,
        "train_s": train_s,
        "note": note,
    }


def fmt(rows: list[dict]) -> str:
    head = (
        "| system | acc vs gold | agreement w/ teacher | retention | CPU ms/pred b1 | preds/s b256 "
        "| size MB | train s | note |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if r.get("skip"):
            lines.append(f"| {r['system']} | – | – | – | – | – | – | – | {r['note']} |")
            continue
        lines.append(
            f"| {r['system']} | {r['acc']:.4f} | {r['agree']:.4f} | {r['retention']:.3f} | {r['ms']:.3f} "
            f"| {r['pps']:.0f} | {r['mb']:.1f} | {r['train_s']:.1f} | {r['note']} |"
        )
    return "\n".join(lines)


def run(ds: str, finetune_steps: int, students: list[str], with_hard: bool = False,
        extra_static: str = "") -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    from distil.artifact import load_artifact
    from distil.data import LabeledSet
    from distil.train import train

    train_rows, test_rows = load(ds)
    emb_tr = mpnet_embed(ds, "train", [t for t, _ in train_rows])
    emb_te = mpnet_embed(ds, "test", [t for t, _ in test_rows])
    a_idx, b_idx = halves(train_rows)
    ya = [train_rows[i][1] for i in a_idx]
    labels = sorted(set(ya))  # the teacher knows the labels it was fitted on (all of them, in full runs)
    t0 = time.time()
    head = LogisticRegression(C=10.0, max_iter=2000).fit(emb_tr[a_idx], ya)
    assert list(head.classes_) == labels
    teacher_fit_s = time.time() - t0
    probs_b = head.predict_proba(emb_tr[b_idx]).astype(np.float32)
    test_texts = [t for t, _ in test_rows]
    gold = [lab for _, lab in test_rows]
    teacher_pred = [labels[i] for i in head.predict_proba(emb_te).argmax(1)]
    teacher_acc = float(np.mean([p == g for p, g in zip(teacher_pred, gold, strict=True)]))
    # teacher cost: mpnet per text (batch 1 CPU, median of a few) and the cached batch embedding rate
    from sentence_transformers import SentenceTransformer

    from distil.models import model_path

    mp = SentenceTransformer(str(model_path("all-mpnet-base-v2")), device="cpu")
    import torch

    torch.set_num_threads(1)  # per-core numbers, like the ladder's
    tms, tpps = timed(
        lambda x: head.predict_proba(mp.encode(x, normalize_embeddings=True)), test_texts, calls=5
    )
    rows = [
        row(
            "teacher: mpnet + LR (half A gold)",
            teacher_pred,
            gold,
            teacher_pred,
            teacher_acc,
            tms,
            tpps,
            438.0,
            teacher_fit_s,
            "fit s excludes embedding",
        )
    ]
    ls = LabeledSet(
        [train_rows[i][0] for i in b_idx],
        probs_b,
        labels,
        gold=[train_rows[i][1] for i in b_idx],
        teacher="mpnet+LR",
    )
    params = {"finetune": {"max_steps": finetune_steps, "epochs": 1, "max_seq_length": 64, "batch_size": 16}}
    runs: list[tuple[str, bool, list[str], dict]] = [("soft", False, students, params)]
    if with_hard:
        runs.append(("hard", True, students, params))
    if extra_static:  # the static rung distilled from another encoder (the teacher's own, mpnet)
        runs.append((f"soft, {extra_static} base", False, ["static"], {"static": {"base": extra_static}}))
    for tag, hard, names, prm in runs:
        out = RESULTS / f"artifact_{ds}_{tag.replace(', ', '_').replace(' ', '_')}"
        res = train(
            ls,
            out,
            students=names,
            target=0.95,
            hard=hard,
            resume=False,
            params=prm,
            progress=lambda m: print(f"  [{ds}] {m}", flush=True),
        )
        art = load_artifact(out)
        for rec in res.ladder:
            st = art.student(rec["name"])
            pred = [labels[i] for i in st.predict_logits(test_texts).argmax(1)]
            note = "chosen" if rec["chosen"] and len(names) > 1 else ""
            if rec["name"] == "finetune":
                note = (note + f"; capped at {finetune_steps} steps").strip("; ")
            if rec["name"] == "ensemble":
                note = (note + "; ngram + static + tuned, members reused from the ladder").strip("; ")
            rows.append(
                row(
                    f"{rec['name']} ({tag})",
                    pred,
                    gold,
                    teacher_pred,
                    teacher_acc,
                    rec["ms_per_pred"],
                    rec["preds_per_s"],
                    rec["size_mb"],
                    rec["train_s"],
                    note,
                )
            )
        print(fmt(rows), flush=True)
    # TF-IDF + LR on the teacher's labels
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    t0 = time.time()
    tf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(C=10.0, max_iter=2000),
    ).fit(ls.texts, ls.teacher_labels)
    tf_s = time.time() - t0
    ms, pps = timed(tf.predict_proba, test_texts)
    mb = (tf[1].coef_.nbytes + tf[0].idf_.nbytes + sum(len(k) for k in tf[0].vocabulary_)) / 1e6
    rows.append(
        row(
            "TF-IDF + LR (teacher labels)",
            list(tf.predict(test_texts)),
            gold,
            teacher_pred,
            teacher_acc,
            ms,
            pps,
            mb,
            tf_s,
        )
    )
    # model2vec's own classifier on the same static base
    try:
        from model2vec.train import StaticModelForClassification

        from distil.students.static import static_base_path

        t0 = time.time()
        clf = StaticModelForClassification.from_pretrained(
            path=str(static_base_path("all-MiniLM-L6-v2"))
        )
        clf = clf.fit(ls.texts, ls.teacher_labels, max_epochs=30, device="cpu")
        m2v_s = time.time() - t0
        pipe = clf.to_pipeline()
        ms, pps = timed(pipe.predict_proba, test_texts)
        rows.append(
            row(
                "model2vec StaticModelForClassification (teacher labels)",
                list(pipe.predict(test_texts)),
                gold,
                teacher_pred,
                teacher_acc,
                ms,
                pps,
                15.1,
                m2v_s,
                "hard labels only",
            )
        )
    except Exception as exc:  # report why, do not fail the benchmark
        rows.append({"system": "model2vec classifier", "skip": True, "note": f"not run: {exc}"[:150]})
    # fastText (supervised, teacher labels)
    try:
        import tempfile

        import fasttext

        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "train.txt"
            f.write_text(
                "\n".join(
                    f"__label__{lab.replace(' ', '_')} {t.replace(chr(10), ' ')}"
                    for t, lab in zip(ls.texts, ls.teacher_labels, strict=True)
                )
            )
            t0 = time.time()
            ft = fasttext.train_supervised(
                str(f),
                epoch=25,
                lr=0.5,
                wordNgrams=2,
                minn=3,
                maxn=5,
                dim=50,
                bucket=2**18,
                thread=1,
                verbose=0,
                seed=0,
            )
            ft_s = time.time() - t0
            ft.save_model(str(Path(tmp) / "m.bin"))
            mb = (Path(tmp) / "m.bin").stat().st_size / 1e6
        back = {lab.replace(" ", "_"): lab for lab in labels}

        def ft_pred(x: list[str]) -> list[str]:
            return [
                back[p[0].removeprefix("__label__")] for p in ft.predict([t.replace("\n", " ") for t in x])[0]
            ]

        ms, pps = timed(ft_pred, test_texts)
        rows.append(
            row(
                "fastText supervised (teacher labels)",
                ft_pred(test_texts),
                gold,
                teacher_pred,
                teacher_acc,
                ms,
                pps,
                mb,
                ft_s,
                "fasttext-numpy2-wheel 0.9.2, hard labels",
            )
        )
    except Exception as exc:
        rows.append({"system": "fastText", "skip": True, "note": f"not run: {exc}"[:150]})
    rows.append(
        {
            "system": "SetFit",
            "skip": True,
            "note": "not run: not installed (pulls datasets/another transformers into the shared venv); "
            "contrastive pair training of MiniLM is too slow on 2 shared cores",
        }
    )
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--embed-only", action="store_true")
    ap.add_argument("--datasets", default="banking77,clinc150")
    ap.add_argument("--finetune-steps", type=int, default=150)
    ap.add_argument("--students", default="ngram,static,tuned,ensemble,encoder,finetune")
    ap.add_argument("--with-hard", action="store_true", help="also train every student on hard labels")
    ap.add_argument("--extra-static", default="all-mpnet-base-v2",
                    help="also train a static rung distilled from this encoder ('' = none)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    for ds in args.datasets.split(","):
        train, test = load(ds)
        mpnet_embed(ds, "train", [t for t, _ in train])
        mpnet_embed(ds, "test", [t for t, _ in test])
        if args.embed_only:
            continue
        rows = run(ds, args.finetune_steps, args.students.split(","), args.with_hard, args.extra_static)
        table = fmt(rows)
        print(f"\n## {ds}\n{table}\n", flush=True)
        (RESULTS / f"students_{ds}.md").write_text(table + "\n", encoding="utf-8")
        (RESULTS / f"students_{ds}.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
