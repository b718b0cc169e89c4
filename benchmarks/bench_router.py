"""Router benchmark: OOD detection on CLINC150, the cascade with and without the OOD guard, and the
share of traffic the student answers alone at a target agreement — on banking77 and CLINC150.

Teacher: the datasets' gold labels, as a function teacher would give them (probability 0.9 on the
gold intent, the rest spread evenly); for CLINC150's out-of-scope queries the teacher answers
"out of scope", which the student (trained on the 150 in-scope intents only) can never say.
Student: the ngram student (distil.train with students=["ngram"]), the quickest to train here.

Everything measured is printed as tables.  Run::

    .venv/bin/python benchmarks/bench_router.py [--epochs 6] [--bits 18] [--dim 64] [--out runs/bench_router]

Numbers depend on the machine only through time; the results are deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from distil.data import LabeledSet
from distil.route import (
    OODDetector,
    RoutingWarning,
    calibrate_threshold,
    clopper_pearson_lower,
    fit_router,
    roc_auc,
)
from distil.train import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def gold_teacher_probs(gold: list[str], labels: list[str], sure: float = 0.9) -> np.ndarray:
    """The function teacher's answers: ``sure`` on the gold label, the rest spread evenly."""
    idx = {lab: i for i, lab in enumerate(labels)}
    p = np.full((len(gold), len(labels)), (1 - sure) / (len(labels) - 1), dtype=np.float32)
    p[np.arange(len(gold)), [idx[g] for g in gold]] = sure
    return p


def load_banking() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    out = []
    for split in ("train", "test"):
        with (DATA / "banking77" / f"{split}.csv").open(encoding="utf-8") as fh:
            out.append([(r["text"], r["category"]) for r in csv.DictReader(fh)])
    return out[0], out[1]


def load_clinc() -> dict[str, list[tuple[str, str]]]:
    raw = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    return {k: [(t, lab) for t, lab in v] for k, v in raw.items()}


