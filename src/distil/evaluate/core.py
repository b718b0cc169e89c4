"""evaluate(): one run that measures the teacher and every student of an artifact on one test file.

:func:`evaluate` reads as its steps: read the artifact, the task and the test file; get the teacher's
answers (through the journal) and measure the teacher; measure each ladder member; score the chosen
student against the reference (with intervals); replay the cascade and the served system; word the
verdict; write the files.  Each step is a function of the package returning a typed record;
:func:`distil.evaluate.schema.metrics_dict` turns the records into metrics.json's dict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.cost import Price, cost_ratio, load_prices
from distil.embcache import caching
from distil.errors import ConfigError
from distil.evaluate.curve import cascade_curve, off_topic_block, served_block
from distil.evaluate.decision import targets
from distil.evaluate.intervals import paired_intervals
from distil.evaluate.members import Ladder, measure_members
from distil.evaluate.resolve import align_columns, overlap, resolve_task
from distil.evaluate.schema import (
    ClassScore,
    Confusion,
    Evaluation,
    GoldFigures,
    MemberRecord,
    Reliability,
    Retention,
    TeacherRecord,
    clean,
    finite,
    metrics_dict,
    write_metrics,
)
from distil.evaluate.scoring import (
    Reference,
    confusion,
    disagreements,
    gold_figures,
    per_class,
    reference,
    reliability,
    retention,
)
from distil.evaluate.teacher import EvalRows, ask_teacher, evaluated_rows, measure_teacher
from distil.evaluate.testset import _read_test, _TestSet, dataset_fingerprint
from distil.progress import step
from distil.task import Task

if TYPE_CHECKING:
    from distil.artifact import Artifact
    from distil.journal import Journal
    from distil.teachers.base import Teacher

__all__ = ["MIN_PER_CLASS", "evaluate"]

MIN_PER_CLASS = 5


@dataclass(frozen=True)
class _Options:
    """How one run measures: evaluate()'s keyword arguments that every step shares."""

    label_column: str | None
    core_hour_usd: float
    seed: int
    n_resamples: int
    timing_budget_s: float
    teacher_timing_texts: int


@dataclass(frozen=True)
class _Setup:
    """What is evaluated: the artifact, the task it is evaluated for, the test file, the first warnings."""

    art: Artifact
    task: Task
    art_perm: np.ndarray | None  # artifact label order → task label order (None: the same)
    test: _TestSet
    prices: dict[str, Price]
    warnings: list[str]
    overlap: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """The task's labels: the column order of every figure."""
        return self.task.label_names


@dataclass(frozen=True)
class _Scores:
    """The chosen student scored against the reference, with the gold-only figures and the intervals."""

    gold: GoldFigures | None
    retention: Retention
    per_class: list[ClassScore]
    confusion: Confusion
    reliability: Reliability
    ci: dict[str, tuple[float, float]]


