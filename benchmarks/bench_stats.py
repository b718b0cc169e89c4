"""Statistics benchmark: does each statistical claim hold at its stated level?  Before and after issue 15.

One run prints one table: claim, stated level, the measured rate with the old rule ("before",
re-implemented here) and with the code in ``src`` ("after"), repetitions, data.  Claims:

* drift, label shift: false alarms with no drift (77 and 150 labels), power with a real shift
  (a removed label, 30% of traffic moved onto five labels);
* drift, OOD share: false alarms with no drift at a nominal 1%;
* drift, the RETRAIN decision: false RETRAIN with no drift (family-wise 1%), RETRAIN with a shift;
* ECE: mean of a perfectly calibrated model at n = 600; interval coverage (calibrated, 10 points off);
  "after calibration" measured in sample vs out of fold;
* bootstrap: coverage of the accuracy interval when texts repeat (rows vs texts resampled);
* selection: how often a member whose true agreement (retention) is 0.94 is chosen against a 0.95
  target (point estimate vs the ladder-wide lower bound of :mod:`distil.bounds`);
* banking77 with a gold-oracle teacher: ``distil.drift.drift`` end to end, false RETRAIN over the
  seeds with no drift (target ≤ 5%) and RETRAIN with a real shift (target ≥ 90%).

The banking77 part trains one ngram artifact on half of ``train.csv``; the other half is traffic.
Each seed draws a fresh held-out reference (written into a copy of the artifact whose router is
refitted on it: OOD threshold and confidence threshold) and a disjoint recent sample, so both samples'
noise is in every seed.  Run::

    .venv/bin/python benchmarks/bench_stats.py [--reps 1000] [--seeds 100] [--skip-banking]

Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom
from tables import markdown_table

from distil.calibrate import calibration_error, crossfit_ece, fit_temperature, plugin_ece
from distil.data import LabeledSet, write_labeled
from distil.drift import drift, label_shift_test, ood_share_test
from distil.evaluate.intervals import bootstrap, paired_intervals, resampled_accuracy, resampled_ece
from distil.evaluate.scoring import reference

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ALPHA, MIN_TV, QUANTILE = 0.01, 0.1, 0.99


@dataclass
class Row:
    claim: str
    level: str
    before: float
    after: float
    reps: int
    data: str


# ---------------------------------------------------------------------------------------------
# The old rules (before issue 15), re-implemented for comparison


def old_label_pvalue(recent: np.ndarray, ref: np.ndarray, *, sims: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Old label test: recent TV against the reference taken as exact (one-sample multinomial null)."""
    n = int(recent.sum())
    q = ref / ref.sum()
    tv = 0.5 * float(np.abs(recent / n - q).sum())
    draws = np.random.default_rng(seed).multinomial(n, q, size=sims) / n
    null = 0.5 * np.abs(draws - q[None, :]).sum(axis=1)
    return float((1 + np.sum(null >= tv)) / (1 + sims)), tv


def old_ood_pvalue(flagged: int, n: int, ref_flagged: int, m: int) -> tuple[float, float]:
    """Old OOD test: binomial against the in-sample held-out flag rate."""
    rate = ref_flagged / m
    expected = rate if rate > 0 else 1.0 - QUANTILE
    return (float(binom.sf(flagged - 1, n, expected)) if flagged else 1.0), expected


def old_retrain(recent: np.ndarray, ref: np.ndarray, ood: tuple[int, int, int, int], seed: int) -> bool:
    """Old decision: either test at alpha (no correction), with the same practical floors."""
    lp, tv = old_label_pvalue(recent, ref, seed=seed)
    op, expected = old_ood_pvalue(*ood)
    return (lp < ALPHA and tv >= MIN_TV) or (op < ALPHA and ood[0] / ood[1] >= 2 * expected)


def new_retrain(recent: np.ndarray, ref: np.ndarray, ood: tuple[int, int, int, int], seed: int) -> bool:
    """The rule in distil.drift: both tests at alpha / 2, the same floors."""
    level = ALPHA / 2
    lab = label_shift_test(recent, ref, level=level, seed=seed)
    flagged, n, f, m = ood
    expected = (f + 1) / (m + 1)
    return (lab.pvalue < level and lab.tv >= MIN_TV) or (
        ood_share_test(flagged, n, f, m) < level and flagged / n >= 2 * expected
    )


