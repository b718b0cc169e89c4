"""train(): fit the student ladder on teacher labels, calibrate, measure, select, write the artifact.

Reads only the labeled set (the teacher is never called).  A seeded, stratified held-out part of
the teacher-labeled data (stratified by the teacher's argmax) drives early stopping, temperature
scaling and selection.  Selection (:func:`select_member`) weighs two targets: ``target`` (held-out
agreement with the teacher, or retention vs gold on a validation set) and ``max_cost_ratio`` (the
student's cost per prediction as a share of the teacher's, by the verdict's cost model in
:mod:`distil.cost`).  It picks the cheapest student by measured CPU time per prediction (batch 1,
median) that meets both; when none does it falls back as :func:`select_member` documents, with a
warning.  The reason is recorded in ``config.json`` (``selection_reason``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from distil.artifact import CONFIG_FILE, FORMAT_VERSION, HF_CONFIG_FILE, config_path, hf_config, write_train_hashes
from distil.bounds import SELECTION_ALPHA, agreement_lower, retention_lower
from distil.calibrate import crossfit_ece
from distil.cost import cost_ratio, cost_target_met, cpu_cost_per_1m, load_prices, lookup_price, token_cost_per_1m
from distil.data import LabeledSet, atomic_write_text, ensure_folder, pid_alive, write_labeled
from distil.embcache import caching
from distil.errors import ConfigError, DataError, MissingExtra, storage_error
from distil.progress import step
from distil.students.base import LADDER, TRAINABLE, Student, student_class

if TYPE_CHECKING:
    from distil.journal import Journal, Row
    from distil.task import Task

log = logging.getLogger("distil.train")

MIN_PER_CLASS = 5  # fewer teacher labels than this for a class → a warning naming it
#: $ per CPU core-hour that prices a student's (and a CPU teacher's) time: evaluate()'s default.
CORE_HOUR_USD = 0.05
#: The router's agreement target when neither ``router_target`` nor a usable ``target`` is given.
DEFAULT_ROUTER_TARGET = 0.95
#: Selection's held-out agreement target (``target``) and retention target (``retention_target``, with a
#: gold validation set) when none is given; they are different measures, so they have their own defaults.
DEFAULT_AGREEMENT_TARGET = 0.90
DEFAULT_RETENTION_TARGET = 0.95


@dataclass
class TrainResult:
    """What :func:`train` did: where the artifact is, which student was chosen, the ladder, warnings."""

    out: Path
    chosen: str
    ladder: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    data_fingerprint: str = ""
    n_train: int = 0
    n_heldout: int = 0
    router: Any = None  # distil.route.RouterConfig when a router was fitted
    selection_reason: str = ""

    def summary(self) -> str:
        """The ladder as a few lines for the CLI."""
        lines = [f"student artifact: {self.out} ({self.n_train} train / {self.n_heldout} held-out texts)"]
        lines += [_ladder_line(r) for r in self.ladder]
        lines.append(f"chosen: {self.chosen}" + (f" ({self.selection_reason})" if self.selection_reason else ""))
        if self.router is not None:
            t = self.router.threshold
            rungs = self.router.rungs if self.router.ladder else []
            lines.append(
                f"router: {_score_name(self.router)} threshold {t.value:.4f} for agreement >= {t.target} "
                f"(95% lower bound {t.lower_bound:.4f}); expected share sent to the teacher {t.teacher_share:.1%}"
                + (f"; cascade {' → '.join(rungs)} → teacher" if rungs else "")
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _score_name(router: Any) -> str:
    """What the router's threshold applies to, in words."""
    if router.score != "acceptor":
        return "confidence"
    return "acceptor" + (f" (reading {', '.join(router.companions)})" if router.companions else "")