def evaluate(
    artifact_dir: str | Path,
    test_path: str | Path,
    *,
    task: Task | str | Path | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
    out: str | Path | None = None,
    teacher: Teacher | None = None,
    journal: Journal | str | Path | None = None,
    prices: Mapping[str, Any] | str | Path | None = None,
    core_hour_usd: float = 0.05,
    seed: int = 0,
    n_resamples: int = 1000,
    timing_budget_s: float = 3.0,
    teacher_timing_texts: int = 64,
    report: bool = True,
    allow_overlap: bool = False,
    off_topic: str | Path | None = None,
) -> dict[str, Any]:
    """Measure teacher and students of ``artifact_dir`` on ``test_path``; return metrics.json's dict.

    ``task`` is a :class:`Task` or a task file (default: the one stored in the artifact).
    ``label_column`` names gold labels in the test file (optional; without it agreement with
    the teacher leads and retention is defined as agreement).  Text comes from
    ``text_column`` when the file has it, else from the task's ``[input].fields``.  The
    teacher answers through the journal (``journal`` or the task's own): answered texts are
    not asked again.  ``prices`` extends the price table (:func:`distil.cost.load_prices`);
    ``core_hour_usd`` prices CPU time.  With ``out``, writes ``metrics.json``,
    ``disagreements.json`` and (``report=True``) ``report.html`` there.

    ``off_topic``: a file of texts the task has no label for (read by the same rule as the test
    file); metrics.json's ``served.off_topic`` gives the share the served system answers with the
    student alone — each of those is an off-topic text answered as if it were in scope.

    Test texts the ladder saw in training (the artifact's ``train_texts.sha256``) are counted in
    ``overlap``; when there are any, the verdict is withheld (``verdict_withheld``) unless
    ``allow_overlap``: a student graded on its own training texts looks better than it is.

    Raises :class:`DataError` for an unusable test file (empty, missing column, gold label not
    in the task), :class:`ArtifactError` for a student whose labels do not match the task.
    """
    t_start = time.perf_counter()
    if core_hour_usd < 0:
        raise ConfigError(f"core_hour_usd must be >= 0, found {core_hour_usd}")
    opts = _Options(label_column, core_hour_usd, seed, n_resamples, timing_budget_s, teacher_timing_texts)
    # 1. the artifact, its task and the test file
    setup = _open(artifact_dir, test_path, task, text_column=text_column, label_column=label_column, prices=prices)
    # 2. the teacher's answers (through the journal) and its cost; what every figure is scored against
    rows, teacher_rec = _teacher_step(setup, teacher, journal, opts)
    ref = reference(rows.gold, rows.t_pred)
    # 3. every ladder member answered, scored and timed
    ladder = measure_members(setup.art, setup.labels, setup.art_perm, rows, ref,
                             core_hour_usd=core_hour_usd, budget_s=timing_budget_s)
    # 4. the chosen student against the reference, with paired intervals
    scores = _score(ladder, rows, ref, setup.labels, opts)
    # 5. the cascade curve and the served system
    cascade, served = _cascade_step(setup, rows, ladder, teacher_rec)
    if served is not None and off_topic is not None:
        served["off_topic"] = _off_topic_step(setup, Path(off_topic), text_column)
    worst = disagreements(rows.uniques, rows.rows, rows.row_numbers, rows.t_probs, ladder.chosen_probs, rows.gold,
                          setup.labels)
    # 6. ratios, target decision and warnings in one record; 7. metrics.json's dict with the verdict
    record = _evaluation(setup, rows, ref, teacher_rec, ladder.members, scores, cascade, served, opts,
                         seconds=time.perf_counter() - t_start)
    metrics = metrics_dict(record, allow_overlap=allow_overlap)
    # 8. the files
    if out is not None:
        _write(Path(out), metrics, worst, report=report)
    return metrics


def _off_topic_step(setup: _Setup, path: Path, text_column: str | None) -> dict[str, Any]:
    """Step 5b: the off-topic file through the served system (no teacher asked)."""
    from distil.data import read_inputs
    from distil.errors import DataError

    texts = read_inputs(path, setup.task.input, text_column=text_column).texts
    if not texts:
        raise DataError(f"{path}: no usable off-topic texts", hint="give a file with one text per row")
    with step(f"the served system on {len(texts)} off-topic texts"), caching():
        return off_topic_block(setup.art.path, texts, str(path))


