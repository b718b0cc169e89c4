"""``--engine ray``: labeling and batch prediction on a Ray cluster, with one journal and one budget.

Labeling.  The driver reads the inputs, merges any shards a crashed run left, and looks every key up
in the central journal; only the inputs no journal answers go out.  They become a Ray Data dataset
whose ``map_batches`` stage runs :func:`distil.label.label` — the same function a local run calls —
in a pool of ``workers`` actors.  Each actor holds its own copy of the teacher (the driver's probe
result adopted, so no worker probes again) and its own journal shard (:mod:`distil.shards`), where
each answer is committed the moment it arrives.  Before a batch is sent, the actor skips the inputs
another shard answered already (a batch Ray retries after its actor died is not paid twice).  One
:class:`~distil.quota.Quota` actor holds the run's budget and the teacher's rate limits for the whole
cluster.  At the end the driver merges every shard into the central journal and removes them.

Prediction.  Every input file is one shard; a pool of actors, each with the artifact loaded once,
runs :func:`distil.predictions.predict_file` on one shard at a time and writes ``part-NNNNN`` in the
output folder (input order, every input column kept, atomically).  ``_SUCCESS.json`` is written last,
listing every part with its rows: a folder without it is a partial run.

Ray is an extra (``pip install 'distil[ray]'``); local runs never import it.  ``RAY_ADDRESS`` (or
``--ray-address``) names an existing cluster; otherwise a local one is started for the run.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from distil.data import atomic_path
from distil.errors import ConfigError, DataError, DistilError
from distil.journal import LEASE_SECONDS, Journal, call_key
from distil.label import LabelInterrupted, LabelResult, LabelStats, check_teacher, journal_result, unique_texts
from distil.progress import note
from distil.quota import Quota, QuotaCall, SharedBudget, shared_limits
from distil.shards import MergeStats, answered_in, new_shard_path, shard_paths
from distil.task import Task
from distil.teachers import make_teacher
from distil.teachers.base import Teacher

log = logging.getLogger(__name__)

#: Inputs one labeling batch carries (one ``label()`` call in a worker).
LABEL_BATCH = 256
#: Requests a capability probe may send (the driver's allotment for it).
PROBE_REQUESTS = 3
#: Seconds without a write after which a shard no run claims is taken as finished (a journal lease's length).
QUIET_S = LEASE_SECONDS
#: The manifest a complete prediction run writes last.
SUCCESS = "_SUCCESS.json"


#: CPUs a labeling actor reserves: it mostly waits on the teacher, so many share a core.
LABEL_CPUS = 0.1
#: Batches per labeling worker at least (smaller batches when the inputs are few), so none sits idle.
BATCHES_PER_WORKER = 4


@dataclass(frozen=True)
class RaySettings:
    """How a run uses Ray: ``workers`` actors on the cluster at ``address``; ``cpus`` each (default: 0.1 for
    labeling, which waits on the teacher; 1 for prediction); at most ``batch`` inputs per labeling batch."""

    workers: int = 2
    address: str | None = None
    cpus: float | None = None
    batch: int = LABEL_BATCH

    def label_batch(self, inputs: int) -> int:
        """Inputs per labeling batch: ``batch``, smaller when that would leave workers without work."""
        return max(1, min(self.batch, -(-inputs // (self.workers * BATCHES_PER_WORKER))))

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, found {self.workers}")
        if self.batch < 1:
            raise ConfigError(f"the labeling batch must be at least 1 input, found {self.batch}")
        if self.cpus is not None and self.cpus <= 0:
            raise ConfigError(f"CPUs per Ray worker must be > 0, found {self.cpus}")


def import_ray() -> ModuleType:
    """``ray`` (with Ray Data), or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(
            f"--engine ray needs Ray with Ray Data, which is not installed ({exc})",
            hint="pip install 'distil[ray]'  (or leave --engine out to run in this process)",
        ) from None
    return ray


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[ModuleType]:
    """Ray connected for one run: an existing session, the cluster at ``address``/``RAY_ADDRESS``, or a local
    one started here (and shut down after)."""
    ray = import_ray()
    _quiet_ray_data()
    if ray.is_initialized():
        yield ray
        return
    address = settings.address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"could not connect to the Ray cluster at {address}: {exc}" if address else f"could not start Ray: {exc}",
            hint="start one with `ray start --head` and set RAY_ADDRESS, or leave --ray-address out for a local one",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    """Ray Data's own progress bars and per-stage logs stay out of distil's display."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def quota_caller(ray: ModuleType, actor: Any) -> QuotaCall:
    """``call(method, *args)`` on the quota actor, waiting for its answer."""

    def call(method: str, *args: Any) -> Any:
        return ray.get(getattr(actor, method).remote(*args))

    return call


# -- labeling ------------------------------------------------------------------------------------


def merge_shards(
    journal: Journal, paths: Sequence[Path] | None = None, *, remove: bool = True, finished: Iterable[Path] = (),
) -> MergeStats:
    """Merge journal shards (default: every one beside ``journal``) into it; ``remove`` deletes each merged one
    that is ``finished`` (its worker is known to be done) or has not been written to for ``QUIET_S`` seconds
    (a worker of a killed run may outlive its driver for a while: its shard stays, merged again next time)."""
    total = MergeStats(shard="*")
    done = {Path(p) for p in finished}
    for path in shard_paths(journal.path) if paths is None else paths:
        total.add(journal.merge(path))
        if remove and (path in done or _quiet(path)):
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif remove:
            total.kept += 1
    return total


def _quiet(path: Path) -> bool:
    """No write to the shard (or its WAL) for ``QUIET_S`` seconds."""
    stamps = [Path(f"{path}{s}").stat().st_mtime for s in ("", "-wal") if Path(f"{path}{s}").exists()]
    return not stamps or time.time() - max(stamps) > QUIET_S


@dataclass
class _Plan:
    """The run's inputs, keys, what the central journal already answers, and what goes out."""

    uniques: list[str]
    keys: dict[str, str]
    todo: list[str]
    stats: LabelStats = field(default_factory=LabelStats)


