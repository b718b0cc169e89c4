"""Ladder-cascade benchmark: ngram alone, static alone, and ngram → static → teacher, side by side.

One ``ngram+static`` artifact per stream (the streams of ``bench_cascade.py``: banking77 with a
teacher that answers 2% of inputs at random, clinc150 with its 1,000 out-of-scope queries), three
routers certified on it in turn (cross-fitted calibration over the whole pool, Learn-then-Test, the
guard in the static space), and on the test set for each target:

* for each routing score — the student's confidence (the baseline) and the learned acceptor's
  probability of agreeing with the teacher (distil's default; a lone static student's acceptor also
  reads the ngram's answer, which then runs beside it) —
* the share answered locally, in all and per rung, and the agreement with the teacher on it;
* the out-of-scope share answered locally (clinc150);
* the cost of 1M requests: each rung's CPU cost on the inputs that reach it, the teacher's token cost
  on the rest (gpt-4o-mini at 150 prompt + 5 output tokens), against the teacher alone.

Run::

    .venv/bin/python benchmarks/bench_ladder.py [--sets noisy,clinc150] [--targets 0.95,0.99]
        [--students ngram,static,ensemble] [--cascades "ngram>static;ngram>ensemble"] [--scores confidence,acceptor]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from bench_cascade import CORE_HOUR_USD, DATA, TEACHER_COST_1M, Stream, load_streams, teacher_probs
from tables import markdown_table

from distil.artifact import load_artifact
from distil.cascade import Cascade, rung_shares
from distil.cost import cpu_cost_per_1m
from distil.data import LabeledSet
from distil.route import Router, RoutingWarning, fit_router
from distil.train import train


def routers(students: list[str], cascades: list[list[str]]) -> dict[str, tuple[tuple[str, ...], str]]:
    """Each student alone, then each cascade (cheapest rung first): name -> (ladder, member)."""
    out: dict[str, tuple[tuple[str, ...], str]] = {f"{s} alone": ((), s) for s in students}
    out.update({" → ".join(c): (tuple(c[:-1]), c[-1]) for c in cascades})
    return out


def build(stream: Stream, out: Path, seed: int, students: tuple[str, ...]) -> LabeledSet:
    """Train the artifact of ``students`` on the stream's pool (the teacher's answers as soft labels)."""
    labels = sorted({g for _, g in stream.pool} | {g for _, g in stream.test})
    texts = list(dict.fromkeys(t for t, _ in stream.pool))
    answer = dict(stream.pool)
    labeled = LabeledSet(texts, teacher_probs([answer[t] for t in texts], labels), labels, teacher="bench")
    if not (out / "config.json").exists():
        train(labeled, out, students=students, seed=seed)
    return labeled


def measure(router: Router, stream: Stream, costs: dict[str, float]) -> list[str]:
    """Local share (per rung), agreement on it, OOS answered locally, cascade cost, for one router."""
    test_texts, answers = [t for t, _ in stream.test], [g for _, g in stream.test]
    served = Cascade(router).served_on(test_texts, answers)
    local = np.array([s.source == "student" and not s.degraded for s in served])
    agree = np.array([s.label == a for s, a in zip(served, answers, strict=True)])
    off = router.decide(stream.off_topic)
    rungs = rung_shares(served, router.config.rungs, router.config.companions)  # companions: their cost only
    cost = sum(r["reached"] * costs[r["member"]] for r in rungs) + (1 - local.mean()) * TEACHER_COST_1M
    return [f"{local.mean():.1%}", " + ".join(f"{r['answered']:.1%}" for r in rungs if not r.get("companion")),
            f"{agree[local].mean():.4f}" if local.any() else "nan",
            f"{np.mean([d.source == 'student' for d in off]):.1%}", f"${cost:.2f}"]


def run_stream(
    stream: Stream, targets: list[float], root: Path, seed: int, routes: dict[str, tuple[tuple[str, ...], str]],
    scores: list[str],
) -> list[list[str]]:
    students = tuple(dict.fromkeys(m for ladder, member in routes.values() for m in (*ladder, member)))
    out = (root / stream.name.split(",")[0].replace(" ", "_") / ("noisy" if "random" in stream.name else "gold")
           / "_".join(students))
    t0 = time.perf_counter()
    labeled = build(stream, out, seed, students)
    art = load_artifact(out)
    costs = {r["name"]: cpu_cost_per_1m(float(r["ms_per_pred"]) / 1000, CORE_HOUR_USD) for r in art.ladder}
    held = set(art.heldout().texts)
    train_texts = [t for t in labeled.texts if t not in held]
    rows = []
    cache: dict[object, np.ndarray] = {}  # each member cross-fitted once for all routers
    for name, (ladder, member) in routes.items():
        for score in scores:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RoutingWarning)
                cfg = fit_router(out, train_texts, target_agreement=targets[0], labeled=labeled, seed=seed,
                                 member=member, ladder=ladder, score=score, calibration_cache=cache)
                label = f"{name} [{score}" + (f", reads {','.join(cfg.companions)}]" if cfg.companions else "]")
                for target in targets:
                    router = Router.load(out, target_agreement=target)
                    rows.append([stream.name, str(target), label, *measure(router, stream, costs)])
    print(f"{stream.name}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sets", default="noisy,clinc150")
    ap.add_argument("--targets", default="0.95,0.99")
    ap.add_argument("--out", default="runs/bench_ladder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--students", default="ngram,static", help="each is routed alone (and trained)")
    ap.add_argument("--cascades", default="ngram>static", help="';'-separated cascades, rungs joined by '>'")
    ap.add_argument("--scores", default="confidence,acceptor",
                    help="routing scores to compare: confidence (the top probability; the baseline), acceptor")
    args = ap.parse_args()
    routes = routers(args.students.split(","), [c.split(">") for c in args.cascades.split(";") if c])
    if not DATA.exists():
        print(f"datasets not found under {DATA}", file=sys.stderr)
        return 2
    targets = [float(x) for x in args.targets.split(",")]
    rows: list[list[str]] = []
    for stream in load_streams(args.sets.split(","), args.seed):
        rows += run_stream(stream, targets, Path(args.out), args.seed, routes, args.scores.split(","))
    header = ["data", "target", "router", "answered locally", "per rung", "agreement (answered)",
              "off-topic answered locally", "cascade $/1M"]
    print(markdown_table(header, rows))
    print(f"\nteacher alone: ${TEACHER_COST_1M:.2f} per 1M requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
