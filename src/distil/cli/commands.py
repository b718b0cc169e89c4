"""The commands other than ``label``/``journal``: one public library call each, then its result shown.

``init`` and ``teacher fit`` set a task up; ``train``, ``predict``, ``eval`` and ``drift`` work on a
trained student; ``run`` and ``demo`` chain label → train → eval; ``serve`` serves a student.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from distil.cli.display import ConsoleReporter, console, out, print_verdict, row_progress
from distil.cli.inputs import load_task, read_artifact_texts
from distil.errors import ConfigError


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

    task = load_task(args.task)
    report = fit_head(
        task, args.data, label_column=args.label_column, text_column=args.text_column,
        out=Path(args.out) if args.out else None, seed=args.seed,
    )
    out.print(report.summary() if hasattr(report, "summary") else str(report))
    return 0


def _train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``train_task`` that ``distil train``'s flags set."""
    kwargs: dict[str, Any] = {"seed": args.seed, "hard": args.hard}
    if args.students:
        kwargs["students"] = _students(args.students)
    if args.target is not None:
        kwargs["target"] = args.target
    if args.router_target is not None:
        kwargs["router_target"] = args.router_target
    if args.include_source:
        kwargs["include_sources"] = tuple(args.include_source)
    rungs = _cascade_rungs(args.cascade, kwargs.get("students"))
    routing = {
        key: value
        for key, value in (("level", args.level), ("calibration", args.calibration), ("folds", args.folds),
                           ("grid_size", args.grid_size), ("ood_quantile", args.ood_quantile), ("k", args.ood_k),
                           ("ood_space", args.ood_space), ("score", args.route_score),
                           ("acceptor_with", _acceptor_with(args.acceptor_with, rungs, kwargs.get("students"))))
        if value is not None
    }
    from distil.train import check_routing

    check_routing(routing, args.router_target)  # before anything is trained
    if rungs:
        routing.update(member=rungs[-1], ladder=tuple(rungs[:-1]))
    if routing:
        kwargs["routing"] = routing
    return kwargs


