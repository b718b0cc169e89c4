"""train(): fit the student ladder on teacher labels, calibrate, measure, select, write the artifact.

Reads only the labeled set (the teacher is never called).  A seeded, stratified held-out part of
the teacher-labeled data (stratified by the teacher's argmax) drives early stopping, temperature
scaling and selection.  Selection: the cheapest student by measured CPU time per prediction
(batch 1, median) whose agreement with the teacher on held-out is at least ``target``; if none
reaches it, the most agreeing one, with a warning.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.artifact import FORMAT_VERSION, write_train_hashes
from distil.calibrate import ece, fit_temperature
from distil.data import LabeledSet, write_labeled
from distil.embcache import caching
from distil.errors import DataError, MissingExtra
from distil.progress import step
from distil.students.base import LADDER, Student, student_class

if TYPE_CHECKING:
    from distil.task import Task

log = logging.getLogger("distil.train")

MIN_PER_CLASS = 5  # fewer teacher labels than this for a class → a warning naming it


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

    def summary(self) -> str:
        """The ladder as a few lines for the CLI."""
        lines = [f"student artifact: {self.out} ({self.n_train} train / {self.n_heldout} held-out texts)"]
        for r in self.ladder:
            mark = "*" if r.get("chosen") else " "
            lines.append(
                f" {mark} {r['name']:<9} agreement {r['agreement']:.4f}  {r['ms_per_pred']:.3f} ms/pred  "
                f"{r['size_mb']:.1f} MB  ECE {r.get('ece', float('nan')):.3f}  train {r.get('train_s', 0):.0f}s"
                + (f"  retention vs gold (validation) {r['val_retention']:.3f}" if "val_retention" in r else "")
            )
        lines.append(f"chosen: {self.chosen}")
        if self.router is not None:
            t = self.router.threshold
            lines.append(
                f"router: confidence threshold {t.value:.4f} for agreement >= {t.target} "
                f"(95% lower bound {t.lower_bound:.4f}); expected share sent to the teacher {t.teacher_share:.1%}"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


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


def measure_latency(student: Student, texts: Sequence[str], *, calls: int = 30) -> tuple[float, float]:
    """(CPU ms per prediction at batch 1 — median over ``calls`` calls, predictions/s at batch 256).

    :func:`train` runs it with one torch thread for torch students, so both numbers are per core.
    """
    with caching(False):  # a timed prediction computes everything it would compute when served
        return _measure_latency(student, texts, calls)


def _measure_latency(student: Student, texts: Sequence[str], calls: int) -> tuple[float, float]:
    pool = [t for t in texts if t] or ["hello"]
    student.predict_proba(pool[:1])
    times = []
    for i in range(calls):
        t0 = time.process_time()
        student.predict_proba([pool[i % len(pool)]])
        times.append(time.process_time() - t0)
    ms = 1000.0 * statistics.median(times)
    batch = [pool[i % len(pool)] for i in range(256)]
    best = float("inf")
    for _ in range(3 if not student.needs_torch else 1):
        t0 = time.perf_counter()
        student.predict_proba(batch)
        best = min(best, time.perf_counter() - t0)
    return ms, 256.0 / max(best, 1e-9)


def _time_member(student: Student, texts: Sequence[str]) -> tuple[float, float]:
    """measure_latency with one torch thread for torch students (CPU time on one core, no spin-wait)."""
    if not student.needs_torch:
        return measure_latency(student, texts, calls=30)
    from distil.students.base import torch_threads

    with torch_threads(1):
        return measure_latency(student, texts, calls=10)


def _calibrate_and_time(
    student: Student, name: str, val_texts: Sequence[str], val_probs: np.ndarray, *, hard: bool, train_s: float
) -> tuple[dict[str, Any], np.ndarray]:
    """A fitted member's ladder record: held-out agreement, temperature (set on it), ECE, CPU time, size.

    Returns the record and the member's held-out logits.
    """
    from distil.students.base import softmax

    val_hard = val_probs.argmax(axis=1)
    with step(f"the {name} student's answers for {len(val_texts)} held-out texts"), caching():
        logits = student.predict_logits(val_texts)
    temp = fit_temperature(logits, val_probs)
    student.temperature_ = temp
    with step(f"timing the {name} student"):
        ms, pps = _time_member(student, val_texts)
    rec: dict[str, Any] = {
        "name": name,
        "soft": not hard,
        "agreement": round(float(np.mean(logits.argmax(axis=1) == val_hard)), 6),
        "ece": round(ece(softmax(logits / temp), val_hard), 6),
        "ece_before": round(ece(softmax(logits), val_hard), 6),
        "temperature": round(temp, 6),
        "ms_per_pred": round(ms, 4),
        "preds_per_s": round(pps, 1),
        "size_mb": round(student.size_bytes() / 1e6, 3),
        "train_s": round(train_s, 2),
        "needs_torch": student.needs_torch,
        "chosen": False,
    }
    return rec, logits


def _check_data(labeled: LabeledSet, warnings: list[str]) -> LabeledSet:
    if len(labeled.labels) < 2:
        raise DataError(f"labeled set: need at least 2 labels, found {labeled.labels}")
    keep = [i for i, t in enumerate(labeled.texts) if isinstance(t, str) and t.strip()]
    if not keep:
        raise DataError(
            f"labeled set: all {len(labeled)} texts are empty",
            hint="check the input column; nothing can be trained on empty texts",
        )
    if len(keep) < len(labeled):
        msg = f"dropped {len(labeled) - len(keep)} empty text(s) from the labeled set"
        warnings.append(msg)
        log.warning(msg)
        labeled = LabeledSet(
            texts=[labeled.texts[i] for i in keep],
            probs=labeled.probs[keep],
            labels=labeled.labels,
            gold=[labeled.gold[i] for i in keep] if labeled.gold is not None else None,
            teacher=labeled.teacher,
        )
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
        msg = (
            f"{len(few)} class(es) have fewer than {MIN_PER_CLASS} teacher labels: {shown}; "
            "the student will be weak on them — label more texts of these classes"
        )
        warnings.append(msg)
        log.warning(msg)
    return labeled


#: The router's agreement target when neither ``router_target`` nor a usable ``target`` is given.
DEFAULT_ROUTER_TARGET = 0.95


def train(
    labeled: LabeledSet,
    out: str | Path,
    *,
    students: Sequence[str] = LADDER,
    target: float = 0.95,
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
) -> TrainResult:
    """Train the ladder ``students`` on ``labeled``, select one, write the artifact folder ``out``.

    Always ends by fitting the serving router (confidence threshold + OOD guard, ``router.json``)
    for agreement ``router_target`` (default: ``target`` when it is strictly between 0 and 1, else
    :data:`DEFAULT_ROUTER_TARGET`), so every artifact serves the same way.

    ``target``: minimum held-out agreement with the teacher (argmax match) for a student to be
    chosen.  ``hard``: train on the teacher's argmax only (ablation).  ``resume``: continue the
    fine-tuning student from its checkpoint in ``out/.checkpoints`` (refused if data or config
    changed).  ``params``: constructor parameters per student name (e.g. ``{"ngram": {"dim": 16}}``).
    ``progress(message)`` is called as each step starts.  Deterministic for a given ``seed``.
    ``validation``: texts with the teacher's answers *and gold labels*, disjoint from the teacher's own
    training data; when given, a student qualifies by its measured retention on it (student accuracy /
    teacher accuracy vs gold) instead of by held-out agreement — a noisy teacher's disagreements are
    often the teacher's errors, so agreement understates what a student keeps.
    """
    out = Path(out)
    say = progress or (lambda _m: None)
    warnings: list[str] = []
    if not students:
        raise DataError("train: no students to train", hint=f"choose some of {', '.join(LADDER)}")
    unknown = [s for s in students if s not in LADDER]
    if unknown:
        from distil.errors import ConfigError

        raise ConfigError(f"unknown student(s) {unknown}", hint=f"choose from {', '.join(LADDER)}")
    if not 0.0 < heldout_frac < 1.0:
        from distil.errors import ConfigError

        raise ConfigError(f"heldout_frac must be between 0 and 1, found {heldout_frac}")
    labeled = _check_data(labeled, warnings)
    tr_idx, ho_idx = split_heldout(labeled.hard, heldout_frac, seed)
    if len(ho_idx) == 0:
        raise DataError(
            f"labeled set: {len(labeled)} texts leave nothing for the held-out split "
            f"(heldout_frac={heldout_frac})",
            hint="label more texts (a few per class at least) or raise heldout_frac",
        )
    texts = [labeled.texts[i] for i in tr_idx]
    probs = labeled.probs[tr_idx]
    val_texts = [labeled.texts[i] for i in ho_idx]
    val_probs = labeled.probs[ho_idx]
    heldout = LabeledSet(
        texts=val_texts,
        probs=val_probs,
        labels=labeled.labels,
        gold=[labeled.gold[i] for i in ho_idx] if labeled.gold is not None else None,
        teacher=labeled.teacher,
    )
    val_gold: np.ndarray | None = None
    teacher_val_acc = 0.0
    if validation is not None:
        if validation.labels != labeled.labels or validation.gold is None:
            raise DataError("train: the validation set needs the same labels as the training set and gold labels")
        keep = [i for i, g in enumerate(validation.gold) if g in labeled.labels]
        if len(keep) < 20:
            raise DataError(f"train: only {len(keep)} validation rows have a gold label; need at least 20")
        val_gold = np.array([labeled.labels.index(str(validation.gold[i])) for i in keep])
        validation = LabeledSet(
            [validation.texts[i] for i in keep], validation.probs[keep], validation.labels,
            gold=[validation.gold[i] for i in keep], teacher=validation.teacher,
        )
        teacher_val_acc = float(np.mean(validation.probs.argmax(axis=1) == val_gold))
        if teacher_val_acc <= 0:
            raise DataError("train: the teacher got every validation row wrong; retention is undefined")
    out.mkdir(parents=True, exist_ok=True)
    ladder: list[dict[str, Any]] = []
    for n, name in enumerate(students, 1):
        kwargs = dict((params or {}).get(name, {}))
        kwargs.setdefault("seed", seed)
        if name == "finetune":
            kwargs.setdefault("checkpoint_dir", str(out / ".checkpoints" / "finetune"))
            kwargs.setdefault("resume", resume)
        say(f"training {name} ({n}/{len(students)}) on {len(texts)} texts")
        try:
            student = student_class(name)(**kwargs)
            t0 = time.perf_counter()
            with step(f"training the {name} student ({n}/{len(students)}) on {len(texts)} texts"), caching():
                student.fit(
                    texts, probs, labels=labeled.labels, val_texts=val_texts, val_probs=val_probs, hard=hard
                )
            train_s = time.perf_counter() - t0
        except MissingExtra as exc:
            msg = f"skipped the {name} student: {exc}"
            warnings.append(msg)
            log.warning(msg)
            continue
        say(f"calibrating and timing {name}")
        rec, logits = _calibrate_and_time(student, name, val_texts, val_probs, hard=hard, train_s=train_s)
        folder = out / "ladder" / name
        if folder.exists():
            shutil.rmtree(folder)
        student.save(folder)
        if labeled.gold is not None:
            gold_idx = [
                (i, labeled.labels.index(g)) for i, g in enumerate(heldout.gold or []) if g in labeled.labels
            ]
            if gold_idx:
                rows, ys = zip(*gold_idx, strict=True)
                rec["heldout_gold_acc"] = round(
                    float(np.mean(logits[list(rows)].argmax(1) == np.array(ys))), 6
                )
        if validation is not None and val_gold is not None:
            with caching():
                val_logits = student.predict_logits(validation.texts)
            val_acc = float(np.mean(val_logits.argmax(axis=1) == val_gold))
            rec["val_gold_acc"] = round(val_acc, 6)
            rec["val_retention"] = round(val_acc / teacher_val_acc, 6)
        ladder.append(rec)
        log.info("%s: agreement %.4f, %.3f ms/pred, %.1f MB", name, rec["agreement"], rec["ms_per_pred"],
                 rec["size_mb"])
    if not ladder:
        raise DataError("train: no student could be trained", hint="; ".join(warnings))
    key = "val_retention" if validation is not None else "agreement"
    what = "retention vs gold on the validation set" if validation is not None else "agreement with the teacher"
    ok = [r for r in ladder if r[key] >= target]
    if ok:
        best = min(ok, key=lambda r: (r["ms_per_pred"], -r[key]))
    else:
        best = max(ladder, key=lambda r: (r[key], -r["ms_per_pred"]))
        msg = (
            f"no student reached the target {what} {target:.3f} "
            f"(best: {best['name']} at {best[key]:.3f}); chose {best['name']} anyway — "
            "label more texts or add a stronger student"
        )
        warnings.append(msg)
        log.warning(msg)
    best["chosen"] = True
    chosen = str(best["name"])
    say(f"chose {chosen}; writing the artifact to {out}")
    # remove members of an earlier run that this run did not train
    if (out / "ladder").is_dir():
        for old in (out / "ladder").iterdir():
            if old.name not in {r["name"] for r in ladder}:
                shutil.rmtree(old)
    fingerprint = labeled.fingerprint()
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "labels": labeled.labels,
        "chosen": chosen,
        "task_fingerprint": task_fingerprint,
        "task_path": task_path,
        "selected_by": key,
        "validation": (
            {"n": len(validation), "teacher_gold_acc": round(teacher_val_acc, 6)} if validation is not None else None
        ),
        "teacher_fingerprint": labeled.teacher,
        "data_fingerprint": fingerprint,
        "heldout_fingerprint": heldout.fingerprint(),
        "seed": seed,
        "target": target,
        "heldout_frac": heldout_frac,
        "hard": hard,
        "students": list(students),
        "n_train": len(texts),
        "n_heldout": len(val_texts),
        "distil_version": _version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "warnings": warnings,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "labels.json").write_text(json.dumps(labeled.labels, indent=2), encoding="utf-8")
    (out / "ladder.json").write_text(json.dumps(ladder, indent=2), encoding="utf-8")
    write_labeled(heldout, out / "heldout.parquet")
    write_train_hashes(out, labeled.texts)
    (out / "README.md").write_text(model_card(config, ladder), encoding="utf-8")
    result = TrainResult(
        out=out,
        chosen=chosen,
        ladder=ladder,
        warnings=warnings,
        data_fingerprint=fingerprint,
        n_train=len(texts),
        n_heldout=len(val_texts),
    )
    # a selection target of 0 or 1 ("any student", "perfect") is no routing target
    routing = router_target if router_target is not None else (target if 0.0 < target < 1.0 else DEFAULT_ROUTER_TARGET)
    result.router = attach_router(out, labeled, routing)
    return result


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
    return f"""# distil student: {config["chosen"]}