def _open(
    artifact_dir: str | Path,
    test_path: str | Path,
    task: Task | str | Path | None,
    *,
    text_column: str | None,
    label_column: str | None,
    prices: Mapping[str, Any] | str | Path | None,
) -> _Setup:
    """Step 1: the artifact, its task, the test file and the price table; warns about what is off."""
    from distil.artifact import load_artifact

    art = load_artifact(artifact_dir)
    the_task = resolve_task(task, art)
    art_perm = align_columns(list(art.labels), the_task.label_names, str(art.path))
    ts = _read_test(Path(test_path), the_task, text_column=text_column, label_column=label_column)
    price_table = load_prices(prices)
    warnings: list[str] = []
    trained_for = art.config.get("task_fingerprint")
    if trained_for and trained_for != the_task.fingerprint():
        warnings.append(
            f"the student was trained for task fingerprint {trained_for}, this task's is "
            f"{the_task.fingerprint()} (labels, descriptions, instruction or input changed)"
        )
    if ts.skipped_rows:
        warnings.append(f"{ts.skipped_rows} test row(s) had empty or non-text input and were skipped")
    seen = overlap(art, ts.uniques, warnings)
    warnings += soft_label_warnings(str(art.config.get("teacher_fingerprint") or ""), the_task)
    return _Setup(art, the_task, art_perm, ts, price_table, warnings, seen)


def soft_label_warnings(teacher_fingerprint: str, task: Task) -> list[str]:
    """What :func:`distil.label.soft_label_check` says of the answers the student learned from (from the
    task's journal, when it is here): the report then says that no soft information arrived."""
    from distil.journal import Journal
    from distil.label import soft_label_check

    if not teacher_fingerprint or not task.journal_path.exists():
        return []
    with Journal(task.journal_path) as journal:
        said = soft_label_check(list(journal.rows(teacher_fingerprint, status="done")))
    return [f"training answers: {said}"] if said else []


def _teacher_step(
    setup: _Setup, teacher: Teacher | None, journal: Journal | str | Path | None, opts: _Options
) -> tuple[EvalRows, TeacherRecord]:
    """Step 2: the teacher's answers through the journal, the rows it answered, and its cost.

    A teacher built here is closed here (a :class:`~distil.workspace.Workspace` lent the caller's);
    a caller's teacher is the caller's to close.
    """
    from distil.workspace import Workspace

    with Workspace(setup.task, teacher=teacher) as ws:
        answers = ask_teacher(setup.task, setup.test.uniques, ws.teacher, journal)
        rows = evaluated_rows(setup.test, answers, opts.label_column, len(setup.labels), setup.warnings)
        sample = [t for t in setup.test.uniques if t in answers.answered][: opts.teacher_timing_texts]
        record = measure_teacher(ws.teacher, setup.task, answers, sample, prices=setup.prices,
                                 core_hour_usd=opts.core_hour_usd, budget_s=opts.timing_budget_s,
                                 warnings=setup.warnings)
    return rows, record


def _score(ladder: Ladder, rows: EvalRows, ref: Reference, labels: list[str], opts: _Options) -> _Scores:
    """Step 4: the chosen student against the reference, the gold-only figures, the paired intervals."""
    k = len(labels)
    s_pred, s_conf, t_pred = ladder.s_pred, ladder.s_conf, rows.t_pred
    gold = gold_figures(t_pred, rows.t_conf, ref, k)
    return _Scores(
        gold=gold,
        retention=retention(ladder.chosen.quality, gold),
        per_class=per_class(s_pred, ref, labels, gold),
        confusion=confusion(s_pred, ref, labels),
        reliability=reliability(s_pred, s_conf, ref, gold),
        ci=paired_intervals(s_pred, s_conf, t_pred, ref, k, n_resamples=opts.n_resamples, seed=opts.seed),
    )