def _acceptor_with(spec: str | None, rungs: list[str], students: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``--acceptor-with ngram`` as a tuple of members (``none``: no companion; None: the automatic choice)."""
    if spec is None or spec.strip() == "auto":
        return None
    if spec.strip() == "none":
        return ()
    from distil.students.base import LADDER

    names = tuple(m.strip() for m in spec.split(",") if m.strip())
    trained = students or LADDER
    if rungs or not names or any(m not in trained for m in names):
        raise ConfigError(
            f"--acceptor-with: expected members that this run trains ({', '.join(trained)}), found {spec!r}"
            + (" with --cascade (a cascade's rungs already read the rungs before them)" if rungs else ""),
            hint="e.g. --acceptor-with ngram, or --acceptor-with none",
        )
    return names


def _students(spec: str | None) -> tuple[str, ...] | None:
    """``--students ngram,static`` as a tuple of names (None: the default ladder); unknown names are refused."""
    if not spec:
        return None
    from distil.students.base import TRAINABLE

    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    unknown = [n for n in names if n not in TRAINABLE]
    if unknown or not names:
        raise ConfigError(f"--students: unknown student(s) {unknown or [spec]}",
                          hint=f"choose from {', '.join(TRAINABLE)}")
    return names


def _cascade_rungs(spec: str | None, students: tuple[str, ...] | None) -> list[str]:
    """``--cascade ngram,static`` as a list of members, each one that this run trains."""
    if not spec:
        return []
    from distil.students.base import LADDER

    rungs = [r.strip() for r in spec.split(",") if r.strip()]
    trained = students or LADDER
    bad = [r for r in rungs if r not in trained] + [r for r in set(rungs) if rungs.count(r) > 1]
    if len(rungs) < 2 or bad:
        raise ConfigError(
            f"--cascade: expected two or more distinct students that this run trains ({', '.join(trained)}), "
            f"found {spec!r}",
            hint="e.g. --cascade ngram,static (cheapest first)",
        )
    return rungs


def cmd_train(args: argparse.Namespace) -> int:
    """Train the student ladder on the journal's soft labels and pick one."""
    from distil.train import train_task
    from distil.workspace import Workspace

    task = load_task(args.task)
    kwargs = _train_options(args)
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
    """Label new inputs with a trained student (no teacher): one output row per input row, its columns kept.

    The file is streamed in chunks (any size); with ``--out``, a progress line counts the rows.
    """
    from distil.data import expand_inputs
    from distil.predictions import output_format, predict_file

    shards = expand_inputs(args.inputs)
    if len(shards) > 1 or args.engine == "ray":
        return _predict_sharded(args, shards)
    inputs = str(shards[0])
    if args.out:
        output_format(args.out)  # a bad suffix is refused before anything is read or predicted
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    with row_progress(f"predicting {inputs}", enabled=bool(args.out)) as progress:
        res = predict_file(args.artifact, inputs, args.out, text_column=args.text_column, columns=columns,
                           probs=args.probs, progress=progress)
    console.print(f"[bold]{inputs}[/]: {res.report.summary()}")
    if res.out is not None:
        console.print(f"predictions ({res.rows} rows, {', '.join(res.columns)}): {res.out}")
    return 0


def _predict_sharded(args: argparse.Namespace, shards: list[Path]) -> int:
    """Several shards (or ``--engine ray``): one part per shard in the ``--out`` folder, then ``_SUCCESS.json``."""
    from distil.ray_engine import RaySettings, predict_sharded

    if not args.out:
        raise ConfigError(
            f"{len(shards)} input shards" + (" on --engine ray" if args.engine == "ray" else "")
            + " are written as a folder of parts, and --out is not set",
            hint="add --out FOLDER (e.g. --out predictions/)",
        )
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    res = predict_sharded(
        args.artifact, shards, args.out, engine=args.engine, fmt=args.format, text_column=args.text_column,
        columns=columns, probs=args.probs, settings=RaySettings(workers=args.workers, address=args.ray_address),
    )
    console.print(f"predictions: {res.rows} rows in {len(res.parts)} parts, {res.seconds:.1f} s "
                  f"({args.engine}): {res.out} (manifest {res.out / '_SUCCESS.json'})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure teacher vs student on a test file; write metrics.json and report.html."""
    from distil.evaluate import evaluate

    metrics = evaluate(
        Path(args.artifact), Path(args.test), task=load_task(args.task) if args.task else None,
        label_column=args.label_column, text_column=args.text_column, out=Path(args.out),
        allow_overlap=args.allow_overlap, off_topic=Path(args.off_topic) if args.off_topic else None,
    )
    print_verdict(metrics)
    out.print(f"metrics: {Path(args.out) / 'metrics.json'}\nreport: {Path(args.out) / 'report.html'}")
    return 2 if metrics.get("verdict_withheld") else 0


def cmd_run(args: argparse.Namespace) -> int:
    """label → train → eval in one go."""
    from distil.pipeline import run

    metrics = run(
        load_task(args.task), Path(args.inputs), Path(args.out), test=Path(args.test) if args.test else None,
        label_column=args.label_column, text_column=args.text_column, max_calls=args.max_calls,
        max_cost=args.max_cost, valid=Path(args.valid) if args.valid else None, strategy=args.strategy,
        students=_students(args.students), reporter=ConsoleReporter(), via=args.via, poll_s=args.poll_s,
    )
    print_verdict(metrics)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Prepare the embedded default (CFPB complaints) and run it end to end."""
    from distil.pipeline import demo

    metrics = demo(Path(args.out), reporter=ConsoleReporter(), quick=args.quick)
    print_verdict(metrics)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the student with the teacher behind it."""
    from distil.serving import serve

    serve(
        Path(args.artifact), task=load_task(args.task) if args.task else None, host=args.host, port=args.port,
        target_agreement=args.target_agreement, threshold=args.threshold, level=args.level,
        token=_token(args.token_env), max_wait_ms=args.max_wait_ms, announce=out.print,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Copy an artifact, leaving out what should not leave the company."""
    from distil.export import OnnxOptions, export_artifact

    if not args.onnx and (args.quantize != "fp32" or args.min_agreement is not None):
        raise ConfigError("--quantize and --min-agreement apply to an ONNX export", hint="add --onnx")
    onnx = OnnxOptions(args.quantize, args.min_agreement) if args.onnx else None
    res = export_artifact(args.artifact, args.out, heldout=not args.no_heldout,
                          ood_reference=not args.no_ood_reference, onnx=onnx)
    out.print(res.summary())
    return 0


def _token(env: str | None) -> str | None:
    """The bearer token named by ``--token-env``; refuses an unset or empty variable (no silent open server)."""
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None or not value.strip():
        raise ConfigError(
            f"--token-env {env}: the variable is {'not set' if value is None else 'empty'}",
            hint=f"export {env}=<a long random token>, or leave --token-env out to serve without authentication",
        )
    return value


def cmd_drift(args: argparse.Namespace) -> int:
    """Compare recent traffic with the training data; say whether to retrain."""
    from distil.drift import drift

    texts, _ = read_artifact_texts(args.artifact, args.inputs, args.text_column)
    report = drift(Path(args.artifact), texts)
    out.print(report.summary() if hasattr(report, "summary") else str(report))
    return 0