def label_on_ray(
    task: Task,
    texts: Sequence[str],
    *,
    settings: RaySettings | None = None,
    max_calls: int | None = None,
    max_cost: float | None = None,
    progress: Callable[[LabelStats], None] | None = None,
    confirm: Callable[[LabelStats], bool] | None = None,
    source: str = "label",
    teacher: Teacher | None = None,
) -> LabelResult:
    """:func:`distil.label.label` on a Ray cluster: each input answered once across every worker, within
    one budget and the teacher's rate limits, every answer in the central journal at the end.

    A worker killed mid-batch loses at most its requests in flight (Ray retries the batch on a new
    actor, which skips what the dead one's shard holds); a run killed outright leaves its shards,
    and the next run merges them before it asks anything.  ``teacher`` (default: built from the task, and
    closed after) is the driver's copy: it probes; each worker builds its own from the task.
    """
    settings = settings or RaySettings()
    started = time.perf_counter()
    own_teacher = teacher is None
    teacher = teacher or make_teacher(task)
    try:
        check_teacher(task, teacher, max_cost)
        with Journal(task.journal_path) as journal:
            leftover = merge_shards(journal)
            before = set(shard_paths(journal.path))
            if leftover.added or leftover.answered:
                note("merged %d answers a previous run left in journal shards", leftover.added + leftover.answered)
            plan = _plan(task, texts, teacher, journal, source)
            _report(progress, plan.stats)
            if plan.todo and confirm is not None and not confirm(plan.stats):
                plan.stats.stopped = "declined"
                plan.todo = []
            if plan.todo:
                _ask_on_ray(task, teacher, journal, plan, settings, (max_calls, max_cost), progress, source, before)
            plan.stats.seconds = time.perf_counter() - started
            _report(progress, plan.stats)
            return journal_result(task, plan.uniques, plan.keys, journal, plan.stats, teacher.fingerprint())
    finally:
        if own_teacher:
            teacher.close()


