"""The ``distil`` argument parser: one small function per sub-command, each naming its command function."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from distil import __version__
from distil.cli.commands import (
    cmd_demo,
    cmd_drift,
    cmd_eval,
    cmd_init,
    cmd_predict,
    cmd_run,
    cmd_serve,
    cmd_teacher_fit,
    cmd_train,
)
from distil.cli.labeling import cmd_journal, cmd_label

#: The parser's description: the first line of :mod:`distil.cli`'s docstring.
DESCRIPTION = "The ``distil`` command: a thin layer over the Python API, one public call per command."

#: The ``--help`` text of ``--valid`` (``train`` and ``run``).
_VALID_HELP = "gold-labeled file, disjoint from the teacher's training data: choose by it"

if TYPE_CHECKING:
    #: What ``add_subparsers()`` returns (argparse keeps the class private); ``add_parser()`` is all we use.
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    p = argparse.ArgumentParser(prog="distil", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"distil {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_init, _add_teacher, _add_label, _add_journal, _add_train, _add_predict, _add_eval,
                _add_run, _add_demo, _add_serve, _add_drift):
        add(sub)
    return p


def _add_init(sub: Subparsers) -> None:
    s = sub.add_parser("init", help="write a commented task file NAME/task.toml")
    s.add_argument("name")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_init)


_TEXT_HELP = "one column as the text, cut to [input].max_chars (default: the task's [input] fields and template)"
_ARTIFACT_TEXT_HELP = "one column as the text (default: the [input] rule the artifact was trained with)"


def _add_teacher(sub: Subparsers) -> None:
    t = sub.add_parser("teacher", help="teacher tools").add_subparsers(dest="sub", required=True, metavar="SUB")
    s = t.add_parser("fit", help="fit a local teacher's head on labeled data")
    s.add_argument("task")
    s.add_argument("data")
    s.add_argument("--label-column", required=True)
    s.add_argument("--text-column", help=_TEXT_HELP)
    s.add_argument("--out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_teacher_fit)


def _add_label(sub: Subparsers) -> None:
    s = sub.add_parser("label", help="ask the teacher about every input, once (journaled)")
    s.add_argument("task")
    s.add_argument("inputs")
    s.add_argument("--text-column", help=_TEXT_HELP)
    s.add_argument("--max-calls", type=int, help="hard stop after this many teacher calls")
    s.add_argument("--max-cost", type=float, help="hard stop before spending more than this many dollars")
    s.add_argument("--out", help="labeled set to write (.parquet or .jsonl); default WORK_DIR/labeled.parquet")
    s.add_argument("--strategy", choices=["all", "random", "active"], default="all")
    s.add_argument("--round-student", choices=["auto", "static", "ngram"], default="auto",
                   help="active: the student that ranks inputs between rounds (auto: static if available)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dry-run", action="store_true", help="show the estimate and stop")
    s.set_defaults(fn=cmd_label)


def _add_journal(sub: Subparsers) -> None:
    s = sub.add_parser("journal", help="show what the journal holds")
    s.add_argument("task")
    s.set_defaults(fn=cmd_journal)


_STUDENTS_HELP = ("comma-separated, cheapest first, from ngram,static,tuned,ensemble,encoder,finetune "
                  "(default: all six)")


def _add_train(sub: Subparsers) -> None:
    s = sub.add_parser("train", help="train the student ladder on the journal and pick one")
    s.add_argument("task")
    s.add_argument("--out", required=True)
    s.add_argument("--students", help=_STUDENTS_HELP)
    s.add_argument("--target", type=float, help="held-out agreement a student must reach (default: the task's)")
    s.add_argument("--router-target", type=float, help="agreement the serving router must guarantee")
    s.add_argument("--level", type=float, help="confidence level of the router's guarantee (default 0.95)")
    s.add_argument("--calibration", choices=["crossfit", "heldout"],
                   help="certify the threshold on out-of-fold scores over all labeled texts (crossfit, the "
                   "default) or on the held-out split only")
    s.add_argument("--folds", type=int, help="cross-fitting folds (default 5)")
    s.add_argument("--grid-size", type=int,
                   help="candidate thresholds answering 1/N, 2/N, … of the calibration inputs (default 20)")
    s.add_argument("--cascade", metavar="RUNGS",
                   help="serve a cascade through the ladder, cheapest first, e.g. ngram,static: each rung "
                   "answers what it is confident on, the next sees the rest, the teacher the remainder; "
                   "one threshold certified for the whole cascade")
    s.add_argument("--ood-quantile", type=float,
                   help="the OOD guard flags inputs less typical than this share of in-distribution texts "
                   "(default 0.99: about 1%% of normal traffic goes to the teacher)")
    s.add_argument("--ood-k", type=int, help="the OOD guard's k-th nearest neighbour (default 3)")
    s.add_argument("--ood-space", help="the ladder member whose features the OOD guard scores "
                   "(default auto: static, else encoder, else the routed student)")
    s.add_argument("--hard", action="store_true", help="train on the teacher's argmax only (ablation)")
    s.add_argument("--include-source", action="append", metavar="SOURCE",
                   help="also train on answers asked for SOURCE (eval, valid); by default only labeling runs, "
                   "active rounds and serving fallbacks are trained on")
    s.add_argument("--valid", help=_VALID_HELP)
    s.add_argument("--label-column", help="the gold column of --valid")
    s.add_argument("--text-column", help=_TEXT_HELP)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_train)


def _add_predict(sub: Subparsers) -> None:
    s = sub.add_parser("predict", help="label inputs with a trained student")
    s.add_argument("artifact")
    s.add_argument("inputs")
    s.add_argument("--text-column", help=_ARTIFACT_TEXT_HELP)
    s.add_argument("--out", help="predictions file: .csv, .parquet or .jsonl (default: JSONL on standard output)")
    s.add_argument("--columns", help="input columns to keep, comma-separated (default: all)")
    s.add_argument("--probs", action="store_true", help="add one p_<label> column per label")
    s.set_defaults(fn=cmd_predict)


def _add_eval(sub: Subparsers) -> None:
    s = sub.add_parser("eval", help="measure student vs teacher; metrics.json + report.html")
    s.add_argument("artifact")
    s.add_argument("test")
    s.add_argument("--task")
    s.add_argument("--label-column")
    s.add_argument("--text-column", help=_TEXT_HELP)
    s.add_argument("--out", required=True)
    s.add_argument("--allow-overlap", action="store_true",
                   help="print the verdict even when test texts were in the student's training data")
    s.add_argument("--off-topic", metavar="FILE",
                   help="texts the task has no label for: reports the share the student would answer alone")
    s.set_defaults(fn=cmd_eval)


def _add_run(sub: Subparsers) -> None:
    s = sub.add_parser("run", help="label → train → eval in one command")
    s.add_argument("task")
    s.add_argument("inputs")
    s.add_argument("--test")
    s.add_argument("--valid", help=_VALID_HELP)
    s.add_argument("--label-column")
    s.add_argument("--text-column", help=_TEXT_HELP)
    s.add_argument("--out", required=True)
    s.add_argument("--max-calls", type=int)
    s.add_argument("--max-cost", type=float)
    s.add_argument("--strategy", choices=["all", "random", "active"], default="all",
                   help="active/random: label in rounds up to --max-calls (see distil label)")
    s.add_argument("--students", help=_STUDENTS_HELP)
    s.set_defaults(fn=cmd_run)


def _add_demo(sub: Subparsers) -> None:
    s = sub.add_parser("demo", help="the embedded default: CFPB complaints → product, end to end")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--quick", action="store_true", help="smaller pool, numpy students only")
    s.set_defaults(fn=cmd_demo)


def _add_serve(sub: Subparsers) -> None:
    s = sub.add_parser("serve", help="serve the student, the teacher behind it")
    s.add_argument("artifact")
    s.add_argument("--task")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--target-agreement", type=float,
                   help="certify a new threshold for this agreement on the artifact's calibration scores")
    s.add_argument("--level", type=float, help="confidence level of that certificate (default: the stored one)")
    s.add_argument("--threshold", type=float, help="use this confidence threshold as it is (no certificate)")
    s.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="wait up to this long to batch requests for the student (default 0: batch only what "
                   "is already waiting)")
    s.add_argument("--token-env", help="environment variable holding the bearer token clients must send")
    s.set_defaults(fn=cmd_serve)


def _add_drift(sub: Subparsers) -> None:
    s = sub.add_parser("drift", help="compare recent traffic with the training data")
    s.add_argument("artifact")
    s.add_argument("inputs")
    s.add_argument("--text-column", help=_ARTIFACT_TEXT_HELP)
    s.set_defaults(fn=cmd_drift)
