"""The ``distil`` command: a thin layer over the Python API, one public call per command.

Errors from distil print as one line (``error: …``) with a non-zero exit code and
no traceback; set ``DISTIL_DEBUG=1`` to see tracebacks.  A file-system error that reaches the
top (permissions, a file where a folder belongs, a full disk) is a clear error too (exit 74,
:class:`distil.errors.StorageError`); for the commands that ask the teacher it adds where the
answers already paid for are kept.  Credentials inside URLs never reach the log or the screen.

All presentation lives in this package: :mod:`distil.cli.parser` (the flags),
:mod:`distil.cli.commands` and :mod:`distil.cli.labeling` (one library call per command),
:mod:`distil.cli.display` (consoles, progress bar, result lines) and :mod:`distil.cli.inputs`
(reading input files).  No library module imports it; ``python -m distil`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sqlite3
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from distil.cli.display import LabelDisplay, console, print_error, show_progress
from distil.cli.parser import build_parser
from distil.errors import STORAGE_ERRNOS, DistilError, JournalError, StorageError, redact_url, storage_error

if TYPE_CHECKING:
    from distil.task import Task

__all__ = ["build_parser", "main"]

#: The progress bar's former name (``distil.cli._LabelDisplay``), kept importable.
_LabelDisplay = LabelDisplay


def _quiet_libraries(verbose: bool) -> None:
    """Library progress bars and duplicate warnings clutter the one progress display we own."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # model2vec's own bars; distil shows its progress lines
    if not verbose:
        warnings.filterwarnings("ignore", message=r".*were truncated.*")  # already logged once
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactFilter) for f in handler.filters):
            handler.addFilter(RedactFilter())
    show_progress()


class RedactFilter(logging.Filter):
    """Hides the credentials of URLs in log records (``https://***@host``) before any handler shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with :func:`distil.errors.redact_url`; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        if "://" in message:
            record.msg, record.args = redact_url(message), None
        return True


#: The commands that ask the teacher (and pay for it): their file errors say where the answers are.
_PAYING = frozenset({"label", "run", "eval", "train"})


def _task_of(args: argparse.Namespace) -> Task | None:
    """The command's task, if it names one that can be read (None otherwise: never raises)."""
    if not getattr(args, "task", None):
        return None
    try:
        from distil.task import Task

        return Task.load(args.task)
    except Exception:  # the task itself may be what cannot be read
        return None


def _in_work_dir(path: object, task: Task | None) -> bool:
    if task is None or path is None:
        return False
    work = task.work_path.absolute()
    target = Path(str(path)).absolute()
    return target == work or work in target.parents


def _as_distil_error(exc: Exception, args: argparse.Namespace) -> DistilError | None:
    """The clear error for an exception no library code turned into one (file system, full disk)."""
    if isinstance(exc, OSError) and (exc.errno in STORAGE_ERRNOS or exc.filename is not None):
        task = _task_of(args)
        if _in_work_dir(exc.filename, task) and task is not None:
            err = storage_error(exc, f"create the task's work folder (work_dir in {task.path})")
            return StorageError(err.message, hint=f"{err.hint}; or set work_dir in the task file")
        return storage_error(exc)
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):
        return storage_error(OSError(errno.ENOSPC, "no space left on the device"), "write the journal")
    return None


def _unwritable_work_dir(exc: DistilError, args: argparse.Namespace) -> DistilError:
    """A journal that cannot be created because the work folder is not writable is a StorageError."""
    task = _task_of(args) if isinstance(exc, JournalError) else None
    if task is None or task.journal_path.exists():
        return exc
    work = task.work_path
    if not work.is_dir() or os.access(work, os.W_OK | os.X_OK):
        return exc
    return StorageError(
        f"cannot create the journal in {work} (the task's work_dir): permission denied",
        hint=f"make {work} writable for this user, or set work_dir in {task.path} to a folder you can write",
    )


def _journal_note(args: argparse.Namespace) -> str | None:
    """Where the answers already paid for are kept, for a file error of a command that asks the teacher."""
    task = _task_of(args) if getattr(args, "command", None) in _PAYING else None
    if task is None or not task.journal_path.exists():
        return None
    return (
        f"every teacher answer received so far is kept in the journal {task.journal_path}: fix this and run "
        "the same command again, and none of them is paid again"
    )


def _report(exc: DistilError, args: argparse.Namespace) -> int:
    """Show a distil error (and, for a file error, where the paid answers are); its exit code."""
    exc = _unwritable_work_dir(exc, args)
    print_error(exc, internal=False)
    note = _journal_note(args) if isinstance(exc, StorageError) else None
    if note:
        console.print(note, markup=False, soft_wrap=True)
    return exc.exit_code


def _dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; turn its errors into one line and an exit code."""
    debug = bool(os.environ.get("DISTIL_DEBUG"))
    try:
        _resolve_artifact(args)
        code: int = args.fn(args)
    except DistilError as exc:
        if debug:
            raise
        return _report(exc, args)
    except KeyboardInterrupt:
        console.print("interrupted: every answer received so far is in the journal")
        return 130
    except Exception as exc:  # a bug: one line, with how to see more
        if debug:
            raise
        clear = _as_distil_error(exc, args)
        if clear is not None:
            return _report(clear, args)
        print_error(exc, internal=True)
        return 70
    return code


def _resolve_artifact(args: argparse.Namespace) -> None:
    """An ``ARTIFACT`` argument may be a folder or a Hugging Face Hub id: make it the local folder."""
    if isinstance(getattr(args, "artifact", None), str):
        from distil.artifact import artifact_folder

        args.artifact = str(artifact_folder(args.artifact))


def _drop_current_folder() -> None:
    """``python -m distil`` puts the current folder first on ``sys.path``: take it off, so that a stray
    module there (``pyarrow.py``) is never imported in place of an installed one."""
    if sys.path and not sys.flags.safe_path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distil`` command; returns the exit code."""
    if argv is None:  # the real command line (tests pass their arguments and keep their import path)
        _drop_current_folder()
    args = build_parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    return _dispatch(args)
