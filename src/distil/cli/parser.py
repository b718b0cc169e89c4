"""The ``distil`` argument parser: one small function per sub-command, each naming its command function."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from distil import __version__
from distil.cli.commands import (
    cmd_demo,
    cmd_drift,
    cmd_eval,
    cmd_export,
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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; every option with a real default shows it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = action.option_strings and not (default is None or default is False or default == argparse.SUPPRESS)
        if shown and "default" not in text:
            text += f" (default: {action.default})"
        return text


#: What to run next, shown at the end of each command's --help.
NEXT = {
    "fit": "next: `distil label TASK INPUTS` with the fitted teacher",
    "init": "next: edit NAME/task.toml, then `distil label NAME/task.toml inputs.csv --dry-run`",
    "label": "next: `distil journal TASK` to see what was asked, then `distil train TASK --out students/`",
    "journal": "next: `distil label TASK INPUTS` to ask about more inputs, or `distil train TASK --out students/`",
    "train": "next: `distil eval students/ test.csv --out report/`, then `distil serve students/ --task TASK`",
    "predict": "next: `distil drift students/ INPUTS` to see whether the traffic still looks like the training data",
    "eval": "next: open OUT/report.html; `distil serve ARTIFACT --task TASK` to serve the student",
    "run": "next: open OUT/eval/report.html; `distil serve OUT/students --task TASK`",
    "demo": "next: open OUT/eval/report.html; `distil init NAME` to start on your own task",
    "serve": "next: POST /v1/classify {\"inputs\": [...]}; watch /metrics; `distil drift` on logged traffic",
    "drift": "next: on RETRAIN, `distil label TASK recent.csv` then `distil train TASK --out students/`",
    "export": "next: `distil serve OUT`, or build the Dockerfile with --build-arg ARTIFACT=OUT",
}

#: Help for the arguments that are the same wherever they appear.
_COMMON_HELP = {
    "task": "the task file (task.toml): labels, teacher, input fields",
    "inputs": "a CSV, Parquet or JSONL file (or a Hugging Face dataset folder) of texts",
    "artifact": "an artifact folder written by `distil train`, or a Hugging Face Hub id (owner/name) already cached",
    "seed": "random seed (the same seed gives the same result)",
    "out": "where to write the output",
    "host": "the address to listen on (127.0.0.1: this machine only)",
    "port": "the TCP port to listen on",
    "force": "overwrite an existing task file",
    "name": "the folder to create",
    "label_column": "the column holding the gold label",
    "test": "a gold-labeled test file (CSV, Parquet or JSONL)",
    "data": "a labeled file (CSV, Parquet or JSONL) to fit the teacher's head on",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command."""
    p = argparse.ArgumentParser(prog="distil", description=DESCRIPTION, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"distil {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_init, _add_teacher, _add_label, _add_journal, _add_train, _add_predict, _add_eval,
                _add_run, _add_demo, _add_serve, _add_drift, _add_export):
        add(sub)
    _finish(sub)
    return p


def _finish(sub: Subparsers) -> None:
    """Every command: its help as the description, the defaults shown, what to run next, common arguments explained."""
    for name, parser in sub.choices.items():
        parser.formatter_class = _Formatter
        parser.epilog = parser.epilog or NEXT.get(name)
        about = next((a.help for a in sub._choices_actions if a.dest == name), None)
        parser.description = parser.description or (about[:1].upper() + about[1:] + "." if about else None)
        for action in parser._actions:
            if action.help is None and action.dest in _COMMON_HELP:
                action.help = _COMMON_HELP[action.dest]
            if isinstance(action, argparse._SubParsersAction):
                _finish(action)


def _add_init(sub: Subparsers) -> None:
    s = sub.add_parser("init", help="write a commented task file NAME/task.toml")
    s.add_argument("name")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_init)


_TEXT_HELP = "one column as the text, cut to [input].max_chars (default: the task's [input] fields and template)"
_ARTIFACT_TEXT_HELP = "one column as the text (default: the [input] rule the artifact was trained with)"


def _add_teacher(sub: Subparsers) -> None:
    t = sub.add_parser("teacher", help="teacher tools").add_subparsers(
        dest="sub", required=True, metavar="SUB", help="fit: fit a local teacher's head on labeled data"
    )
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
    s.add_argument("inputs", nargs="+", help=_INPUTS_HELP)
    s.add_argument("--text-column", help=_TEXT_HELP)
    s.add_argument("--max-calls", type=int, help="hard stop after this many teacher calls")
    s.add_argument("--max-cost", type=float, help="hard stop before spending more than this many dollars")
    s.add_argument("--out", help="labeled set to write (.parquet or .jsonl); default WORK_DIR/labeled.parquet")
    s.add_argument("--strategy", choices=["all", "random", "active"], default="all",
                   help="all: every input; random or active: rounds up to --max-calls (active: the inputs the "
                   "student is least sure of first)")
    s.add_argument("--round-student", choices=["auto", "static", "ngram"], default="auto",
                   help="active: the student that ranks inputs between rounds (auto: static if available)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dry-run", action="store_true", help="show the estimate and stop")
    _add_via(s)
    _add_engine(s)
    s.set_defaults(fn=cmd_label)


