"""The ``distil`` command: a thin layer over the Python API, one public call per command.

Errors from distil print as one line (``error: …``) with a non-zero exit code and
no traceback; set ``DISTIL_DEBUG=1`` to see tracebacks.

All presentation lives in this package: :mod:`distil.cli.parser` (the flags),
:mod:`distil.cli.commands` and :mod:`distil.cli.labeling` (one library call per command),
:mod:`distil.cli.display` (consoles, progress bar, result lines) and :mod:`distil.cli.inputs`
(reading input files).  No library module imports it; ``python -m distil`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from collections.abc import Sequence

from distil.cli.display import LabelDisplay, console, print_error, show_progress
from distil.cli.parser import build_parser
from distil.errors import DistilError

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
    show_progress()


def _dispatch(args: argparse.Namespace) -> int:
    """Run the chosen command; turn its errors into one line and an exit code."""
    debug = bool(os.environ.get("DISTIL_DEBUG"))
    try:
        code: int = args.fn(args)
    except DistilError as exc:
        if debug:
            raise
        print_error(exc, internal=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("interrupted: every answer received so far is in the journal")
        return 130
    except Exception as exc:  # a bug: one line, with how to see more
        if debug:
            raise
        print_error(exc, internal=True)
        return 70
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distil`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _quiet_libraries(args.verbose)
    return _dispatch(args)