def _plan(task: Task, texts: Sequence[str], teacher: Teacher, journal: Journal, source: str) -> _Plan:
    fp = teacher.fingerprint()
    journal.register_teacher(fp, teacher.kind, teacher.identity(), task.label_names)
    uniques = unique_texts(list(texts))
    keys = {t: call_key(fp, t) for t in uniques}
    journal.note_uses(keys.values(), source)
    known = journal.lookup(list(keys.values()))
    todo = [t for t in uniques if (r := known.get(keys[t])) is None or r.status not in ("done", "invalid")]
    stats = LabelStats(total=len(uniques), from_journal=len(uniques) - len(todo), to_ask=len(todo), via="ray")
    stats.estimate = teacher.estimate_cost(todo) if todo else 0.0
    return _Plan(uniques, keys, todo, stats)


def _report(progress: Callable[[LabelStats], None] | None, stats: LabelStats) -> None:
    if progress is not None:
        progress(stats)


def _ask_on_ray(
    task: Task, teacher: Teacher, journal: Journal, plan: _Plan, settings: RaySettings,
    limits: tuple[int | None, float | None], progress: Callable[[LabelStats], None] | None, source: str,
    before: set[Path],
) -> None:
    """Probe once here, then send ``plan.todo`` through the worker pool; merge the shards whatever happens."""
    spec = getattr(teacher, "spec", None)
    with ray_session(settings) as ray:
        quota = ray.remote(Quota).options(max_concurrency=256, num_cpus=0).remote(
            *limits, requests_per_minute=getattr(spec, "requests_per_minute", None),
            tokens_per_minute=getattr(spec, "tokens_per_minute", None),
        )
        call = quota_caller(ray, quota)
        limited = any(v is not None for v in limits)
        _probe_here(teacher, journal, SharedBudget(call, limited=limited), plan.stats)
        try:
            _run_pool(ray, task, teacher, quota, plan, settings, progress, source, limited)
        except KeyboardInterrupt:
            # workers may still be writing: merge what is there and leave the shards (the next run merges the rest)
            _finish(journal, plan.stats, call, remove=False)
            raise LabelInterrupted(plan.stats) from None
        except Exception as exc:
            _finish(journal, plan.stats, call, remove=False)
            raise _distil_error(exc) from None
        _finish(journal, plan.stats, call, finished=set(shard_paths(journal.path)) - before)