A compact classifier distilled from a teacher's soft labels by distil {config["distil_version"]}
on {config["created"]}.

## Provenance
- teacher fingerprint: `{config["teacher_fingerprint"] or "unknown"}`
- training data fingerprint: `{config["data_fingerprint"]}` ({config["n_train"]} training texts,
  {config["n_heldout"]} held-out, stratified by teacher label, seed {config["seed"]})
- task fingerprint: `{config["task_fingerprint"] or "n/a"}`
- labels ({len(labels)}): {shown}

## Ladder (held-out agreement with the teacher; CPU time per prediction at batch 1)
Selection rule: the cheapest student by CPU ms/prediction whose agreement ≥ {config["target"]}.

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


def train_task(task: Task, out: str | Path | None = None, **kw: Any) -> TrainResult:
    """Train from the task's journal (``distil.label.labeled_set(task)``) into ``out``.

    ``out`` defaults to ``<work dir>/student``; ``target`` defaults to ``task.targets.min_retention``.
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
    kw.setdefault("target", task.targets.min_retention)
    if kw.get("router_target") is None:
        kw["router_target"] = task.targets.routing_agreement
    kw.setdefault("task_fingerprint", task.fingerprint())
    kw.setdefault("task_path", str(task.path or ""))
    return train(labeled, Path(out) if out is not None else task.work_path / "student", **kw)


def attach_router(out: Path, labeled: LabeledSet, target_agreement: float) -> Any:
    """Fit the serving router (confidence threshold + OOD guard) into the artifact ``out``.

    The OOD reference is the training texts without the held-out split (held-out texts set the
    OOD threshold, so they must not be in the reference).  A target no threshold can meet is not
    an error: the router then sends everything to the teacher, and the summary says so.
    """
    import warnings as _warnings

    from distil.artifact import load_artifact
    from distil.route import fit_router

    held = set(load_artifact(out).heldout().texts)
    train_texts = [t for t in labeled.texts if t not in held]
    with step("fitting the serving router (threshold + OOD guard)"), _warnings.catch_warnings(), caching():
        _warnings.simplefilter("ignore")  # caching: the student's features of texts it was trained on
        return fit_router(out, train_texts, target_agreement=target_agreement)
