"""label(): ask the teacher about every input once, through the journal, within a budget.

The loop is plain: dedupe the inputs, look every key up in the journal, and send the rest to
the teacher in chunks.  Before a chunk is sent its rows are leased to this run in one
transaction (:meth:`distil.journal.Journal.lease`), so a second run on the same journal skips
them; each answer is committed the moment it arrives (:meth:`~distil.teachers.base.Teacher.answer_each`),
so a kill -9 loses at most the requests on the wire.  Every request the teacher sends — its
capability probe (journaled in ``probes``), retries, extra samples — is counted against
``max_calls`` and ``max_cost`` by one :class:`~distil.cost.Budget`.  Caching, batching and
budgets live here once; retries live in the teacher base; a teacher only answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from distil.cost import Budget, check_budget
from distil.data import LabeledSet
from distil.embcache import caching
from distil.errors import ConfigError, DataError, JournalError
from distil.journal import (
    LEASE_SECONDS,
    Journal,
    Row,
    call_key,
    describe_owner,
    is_training_source,
    new_lease_owner,
)
from distil.progress import note
from distil.task import Task
from distil.teachers import make_teacher
from distil.teachers.base import Answer, Interrupted, Teacher
from distil.teachers.batch import BatchSettings

log = logging.getLogger(__name__)

#: Seconds between looks at inputs another run is asking, while this run waits for them.
WAIT_POLL_S = 0.5
#: The journal source of an active run's random held-out sample (:meth:`distil.active` round 0).
RANDOM_HELDOUT_SOURCE = "active:heldout"


@dataclass
class LabelStats:
    """Counts of one labeling run; ``calls``, ``requests`` and ``spent`` are what this run paid for.

    ``calls`` is the inputs answered this run; ``requests`` every request sent (the capability
    probe's ``probe_requests``, retries, extra samples), which is what ``max_calls`` limits;
    ``spent`` is in dollars, from ``usage`` or the conservative estimate.  ``from_others`` of the
    ``from_journal`` inputs were answered by another run while this one ran; ``abandoned``
    requests were on the wire when the run was interrupted.
    """

    total: int = 0
    from_journal: int = 0
    done: int = 0
    failed: int = 0
    invalid: int = 0
    calls: int = 0
    attempts: int = 0
    spent: float = 0.0
    estimate: float = 0.0
    to_ask: int = 0
    skipped: int = 0
    stopped: str | None = None
    seconds: float = 0.0
    requests: int = 0
    probe_requests: int = 0
    from_others: int = 0
    abandoned: int = 0
    #: logprobs answers of this run, and those where >= SPLIT_NOTABLE of the probability was split evenly
    #: between labels the answer's tokens could not tell apart (labels sharing a first token)
    logprob_answers: int = 0
    split_answers: int = 0
    #: inputs left out because a provider batch still holds them (collected by ``--via batch``)
    in_batches: int = 0
    via: str = "sync"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON and run records)."""
        return asdict(self)


@dataclass
class LabelResult:
    """What :func:`label` returns: the run's numbers and the answered texts."""

    stats: LabelStats
    labeled: LabeledSet
    rows: dict[str, Row] = field(default_factory=dict)
    teacher: str = ""
    soft_warning: str | None = None  # set when the soft labels carry no information (see soft_label_check)

    def row_for(self, text: str) -> Row | None:
        """The journal row for one input text (None if it was not answered)."""
        return self.rows.get(text)


#: An answer whose split probability (``extra["split_mass"]``) reaches this counts as split.
SPLIT_NOTABLE = 0.05
#: The share of split answers that makes ``distil label`` suggest ``label_keys``.
SPLIT_WARN_SHARE = 0.10
#: Answers with a top probability at least this high count as one-hot.
ONE_HOT = 0.999
#: Soft answers (logprobs or samples) needed before they are judged, and the one-hot share that is degenerate.
SOFT_CHECK_MIN, SOFT_CHECK_SHARE = 20, 0.99


def soft_label_check(rows: Sequence[Row]) -> str | None:
    """Why the soft labels are degenerate, or None: ≥ 99% of the soft answers are one-hot.

    A server that returns only the chosen token (``top_logprobs`` of length 1) or probability 1.0
    gives "logprobs" answers that are one-hot: the student then learns from hard labels alone,
    and nothing else would say so.
    """
    soft = [r for r in rows if r.status == "done" and r.method in ("logprobs", "samples") and r.probs]
    if len(soft) < SOFT_CHECK_MIN:
        return None
    one_hot = sum(1 for r in soft if max(r.probs or [0.0]) >= ONE_HOT)
    if one_hot < SOFT_CHECK_SHARE * len(soft):
        return None
    methods = sorted({str(r.method) for r in soft})
    return (
        f"the soft labels carry no information: {one_hot} of {len(soft)} {'/'.join(methods)} answers are one-hot "
        f"(top probability >= {ONE_HOT}); the student learns from hard labels only — check that the server "
        "returns top_logprobs with more than one entry ([teacher].top_logprobs), or use probs = \"samples\""
    )


class LabelInterrupted(Interrupted):
    """Ctrl-C during :func:`label`; ``stats`` says exactly what this run kept (every answer that arrived)."""

    def __init__(self, stats: LabelStats) -> None:
        super().__init__(stats.abandoned)
        self.stats = stats


Progress = Callable[[LabelStats], None]


def _batch_size(teacher: Teacher) -> int:
    size = getattr(getattr(teacher, "spec", None), "batch_size", None)
    if isinstance(size, int) and size > 0:
        return size
    conc = getattr(getattr(teacher, "spec", None), "concurrency", None)
    if isinstance(conc, int) and conc > 0:
        return max(conc * 2, 8)
    return 32


def label(
    task: Task,
    texts: Sequence[str],
    *,
    teacher: Teacher | None = None,
    journal: Journal | None = None,
    max_calls: int | None = None,
    max_cost: float | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    confirm: Callable[[LabelStats], bool] | None = None,
    source: str = "label",
    via: str = "sync",
    batch: BatchSettings | None = None,
    budget: Budget | None = None,
) -> LabelResult:
    """Answer every text with the task's teacher, once; return the labeled set.

    ``via="batch"`` sends the inputs through the provider's Batch API (an ``openai`` teacher; see
    :mod:`distil.teachers.batch`): half price, answers within the batch window, resumable by running
    the same command again; ``batch`` sets its polling and chunk size.

    Texts already answered (``done`` or ``invalid``) for the same teacher fingerprint come
    from the journal without a call; texts another run is asking are waited for, not asked.
    ``max_calls`` (requests) and ``max_cost`` (dollars) are hard stops checked before every
    request; ``stats.stopped`` says which one stopped the run, and nothing already answered is
    lost.  A ``max_cost`` needs a teacher with a known price, and must be a finite number >= 0
    (:class:`ConfigError` otherwise).  ``confirm(stats)`` is called once with the estimate
    before anything is spent; returning False stops the run with ``stopped="declined"``.
    Ctrl-C raises :class:`LabelInterrupted` after keeping every answer that arrived.  ``budget``
    replaces ``max_calls``/``max_cost`` by a budget shared with other runs (a worker of
    :mod:`distil.ray_engine` holds the cluster's; the caller checked its price).
    """
    started = time.perf_counter()
    check_budget(max_calls, max_cost)
    if budget is not None and (max_calls is not None or max_cost is not None):
        raise ConfigError("label(): pass a shared budget or max_calls/max_cost, not both")
    own_journal = journal is None
    teacher = teacher or make_teacher(task)
    check_teacher(task, teacher, max_cost)
    _check_via(via, teacher)
    journal = journal or Journal(task.journal_path)
    try:
        return _label(
            task, list(texts), teacher, journal, budget=budget or Budget(max_calls, max_cost),
            batch_size=batch_size or _batch_size(teacher), progress=progress, confirm=confirm,
            source=source, started=started, via=via, batch=batch,
        )
    finally:
        if own_journal:
            journal.close()


def _check_via(via: str, teacher: Teacher) -> None:
    """``via`` is ``sync`` or ``batch``, and a batch needs an ``openai`` teacher."""
    if via not in ("sync", "batch"):
        raise ConfigError(f"--via must be sync or batch, found {via!r}")
    api = getattr(getattr(teacher, "spec", None), "api", "openai")
    if via == "batch" and (teacher.kind != "openai" or api != "openai"):
        raise ConfigError(
            f"--via batch sends the inputs through OpenAI's Batch API endpoints; {teacher.describe()} is a "
            f"{teacher.kind} teacher" + (f" with api = {api!r}" if teacher.kind == "openai" else ""),
            hint="leave --via out for this teacher",
        )


def check_teacher(task: Task, teacher: Teacher, max_cost: float | None) -> None:
    """The teacher answers with the task's labels, and has a price when a dollar budget is set."""
    if teacher.labels != task.label_names:
        raise ConfigError(
            f"teacher labels {teacher.labels[:5]}… do not match the task's labels {task.label_names[:5]}…",
            hint="build the teacher from the same task",
        )
    check_price(teacher, max_cost)


def check_price(teacher: Teacher, max_cost: float | None) -> None:
    """A dollar budget cannot be kept without a price: refuse it (:class:`ConfigError`)."""
    if max_cost is not None and not teacher.prices_known():
        raise ConfigError(
            f"--max-cost needs to know what the teacher's calls cost, and {teacher.describe()} has no known price",
            hint="set price_in_per_1m and price_out_per_1m ($ per 1M tokens) in the task's [teacher] section, "
            "or limit the run with --max-calls instead",
        )


def _label(
    task: Task,
    texts: list[str],
    teacher: Teacher,
    journal: Journal,
    *,
    budget: Budget,
    batch_size: int,
    progress: Progress | None,
    confirm: Callable[[LabelStats], bool] | None,
    source: str,
    started: float,
    via: str = "sync",
    batch: BatchSettings | None = None,
) -> LabelResult:
    fp = teacher.fingerprint()
    journal.register_teacher(fp, teacher.kind, teacher.identity(), task.label_names)
    uniques = unique_texts(texts)
    keys = {t: call_key(fp, t) for t in uniques}
    journal.note_uses(keys.values(), source)
    stats, todo = _plan(uniques, keys, journal, teacher, via=via, batch=batch)
    run_id = journal.start_run(fp, source, {"to_ask": len(todo), "total": len(uniques)})
    _report(progress, stats)
    if todo and confirm is not None and not confirm(stats):
        stats.stopped = "declined"
        todo = []
    run = _Run(task, teacher, journal, keys, fp, source, stats, budget, progress, run_id, started)
    run.batch = batch or BatchSettings() if via == "batch" else None
    if todo or (via == "batch" and journal.batches(fp, open_only=True)):
        run.ask(todo, len(todo) or 1 if via == "batch" else batch_size)
    run.finish()
    _report(progress, stats)
    return journal_result(task, uniques, keys, journal, stats, fp)


class _Run:
    """One labeling run's asking: leases, answers committed one by one, the budget, the probe's record."""

    def __init__(
        self, task: Task, teacher: Teacher, journal: Journal, keys: dict[str, str], fp: str, source: str,
        stats: LabelStats, budget: Budget, progress: Progress | None, run_id: int, started: float,
    ) -> None:
        self.task, self.teacher, self.journal, self.keys, self.fp = task, teacher, journal, keys, fp
        self.source, self.stats, self.budget, self.progress = source, stats, budget, progress
        self.run_id, self.started = run_id, started
        self.owner = new_lease_owner()
        self.text_of = {k: t for t, k in keys.items()}
        self.batch: BatchSettings | None = None  # set: ask through the provider's Batch API

    def ask(self, todo: list[str], batch_size: int) -> None:
        """Ask ``todo`` in chunks of ``batch_size``, then wait for what other runs were asking."""
        try:
            with _Heartbeat(self.journal, self.owner), caching():
                self._ask(todo, batch_size)
        except KeyboardInterrupt as exc:
            self._settle(quiet=True)
            self.stats.abandoned = exc.abandoned if isinstance(exc, Interrupted) else 0
            self.stats.stopped = "interrupted"
            self.finish(quiet=True)
            raise LabelInterrupted(self.stats) from None
        except JournalError as exc:
            self._settle(quiet=True)
            raise JournalError(
                f"{exc.message}; the {self.stats.calls} answers this run committed before it are kept",
                hint=exc.hint,
            ) from None
        except BaseException:
            self._settle(quiet=True)
            raise
        self._settle(quiet=False)

    def _ask(self, todo: list[str], batch_size: int) -> None:
        self.teacher.prepare(self.budget)  # an LLM teacher's capability probe, within the budget
        self._journal_probe()
        held: dict[str, str] = {}
        if self.batch is not None and not todo:  # nothing new: collect the batches still open
            self._ask_batch([])
        for start in range(0, len(todo), batch_size):
            if self.budget.exhausted:
                break
            self._ask_chunk(todo[start : start + batch_size], held)
        self._wait_for_others(held)
        self.stats.stopped = self.stats.stopped or self.budget.stopped

    def _ask_chunk(self, texts: list[str], held: dict[str, str]) -> None:
        """Lease ``texts`` and ask the granted ones; the ones another live run holds go into ``held``."""
        got = self.journal.lease([(self.keys[t], self.fp, t) for t in texts], self.owner, source=self.source)
        self.stats.from_journal += len(got.answered)
        self.stats.from_others += len(got.answered)
        held.update(got.held)
        granted = set(got.granted)
        asked = [t for t in texts if self.keys[t] in granted]
        if self.batch is not None:
            self._ask_batch(asked)
        elif asked:
            self.teacher.answer_each(asked, lambda i, a: self._on_answer(asked[i], a), self.budget)
        self._sync()

    def _ask_batch(self, asked: list[str]) -> None:
        """Send ``asked`` through the Batch API (collecting open batches first); each answer journaled by key."""
        from distil.teachers.batch import BatchRunner
        from distil.teachers.openai import OpenAITeacher

        assert isinstance(self.teacher, OpenAITeacher) and self.batch is not None
        runner = BatchRunner(self.teacher, self.journal, self.fp, self.batch)
        try:
            runner.answer(asked, self.keys, self._on_batch_answer, self.budget)
        finally:
            runner.close()

    def _on_batch_answer(self, key: str, answer: Answer) -> None:
        """An answer a batch brought (already journaled): counted if this run asked for it."""
        if key in self.text_of:
            _count(self.stats, answer)
        self._sync()
        _report(self.progress, self.stats)

    def _on_answer(self, text: str, answer: Answer) -> None:
        """Commit one answer the moment it arrives, then count it."""
        self.journal.record([(self.keys[text], answer, _label_name(answer, self.task.label_names))])
        _count(self.stats, answer)
        self._sync()
        _report(self.progress, self.stats)

    def _wait_for_others(self, held: dict[str, str]) -> None:
        """Wait for the inputs other runs are asking: each ends answered (counted from the journal) or free to ask."""
        if held:
            owners = sorted(set(held.values()))
            note("waiting for %d inputs that another run is asking (%s)", len(held), describe_owner(owners[0]))
        while held and not self.budget.exhausted:
            time.sleep(WAIT_POLL_S)
            texts = [self.text_of[k] for k in held]
            held.clear()
            self._ask_chunk(texts, held)
            _report(self.progress, self.stats)

    def _sync(self) -> None:
        self.stats.requests = self.budget.requests
        self.stats.spent = self.budget.spent

    def _journal_probe(self) -> None:
        """Journal what the teacher's probe requests cost (they were paid like any other)."""
        spend = self.teacher.take_probe_spend()
        if spend:
            self.stats.probe_requests += int(spend.get("attempts", 0))
            self.stats.attempts += int(spend.get("attempts", 0))
            self.journal.record_probe(self.fp, spend, run=self.run_id)

    def _settle(self, *, quiet: bool) -> None:
        """Journal the probe's cost and give up this run's leases; ``quiet`` while another error propagates."""
        try:
            self._journal_probe()
            self.journal.release(self.owner)
        except JournalError:
            if not quiet:
                raise
        self._sync()

    def finish(self, *, quiet: bool = False) -> None:
        """Close the run record with its numbers."""
        stats = self.stats
        stats.skipped = max(stats.to_ask - stats.calls - stats.from_others, 0)
        stats.seconds = time.perf_counter() - self.started
        try:
            self.journal.finish_run(self.run_id, stats.as_dict())
        except JournalError:
            if not quiet:
                raise


class _Heartbeat:
    """Renews a run's leases every ``LEASE_SECONDS / 4`` on a daemon thread, while the run asks."""

    def __init__(self, journal: Journal, owner: str) -> None:
        self.journal, self.owner = journal, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="distil-lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            try:
                self.journal.renew(self.owner)
            except JournalError as exc:  # the next answer's commit reports it
                log.warning("cannot renew the run's leases: %s", exc)


def unique_texts(texts: list[str]) -> list[str]:
    """The texts once each, in first-seen order; an empty one is refused."""
    uniques = list(dict.fromkeys(t for t in texts))
    empty = [i for i, t in enumerate(uniques) if not t.strip()]
    if empty:
        raise DataError(f"input {empty[0] + 1} is an empty text", hint="drop empty rows before labeling")
    return uniques


def _plan(
    uniques: list[str], keys: dict[str, str], journal: Journal, teacher: Teacher, *, via: str = "sync",
    batch: BatchSettings | None = None,
) -> tuple[LabelStats, list[str]]:
    """The run's starting counts and the texts the journal does not answer yet (``done`` or ``invalid``).

    Inputs an open provider batch holds are not asked again: a batch run collects them, a synchronous
    run leaves them out (``stats.in_batches``) and says how to collect them.
    """
    known = journal.lookup(list(keys.values()))
    stats = LabelStats(total=len(uniques), via=via)
    in_batches = {k for b in journal.batches(teacher.fingerprint(), open_only=True) for k in b["keys"]}
    todo: list[str] = []
    for t in uniques:
        row = known.get(keys[t])
        if row is not None and row.status in ("done", "invalid"):
            stats.from_journal += 1
        elif via == "sync" and keys[t] in in_batches:
            stats.in_batches += 1
        else:
            todo.append(t)
    if stats.in_batches:
        note("%d inputs are in a provider batch still open: `distil label --via batch` collects them",
             stats.in_batches)
    stats.to_ask = len(todo)
    discount = (batch or BatchSettings()).discount if via == "batch" else 1.0
    stats.estimate = teacher.estimate_cost(todo) * discount if todo else 0.0
    return stats, todo


def _report(progress: Progress | None, stats: LabelStats) -> None:
    if progress:
        progress(stats)


def journal_result(
    task: Task, uniques: list[str], keys: dict[str, str], journal: Journal, stats: LabelStats, fp: str
) -> LabelResult:
    """What the journal now holds for the run's texts: the rows, and the answered texts as a labeled set."""
    final = journal.lookup(list(keys.values()))
    rows = {t: final[keys[t]] for t in uniques if keys[t] in final}
    answered = [t for t in uniques if t in rows and rows[t].status == "done" and rows[t].probs is not None]
    probs = (
        np.array([rows[t].probs for t in answered], dtype=np.float32)
        if answered
        else np.zeros((0, len(task.label_names)), dtype=np.float32)
    )
    labeled = LabeledSet(answered, probs, task.label_names, teacher=fp)
    warning = "; ".join(w for w in (soft_label_check(list(rows.values())), split_label_check(stats)) if w) or None
    return LabelResult(stats=stats, labeled=labeled, rows=rows, teacher=fp, soft_warning=warning)


def _label_name(answer: Answer, labels: list[str]) -> str | None:
    idx = answer.label_index
    return labels[idx] if idx is not None and answer.status == "done" else None


def _count(stats: LabelStats, a: Answer) -> None:
    """Count one committed answer (what it cost is in the budget, synced separately)."""
    stats.calls += 1
    stats.attempts += a.attempts
    if a.status == "done":
        stats.done += 1
    elif a.status == "invalid":
        stats.invalid += 1
    else:
        stats.failed += 1
    if a.status == "done" and a.method == "logprobs":
        stats.logprob_answers += 1
        stats.split_answers += int(float(a.extra.get("split_mass", 0.0)) >= SPLIT_NOTABLE)


def split_label_check(stats: LabelStats) -> str | None:
    """Why the logprob soft labels are flattened, or None: many answers split probability between labels."""
    n, k = stats.logprob_answers, stats.split_answers
    if n < SOFT_CHECK_MIN or k < SPLIT_WARN_SHARE * n:
        return None
    return (
        f"in {k} of {n} answers at least {SPLIT_NOTABLE:.0%} of the probability went to labels sharing a first "
        "token and was split evenly between them (the confusable labels get flat targets); set "
        'label_keys = "auto" in [teacher] so that each label is answered by one short key'
    )


def labeled_set(
    task: Task,
    *,
    teacher: Teacher | None = None,
    journal: Journal | None = None,
    include: Sequence[str] = (),
) -> LabeledSet:
    """The ``done`` answers of the task's teacher that a student may learn from.

    Only texts asked for a training purpose (:data:`distil.journal.TRAINING_SOURCES`: labeling
    runs, active rounds, serving fallbacks) are included; answers asked only to measure (``eval``
    for test files, ``valid`` for validation files) are left out unless ``include`` names them.
    Rows an active run asked as its random held-out sample (source :data:`RANDOM_HELDOUT_SOURCE`)
    are named in ``info["random_heldout"]`` (row indices): :func:`distil.train.train` measures on
    them rather than on actively picked inputs.
    """
    teacher = teacher or make_teacher(task)
    fp = teacher.fingerprint()
    own = journal is None
    journal = journal or Journal(task.journal_path)
    try:
        texts: list[str] = []
        probs: list[list[float]] = []
        sample: list[int] = []
        uses = journal.uses(teacher=fp)
        for row in journal.rows(teacher=fp, status="done"):
            wanted = uses.get(row.key, {row.source})
            if not any(is_training_source(s) or s in include for s in wanted):
                continue
            if row.probs is not None and len(row.probs) == len(task.label_names):
                if RANDOM_HELDOUT_SOURCE in wanted:
                    sample.append(len(texts))
                texts.append(row.text)
                probs.append(row.probs)
    finally:
        if own:
            journal.close()
    arr = np.array(probs, dtype=np.float32) if probs else np.zeros((0, len(task.label_names)), np.float32)
    return LabeledSet(texts, arr, task.label_names, teacher=fp, info={"random_heldout": sample} if sample else None)
