"""Everything the ``distil`` command shows: the two consoles, the labeling progress bar, result lines.

``console`` writes to stderr (progress, summaries, errors); ``out`` writes to stdout (what a
command produces: predictions, verdicts, paths).  The library never prints: it logs progress on
the ``distil.progress`` logger (shown here by :class:`ProgressHandler`) and hands results back;
:func:`distil.pipeline.run` reports through a :class:`distil.pipeline.Reporter`, which
:class:`ConsoleReporter` is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from distil.errors import redact_url

if TYPE_CHECKING:
    from rich.progress import TaskID

    from distil.label import LabelStats

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


class LabelDisplay:
    """Rich progress bar for label(): done / from journal / failed / invalid / spent."""

    def __init__(self, teacher_desc: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]labeling[/] " + redact_url(teacher_desc).replace("[", r"\[")),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task_id: TaskID | None = None

    def __call__(self, stats: LabelStats, /) -> None:
        """Show the counts of one progress event."""
        info = (
            f"done {stats.done} · from journal {stats.from_journal} · failed {stats.failed} · "
            f"invalid {stats.invalid} · spent ${stats.spent:.4f}"
        )
        if self.task_id is None:
            self.progress.start()
            self.task_id = self.progress.add_task("label", total=max(stats.total, 1), info=info)
        self.progress.update(self.task_id, completed=stats.from_journal + stats.calls, info=info)

    def close(self) -> None:
        """Stop the bar (if it ever started)."""
        if self.task_id is not None:
            self.progress.stop()


@contextmanager
def row_progress(title: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A spinner with a running row count on stderr (for work whose total is not known up front)."""
    if not enabled:
        yield lambda _rows: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn(escape(title) + " · {task.fields[rows]} rows"), TimeElapsedColumn(),
                   console=console, transient=True)
    task = bar.add_task(title, total=None, rows=0)
    with bar:
        yield lambda rows: bar.update(task, rows=rows)


class ConsoleReporter:
    """A :class:`distil.pipeline.Reporter` for ``distil run`` / ``distil demo``: lines and bar on stderr."""

    def say(self, message: str) -> None:
        """One result line, printed as it is (no markup; credentials in URLs hidden)."""
        console.print(printable(message), markup=False)

    def label_progress(self, teacher: str) -> LabelDisplay:
        """A progress bar for labeling with the teacher described by ``teacher``."""
        return LabelDisplay(teacher)


def print_verdict(metrics: dict[str, Any]) -> None:
    """The evaluation's verdict and, unless withheld, the serving line (stdout)."""
    from distil.evaluate import served_line

    if not metrics:
        return
    out.print(printable(str(metrics.get("verdict", ""))))
    line = served_line(metrics)
    if line and not metrics.get("verdict_withheld"):
        out.print(printable(line))


def print_label_summary(stats: LabelStats, journal_path: Path, export: Path | None) -> None:
    """What one ``distil label`` run cost and where its journal and labeled set are (stderr)."""
    console.print(
        f"teacher calls this run: {stats.calls} (attempts {stats.attempts}), from journal: {stats.from_journal}, "
        f"done: {stats.done}, failed: {stats.failed}, invalid: {stats.invalid}, spent: ${stats.spent:.4f}"
    )
    if stats.calls:
        asked = stats.requests - stats.probe_requests
        via = " (through the Batch API)" if stats.via == "batch" else ""
        console.print(f"requests: {stats.requests} ({stats.probe_requests} for the capability probe), "
                      f"{asked / stats.calls:.2f} per input answered{via}")
    console.print(f"journal: {journal_path}")
    if export is not None:
        console.print(f"labeled set: {export}")


def printable(text: str) -> str:
    """``text`` safe to show: credentials in URLs hidden, a lone surrogate escaped (``\\ud800``)."""
    return redact_url(text).encode("utf-8", "backslashreplace").decode("utf-8")


def print_error(exc: BaseException, *, internal: bool) -> None:
    """One line for an error: ``error: …`` for distil's own, ``internal error: …`` for a bug."""
    if internal:
        console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {escape(printable(str(exc)))} "
            "(rerun with DISTIL_DEBUG=1 for the traceback)"
        )
    else:
        console.print(f"[red]error:[/] {escape(printable(str(exc)))}", soft_wrap=True)


class ProgressHandler(logging.Handler):
    """Shows the library's progress events (logger ``distil.progress``) on stderr, dimmed."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print one progress line; a display problem must never stop the work."""
        try:
            console.print(f"[dim]{escape(printable(record.getMessage()))}[/]", soft_wrap=True)
        except Exception:  # a display problem must never stop the work
            self.handleError(record)


def show_progress() -> None:
    """Route the ``distil.progress`` logger's INFO lines to stderr (once), not to the root logger."""
    plog = logging.getLogger("distil.progress")
    if not any(isinstance(h, ProgressHandler) for h in plog.handlers):
        plog.addHandler(ProgressHandler())
    plog.setLevel(logging.INFO)
    plog.propagate = False