def _ladder_line(r: dict[str, Any]) -> str:
    mark = "*" if r.get("chosen") else " "
    return (
        f" {mark} {r['name']:<9} agreement {r['agreement']:.4f}  {r['ms_per_pred']:.3f} ms/pred  "
        f"{r['size_mb']:.1f} MB  ECE {r.get('ece', float('nan')):.3f}  train {r.get('train_s', 0):.0f}s"
        + (f"  retention vs gold (validation) {r['val_retention']:.3f}" if "val_retention" in r else "")
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("distil")
    except Exception:
        return "0+unknown"


def split_heldout(hard: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split stratified by class: (train indices, held-out indices), both sorted.

    Each class gives ``round(frac · n_c)`` items to held-out but keeps at least one for training.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(hard):
        idx = np.flatnonzero(hard == c)
        idx = idx[rng.permutation(len(idx))]
        m = min(int(np.floor(frac * len(idx) + 0.5)), len(idx) - 1)
        held.append(idx[:m])
    h = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(hard), dtype=bool)
    mask[h] = False
    return np.flatnonzero(mask), h


# ---------------------------------------------------------------------------------------------
# Timing and cost of one member.


class Latency(NamedTuple):
    """What :func:`measure_latency` measured on one student."""

    ms_per_pred: float  # CPU ms per prediction at batch 1, median
    preds_per_s: float  # wall predictions per second at batch 256
    cpu_s_per_pred_batch: float  # CPU core-seconds per prediction at batch 256 (what the cost model prices)


def measure_latency(student: Student, texts: Sequence[str], *, calls: int = 30) -> Latency:
    """CPU ms per prediction at batch 1 (median over ``calls`` calls), and throughput and CPU time at batch 256.

    :func:`train` runs it with one torch thread for torch students, so the numbers are per core.
    """
    with caching(False):  # a timed prediction computes everything it would compute when served
        return _measure_latency(student, texts, calls)


def _measure_latency(student: Student, texts: Sequence[str], calls: int) -> Latency:
    pool = [t for t in texts if t] or ["hello"]
    student.predict_proba(pool[:1])
    times = []
    for i in range(calls):
        t0 = time.process_time()
        student.predict_proba([pool[i % len(pool)]])
        times.append(time.process_time() - t0)
    ms = 1000.0 * statistics.median(times)
    batch = [pool[i % len(pool)] for i in range(256)]
    best = cpu = float("inf")
    for _ in range(3 if not student.needs_torch else 1):
        c0, t0 = time.process_time(), time.perf_counter()
        student.predict_proba(batch)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return Latency(ms, 256.0 / max(best, 1e-9), cpu / 256.0)


def _time_member(student: Student, texts: Sequence[str]) -> Latency:
    """measure_latency with one torch thread for torch students (CPU time on one core, no spin-wait)."""
    if not student.needs_torch:
        return measure_latency(student, texts, calls=30)
    from distil.students.base import torch_threads

    with torch_threads(1):
        return measure_latency(student, texts, calls=10)


def _sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits (costs span many orders of magnitude)."""
    return float(f"{x:.{digits}g}")


def _calibrate_and_time(
    student: Student, name: str, val_texts: Sequence[str], val_probs: np.ndarray, *, hard: bool, train_s: float,
    core_hour_usd: float = CORE_HOUR_USD, ladder_size: int = 1,
) -> tuple[dict[str, Any], np.ndarray]:
    """A fitted member's ladder record: held-out agreement (and its lower bound), temperature, ECE, CPU time, cost.

    ``agreement_lower`` is the one-sided bound selection decides by (:mod:`distil.bounds`, level
    ``1 − alpha / ladder_size``).  ECE is debiased; "after" (``ece``) is measured out of fold, on rows
    the temperature never saw (:func:`distil.calibrate.crossfit_ece`).  Returns the record and the
    member's held-out logits.
    """
    val_hard = val_probs.argmax(axis=1)
    with step(f"the {name} student's answers for {len(val_texts)} held-out texts"), caching():
        logits = student.predict_logits(val_texts)
    cal = crossfit_ece(logits, val_probs, val_hard)
    temp = cal.temperature
    student.temperature_ = temp
    agree = logits.argmax(axis=1) == val_hard
    with step(f"timing the {name} student"):
        lat = _time_member(student, val_texts)
    rec: dict[str, Any] = {
        "name": name,
        "soft": not hard,
        "agreement": round(float(np.mean(agree)), 6),
        "agreement_lower": round(agreement_lower(agree, ladder_size), 6),
        "n_heldout": int(agree.size),
        "ece": round(cal.after, 6),
        "ece_before": round(cal.before, 6),
        "temperature": round(temp, 6),
        "ms_per_pred": round(lat.ms_per_pred, 4),
        "preds_per_s": round(lat.preds_per_s, 1),
        "cost_per_1m": _sig(cpu_cost_per_1m(lat.cpu_s_per_pred_batch, core_hour_usd)),
        "size_mb": round(student.size_bytes() / 1e6, 3),
        "train_s": round(train_s, 2),
        "needs_torch": student.needs_torch,
        "chosen": False,
    }
    return rec, logits


# ---------------------------------------------------------------------------------------------
# The data: checks, the held-out split, the gold validation set.


def _warn(warnings: list[str], msg: str) -> None:
    warnings.append(msg)
    log.warning(msg)


def _check_data(labeled: LabeledSet, warnings: list[str]) -> LabeledSet:
    if len(labeled.labels) < 2:
        raise DataError(f"labeled set: need at least 2 labels, found {labeled.labels}")
    labeled = _drop_empty_texts(labeled, warnings)
    counts = np.bincount(labeled.hard, minlength=len(labeled.labels))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = labeled.labels[int(present[0])]
        raise DataError(
            f"labeled set: the teacher gave every one of the {len(labeled)} texts the same label {only!r}; "
            "a classifier needs at least 2 classes",
            hint="label more (and more varied) texts, or check the teacher's prompt",
        )
    few = [(labeled.labels[i], int(counts[i])) for i in range(len(counts)) if counts[i] < MIN_PER_CLASS]
    if few:
        shown = ", ".join(f"{lab!r} ({n})" for lab, n in few[:20]) + (" …" if len(few) > 20 else "")
        _warn(
            warnings,
            f"{len(few)} class(es) have fewer than {MIN_PER_CLASS} teacher labels: {shown}; "
            "the student will be weak on them — label more texts of these classes",
        )
    return labeled


def _drop_empty_texts(labeled: LabeledSet, warnings: list[str]) -> LabeledSet:
    keep = [i for i, t in enumerate(labeled.texts) if isinstance(t, str) and t.strip()]
    if not keep:
        raise DataError(
            f"labeled set: all {len(labeled)} texts are empty",
            hint="check the input column; nothing can be trained on empty texts",
        )
    if len(keep) == len(labeled):
        return labeled
    _warn(warnings, f"dropped {len(labeled) - len(keep)} empty text(s) from the labeled set")
    return _subset(labeled, keep)


def _subset(labeled: LabeledSet, rows: Sequence[int]) -> LabeledSet:
    """The rows ``rows`` of ``labeled`` (gold and teacher kept)."""
    return LabeledSet(
        texts=[labeled.texts[i] for i in rows],
        probs=labeled.probs[list(rows)],
        labels=labeled.labels,
        gold=[labeled.gold[i] for i in rows] if labeled.gold is not None else None,
        teacher=labeled.teacher,
    )


@dataclass
class _GoldValidation:
    """A validation set with gold labels: its rows, gold label indices and the teacher's accuracy."""

    labeled: LabeledSet
    gold: np.ndarray
    teacher_acc: float


@dataclass
class _Data:
    """The checked labeled set and its parts: training rows, held-out rows, the gold validation set."""

    labeled: LabeledSet
    train: LabeledSet
    heldout: LabeledSet
    validation: _GoldValidation | None
    heldout_kind: str = "stratified"  # or "random sample" (an active run's, see :func:`_split_data`)


#: The fewest rows of an active run's random sample that replace the stratified held-out split.
MIN_RANDOM_HELDOUT = 20


def random_heldout(labeled: LabeledSet) -> set[str]:
    """The texts of the random held-out sample an active run kept (``info["random_heldout"]``), if any."""
    rows = (labeled.info or {}).get("random_heldout") or []
    return {labeled.texts[i] for i in rows if 0 <= int(i) < len(labeled)}


def _split_data(
    labeled: LabeledSet, heldout_frac: float, seed: int, validation: LabeledSet | None, sample: set[str] | None = None,
) -> _Data:
    """Training, held-out and validation parts; the held-out part is ``sample`` when it is large enough.

    After active labeling the labeled set is not like traffic (most of it was picked for being hard);
    its random sample is, so held-out figures and the router's calibration come from it alone.
    """
    in_sample = np.array([t in sample for t in labeled.texts], dtype=bool) if sample else np.zeros(0, bool)
    kind = "random sample"
    if in_sample.sum() >= MIN_RANDOM_HELDOUT and (~in_sample).sum() > 0:
        tr_idx, ho_idx = np.flatnonzero(~in_sample), np.flatnonzero(in_sample)
    else:
        kind = "stratified"
        tr_idx, ho_idx = split_heldout(labeled.hard, heldout_frac, seed)
    if len(ho_idx) == 0:
        raise DataError(
            f"labeled set: {len(labeled)} texts leave nothing for the held-out split "
            f"(heldout_frac={heldout_frac})",
            hint="label more texts (a few per class at least) or raise heldout_frac",
        )
    return _Data(
        labeled=labeled,
        train=_subset(labeled, tr_idx.tolist()),
        heldout=_subset(labeled, ho_idx.tolist()),
        validation=_gold_validation(validation, labeled.labels),
        heldout_kind=kind,
    )


def _gold_validation(validation: LabeledSet | None, labels: list[str]) -> _GoldValidation | None:
    if validation is None:
        return None
    if validation.labels != labels or validation.gold is None:
        raise DataError("train: the validation set needs the same labels as the training set and gold labels")
    keep = [i for i, g in enumerate(validation.gold) if g in labels]
    if len(keep) < 20:
        raise DataError(f"train: only {len(keep)} validation rows have a gold label; need at least 20")
    kept = _subset(validation, keep)
    gold = np.array([labels.index(str(g)) for g in kept.gold or []])
    teacher_acc = float(np.mean(kept.probs.argmax(axis=1) == gold))
    if teacher_acc <= 0:
        raise DataError("train: the teacher got every validation row wrong; retention is undefined")
    return _GoldValidation(kept, gold, teacher_acc)


# ---------------------------------------------------------------------------------------------
# Training the ladder.


@dataclass
class _Run:
    """The settings of one :func:`train` run that every member's training reads."""

    out: Path
    students: Sequence[str]
    seed: int
    hard: bool
    resume: bool
    params: dict[str, dict[str, Any]]
    core_hour_usd: float
    say: Callable[[str], None]
    warnings: list[str]
    stage: Path | None = None  # where this run writes the new artifact (swapped in for ``out`` at the end)
    fitted: dict[str, Student] = field(default_factory=dict)  # members trained so far (an ensemble reuses them)


def check_routing(routing: dict[str, Any], router_target: float | None = None) -> None:
    """Refuse router settings outside their range before anything is trained (:func:`distil.route.check_settings`)."""
    from distil.route import check_settings

    check_settings({**routing, "target_agreement": router_target})


def _check_options(students: Sequence[str], heldout_frac: float) -> None:
    if not students:
        raise DataError("train: no students to train", hint=f"choose some of {', '.join(LADDER)}")
    unknown = [s for s in students if s not in TRAINABLE]
    if unknown:
        raise ConfigError(f"unknown student(s) {unknown}", hint=f"choose from {', '.join(TRAINABLE)}")
    if not 0.0 < heldout_frac < 1.0:
        raise ConfigError(f"heldout_frac must be between 0 and 1, found {heldout_frac}")


def _train_ladder(run: _Run, data: _Data) -> list[dict[str, Any]]:
    """Train, calibrate, time, score and save every member; skip (with a warning) those missing an extra."""
    ladder = [rec for n, name in enumerate(run.students, 1) if (rec := _train_member(run, data, name, n))]
    if not ladder:
        raise DataError("train: no student could be trained", hint="; ".join(run.warnings))
    return ladder


def _member_kwargs(run: _Run, name: str) -> dict[str, Any]:
    kwargs = dict(run.params.get(name, {}))
    kwargs.setdefault("seed", run.seed)
    if name == "finetune":
        kwargs.setdefault("checkpoint_dir", str(run.out / ".checkpoints" / "finetune"))
        kwargs.setdefault("resume", run.resume)
    if name == "ensemble":
        kwargs.setdefault("params", {m: p for m, p in run.params.items() if m != "ensemble"})
        kwargs["reuse"] = run.fitted
    return kwargs


def _fit_member(run: _Run, data: _Data, name: str, n: int) -> tuple[Student, float] | None:
    """The fitted member and its training seconds, or None when it needs a missing extra."""
    count = f"({n}/{len(run.students)}) on {len(data.train)} texts"
    run.say(f"training {name} {count}")
    try:
        student = student_class(name)(**_member_kwargs(run, name))
        t0 = time.perf_counter()
        with step(f"training the {name} student {count}"), caching():
            student.fit(
                data.train.texts, data.train.probs, labels=data.labeled.labels,
                val_texts=data.heldout.texts, val_probs=data.heldout.probs, hard=run.hard,
            )
        run.fitted[name] = student
        return student, time.perf_counter() - t0
    except MissingExtra as exc:
        _warn(run.warnings, f"skipped the {name} student: {exc}")
        return None


def _train_member(run: _Run, data: _Data, name: str, n: int) -> dict[str, Any] | None:
    """One member's ladder record (its weights saved under ``ladder/<name>``), or None when skipped."""
    fitted = _fit_member(run, data, name, n)
    if fitted is None:
        return None
    student, train_s = fitted
    run.say(f"calibrating and timing {name}")
    rec, logits = _calibrate_and_time(
        student, name, data.heldout.texts, data.heldout.probs, hard=run.hard, train_s=train_s,
        core_hour_usd=run.core_hour_usd, ladder_size=len(run.students),
    )
    folder = (run.stage or run.out) / "ladder" / name
    if folder.exists():
        shutil.rmtree(folder)
    student.save(folder)
    rec.update(_gold_scores(student, logits, data, len(run.students)))
    log.info("%s: agreement %.4f, %.3f ms/pred, %.1f MB", name, rec["agreement"], rec["ms_per_pred"],
             rec["size_mb"])
    return rec


def _gold_scores(student: Student, logits: np.ndarray, data: _Data, ladder_size: int = 1) -> dict[str, float]:
    """Accuracy vs gold on held-out rows that have it; accuracy, retention and its lower bound on the validation set."""
    scores: dict[str, float] = {}
    labels = data.labeled.labels
    gold_idx = [(i, labels.index(g)) for i, g in enumerate(data.heldout.gold or []) if g in labels]
    if gold_idx:
        rows, ys = zip(*gold_idx, strict=True)
        scores["heldout_gold_acc"] = round(float(np.mean(logits[list(rows)].argmax(1) == np.array(ys))), 6)
    val = data.validation
    if val is not None:
        with caching():
            val_logits = student.predict_logits(val.labeled.texts)
        student_ok = val_logits.argmax(axis=1) == val.gold
        val_acc = float(np.mean(student_ok))
        scores["val_gold_acc"] = round(val_acc, 6)
        scores["val_retention"] = round(val_acc / val.teacher_acc, 6)
        teacher_ok = val.labeled.probs.argmax(axis=1) == val.gold
        scores["val_retention_lower"] = round(retention_lower(student_ok, teacher_ok, ladder_size), 6)
    return scores


# ---------------------------------------------------------------------------------------------
# Selection.


@dataclass(frozen=True)
class Selection:
    """The member :func:`select_member` chose, why, and the warning when a target was missed."""

    chosen: str
    reason: str
    warning: str | None = None


@dataclass(frozen=True)
class _Goal:
    """The two selection targets and how a ladder record is judged against them."""

    key: str
    what: str
    target: float
    max_cost_ratio: float | None
    teacher_cost_per_1m: float | None

    def bound(self, rec: dict[str, Any]) -> float:
        """What the target is judged by: the lower bound ``<key>_lower`` where measured, else ``<key>``."""
        return float(rec.get(f"{self.key}_lower", rec[self.key]))

    def meets_quality(self, rec: dict[str, Any]) -> bool:
        return self.bound(rec) >= self.target

    def figure(self, rec: dict[str, Any]) -> str:
        """"0.953 (lower bound 0.931)" — the point estimate and, where measured, the bound."""
        lower = rec.get(f"{self.key}_lower")
        return f"{rec[self.key]:.3f}" + ("" if lower is None else f" (lower bound {lower:.3f})")

    def cost_met(self, rec: dict[str, Any]) -> bool | None:
        """The verdict's cost rule (:func:`distil.cost.cost_target_met`); None when it cannot be judged."""
        if self.max_cost_ratio is None:
            return None
        return cost_target_met(cost_ratio(self.teacher_cost_per_1m, rec.get("cost_per_1m")), self.max_cost_ratio)

    def share(self, rec: dict[str, Any]) -> str:
        ratio = cost_ratio(self.teacher_cost_per_1m, rec.get("cost_per_1m"))
        return "unknown" if ratio is None else f"{1.0 / ratio:.3g}"

    @property
    def cost_text(self) -> str:
        return f"the cost target (at most {self.max_cost_ratio:g} of the teacher's cost per prediction)"

    @property
    def cost_unjudged(self) -> str:
        """A note when a cost target is set but the teacher's cost is unknown (so it is not applied)."""
        if self.max_cost_ratio is None or self.teacher_cost_per_1m:
            return ""
        return "; the cost target is not applied: the teacher's cost per prediction is unknown"


def _cheapest(recs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    return min(recs, key=lambda r: (r["ms_per_pred"], -r[key]))


def _best(recs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    return max(recs, key=lambda r: (r[key], -r["ms_per_pred"]))


def select_member(
    ladder: Sequence[dict[str, Any]],
    *,
    target: float,
    key: str = "agreement",
    what: str = "agreement with the teacher",
    max_cost_ratio: float | None = None,
    teacher_cost_per_1m: float | None = None,
) -> Selection:
    """Choose a ladder member by the quality target and the cost target.

    The quality target is judged by the record's lower confidence bound ``rec[key + "_lower"]`` where
    :func:`train` measured one (:mod:`distil.bounds`: at most a ``SELECTION_ALPHA`` chance, for the
    whole ladder, of choosing a member whose true figure misses the target), else by ``rec[key]``.

    The cost target holds when the member's ``cost_per_1m`` is at most ``max_cost_ratio`` of
    ``teacher_cost_per_1m`` (the verdict's rule); it is not applied when either is None.  In order:

    1. members meeting both targets → the cheapest by ``ms_per_pred``;
    2. members meeting the quality target only → the cheapest of them (warning: cost target missed);
    3. no member meets the quality target → the best by ``key`` among those within the cost target
       (warning), else the best by ``key`` of all (warning: both missed).
    """
    goal = _Goal(key, what, target, max_cost_ratio, teacher_cost_per_1m)
    ok = [r for r in ladder if goal.meets_quality(r)]
    both = [r for r in ok if goal.cost_met(r) is not False]
    if both:
        return _chose_within(_cheapest(both, key), goal)
    if ok:
        return _chose_over_cost(_cheapest(ok, key), goal)
    within = [r for r in ladder if goal.cost_met(r)]
    return _chose_below_target(_best(within or list(ladder), key), goal, within=bool(within))


def _chose_within(rec: dict[str, Any], goal: _Goal) -> Selection:
    reason = f"the cheapest student whose {goal.what} {goal.figure(rec)} reaches {goal.target:.3f}"
    if goal.cost_met(rec):
        reason += f", at {goal.share(rec)} of the teacher's cost per prediction (at most {goal.max_cost_ratio:g})"
    return Selection(str(rec["name"]), reason + goal.cost_unjudged)


def _chose_over_cost(rec: dict[str, Any], goal: _Goal) -> Selection:
    reason = (
        f"the cheapest student whose {goal.what} {goal.figure(rec)} reaches {goal.target:.3f}; "
        f"none of those meets {goal.cost_text}: {rec['name']} costs {goal.share(rec)} of the teacher's"
    )
    return Selection(str(rec["name"]), reason, f"{reason}; the verdict will report the cost target missed")


def _chose_below_target(rec: dict[str, Any], goal: _Goal, *, within: bool) -> Selection:
    name = str(rec["name"])
    if within:
        reason = (
            f"no student reached the target {goal.what} {goal.target:.3f}; chose {name}, the best of those "
            f"within {goal.cost_text}, at {goal.figure(rec)}"
        )
    else:
        reason = (
            f"no student reached the target {goal.what} {goal.target:.3f} "
            f"(best: {name} at {goal.figure(rec)}); chose {name} anyway"
        )
        if goal.max_cost_ratio is not None and goal.teacher_cost_per_1m:
            reason += f", though none meets {goal.cost_text} either"
    reason += goal.cost_unjudged
    return Selection(name, reason, f"{reason} — label more texts or add a stronger student")


def _select(ladder: list[dict[str, Any]], data: _Data, options: dict[str, Any], warnings: list[str]) -> Selection:
    """:func:`select_member` on the figures this run measured; mark the chosen record, log a missed target."""
    by_val = data.validation is not None
    selection = select_member(
        ladder,
        target=options["retention_target"] if by_val else options["target"],
        key="val_retention" if by_val else "agreement",
        what="retention vs gold on the validation set" if by_val else "agreement with the teacher",
        max_cost_ratio=options["max_cost_ratio"],
        teacher_cost_per_1m=options["teacher_cost_per_1m"],
    )
    if selection.warning:
        _warn(warnings, selection.warning)
    log.info("chose %s: %s", selection.chosen, selection.reason)
    next(r for r in ladder if r["name"] == selection.chosen)["chosen"] = True
    return selection


# ---------------------------------------------------------------------------------------------
# The artifact.


#: What ``train()`` writes into an artifact folder; anything else found there (the fine-tuning
#: student's ``.checkpoints``, files a user put there) is carried over to the new one.
ARTIFACT_ENTRIES = frozenset({
    "distil_config.json", "config.json", "labels.json", "ladder.json", "README.md", "heldout.parquet", "ladder",
    "router.json", "ood.npz", "calibration.npz", "ladder_calibration.npz", "train_texts.sha256",
})


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a folder of other files (it would be replaced whole)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not an artifact folder", hint="choose another output folder")
    if out.is_dir() and not config_path(out).exists():
        others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name not in ARTIFACT_ENTRIES)
        if others:
            raise ConfigError(
                f"{out}: holds other files ({', '.join(others[:5])}) and is not an artifact folder",
                hint="distil train replaces the whole artifact folder: choose a new or empty folder",
            )


def _sweep_stale_stages(out: Path) -> None:
    """Remove the temporary folders of killed earlier runs into ``out`` (``.<name>.new-<pid>-…``)."""
    prefix = f".{out.name}.new-"
    for path in out.parent.iterdir():
        pid = path.name.removeprefix(prefix).split("-", 1)[0] if path.name.startswith(prefix) else ""
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``out`` to write the new artifact into; swapped in on success.

    Until the swap ``out`` stays the previous artifact, whole; a failure (or a kill) leaves it so.
    A link named ``out`` keeps pointing where it did: the folder it points to is replaced.
    """
    _check_out(out)
    ensure_folder(out.parent, what="folder for the artifact")
    out = out.resolve()
    _sweep_stale_stages(out)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-{os.getpid()}-", dir=out.parent))
        os.chmod(stage, out.stat().st_mode & 0o7777 if out.is_dir() else 0o777 & ~_umask())
    except OSError as exc:
        raise storage_error(exc, "create the artifact folder") from None
    try:
        yield stage
        _swap_in(stage, out)
    except OSError as exc:  # a full disk or lost permissions while writing the new artifact
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) or str(stage) in str(exc.filename or ""):
            exc.filename = str(out)
            raise storage_error(exc, "write the artifact (the previous one is unchanged)") from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` to disk before it becomes the artifact."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the platform or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(stage: Path, out: Path) -> None:
    """Make the complete artifact in ``stage`` the folder ``out``; ``stage`` then holds the old one.

    One atomic exchange where the platform has it; elsewhere two renames, between which only
    ``.<name>.old-…`` holds the old artifact (:func:`distil.artifact.load_artifact` names it).
    Files of the old folder that are not part of an artifact (and its checkpoints) move over.
    """
    _fsync_tree(stage)
    if not out.exists():
        os.rename(stage, out)
        return
    if not _exchange(stage, out):
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{os.urandom(3).hex()}")
        os.rename(out, old)
        os.rename(stage, out)
        os.rename(old, stage)
    for entry in stage.iterdir():
        if entry.name not in ARTIFACT_ENTRIES and not (out / entry.name).exists():
            os.rename(entry, out / entry.name)


def _config(run: _Run, data: _Data, selection: Selection, options: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: provenance, settings and the selection."""
    val = data.validation
    val_info = {"n": len(val.labeled), "teacher_gold_acc": round(val.teacher_acc, 6)} if val is not None else None
    return {
        "format_version": FORMAT_VERSION,
        "labels": data.labeled.labels,
        "chosen": selection.chosen,
        "task_fingerprint": options["task_fingerprint"],
        "task_path": _relative_task_path(options["task_path"], run.out),
        "input": options["input"],
        "selected_by": "val_retention" if val is not None else "agreement",
        "selection_reason": selection.reason,
        "validation": val_info,
        "teacher_fingerprint": data.labeled.teacher,
        "data_fingerprint": data.labeled.fingerprint(),
        "heldout_fingerprint": data.heldout.fingerprint(),
        "seed": run.seed,
        "target": options["target"],
        "retention_target": options["retention_target"],
        "selection_alpha": SELECTION_ALPHA,
        "max_cost_ratio": options["max_cost_ratio"],
        "teacher_cost_per_1m": options["teacher_cost_per_1m"],
        "core_hour_usd": run.core_hour_usd,
        "heldout_frac": options["heldout_frac"],
        "hard": run.hard,
        "students": list(run.students),
        "n_train": len(data.train),
        "n_heldout": len(data.heldout),
        "heldout_kind": data.heldout_kind,
        "distil_version": _version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "warnings": run.warnings,
    }


def _relative_task_path(task_path: str, out: Path) -> str:
    """The task file's path relative to the artifact folder (no absolute path leaves with an artifact)."""
    if not task_path:
        return ""
    try:
        return os.path.relpath(Path(task_path).resolve(), out.resolve())
    except ValueError:  # another drive (Windows): keep only the name
        return Path(task_path).name


def _write_artifact(out: Path, data: _Data, ladder: list[dict[str, Any]], config: dict[str, Any]) -> None:
    """Write the artifact's files besides the members' weights (already under ``ladder/``).

    ``out`` is the run's temporary folder (:func:`_staged`); ``distil_config.json`` goes last, so a
    folder without it was never finished.
    """
    atomic_write_text(out / "labels.json", json.dumps(data.labeled.labels, indent=2), what="label list")
    atomic_write_text(out / "ladder.json", json.dumps(ladder, indent=2), what="ladder records")
    write_labeled(data.heldout, out / "heldout.parquet")
    write_train_hashes(out, data.labeled.texts)
    atomic_write_text(out / "README.md", model_card(config, ladder), what="model card")
    hf = hf_config(data.labeled.labels, config["chosen"])
    hf_text = json.dumps(hf, indent=2, ensure_ascii=False)
    atomic_write_text(out / HF_CONFIG_FILE, hf_text, what="Hugging Face config")
    atomic_write_text(out / CONFIG_FILE, json.dumps(config, indent=2), what="artifact config")


def _routing_target(target: float, router_target: float | None) -> float:
    """``router_target``, else ``target`` when it is a usable agreement (strictly between 0 and 1)."""
    if router_target is not None:
        return router_target
    # a selection target of 0 or 1 ("any student", "perfect") is no routing target
    return target if 0.0 < target < 1.0 else DEFAULT_ROUTER_TARGET


def train(
    labeled: LabeledSet,
    out: str | Path,
    *,
    students: Sequence[str] = LADDER,
    target: float = DEFAULT_AGREEMENT_TARGET,
    retention_target: float = DEFAULT_RETENTION_TARGET,
    seed: int = 0,
    heldout_frac: float = 0.15,
    hard: bool = False,
    resume: bool = True,
    progress: Callable[[str], None] | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    task_fingerprint: str = "",
    task_path: str = "",
    validation: LabeledSet | None = None,
    router_target: float | None = None,
    max_cost_ratio: float | None = None,
    teacher_cost_per_1m: float | None = None,
    core_hour_usd: float = CORE_HOUR_USD,
    input_spec: dict[str, Any] | None = None,
    routing: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the ladder ``students`` on ``labeled``, select one, write the artifact folder ``out``.

    Always ends by fitting the serving router (confidence threshold + OOD guard, ``router.json``)
    for agreement ``router_target`` (default: ``target`` when it is strictly between 0 and 1, else
    :data:`DEFAULT_ROUTER_TARGET`), so every artifact serves the same way.

    ``target``: minimum held-out agreement with the teacher (argmax match) for a student to be
    chosen, judged by its lower confidence bound with the ladder's multiplicity accounted for
    (:mod:`distil.bounds`); ``retention_target`` is the same for retention on a ``validation`` set.
    ``max_cost_ratio``: the most a chosen student may cost per prediction as a share of
    ``teacher_cost_per_1m`` ($ per 1M predictions; students are priced by their CPU time at
    ``core_hour_usd`` per core-hour); not applied when either is None (see :func:`select_member`).
    ``hard``: train on the teacher's argmax only (ablation).  ``resume``: continue the
    fine-tuning student from its checkpoint in ``out/.checkpoints`` (refused if data or config
    changed).  ``params``: constructor parameters per student name (e.g. ``{"ngram": {"dim": 16}}``).
    ``progress(message)`` is called as each step starts.  Deterministic for a given ``seed``.
    ``validation``: texts with the teacher's answers *and gold labels*, disjoint from the teacher's own
    training data; when given, a student qualifies by its measured retention on it (student accuracy /
    teacher accuracy vs gold) instead of by held-out agreement — a noisy teacher's disagreements are
    often the teacher's errors, so agreement understates what a student keeps.
    ``input_spec``: the task's ``[input]`` rule, stored so that ``distil predict``/``drift`` read files
    the way the students were trained.  ``routing``: the router's certificate settings
    (``level``, ``calibration``, ``folds``, ``certificate``, ``grid_size``: see
    :func:`distil.route.fit_router`).
    """
    out = Path(out)
    run = _Run(out, students, seed, hard, resume, params or {}, core_hour_usd, progress or (lambda _m: None), [])
    _check_options(students, heldout_frac)
    check_routing(routing or {}, router_target)
    sample = random_heldout(labeled)
    data = _split_data(_check_data(labeled, run.warnings), heldout_frac, seed, validation, sample)
    routing = dict(routing or {})
    if data.heldout_kind == "random sample":
        routing.setdefault("calibration", "heldout")  # certify on the random sample, not on picked inputs
        run.say(f"held-out: the {len(data.heldout)} texts of the active run's random sample")
    with _staged(out) as run.stage:  # ``out`` keeps the old artifact until the new one is complete
        ladder = _train_ladder(run, data)
        options = {
            "target": target, "retention_target": retention_target, "max_cost_ratio": max_cost_ratio,
            "teacher_cost_per_1m": teacher_cost_per_1m,
            "heldout_frac": heldout_frac, "task_fingerprint": task_fingerprint, "task_path": task_path,
            "input": input_spec,
        }
        selection = _select(ladder, data, options, run.warnings)
        run.say(f"chose {selection.chosen}; writing the artifact to {out}")
        _write_artifact(run.stage, data, ladder, _config(run, data, selection, options))
        result = TrainResult(
            out=out,
            chosen=selection.chosen,
            ladder=ladder,
            warnings=run.warnings,
            data_fingerprint=data.labeled.fingerprint(),
            n_train=len(data.train),
            n_heldout=len(data.heldout),
            selection_reason=selection.reason,
        )
        result.router = attach_router(
            run.stage, data.labeled, _routing_target(target, router_target), seed=seed, **routing
        )
    return result


def _heldout_text(config: dict[str, Any]) -> str:
    if config.get("heldout_kind") == "random sample":
        return "the active run's random sample of the inputs"
    return f"stratified by teacher label, seed {config['seed']}"


def model_card(config: dict[str, Any], ladder: list[dict[str, Any]]) -> str:
    """The artifact's README.md: what was trained on what, how well, and how to load it."""
    rows = "\n".join(
        f"| {r['name']}{' **(chosen)**' if r['chosen'] else ''} | {'soft' if r['soft'] else 'hard'} "
        f"| {r['agreement']:.4f} | {r['ece_before']:.4f} → {r['ece']:.4f} | {r['temperature']:.3f} "
        f"| {r['ms_per_pred']:.3f} | {r['preds_per_s']:.0f} | {r['size_mb']:.1f} | {r['train_s']:.1f} |"
        for r in ladder
    )
    warn = "\n".join(f"- {w}" for w in config.get("warnings", [])) or "- none"
    labels = config["labels"]
    shown = ", ".join(labels[:20]) + (f", … ({len(labels)} in all)" if len(labels) > 20 else "")
    return f"""{card_metadata(config, ladder)}
# distil student: {config["chosen"]}

A compact classifier distilled from a teacher's soft labels by distil {config["distil_version"]}
on {config["created"]}.

## Provenance
- teacher fingerprint: `{config["teacher_fingerprint"] or "unknown"}`
- training data fingerprint: `{config["data_fingerprint"]}` ({config["n_train"]} training texts,
  {config["n_heldout"]} held-out, {_heldout_text(config)})
- task fingerprint: `{config["task_fingerprint"] or "n/a"}`
- labels ({len(labels)}): {shown}

## Ladder (held-out agreement with the teacher; CPU time per prediction at batch 1)
Selection rule: {_selection_rule(config)}.
Chosen: {config["chosen"]}, {config.get("selection_reason", "")}.

| student | targets | agreement | ECE (15 bins) before → after | T | CPU ms/pred | preds/s b256 | MB | train s |
|---|---|---|---|---|---|---|---|---|
{rows}

## Warnings
{warn}

## How to load
```python
from distil.artifact import load_artifact, predict
art = load_artifact("path/to/this/folder")
probs = art.student().predict_proba(["some text"])   # columns in art.labels order
predict("path/to/this/folder", ["some text"])  # [{{"label": ..., "confidence": ..., "probs": {{...}}}}]
```
Weights are safetensors + JSON (never pickle). The ngram and static students predict with numpy alone.
"""


def card_metadata(config: dict[str, Any], ladder: list[dict[str, Any]]) -> str:
    """The model card's YAML block (between ``---`` lines), as the Hugging Face Hub and ``ModelCard`` read it.

    Every value is written as JSON, which YAML reads as is: no YAML library needed, no quoting to get wrong.
    """
    chosen = next((r for r in ladder if r["name"] == config["chosen"]), {})
    metrics = [{"type": "agreement", "name": "held-out agreement with the teacher", "value": chosen.get("agreement")},
               {"type": "ece", "name": "expected calibration error (15 bins)", "value": chosen.get("ece")}]
    results = [{
        "task": {"type": "text-classification", "name": "Text Classification"},
        "dataset": {"type": "teacher-labeled", "name": f"held-out teacher answers ({config['n_heldout']} texts)",
                    "revision": config["heldout_fingerprint"]},
        "metrics": [m for m in metrics if m["value"] is not None],
    }]
    meta: dict[str, Any] = {
        "library_name": "distil",
        "pipeline_tag": "text-classification",
        "tags": ["distil", "knowledge-distillation", "text-classification", f"distil-{config['chosen']}"],
        "model-index": [{"name": f"distil-{config['chosen']}", "results": results}],
        "distil": {
            "student": config["chosen"], "labels": config["labels"], "format_version": config["format_version"],
            "teacher_fingerprint": config["teacher_fingerprint"], "data_fingerprint": config["data_fingerprint"],
            "task_fingerprint": config["task_fingerprint"], "distil_version": config["distil_version"],
        },
    }
    lines = [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in meta.items()]
    return "---\n" + "\n".join(lines) + "\n---\n"


def _selection_rule(config: dict[str, Any]) -> str:
    by = "retention vs gold (validation)" if config.get("selected_by") == "val_retention" else "agreement"
    rule = f"the cheapest student by CPU ms/prediction whose {by} ≥ {config['target']}"
    if config.get("max_cost_ratio") is not None:
        rule += f" and whose cost per prediction is at most {config['max_cost_ratio']:g} of the teacher's"
    return rule


# ---------------------------------------------------------------------------------------------
# From a task: its targets, and the teacher's cost from the journal.


def teacher_cost_per_1m(
    task: Task,
    teacher_fingerprint: str,
    *,
    journal: Journal | None = None,
    core_hour_usd: float = CORE_HOUR_USD,
    prices: Any = None,
) -> float | None:
    """The teacher's $ per 1M predictions, estimated from its ``done`` journal rows (no teacher call).

    A hosted (``openai``) teacher: mean tokens per answer × the model's price, as the verdict
    computes it (:func:`distil.cost.token_cost_per_1m`; ``prices`` extends the price table).  A
    teacher on our CPU: its CPU core-seconds per answer (a local teacher's journaled cost, else the
    journaled time per answer) × ``core_hour_usd`` (:func:`distil.cost.cpu_cost_per_1m`), where the
    verdict times it directly.  None when nothing is known (no journal, no rows, no price).
    """
    if not teacher_fingerprint:
        return None
    if journal is not None:
        return _cost_from_rows(task, list(journal.rows(teacher=teacher_fingerprint, status="done")),
                               core_hour_usd, prices)
    if not task.journal_path.exists():
        return None
    from distil.journal import Journal

    with Journal(task.journal_path) as jr:
        return teacher_cost_per_1m(task, teacher_fingerprint, journal=jr, core_hour_usd=core_hour_usd, prices=prices)


def _cost_from_rows(task: Task, rows: list[Row], core_hour_usd: float, prices: Any) -> float | None:
    from distil.task import OpenAITeacherSpec

    spec = task.teacher
    if isinstance(spec, OpenAITeacherSpec):
        return _token_cost(spec, rows, prices)
    return _cpu_cost(task, rows, core_hour_usd)


def _token_cost(spec: Any, rows: list[Row], prices: Any) -> float | None:
    token_rows = [r for r in rows if r.tokens_in or r.tokens_out]
    price = lookup_price(
        spec.model, load_prices(prices), price_in_per_1m=spec.price_in_per_1m, price_out_per_1m=spec.price_out_per_1m
    )
    if price is None or not token_rows:
        return None
    tin = float(np.mean([r.tokens_in for r in token_rows]))
    tout = float(np.mean([r.tokens_out for r in token_rows]))
    return token_cost_per_1m(tin, tout, price)


def _cpu_cost(task: Task, rows: list[Row], core_hour_usd: float) -> float | None:
    from distil.task import LocalTeacherSpec

    seconds = [r.latency_ms / 1000.0 for r in rows if r.latency_ms > 0]
    spec = task.teacher
    if isinstance(spec, LocalTeacherSpec) and spec.price_per_core_hour > 0:  # its cost is CPU time × that price
        seconds = [r.cost * 3600.0 / spec.price_per_core_hour for r in rows if r.cost > 0] or seconds
    return cpu_cost_per_1m(statistics.median(seconds), core_hour_usd) if seconds else None


def task_settings(task: Task, teacher_fingerprint: str, *, journal: Journal | None = None) -> dict[str, Any]:
    """:func:`train`'s keywords from a task: its ``[targets]``, the teacher's cost, the fingerprint and path.

    ``target`` = ``min_agreement``, ``retention_target`` = ``min_retention``, ``router_target`` =
    ``routing_agreement``, ``max_cost_ratio`` and ``teacher_cost_per_1m`` (:func:`teacher_cost_per_1m`
    from ``journal``, else the task's own).
    """
    return {
        "target": task.targets.min_agreement,
        "retention_target": task.targets.min_retention,
        "router_target": task.targets.routing_agreement,
        "max_cost_ratio": task.targets.max_cost_ratio,
        "teacher_cost_per_1m": teacher_cost_per_1m(task, teacher_fingerprint, journal=journal),
        "task_fingerprint": task.fingerprint(),
        "task_path": str(task.path or ""),
        "input_spec": task.input.model_dump(),
    }


def train_task(task: Task, out: str | Path | None = None, **kw: Any) -> TrainResult:
    """Train from the task's journal (``distil.label.labeled_set(task)``) into ``out``.

    ``out`` defaults to ``<work dir>/student``; ``target``, ``router_target``, ``max_cost_ratio``
    and ``teacher_cost_per_1m`` default to the task's (:func:`task_settings`) where not given or None.
    Only answers asked for training are used (never those of ``distil eval`` or ``--valid``);
    ``include_sources=("eval",)`` adds others by name; ``workspace`` lends its teacher and journal.
    Other keywords go to :func:`train`.
    """
    from distil.label import labeled_set

    ws = kw.pop("workspace", None)  # a distil.workspace.Workspace lends its teacher and journal
    include = tuple(kw.pop("include_sources", ()))
    if ws is not None:
        labeled = labeled_set(task, teacher=ws.teacher, journal=ws.journal, include=include)
    else:
        labeled = labeled_set(task, include=include)
    if len(labeled) == 0:
        where = task.path or "task.toml"
        raise DataError(
            f"{where}: nothing is labeled yet — the journal holds no teacher answers to train on",
            hint=f"run `distil label {where} <pool file>` first (or `distil run` to label, train and evaluate)",
        )
    settings = task_settings(task, labeled.teacher, journal=ws.journal if ws is not None else None)
    kw.update({k: v for k, v in settings.items() if kw.get(k) is None})
    return train(labeled, Path(out) if out is not None else task.work_path / "student", **kw)


def attach_router(out: Path, labeled: LabeledSet, target_agreement: float, **routing: Any) -> Any:
    """Fit the serving router (confidence threshold + OOD guard) into the artifact ``out``.

    The OOD reference is the training texts without the held-out split (held-out texts set the
    OOD threshold, so they must not be in the reference).  The threshold is certified on
    out-of-fold scores over all of ``labeled`` (``routing`` may change the calibration, folds,
    level, certificate and grid: :func:`distil.route.fit_router`).  A target no threshold can meet
    is not an error: the router then sends everything to the teacher, and the summary says so.
    """
    import warnings as _warnings

    from distil.artifact import load_artifact
    from distil.route import fit_router

    held = set(load_artifact(out).heldout().texts)
    train_texts = [t for t in labeled.texts if t not in held]
    with step("fitting the serving router (threshold + OOD guard)"), _warnings.catch_warnings(), caching():
        _warnings.simplefilter("ignore")  # caching: the student's features of texts it was trained on
        return fit_router(out, train_texts, target_agreement=target_agreement, labeled=labeled, **routing)