def _distil_error(exc: BaseException) -> BaseException:
    """The :class:`DistilError` a worker raised, out of the wrappers Ray puts around it (else ``exc``)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, DistilError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return exc


def _probe_here(teacher: Teacher, journal: Journal, budget: SharedBudget, stats: LabelStats) -> None:
    """The teacher's capability probe, once, on the driver, within the cluster's budget (and journaled)."""
    budget.expect(PROBE_REQUESTS)
    try:
        teacher.prepare(budget)
    finally:
        budget.release()
    spend = teacher.take_probe_spend()
    if spend:
        stats.probe_requests += int(spend.get("attempts", 0))
        journal.record_probe(teacher.fingerprint(), spend)


def _run_pool(
    ray: ModuleType, task: Task, teacher: Teacher, quota: Any, plan: _Plan, settings: RaySettings,
    progress: Callable[[LabelStats], None] | None, source: str, limited: bool,
) -> None:
    """The Ray Data stage: ``plan.todo`` in batches through ``workers`` label actors; counts as batches finish."""
    size = settings.label_batch(len(plan.todo))
    ds = ray.data.from_items([{"text": t} for t in plan.todo], override_num_blocks=-(-len(plan.todo) // size))
    limits = ray.get(quota.limits.remote())
    out = ds.map_batches(
        LabelWorker, batch_size=size, compute=_pool(ray, settings.workers),
        num_cpus=LABEL_CPUS if settings.cpus is None else settings.cpus,
        fn_constructor_kwargs={"task": task, "journal_path": str(task.journal_path), "state": teacher.shared_state(),
                               "quota": quota, "limits": limits, "source": source, "limited": limited},
    )
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        _count_batch(plan.stats, batch)
        _report(progress, plan.stats)


def _pool(ray: ModuleType, size: int) -> Any:
    """``size`` actors, each given one batch at a time (Ray Data's default queues several on the first actor
    ready, which leaves the others idle when batches are few and long)."""
    return ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1)


def _count_batch(stats: LabelStats, batch: dict[str, Any]) -> None:
    for name in ("calls", "done", "failed", "invalid", "requests", "attempts", "skipped", "from_others"):
        setattr(stats, name, getattr(stats, name) + int(sum(batch[name])))
    stats.spent += float(sum(batch["spent"]))
    stats.stopped = stats.stopped or next((str(s) for s in batch["stopped"] if s), None)


def _finish(
    journal: Journal, stats: LabelStats, call: QuotaCall, *, remove: bool = True, finished: Iterable[Path] = (),
) -> None:
    """Every shard into the central journal (``remove``: the ``finished`` and quiet ones deleted); the
    cluster's totals into ``stats``."""
    merged = merge_shards(journal, remove=remove, finished=finished)
    if merged.duplicates:
        log.warning("%d inputs were answered by two workers (paid twice; the first answer kept)", merged.duplicates)
    state = call("state")
    stats.requests = int(state["requests"])
    stats.spent = float(state["spent"])
    stats.stopped = stats.stopped or state["stopped"]


class LabelWorker:
    """One labeling actor: a teacher copy, its own journal shard, the cluster's quota."""

    def __init__(
        self, task: Task, journal_path: str, state: Any, quota: Any, limits: list[str], source: str, limited: bool,
    ) -> None:
        import ray

        self.task, self.source, self.journal_path = task, source, Path(journal_path)
        call = quota_caller(ray, quota)
        self.teacher = make_teacher(task)
        self.teacher.adopt(state)
        self.teacher.share_limits(shared_limits(call, limits))
        self.budget = SharedBudget(call, limited=limited)
        self.shard = Journal(new_shard_path(self.journal_path))
        self.fp = self.teacher.fingerprint()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Label one batch into this actor's shard; one row of counts back."""
        from distil.label import label

        keys = {str(t): call_key(self.fp, str(t)) for t in batch["text"]}
        others = [p for p in shard_paths(self.journal_path) if p != self.shard.path]
        done_elsewhere = answered_in(others, list(keys.values()))
        texts = list(keys)
        ask = [t for t in texts if keys[t] not in done_elsewhere]
        self.budget.expect(len(ask))
        try:
            res = label(self.task, ask, teacher=self.teacher, journal=self.shard, budget=self.budget,
                        source=self.source)
        finally:
            self.budget.release()
        s = res.stats
        return {
            "calls": [s.calls], "done": [s.done], "failed": [s.failed], "invalid": [s.invalid],
            "requests": [s.requests], "attempts": [s.attempts], "spent": [s.spent], "skipped": [s.skipped],
            "from_others": [len(texts) - len(ask)], "stopped": [s.stopped or ""],
        }


# -- prediction ----------------------------------------------------------------------------------


@dataclass
class ShardedPredictions:
    """What a sharded prediction run wrote: one part per input shard, and the manifest."""

    out: Path
    parts: list[dict[str, Any]]
    seconds: float

    @property
    def rows(self) -> int:
        """Rows written over every part."""
        return sum(int(p["rows"]) for p in self.parts)