# ---------------------------------------------------------------------------------------------
# Simulated drift


def label_mix(k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.dirichlet(np.full(k, 5.0))


def shifted_mix(q: np.ndarray) -> np.ndarray:
    """A removed label (label 0) and 30% of traffic moved onto labels 1–5."""
    s = q.copy()
    s[0] = 0.0
    s = 0.7 * s / s.sum()
    s[1:6] += 0.3 / 5
    return s


def ood_counts(rng: np.random.Generator, m: int, n: int, foreign: float = 0.0) -> tuple[int, int, int, int]:
    """(flagged recent, n, flagged held-out, m) from the guard's construction on normal scores."""
    held = rng.standard_normal(m)
    thr = np.quantile(held, QUANTILE, method="higher")
    k_out = round(foreign * n)
    recent = np.concatenate([rng.standard_normal(n - k_out), rng.standard_normal(k_out) + 10.0])
    return int((recent > thr).sum()), n, int((held > thr).sum()), m


def sim_label_false_alarms(k: int, reps: int, m: int = 300, n: int = 1000) -> Row:
    rng = np.random.default_rng(k)
    q = label_mix(k, rng)
    before = after = 0
    for r in range(reps):
        recent, ref = rng.multinomial(n, q), rng.multinomial(m, q)
        before += old_label_pvalue(recent, ref, seed=r)[0] < ALPHA
        after += label_shift_test(recent, ref, level=ALPHA, seed=r).pvalue < ALPHA
    return Row(f"label-shift test false alarm, no drift, {k} labels", f"≤ {ALPHA:.0%}", before / reps,
               after / reps, reps, f"simulated: reference {m}, recent {n}")


def sim_ood_false_alarms(reps: int, m: int = 300, n: int = 1000) -> Row:
    rng = np.random.default_rng(1)
    before = after = 0
    for _ in range(reps):
        c = ood_counts(rng, m, n)
        before += old_ood_pvalue(*c)[0] < ALPHA
        after += ood_share_test(*c) < ALPHA
    return Row("OOD-share test false alarm, no drift", f"≤ {ALPHA:.0%}", before / reps, after / reps, reps,
               f"simulated: guard at the {QUANTILE} quantile of {m} held-out scores, recent {n}")


def sim_decision(reps: int, *, shift: bool, k: int = 77, m: int = 300, n: int = 1000) -> Row:
    rng = np.random.default_rng(7 + shift)
    q = label_mix(k, rng)
    p = shifted_mix(q) if shift else q
    before = after = 0
    for r in range(reps):
        recent, ref = rng.multinomial(n, p), rng.multinomial(m, q)
        c = ood_counts(rng, m, n)
        before += old_retrain(recent, ref, c, r)
        after += new_retrain(recent, ref, c, r)
    claim = "RETRAIN with a real shift (removed label, 30% moved)" if shift else "false RETRAIN, no drift"
    level = "≥ 90%" if shift else f"≤ {ALPHA:.0%} (family-wise)"
    return Row(claim, level, before / reps, after / reps, reps, f"simulated: {k} labels, reference {m}, recent {n}")


# ---------------------------------------------------------------------------------------------
# Simulated ECE and bootstrap


def confidences(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.beta(5.0, 1.5, n), 0.05, 1.0)


def sim_ece_mean(reps: int, n: int = 600) -> Row:
    rng = np.random.default_rng(2)
    plug, deb = np.empty(reps), np.empty(reps)
    for r in range(reps):
        c = confidences(rng, n)
        ce = calibration_error(c, rng.random(n) < c, seed=r)
        plug[r], deb[r] = ce.plugin, ce.debiased
    return Row(f"ECE of a perfectly calibrated model (mean), n = {n}", "0", float(plug.mean()), float(deb.mean()),
               reps, "simulated: confidence ~ Beta(5, 1.5)")


def _ece_intervals(rng: np.random.Generator, n: int, shift: float, seed: int) -> tuple[float, tuple[float, float],
                                                                                     tuple[float, float]]:
    k = 20
    c = confidences(rng, n)
    p_true = np.clip(c - shift, 0.0, 1.0)
    ok = rng.random(n) < p_true
    t_pred = rng.integers(0, k, n)
    s_pred = np.where(ok, t_pred, (t_pred + 1) % k)
    old = bootstrap(lambda d: {"e": resampled_ece(c, ok, d)}, n, n_resamples=500, seed=seed)["e"]
    new = paired_intervals(s_pred, c, t_pred, reference(None, t_pred), k, n_resamples=500, seed=seed)["ece"]
    return plugin_ece(c, p_true), old, new


def sim_ece_coverage(reps: int, shift: float, n: int = 600) -> Row:
    rng = np.random.default_rng(3)
    before = after = 0
    for r in range(reps):
        truth, old, new = _ece_intervals(rng, n, shift, r)
        before += old[0] <= truth <= old[1]
        after += new[0] <= truth <= new[1]
    what = "calibrated" if shift == 0 else f"{shift:.0%} overconfident"
    return Row(f"ECE 95% interval covers the true ECE ({what}), n = {n}", "≥ 95%", before / reps, after / reps,
               reps, "simulated")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _after_case(rng: np.random.Generator, n: int, k: int, fresh: int = 20) -> tuple[float, float, float]:
    """(in-sample after, out-of-fold after, the same estimate on fresh sets of n) — debiased ECE at one T.

    The fresh sets use the temperature fitted on the validation set: what "after calibration" should
    predict.  Comparing at the same n cancels the estimator's own small-sample bias, leaving the
    optimism of scoring T on the rows it was fitted on.
    """

    def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.normal(size=(size, k)) * 2.5
        y = (rng.random(size)[:, None] > np.cumsum(_softmax(z), axis=1)).sum(axis=1)
        return z * 3.0, np.minimum(y, k - 1)

    def score(z: np.ndarray, y: np.ndarray, t: float) -> float:
        pz = _softmax(z / t)
        return calibration_error(pz.max(1), pz.argmax(1) == y).debiased

    z, y = draw(n)
    t = fit_temperature(z, np.eye(k)[y])
    oof = crossfit_ece(z, np.eye(k)[y], y).after
    return score(z, y, t), oof, float(np.mean([score(*draw(n), t) for _ in range(fresh)]))


def sim_after_calibration(reps: int, n: int = 100, k: int = 10) -> Row:
    rng = np.random.default_rng(4)
    res = np.array([_after_case(rng, n, k) for _ in range(reps)])
    before = float(np.mean(res[:, 0] - res[:, 2]))
    after = float(np.mean(res[:, 1] - res[:, 2]))
    return Row(f"'after calibration' ECE minus the same on fresh data (mean), n = {n}", "0", before, after, reps,
               "simulated: 3x overconfident logits; before = in sample, after = out of fold (5 folds)")


def sim_bootstrap_coverage(reps: int, texts: int = 200, p: float = 0.8) -> Row:
    rng = np.random.default_rng(5)
    before = after = 0
    for r in range(reps):
        ok_text = (rng.random(texts) < p).astype(np.float64)
        group = np.repeat(np.arange(texts), 1 + rng.poisson(4.0, texts))
        ok = ok_text[group]

        def stats(d: np.ndarray, ok: np.ndarray = ok) -> dict[str, np.ndarray]:
            return {"a": resampled_accuracy(ok, d)}

        lo, hi = bootstrap(stats, ok.size, n_resamples=500, seed=r)["a"]
        before += lo <= p <= hi
        lo, hi = bootstrap(stats, ok.size, n_resamples=500, seed=r, groups=group)["a"]
        after += lo <= p <= hi
    return Row("accuracy 95% interval coverage, texts repeated 1+Poisson(4) times", "95%", before / reps,
               after / reps, reps, f"simulated: {texts} texts, ~{5 * texts} rows")


# ---------------------------------------------------------------------------------------------
# banking77 end to end


def load(split: str) -> list[tuple[str, str]]:
    with (DATA / "banking77" / f"{split}.csv").open(encoding="utf-8") as fh:
        return [(r["text"], r["category"]) for r in csv.DictReader(fh)]


def gold_probs(gold: list[str], labels: list[str], sure: float = 0.9) -> np.ndarray:
    idx = {lab: i for i, lab in enumerate(labels)}
    p = np.full((len(gold), len(labels)), (1 - sure) / (len(labels) - 1), dtype=np.float32)
    p[np.arange(len(gold)), [idx[g] for g in gold]] = sure
    return p


@dataclass
class Banking:
    art: Path
    labels: list[str]
    train_texts: list[str]
    pool: list[tuple[str, str]]  # traffic the artifact never saw (train.csv rows held back, test.csv)


def build_banking(root: Path, seed: int) -> Banking:
    from distil.train import train

    rows = list({t: (t, lab) for t, lab in load("train")}.values())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    train_rows = [rows[i] for i in order[: len(rows) // 2]]
    pool = [rows[i] for i in order[len(rows) // 2:]]
    labels = sorted({lab for _, lab in rows})
    texts = [t for t, _ in train_rows]
    art = root / "artifact"
    if not (art / "config.json").exists():
        ls = LabeledSet(texts, gold_probs([g for _, g in train_rows], labels), labels, teacher="gold")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(ls, art, students=["ngram"], seed=seed, params={"ngram": {"bits": 17, "dim": 64, "epochs": 6}})
    return Banking(art, labels, texts, pool)


_REFITTED = {"heldout.parquet", "router.json", "ood.npz", "calibration.npz"}


def seed_artifact(b: Banking, folder: Path, ref: list[tuple[str, str]]) -> Path:
    """A copy of the artifact (hard links) whose held-out split is ``ref`` and whose router is refitted on it."""
    from distil.route import fit_router

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for item in b.art.iterdir():  # hard links: the artifact checks its members lie inside it
        if item.name in _REFITTED:
            continue
        if item.is_dir():
            shutil.copytree(item, folder / item.name, copy_function=os.link)
        else:
            os.link(item, folder / item.name)
    gold = [g for _, g in ref]
    write_labeled(LabeledSet([t for t, _ in ref], gold_probs(gold, b.labels), b.labels, gold=list(gold),
                             teacher="gold"), folder / "heldout.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_router(folder, b.train_texts, target_agreement=0.9, calibration="heldout")
    return folder


def shifted_sample(rng: np.random.Generator, rest: list[tuple[str, str]], n: int, labels: list[str]) -> list[str]:
    """70% of ``n`` from ``rest`` without one label, 30% from five other labels' texts."""
    removed, moved = labels[0], set(labels[1:6])
    keep = [t for t, g in rest if g != removed]
    onto = [t for t, g in rest if g in moved]
    k_moved = round(0.3 * n)
    main = [keep[i] for i in rng.choice(len(keep), n - k_moved, replace=False)]
    extra = [onto[i] for i in rng.choice(len(onto), k_moved, replace=len(onto) < k_moved)]
    return main + extra


def old_rule_on(folder: Path, recent: list[str], seed: int) -> bool:
    """The old decision on the same artifact copy and recent texts."""
    from distil.artifact import load_artifact
    from distil.route import Router

    art = load_artifact(folder)
    router = Router.load(art)
    held = art.heldout()
    labels = router.labels
    dec = router.decide(recent)
    pred = np.bincount([labels.index(d.label) for d in dec], minlength=len(labels))
    ref = np.bincount(router.student.predict_proba(held.texts).argmax(1), minlength=len(labels))
    assert router.ood is not None
    f = round(router.ood.heldout_flag_rate_ * len(held))
    return old_retrain(pred, ref, (int(sum(d.ood for d in dec)), len(dec), f, len(held)), seed)


def banking_rows(root: Path, seeds: int, m: int = 750, n: int = 1000) -> list[Row]:
    b = build_banking(root, 0)
    counts = {"none": [0, 0], "shift": [0, 0]}
    t0 = time.perf_counter()
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        order = rng.permutation(len(b.pool))
        ref = [b.pool[i] for i in order[:m]]
        rest = [b.pool[i] for i in order[m:]]
        folder = seed_artifact(b, root / "seed", ref)
        samples = {"none": [rest[i][0] for i in rng.choice(len(rest), n, replace=False)],
                   "shift": shifted_sample(rng, rest, n, b.labels)}
        for name, recent in samples.items():
            counts[name][0] += old_rule_on(folder, recent, s)
            counts[name][1] += drift(folder, recent, seed=s).retrain
    print(f"banking77: {seeds} seeds in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    data = f"banking77, ngram student, gold-oracle teacher; held-out {m}, recent {n}; {len(b.pool)} unseen texts"
    return [
        Row("drift(): false RETRAIN, no drift", "≤ 5% (α = 1%)", counts["none"][0] / seeds,
            counts["none"][1] / seeds, seeds, data),
        Row("drift(): RETRAIN, removed label + 30% moved", "≥ 90%", counts["shift"][0] / seeds,
            counts["shift"][1] / seeds, seeds, data),
    ]


def sim_selection(reps: int, *, key: str, n: int = 300, target: float = 0.95) -> Row:
    """A cheap member at 0.94 (true) and a big one at 0.99 on n rows: how often the cheap one is chosen."""
    from distil.bounds import agreement_lower, retention_lower
    from distil.train import select_member

    rng = np.random.default_rng(7)
    before = after = 0
    for r in range(reps):
        ladder = []
        teacher_ok = rng.random(n) < 0.9
        for j, (name, truth) in enumerate((("cheap", 0.94), ("big", 0.99))):
            if key == "agreement":
                ok = rng.random(n) < truth
                point, lower = float(ok.mean()), agreement_lower(ok, 2)
            else:
                ok = teacher_ok & (rng.random(n) < truth)
                point = float(ok.mean() / teacher_ok.mean())
                lower = retention_lower(ok, teacher_ok, 2, draws=1000, seed=r)
            ladder.append({"name": name, "ms_per_pred": 10.0**j, key: point, f"{key}_lower": lower})
        before += select_member([{k: v for k, v in x.items() if k != f"{key}_lower"} for x in ladder],
                                target=target, key=key).chosen == "cheap"
        after += select_member(ladder, target=target, key=key).chosen == "cheap"
    return Row(f"selection error: a member of true {key} 0.94 chosen against {target}", "≤ 5%",
               before / reps, after / reps, reps, f"simulated: 2-member ladder, {n} rows")


# ---------------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = ["claim", "stated level", "before", "after", "reps", "data"]
    body = [[r.claim, r.level, f"{r.before:.4g}", f"{r.after:.4g}", str(r.reps), r.data] for r in rows]
    print(markdown_table(header, body))


def simulated_rows(reps: int) -> list[Row]:
    jobs: list[Callable[[], Row]] = [
        lambda: sim_label_false_alarms(77, reps),
        lambda: sim_label_false_alarms(150, reps),
        lambda: sim_ood_false_alarms(5 * reps),
        lambda: sim_decision(reps, shift=False),
        lambda: sim_decision(max(100, reps // 5), shift=True),
        lambda: sim_ece_mean(reps),
        lambda: sim_ece_coverage(max(100, reps // 3), 0.0),
        lambda: sim_ece_coverage(max(100, reps // 3), 0.1),
        lambda: sim_after_calibration(max(100, reps // 5)),
        lambda: sim_bootstrap_coverage(max(100, reps // 2)),
        lambda: sim_selection(reps, key="agreement"),
        lambda: sim_selection(max(100, reps // 5), key="val_retention"),
    ]
    return [job() for job in jobs]


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000, help="repetitions of the main simulations")
    ap.add_argument("--seeds", type=int, default=100, help="banking77 seeds")
    ap.add_argument("--out", default="runs/bench_stats")
    ap.add_argument("--skip-banking", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = simulated_rows(args.reps)
    print(f"simulations in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if not args.skip_banking:
        if not (DATA / "banking77").exists():
            print(f"banking77 not found under {DATA}", file=sys.stderr)
            return 2
        root = Path(args.out)
        root.mkdir(parents=True, exist_ok=True)
        rows += banking_rows(root, args.seeds)
    print_table(rows)
    print(f"\nalpha {ALPHA} (family-wise for RETRAIN, each drift test at alpha/2), min TV {MIN_TV}; "
          f"'before' = the rules before issue 15, re-implemented in this file")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