_INPUTS_HELP = "input files, folders of shards or glob patterns (.csv, .jsonl, .parquet)"


def _add_engine(s: argparse.ArgumentParser) -> None:
    s.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: run on a Ray cluster (RAY_ADDRESS, or a local one started for the run); needs "
                   "pip install 'distil[ray]'")
    s.add_argument("--workers", type=int, default=2, help="--engine ray: worker actors")
    s.add_argument("--ray-address", help="--engine ray: the cluster to join (default: RAY_ADDRESS, else a local one)")


def _add_via(s: argparse.ArgumentParser) -> None:
    s.add_argument("--via", choices=["sync", "batch"], default="sync",
                   help="batch: send the inputs through the provider's Batch API (OpenAI: half price, answers "
                   "within 24 h); a killed run resumes polling the same batch when run again")
    s.add_argument("--poll-s", type=float, default=30.0, help="--via batch: seconds between status checks")


def _add_journal(sub: Subparsers) -> None:
    s = sub.add_parser("journal", help="show what the journal holds; `journal merge TASK [SHARD…]` merges shards")
    s.add_argument("words", nargs="+", metavar="TASK",
                   help="the task file; or `merge TASK [SHARD …]`: merge journal shards (default: the ones a Ray "
                   "run left beside the journal) into it, idempotently")
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
    s.add_argument("--route-score", choices=["acceptor", "confidence"],
                   help="what the certified threshold applies to: the learned acceptor's probability that the "
                   "student agrees with the teacher (acceptor, the default), or the student's top probability")
    s.add_argument("--acceptor-with", metavar="MEMBERS",
                   help="cheap members run beside the routed student whose answers its acceptor reads "
                   "(default auto: ngram when trained; 'none' for no companion)")
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
    s.add_argument("inputs", nargs="+", help=_INPUTS_HELP)
    s.add_argument("--text-column", help=_ARTIFACT_TEXT_HELP)
    s.add_argument("--out", help="predictions file: .csv, .parquet or .jsonl (default: JSONL on standard output); "
                   "with several input shards or --engine ray, a folder of parts and _SUCCESS.json")
    s.add_argument("--format", choices=["parquet", "csv", "jsonl"], default="parquet",
                   help="the parts' format, when --out is a folder")
    s.add_argument("--columns", help="input columns to keep, comma-separated (default: all)")
    s.add_argument("--probs", action="store_true", help="add one p_<label> column per label")
    _add_engine(s)
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
    s.add_argument("--max-calls", type=int, help="hard stop after this many teacher calls")
    s.add_argument("--max-cost", type=float, help="hard stop before spending more than this many dollars")
    s.add_argument("--strategy", choices=["all", "random", "active"], default="all",
                   help="active/random: label in rounds up to --max-calls (see distil label)")
    s.add_argument("--students", help=_STUDENTS_HELP)
    _add_via(s)
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
    s.add_argument("--threshold", type=float, help="use this threshold on the routing score as it is (no certificate)")
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


def _add_export(sub: Subparsers) -> None:
    s = sub.add_parser(
        "export", help="copy an artifact to ship it, leaving out customer texts or the OOD reference",
        description="Copy an artifact folder to a new folder, optionally without the held-out texts "
        "(heldout.parquet) or the OOD guard's reference features (ood.npz); the copy's model card says what "
        "is lost. Next: `distil serve OUT` or hand OUT to whoever runs it.",
    )
    s.add_argument("artifact")
    s.add_argument("--out", required=True, help="a new folder for the copy")
    s.add_argument("--no-heldout", action="store_true",
                   help="leave out heldout.parquet, the only raw customer text (drift then cannot run on the copy)")
    s.add_argument("--no-ood-reference", action="store_true",
                   help="leave out ood.npz, the training texts' features (turns the OOD guard off)")
    s.add_argument("--onnx", action="store_true",
                   help="export the chosen encoder/finetune member to ONNX (served by onnxruntime, no torch); "
                   "needs pip install 'distil[onnx]'")
    s.add_argument("--quantize", choices=["fp32", "int8"], default="fp32",
                   help="with --onnx: int8 dynamic quantisation (smaller, faster, a few labels may flip)")
    s.add_argument("--min-agreement", type=float, default=None,
                   help="with --onnx: refuse the export below this label agreement with the torch member on the "
                   "held-out texts (default 0.999 fp32, 0.99 int8)")
    s.set_defaults(fn=cmd_export)
