"""``distil label`` and ``distil journal``: asking the teacher, and what its journal holds.

Exit codes of ``distil label``: 0 done; 3 stopped at the budget (``--max-calls`` / ``--max-cost``),
answers so far kept; 4 some calls failed (run again to retry them).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distil.cli.display import LabelDisplay, console, out, print_label_summary
from distil.cli.inputs import load_task, read_task_texts
from distil.errors import ConfigError

if TYPE_CHECKING:
    from distil.journal import Journal
    from distil.label import LabelResult, LabelStats
    from distil.task import Task
    from distil.teachers.base import Teacher


def cmd_label(args: argparse.Namespace) -> int:
    """Ask the teacher about every input, once; export the labeled set."""
    from distil.journal import Journal
    from distil.label import LabelInterrupted
    from distil.teachers import make_teacher

    task = load_task(args.task)
    texts = read_task_texts(task, args.inputs, args.text_column)
    teacher = make_teacher(task)
    display = LabelDisplay(teacher.describe())
    journal = Journal(task.journal_path)
    interrupted: LabelStats | None = None
    try:
        result = _label(args, task, texts, teacher=teacher, journal=journal, display=display)
    except LabelInterrupted as exc:
        interrupted = exc.stats
    finally:
        display.close()
        journal.close()
        teacher.close()
    if interrupted is not None:
        _print_interrupted(interrupted, task.journal_path, rounds=args.strategy != "all")
        return 130
    if args.dry_run:
        console.print("dry run: nothing was sent")
        return 0
    if getattr(result, "rounds", None) is not None:
        _print_rounds(args.strategy, result)
    export = _export(args, task, result)
    print_label_summary(result.stats, task.journal_path, export)
    soft_warning = getattr(result, "soft_warning", None)
    if soft_warning:
        from rich.markup import escape

        console.print(f"[yellow]{escape(soft_warning)}[/]")
    return _outcome(args.strategy, result.stats)


def _label(
    args: argparse.Namespace, task: Task, texts: list[str], *, teacher: Teacher, journal: Journal,
    display: LabelDisplay,
) -> LabelResult:
    """Label every input (``--strategy all``) or in rounds (``random``, ``active``)."""
    confirm = _confirmation(args, display)
    via = getattr(args, "via", "sync")
    if getattr(args, "engine", "local") == "ray":
        return _label_on_ray(args, task, texts, teacher, display, confirm)
    if args.strategy == "all":
        from distil.label import label
        from distil.teachers.batch import BatchSettings

        return label(
            task, texts, teacher=teacher, journal=journal, max_calls=args.max_calls,
            max_cost=args.max_cost, progress=display, confirm=confirm, via=via,
            batch=BatchSettings(poll_s=args.poll_s) if via == "batch" else None,
        )
    if via != "sync":
        raise ConfigError(
            f"--via {via} sends every input at once; it does not combine with --strategy {args.strategy}",
            hint="use --strategy all with --via batch",
        )
    from distil.active import label_active

    return label_active(
        task, texts, strategy=args.strategy, teacher=teacher, journal=journal,
        max_calls=args.max_calls, max_cost=args.max_cost, progress=display, confirm=confirm,
        seed=args.seed, round_model=args.round_student,
    )


def _label_on_ray(
    args: argparse.Namespace, task: Task, texts: list[str], teacher: Teacher, display: LabelDisplay,
    confirm: Callable[[LabelStats], bool],
) -> LabelResult:
    """``--engine ray``: every input once across the cluster's workers (``--strategy all``, synchronous)."""
    if args.strategy != "all" or getattr(args, "via", "sync") != "sync":
        raise ConfigError(
            f"--engine ray runs --strategy all --via sync; found --strategy {args.strategy} --via {args.via}",
            hint="leave --engine out for rounds or the Batch API (one process is enough for them)",
        )
    from distil.ray_engine import RaySettings, label_on_ray

    settings = RaySettings(workers=args.workers, address=args.ray_address)
    return label_on_ray(task, texts, settings=settings, max_calls=args.max_calls, max_cost=args.max_cost,
                        progress=display, confirm=confirm, teacher=teacher)


def _confirmation(args: argparse.Namespace, display: LabelDisplay) -> Callable[[LabelStats], bool]:
    """The callback that shows the plan and its estimate before anything is spent (stops on --dry-run)."""

    def confirm(stats: LabelStats) -> bool:
        display.close()
        console.print(
            f"to ask: {stats.to_ask} of {stats.total} unique inputs ({stats.from_journal} already in the journal); "
            f"estimated cost: ${stats.estimate:.4f}" + (" (batch price)" if stats.via == "batch" else "")
            + (f"; --max-cost ${args.max_cost:.4f}" if args.max_cost is not None else "")
            + (f"; --max-calls {args.max_calls}" if args.max_calls is not None else "")
        )
        if args.dry_run:
            return False
        display.task_id = None
        return True

    return confirm


def _print_interrupted(stats: LabelStats, journal_path: Path, *, rounds: bool) -> None:
    """Ctrl-C: exactly what this run kept, and what it left on the wire."""
    where = "this round" if rounds else "this run"
    console.print(
        f"interrupted: {stats.calls} answers received in {where} are in the journal ({stats.done} done, "
        f"{stats.invalid} invalid, {stats.failed} failed; requests sent: {stats.requests}, "
        f"spent ${stats.spent:.4f}); journal: {journal_path}"
    )
    if stats.abandoned:
        console.print(f"requests abandoned on the wire (the server may bill them): {stats.abandoned}")
    console.print("run the same command again to continue: nothing already answered is asked again")