def _cascade_step(
    setup: _Setup, rows: EvalRows, ladder: Ladder, teacher: TeacherRecord
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Step 5: the cascade curve over every threshold, and what the served system answers."""
    cascade = cascade_curve(
        ladder.s_conf, ladder.s_pred, rows.t_pred, rows.gold,
        student_cost_per_1m=finite(ladder.chosen.cost_per_1m),
        teacher_cost_per_1m=finite(teacher.cost.cost_per_1m),
    )
    with step("the served system on the test texts (stored threshold and OOD guard)"), caching():
        served = served_block(
            setup.art.path, rows.texts, rows.t_pred, rows.gold, setup.labels, setup.warnings,
            student_cost_per_1m=finite(ladder.chosen.cost_per_1m), teacher_cost_per_1m=finite(teacher.cost.cost_per_1m),
            member_costs={m.name: finite(m.cost_per_1m) for m in ladder.members},
        )
    return cascade, served


def _evaluation(
    setup: _Setup,
    rows: EvalRows,
    ref: Reference,
    teacher: TeacherRecord,
    ladder: list[MemberRecord],
    scores: _Scores,
    cascade: list[dict[str, Any]],
    served: dict[str, Any] | None,
    opts: _Options,
    *,
    seconds: float,
) -> Evaluation:
    """Step 6: speed and cost ratios, the target decision, the trust warnings — the run's one record."""
    chosen = next(m for m in ladder if m.chosen)
    t_ms, s_ms = teacher.cost.ms_per_pred, chosen.timing.ms_per_pred
    t_cost, s_cost = teacher.cost.cost_per_1m, chosen.cost_per_1m
    ratio = cost_ratio(t_cost, s_cost)
    setup.warnings.extend(_trust_warnings(scores.per_class, rows.n, ref, teacher, chosen))
    return Evaluation(
        task=setup.task.name,
        artifact=str(setup.art.path),
        test_file=str(setup.test.path),
        n_test=rows.n,
        n_test_texts=len({int(r) for r in rows.rows}),
        dataset_fingerprint=dataset_fingerprint(rows.uniques, rows.rows, rows.gold, setup.labels),
        label_column=opts.label_column if ref.is_gold else None,
        text_fields=setup.test.text_fields,
        labels=setup.labels,
        reference=ref.kind,
        teacher=teacher,
        ladder=ladder,
        gold=scores.gold,
        retention=scores.retention,
        speedup=t_ms / s_ms if t_ms and s_ms else None,
        cost_ratio=ratio,
        reliability=scores.reliability,
        cascade=cascade,
        served=served,
        per_class=scores.per_class,
        confusion=scores.confusion,
        ci=scores.ci,
        target=targets(setup.task, scores.retention.value, scores.ci.get("retention"), ratio),
        n_resamples=opts.n_resamples,
        seed=opts.seed,
        core_hour_usd=opts.core_hour_usd,
        seconds=seconds,
        warnings=setup.warnings,
        overlap=setup.overlap,
    )


def _trust_warnings(
    classes: list[ClassScore], n: int, ref: Reference, teacher: TeacherRecord, chosen: MemberRecord
) -> list[str]:
    """What makes the figures less trustworthy: rare or absent classes, a small test set, a cheap teacher."""
    out: list[str] = []
    small = [c.label for c in classes if 0 < c.support < MIN_PER_CLASS]
    absent = [c.label for c in classes if c.support == 0]
    basis = "gold" if ref.is_gold else "teacher-labelled"
    if small:
        out.append(
            f"{len(small)} class(es) have fewer than {MIN_PER_CLASS} {basis} test examples "
            f"(e.g. {small[:3]}): per-class F1 is noisy"
        )
    if absent:
        out.append(f"{len(absent)} class(es) have no {basis} test examples (e.g. {absent[:3]}): no per-class F1")
    if n < 100:
        out.append(f"only {n} test examples: the confidence intervals are wide")
    t_cost, s_cost = teacher.cost.cost_per_1m, chosen.cost_per_1m
    if teacher.kind != "openai" and t_cost is not None and t_cost < s_cost:
        out.append("the student costs more CPU per prediction than the teacher on this machine")
    return out


def _write(out: Path, metrics: dict[str, Any], worst: list[dict[str, Any]], *, report: bool) -> None:
    """Step 8: metrics.json, disagreements.json and (``report``) report.html in ``out``."""
    write_metrics(metrics, out / "metrics.json")
    (out / "disagreements.json").write_text(json.dumps(clean(worst), indent=2, ensure_ascii=False), encoding="utf-8")
    if report:
        from distil.report import write_report

        write_report(metrics, out / "report.html", disagreements=worst)