def build(name: str, rows: list[tuple[str, str]], out: Path, args: argparse.Namespace) -> tuple[Path, float]:
    labels = sorted({lab for _, lab in rows})
    texts = list(dict.fromkeys(t for t, _ in rows))
    gold_of = dict(rows)
    ls = LabeledSet(texts, gold_teacher_probs([gold_of[t] for t in texts], labels), labels, teacher="gold")
    t0 = time.perf_counter()
    if args.reuse and (out / "config.json").exists():
        return out, 0.0
    train(
        ls, out, students=["ngram"], seed=args.seed, heldout_frac=args.heldout_frac,
        params={"ngram": {"bits": args.bits, "dim": args.dim, "epochs": args.epochs}},
    )
    return out, time.perf_counter() - t0


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n{title}")
    body = [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    cells = [[str(c) for c in header], *body]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def coverage_rows(name: str, art: Path, train_texts: list[str], test: list[tuple[str, str]],
                  targets: list[float], starts: tuple[float, ...] = (0.0, 0.1, 0.25)) -> list[list[object]]:
    """Share answered by the student at each target, and what the guarantee looked like on test."""
    from distil.artifact import load_artifact

    rows: list[list[object]] = []
    student = load_artifact(art).student()
    labels = list(student.classes_)
    test_texts = [t for t, _ in test]
    gold = np.array([labels.index(g) for _, g in test])
    proba = student.predict_proba(test_texts)
    agree = proba.argmax(1) == gold  # the teacher is the gold labels here
    # without any guarantee: the largest share of *test* queries (most confident first) whose
    # agreement is still >= target — what an oracle that knew the test labels would pick
    cum = np.cumsum(agree[np.argsort(-proba.max(1))]) / np.arange(1, len(agree) + 1)
    from distil.route import Router

    for target in targets:
        ok = np.flatnonzero(cum >= target)
        oracle = float((ok.max() + 1) / len(agree)) if ok.size else 0.0
        for start in starts:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RoutingWarning)
                cfg = fit_router(art, train_texts, target_agreement=target, start=start)
            th = cfg.threshold
            router = Router.load(art)
            dec = router.decide(test_texts)
            answered = np.array([d.source == "student" for d in dec])
            ans_agree = float(agree[answered].mean()) if answered.any() else math.nan
            rows.append([
                name, target, start, th.n, "inf" if math.isinf(th.value) else f"{th.value:.6f}",
                th.coverage, th.lower_bound, float(answered.mean()), ans_agree, oracle, float(agree.mean()),
            ])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_router")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--bits", type=int, default=18)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--heldout-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-banking", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse artifacts already in --out")
    ap.add_argument("--cascade-target", type=float, default=0.95)
    ap.add_argument("--targets", default="0.95,0.99,0.995")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"datasets not found under {DATA}", file=sys.stderr)
        return 2
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    print(f"student: ngram (bits={args.bits}, dim={args.dim}, epochs<={args.epochs}); "
          f"teacher: gold labels (0.9 on gold); held-out frac {args.heldout_frac}; seed {args.seed}")

    clinc = load_clinc()
    # the student's training data: CLINC150 train + val (in scope); its held-out split calibrates
    c_rows = clinc["train"] + clinc["val"]
    c_art, c_s = build("clinc150", c_rows, root / "clinc150", args)
    print(f"trained clinc150 ngram in {c_s:.0f}s")
    from distil.artifact import load_artifact

    art = load_artifact(c_art)
    student = art.student()
    labels = list(student.classes_)
    train_texts = [t for t, _ in c_rows]
    heldout = art.heldout()
    ind_test = [t for t, _ in clinc["test"]]
    oos_test = [t for t, _ in clinc["oos_test"]]

    # 1. OOD AUROC: in-scope test (negatives) vs the 1,000 out-of-scope test queries (positives)
    f_train = student.features(train_texts)
    f_held = student.features(heldout.texts)
    f_in = student.features(ind_test)
    f_out = student.features(oos_test)
    p_in = student.predict_proba(ind_test)
    p_out = student.predict_proba(oos_test)
    auroc_rows: list[list[object]] = []
    dets = {}
    train_lab = student.predict_proba(train_texts).argmax(1)
    for method in ("knn", "mahalanobis"):
        t0 = time.perf_counter()
        det = OODDetector(method=method, k=10, quantile=0.99).fit(  # type: ignore[arg-type]
            f_train, f_held, train_labels=train_lab if method == "mahalanobis" else None
        )
        s_in, s_out = det.score(f_in), det.score(f_out)
        ms = (time.perf_counter() - t0) * 1000
        dets[method] = det
        auroc_rows.append([
            method, roc_auc(s_in, s_out), float((s_out > det.threshold_).mean()),
            float((s_in > det.threshold_).mean()), f"{ms:.0f}",
        ])
    # the confidence itself as an OOD score (max softmax probability baseline)
    auroc_rows.append(["1 - max prob (baseline)", roc_auc(1 - p_in.max(1), 1 - p_out.max(1)), "", "", ""])
    table(
        f"CLINC150 OOD detection: {len(ind_test)} in-scope test vs {len(oos_test)} out-of-scope test queries",
        ["score", "AUROC", "oos flagged (TPR)", "in-scope flagged (FPR)", "fit+score ms"], auroc_rows,
    )

    # 2. the cascade with oos queries mixed in (threshold from the held-out split)
    gold_in = np.array([labels.index(g) for _, g in clinc["test"]])
    conf_h = student.predict_proba(heldout.texts)
    agree_h = conf_h.argmax(1) == heldout.hard
    casc_rows: list[list[object]] = []
    for guard in ("none", "knn", "mahalanobis"):
        det = dets.get(guard)
        c_conf = conf_h.max(1)
        if det is not None:
            c_conf = np.where(det.predict(f_held), -np.inf, c_conf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RoutingWarning)
            th = calibrate_threshold(c_conf, agree_h, target=args.cascade_target)
        ood_in = det.predict(f_in) if det is not None else np.zeros(len(ind_test), bool)
        ood_out = det.predict(f_out) if det is not None else np.zeros(len(oos_test), bool)
        stud_in = (p_in.max(1) >= th.value) & ~ood_in
        stud_out = (p_out.max(1) >= th.value) & ~ood_out
        # teacher (gold) is right wherever it answers; the student is right on in-scope when it agrees
        correct_in = np.where(stud_in, p_in.argmax(1) == gold_in, True)
        correct_out = ~stud_out  # the student can never say "out of scope"
        n_all = len(ind_test) + len(oos_test)
        acc = (correct_in.sum() + correct_out.sum()) / n_all
        student_share = (stud_in.sum() + stud_out.sum()) / n_all
        casc_rows.append([
            guard, f"{th.value:.6f}" if math.isfinite(th.value) else "inf", acc, float(correct_in.mean()),
            float(correct_out.mean()), student_share, 1 - student_share,
        ])
    alone = (np.sum(p_in.argmax(1) == gold_in)) / (len(ind_test) + len(oos_test))
    acc_in = float(np.mean(p_in.argmax(1) == gold_in))
    casc_rows.append(["student alone", "-", float(alone), acc_in, 0.0, 1.0, 0.0])
    table(
        f"CLINC150 cascade at target agreement {args.cascade_target}, 4,500 in-scope + 1,000 out-of-scope "
        "test queries (teacher = gold, says 'out of scope')",
        ["OOD guard", "conf. threshold", "accuracy (all)", "acc. in-scope", "oos caught",
         "student share", "teacher share"],
        casc_rows,
    )

    # 3. share answered by the student at targets 0.99 / 0.995 on both datasets
    targets = [float(x) for x in args.targets.split(",")]
    cov = coverage_rows("clinc150", c_art, train_texts, clinc["test"], targets)
    if not args.skip_banking:
        b_train, b_test = load_banking()
        b_art, b_s = build("banking77", b_train, root / "banking77", args)
        print(f"trained banking77 ngram in {b_s:.0f}s")
        cov += coverage_rows("banking77", b_art, [t for t, _ in b_train], b_test, targets)
    table(
        "Share answered by the student alone (OOD guard knn, fixed-sequence Clopper-Pearson at level 0.95)",
        ["dataset", "target", "start", "held-out n", "threshold", "held-out coverage", "95% lower bound",
         "test share by student", "test agreement (answered)", "oracle share (no guarantee)",
         "test agreement (all)"],
        cov,
    )
    print(f"\nCP bound sanity: 298/298 at 95% -> {float(clopper_pearson_lower(298, 298, 0.95)):.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
