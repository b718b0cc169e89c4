"""The ``distil`` command: a thin layer over the Python API, one public call per command.

Errors from distil print as one line (``error: …``) with a non-zero exit code and
no traceback; set ``DISTIL_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from distil import __version__
from distil.errors import ConfigError, DistilError

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


# ---------------------------------------------------------------------------------------------
# helpers


def _task(path: str) -> Any:
    from distil.task import Task

    return Task.load(path)


def _read_inputs(task: Any, path: str, text_column: str | None) -> list[str]:
    from distil.data import extract_texts, read_table
    from distil.task import InputSpec

    table = read_table(path)
    spec = task.input if text_column is None else InputSpec(fields=[text_column], max_chars=task.input.max_chars)
    texts, _, report = extract_texts(table, spec.fields, spec.render)
    console.print(f"[bold]{path}[/]: {report.summary()}")
    return texts


class _LabelDisplay:
    """Rich progress bar for label(): done / from journal / failed / invalid / spent."""

    def __init__(self, teacher_desc: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]labeling[/] " + teacher_desc.replace("[", r"\[")),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task_id: Any = None

    def __call__(self, s: Any) -> None:
        info = (
            f"done {s.done} · from journal {s.from_journal} · failed {s.failed} · "
            f"invalid {s.invalid} · spent ${s.spent:.4f}"
        )
        if self.task_id is None:
            self.progress.start()
            self.task_id = self.progress.add_task("label", total=max(s.total, 1), info=info)
        self.progress.update(self.task_id, completed=s.from_journal + s.calls, info=info)

    def close(self) -> None:
        if self.task_id is not None:
            self.progress.stop()


def _print_verdict(metrics: dict[str, Any]) -> None:
    from distil.evaluate import served_line

    if not metrics:
        return
    out.print(metrics.get("verdict", ""))
    line = served_line(metrics)
    if line and not metrics.get("verdict_withheld"):
        out.print(line)


def _print_label_summary(stats: Any, journal_path: Path, export: Path | None) -> None:
    console.print(
        f"teacher calls this run: {stats.calls} (attempts {stats.attempts}), from journal: {stats.from_journal}, "
        f"done: {stats.done}, failed: {stats.failed}, invalid: {stats.invalid}, spent: ${stats.spent:.4f}"
    )
    console.print(f"journal: {journal_path}")
    if export is not None:
        console.print(f"labeled set: {export}")


# ---------------------------------------------------------------------------------------------
# commands


def cmd_init(args: argparse.Namespace) -> int:
    """Write a commented task file."""
    from distil.task import EXAMPLE_TASK

    folder = Path(args.name)
    path = folder / "task.toml"
    if path.exists() and not args.force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(EXAMPLE_TASK.format(name=folder.name), encoding="utf-8")
    out.print(f"wrote {path}: edit the labels, the input fields and the teacher, then run `distil label`")
    return 0


def cmd_teacher_fit(args: argparse.Namespace) -> int:
    """Fit a head on the team's gold labels for a local teacher."""
    from distil.teacher_fit import fit_head

    task = _task(args.task)
    report = fit_head(
        task, args.data, label_column=args.label_column, text_column=args.text_column,
        out=Path(args.out) if args.out else None, seed=args.seed,
    )
    out.print(report.summary() if hasattr(report, "summary") else str(report))
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Ask the teacher about every input, once; export the labeled set."""
    from distil.data import write_labeled
    from distil.journal import Journal
    from distil.label import LabelResult, label
    from distil.teachers import make_teacher

    task = _task(args.task)
    texts = _read_inputs(task, args.inputs, args.text_column)
    teacher = make_teacher(task)
    display = _LabelDisplay(teacher.describe())

    def confirm(stats: Any) -> bool:
        display.close()
        console.print(
            f"to ask: {stats.to_ask} of {stats.total} unique inputs ({stats.from_journal} already in the journal); "
            f"estimated cost: ${stats.estimate:.4f}"
            + (f"; --max-cost ${args.max_cost:.4f}" if args.max_cost is not None else "")
            + (f"; --max-calls {args.max_calls}" if args.max_calls is not None else "")
        )
        if args.dry_run:
            return False
        display.task_id = None
        return True

    journal = Journal(task.journal_path)
    result: LabelResult
    try:
        if args.strategy != "all":
            from distil.active import label_active

            result = label_active(
                task, texts, strategy=args.strategy, teacher=teacher, journal=journal,
                max_calls=args.max_calls, max_cost=args.max_cost, progress=display, confirm=confirm,
                seed=args.seed, round_model=args.round_student,
            )
        else:
            result = label(
                task, texts, teacher=teacher, journal=journal, max_calls=args.max_calls,
                max_cost=args.max_cost, progress=display, confirm=confirm,
            )
    finally:
        display.close()
        journal.close()
        teacher.close()
    stats = result.stats
    if args.dry_run:
        console.print("dry run: nothing was sent")
        return 0
    export = None
    rounds = getattr(result, "rounds", None)
    if rounds is not None:
        console.print(f"round student: {(result.labeled.info or {}).get('round_student')}")
        for r in rounds:
            agree = "" if r.agreement is None else f", held-out agreement {r.agreement:.3f}"
            if r.stability is not None:
                agree += f", predictions unchanged {r.stability:.1%}"
            console.print(f"round {r.round} ({r.kind}): asked {r.asked}, calls so far {r.calls_total}{agree}")
        console.print(f"{args.strategy} labeling used {stats.calls + stats.from_journal} teacher answers "
                      f"for a pool of {stats.total}; {stats.skipped} inputs were not sent to the teacher")
    if result.labeled.info is None:
        result.labeled.info = {"strategy": "all"}
    if len(result.labeled):
        export = Path(args.out) if args.out else task.work_path / "labeled.parquet"
        write_labeled(result.labeled, export)
    _print_label_summary(stats, task.journal_path, export)
    if stats.invalid:
        console.print(
            f"[yellow]{stats.invalid} answers were outside the label set; their raw text is in the journal "
            f"(status 'invalid')[/]"
        )
    if stats.stopped in ("max_calls", "max_cost") and (args.strategy == "all" or stats.stopped == "max_cost"):
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


def cmd_journal(args: argparse.Namespace) -> int:
    """Show what the journal holds for the task's teacher(s)."""
    from distil.journal import Journal

    task = _task(args.task)
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
    out.print(f"journal: {task.journal_path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train the student ladder on the journal's soft labels and pick one."""
    from distil.train import train_task

    task = _task(args.task)
    kwargs: dict[str, Any] = {"seed": args.seed, "hard": args.hard}
    if args.students:
        kwargs["students"] = tuple(s.strip() for s in args.students.split(",") if s.strip())
    if args.target is not None:
        kwargs["target"] = args.target
    if args.router_target is not None:
        kwargs["router_target"] = args.router_target
    if args.include_source:
        kwargs["include_sources"] = tuple(args.include_source)
    from distil.workspace import Workspace

    with Workspace(task) as ws:  # one teacher for the validation file and the journal's answers
        if args.valid:
            from distil.pipeline import gold_labeled

            kwargs["validation"] = gold_labeled(
                task, Path(args.valid), label_column=args.label_column, text_column=args.text_column, workspace=ws
            )
        result = train_task(task, Path(args.out), workspace=ws, **kwargs)  # progress: distil.progress lines
    out.print(result.summary())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Label new inputs with a trained student (no teacher)."""
    import json

    from distil.artifact import predict
    from distil.data import extract_texts, read_table

    table = read_table(args.inputs)
    texts, _, report = extract_texts(table, [args.text_column], lambda r: r[args.text_column])
    console.print(f"[bold]{args.inputs}[/]: {report.summary()}")
    preds = predict(Path(args.artifact), texts)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for text, p in zip(texts, preds, strict=True):
                fh.write(json.dumps({"text": text, **p}, ensure_ascii=False) + "\n")
        console.print(f"predictions: {path}")
    else:
        for text, p in zip(texts, preds, strict=True):
            out.print(json.dumps({"text": text, **p}, ensure_ascii=False), soft_wrap=True)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure teacher vs student on a test file; write metrics.json and report.html."""
    from distil.evaluate import evaluate

    metrics = evaluate(
        Path(args.artifact), Path(args.test), task=_task(args.task) if args.task else None,
        label_column=args.label_column, text_column=args.text_column, out=Path(args.out),
        allow_overlap=args.allow_overlap,
    )
    _print_verdict(metrics)
    out.print(f"metrics: {Path(args.out) / 'metrics.json'}\nreport: {Path(args.out) / 'report.html'}")
    return 2 if metrics.get("verdict_withheld") else 0


def cmd_run(args: argparse.Namespace) -> int:
    """label → train → eval in one go."""
    from distil.pipeline import run

    metrics = run(
        _task(args.task), Path(args.inputs), Path(args.out), test=Path(args.test) if args.test else None,
        label_column=args.label_column, text_column=args.text_column, max_calls=args.max_calls,
        max_cost=args.max_cost, valid=Path(args.valid) if args.valid else None, strategy=args.strategy,
        console=console,
    )
    _print_verdict(metrics)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Prepare the embedded default (CFPB complaints) and run it end to end."""
    from distil.pipeline import demo

    metrics = demo(Path(args.out), console=console, quick=args.quick)
    _print_verdict(metrics)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the student with the teacher behind it."""
    from distil.serve import serve

    serve(
        Path(args.artifact), task=_task(args.task) if args.task else None, host=args.host, port=args.port,
        target_agreement=args.target_agreement, threshold=args.threshold,
        token=os.environ.get(args.token_env) if args.token_env else None,
    )
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    """Compare recent traffic with the training data; say whether to retrain."""
    from distil.data import extract_texts, read_table
    from distil.drift import drift

    table = read_table(args.inputs)
    texts, _, _ = extract_texts(table, [args.text_column], lambda r: r[args.text_column])
    report = drift(Path(args.artifact), texts)
    out.print(report.summary() if hasattr(report, "summary") else str(report))
    return 0


# ---------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    p = argparse.ArgumentParser(prog="distil", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--version", action="version", version=f"distil {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", help="write a commented task file NAME/task.toml")
    s.add_argument("name")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_init)

    t = sub.add_parser("teacher", help="teacher tools").add_subparsers(dest="sub", required=True, metavar="SUB")
    s = t.add_parser("fit", help="fit a local teacher's head on labeled data")
    s.add_argument("task")
    s.add_argument("data")
    s.add_argument("--label-column", required=True)
    s.add_argument("--text-column")
    s.add_argument("--out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_teacher_fit)

    s = sub.add_parser("label", help="ask the teacher about every input, once (journaled)")
    s.add_argument("task")
    s.add_argument("inputs")
    s.add_argument("--text-column", help="override the task's [input].fields with one column")
    s.add_argument("--max-calls", type=int, help="hard stop after this many teacher calls")
    s.add_argument("--max-cost", type=float, help="hard stop before spending more than this many dollars")
    s.add_argument("--out", help="labeled set to write (.parquet or .jsonl); default WORK_DIR/labeled.parquet")
    s.add_argument("--strategy", choices=["all", "random", "active"], default="all")
    s.add_argument("--round-student", choices=["auto", "static", "ngram"], default="auto",
                   help="active: the student that ranks inputs between rounds (auto: static if available)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dry-run", action="store_true", help="show the estimate and stop")
    s.set_defaults(fn=cmd_label)

    s = sub.add_parser("journal", help="show what the journal holds")
    s.add_argument("task")
    s.set_defaults(fn=cmd_journal)

    s = sub.add_parser("train", help="train the student ladder on the journal and pick one")
    s.add_argument("task")
    s.add_argument("--out", required=True)
    s.add_argument("--students", help="comma-separated subset of ngram,static,encoder,finetune")
    s.add_argument("--target", type=float, help="held-out agreement a student must reach (default: the task's)")
    s.add_argument("--router-target", type=float, help="agreement the serving router must guarantee")
    s.add_argument("--hard", action="store_true", help="train on the teacher's argmax only (ablation)")
    s.add_argument("--include-source", action="append", metavar="SOURCE",
                   help="also train on answers asked for SOURCE (eval, valid); by default only labeling runs, "
                   "active rounds and serving fallbacks are trained on")
    s.add_argument("--valid", help="gold-labeled file, disjoint from the teacher's training data: choose by it")
    s.add_argument("--label-column", help="the gold column of --valid")
    s.add_argument("--text-column", default="text")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("predict", help="label inputs with a trained student")
    s.add_argument("artifact")
    s.add_argument("inputs")
    s.add_argument("--text-column", default="text")
    s.add_argument("--out")
    s.set_defaults(fn=cmd_predict)

    s = sub.add_parser("eval", help="measure student vs teacher; metrics.json + report.html")
    s.add_argument("artifact")
    s.add_argument("test")
    s.add_argument("--task")
    s.add_argument("--label-column")
    s.add_argument("--text-column", default="text")
    s.add_argument("--out", required=True)
    s.add_argument("--allow-overlap", action="store_true",
                   help="print the verdict even when test texts were in the student's training data")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("run", help="label → train → eval in one command")
    s.add_argument("task")
    s.add_argument("inputs")
    s.add_argument("--test")
    s.add_argument("--valid", help="gold-labeled file, disjoint from the teacher's training data: choose by it")
    s.add_argument("--label-column")
    s.add_argument("--text-column", default="text")
    s.add_argument("--out", required=True)
    s.add_argument("--max-calls", type=int)
    s.add_argument("--max-cost", type=float)
    s.add_argument("--strategy", choices=["all", "random", "active"], default="all",
                   help="active/random: label in rounds up to --max-calls (see distil label)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("demo", help="the embedded default: CFPB complaints → product, end to end")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--quick", action="store_true", help="smaller pool, numpy students only")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("serve", help="serve the student, the teacher behind it")
    s.add_argument("artifact")
    s.add_argument("--task")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--target-agreement", type=float)
    s.add_argument("--threshold", type=float)
    s.add_argument("--token-env", help="environment variable holding the bearer token clients must send")
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("drift", help="compare recent traffic with the training data")
    s.add_argument("artifact")
    s.add_argument("inputs")
    s.add_argument("--text-column", default="text")
    s.set_defaults(fn=cmd_drift)
    return p


class _ProgressHandler(logging.Handler):
    """Shows the library's progress events (logger ``distil.progress``) on stderr, dimmed."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            console.print(f"[dim]{escape(record.getMessage())}[/]", soft_wrap=True)
        except Exception:  # a display problem must never stop the work
            self.handleError(record)


def _show_progress() -> None:
    plog = logging.getLogger("distil.progress")
    if not any(isinstance(h, _ProgressHandler) for h in plog.handlers):
        plog.addHandler(_ProgressHandler())
    plog.setLevel(logging.INFO)
    plog.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distil`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Library progress bars and duplicate warnings clutter the one progress display we own.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # model2vec's own bars; distil shows its progress lines
    if not args.verbose:
        warnings.filterwarnings("ignore", message=r".*were truncated.*")  # already logged once
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    _show_progress()
    debug = bool(os.environ.get("DISTIL_DEBUG"))
    try:
        code: int = args.fn(args)
    except DistilError as exc:
        if debug:
            raise
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("interrupted: every answer received so far is in the journal")
        return 130
    except Exception as exc:  # a bug: one line, with how to see more
        if debug:
            raise
        console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with DISTIL_DEBUG=1 for the traceback)"
        )
        return 70
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