def part_name(index: int, shard: Path, fmt: str) -> str:
    """The output part for the ``index``-th input shard (its order in the manifest)."""
    return f"part-{index:05d}-{shard.stem}.{fmt}"


def predict_sharded(
    artifact_dir: str | Path,
    shards: Sequence[Path],
    out_dir: str | Path,
    *,
    engine: str = "local",
    settings: RaySettings | None = None,
    fmt: str = "parquet",
    text_column: str | None = None,
    columns: Sequence[str] | None = None,
    probs: bool = False,
) -> ShardedPredictions:
    """Predict every shard into ``out_dir/part-…``, locally one after another or on Ray in parallel;
    ``_SUCCESS.json`` last (removed first: a folder without it holds a partial run)."""
    started = time.perf_counter()
    out = Path(out_dir)
    _check_out_dir(out, fmt)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUCCESS).unlink(missing_ok=True)  # partial until this run's manifest is written
    jobs = [{"index": i, "shard": str(p), "out": str(out / part_name(i, p, fmt))} for i, p in enumerate(shards)]
    kwargs = {"text_column": text_column, "columns": list(columns) if columns else None, "probs": probs}
    if engine == "ray":
        parts = _predict_on_ray(Path(artifact_dir), jobs, kwargs, settings or RaySettings())
    else:
        worker = PredictWorker(str(artifact_dir), kwargs)
        parts = [worker.one(job) for job in jobs]
    parts.sort(key=lambda p: int(p["index"]))
    manifest = {"artifact": str(artifact_dir), "engine": engine, "parts": parts,
                "rows": sum(int(p["rows"]) for p in parts), "finished_at": time.time()}
    with atomic_path(out / SUCCESS, what="the prediction manifest") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return ShardedPredictions(out, parts, time.perf_counter() - started)


def _check_out_dir(out: Path, fmt: str) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: several input shards are written as a folder of parts, and this is a file",
                        hint="name a folder (it is created), e.g. --out predictions/")
    if fmt not in ("parquet", "csv", "jsonl"):
        raise ConfigError(f"--format must be parquet, csv or jsonl, found {fmt!r}")


def _predict_on_ray(artifact: Path, jobs: list[dict[str, Any]], kwargs: dict[str, Any],
                    settings: RaySettings) -> list[dict[str, Any]]:
    with ray_session(settings) as ray:
        ds = ray.data.from_items(jobs, override_num_blocks=len(jobs))
        out = ds.map_batches(PredictWorker, batch_size=1, compute=_pool(ray, min(settings.workers, len(jobs))),
                             num_cpus=1.0 if settings.cpus is None else settings.cpus,
                             fn_constructor_kwargs={"artifact": str(artifact), "kwargs": kwargs})
        return [row for row in out.iter_rows()]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` (reset by exec, unlike ``ru_maxrss``, which a process
    started by a large parent inherits), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PredictWorker:
    """One prediction actor: the artifact loaded once, one shard at a time into its part."""

    def __init__(self, artifact: str, kwargs: dict[str, Any]) -> None:
        from distil.artifact import load_artifact

        self.artifact = load_artifact(artifact)
        self.kwargs = kwargs

    def one(self, job: dict[str, Any]) -> dict[str, Any]:
        """Predict one shard into its part; the manifest's entry for it."""
        from distil.predictions import predict_file

        res = predict_file(self.artifact, job["shard"], job["out"], **self.kwargs)
        return {"index": int(job["index"]), "shard": str(job["shard"]), "part": Path(job["out"]).name,
                "rows": int(res.rows), "pid": os.getpid(),
                "peak_rss_mb": round(peak_rss_mb(), 1)}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Ray Data's entry point: a batch of jobs (one, by default)."""
        rows = [self.one({k: batch[k][i] for k in batch}) for i in range(len(batch["index"]))]
        return {k: [r[k] for r in rows] for k in rows[0]} if rows else {}