def _print_rounds(strategy: str, result: Any) -> None:
    """What each round of ``random``/``active`` labeling asked, and what it saved."""
    stats = result.stats
    console.print(f"round student: {(result.labeled.info or {}).get('round_student')}")
    for r in result.rounds:
        agree = "" if r.agreement is None else f", held-out agreement {r.agreement:.3f}"
        if r.stability is not None:
            agree += f", predictions unchanged {r.stability:.1%}"
        console.print(f"round {r.round} ({r.kind}): asked {r.asked}, calls so far {r.calls_total}{agree}")
    console.print(f"{strategy} labeling used {stats.calls + stats.from_journal} teacher answers "
                  f"for a pool of {stats.total}; {stats.skipped} inputs were not sent to the teacher")


def _export(args: argparse.Namespace, task: Task, result: LabelResult) -> Path | None:
    """Write the labeled set (``--out``, default WORK_DIR/labeled.parquet); None when nothing was answered."""
    from distil.data import write_labeled

    if result.labeled.info is None:
        result.labeled.info = {"strategy": "all"}
    if not len(result.labeled):
        return None
    export = Path(args.out) if args.out else task.work_path / "labeled.parquet"
    write_labeled(result.labeled, export)
    return export


def _outcome(strategy: str, stats: LabelStats) -> int:
    """Warn about invalid answers, a budget stop or failed calls; the exit code that says which."""
    if stats.invalid:
        console.print(
            f"[yellow]{stats.invalid} answers were outside the label set; their raw text is in the journal "
            f"(status 'invalid')[/]"
        )
    if stats.stopped in ("max_calls", "max_cost") and (strategy == "all" or stats.stopped == "max_cost"):
        flag = "--max-calls" if stats.stopped == "max_calls" else "--max-cost"
        console.print(
            f"[red]stopped at the budget ({flag}): {stats.skipped} inputs not asked; "
            f"run again with a higher {flag} to continue (answers so far are kept)[/]"
        )
        return 3
    if stats.failed:
        console.print(f"[yellow]{stats.failed} calls failed; run the same command again to retry them[/]")
        return 4
    return 0


def _when(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def cmd_journal(args: argparse.Namespace) -> int:
    """Show what the journal holds for the task's teacher(s)."""
    from distil.journal import Journal
    from distil.label import soft_label_check

    words = list(args.words)
    if words[0] == "merge":
        return _merge(words[1:])
    if len(words) > 1:
        raise ConfigError(f"distil journal takes one task file, found {len(words)} arguments: {' '.join(words)}",
                          hint="`distil journal TASK`, or `distil journal merge TASK [SHARD ...]`")
    task = load_task(words[0])
    if not task.journal_path.exists():
        out.print(f"no journal yet at {task.journal_path}")
        return 0
    with Journal(task.journal_path) as j:
        for t in j.teachers():
            c = j.counts(t["fingerprint"])
            ident = t["identity"].get("model") or t["identity"].get("callable") or ""
            out.print(
                f"{t['fingerprint']}  {t['kind']:<8} {ident}  done {c['done']}  invalid {c['invalid']}  "
                f"failed {c['failed']}  pending {c['pending']}  attempts {c['attempts']}  "
                f"tokens {c['tokens_in']}/{c['tokens_out']}  cost ${c['cost']:.4f}"
            )
            soft_warning = soft_label_check(list(j.rows(t["fingerprint"], status="done")))
            if soft_warning:
                from rich.markup import escape

                out.print(f"  [yellow]{escape(soft_warning)}[/]")
            for b in j.batches(t["fingerprint"], open_only=True):
                out.print(f"  batch {b['remote_id'] or '(not created yet)'} in flight: {b['status']}, "
                          f"{len(b['keys'])} inputs, sent {_when(b['created_at'])}; "
                          "`distil label TASK INPUTS --via batch` collects it")
        _print_shards(task.journal_path)
    out.print(f"journal: {task.journal_path}")
    return 0


def _print_shards(journal_path: Path) -> None:
    """Shards a Ray run left unmerged (it was killed): say so, and how to merge them."""
    from distil.shards import shard_paths

    left = shard_paths(journal_path)
    if left:
        out.print(f"  {len(left)} journal shards not merged yet (a Ray run was stopped): "
                  "`distil journal merge TASK` merges them (the next run does too)")


def _merge(words: list[str]) -> int:
    """``distil journal merge TASK [SHARD ...]``: shards into the task's journal, idempotently."""
    from distil.journal import Journal
    from distil.ray_engine import QUIET_S, merge_shards

    if not words:
        raise ConfigError("distil journal merge needs the task file", hint="distil journal merge TASK [SHARD ...]")
    task = load_task(words[0])
    given = [Path(w) for w in words[1:]]
    for path in given:
        if not path.is_file():
            raise ConfigError(f"{path}: no such journal shard", hint="name .sqlite files a distil run wrote")
    with Journal(task.journal_path) as j:
        stats = merge_shards(j, given or None, remove=not given)
    out.print(f"merged into {task.journal_path}: {stats.added} new rows, {stats.answered} answers for rows without "
              f"one, {stats.duplicates} answered twice (first answer kept), {stats.probes} probes, {stats.runs} runs"
              + (f"; {stats.kept} shards kept (written to in the last {QUIET_S:.0f} s: a worker may still be running; "
                 "merging again takes only what is new)" if stats.kept else ""))
    return 0
