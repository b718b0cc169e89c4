"""The command line: files and journal rows, and one clear line for every kind of bad input."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import write_banking_task, write_csv, write_task

from distil.data import read_labeled
from distil.journal import Journal

TESTS = Path(__file__).resolve().parent


def distil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess (so tracebacks would show on stderr)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200", "DISTIL_DEBUG": ""}
    return subprocess.run(
        [sys.executable, "-m", "distil", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


ROWS = [
    {"text": "my card has not arrived"},
    {"text": "transfer to my friend failed"},
    {"text": "transfer to my friend failed"},
    {"text": ""},
    {"text": "the cash machine ate my card"},
]


def test_label_twice_exports_and_pays_once(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    inputs = write_csv(tmp_path / "in.csv", ROWS)
    first = distil("label", str(task), str(inputs), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "5 rows, 3 unique texts, 1 duplicates" in first.stderr
    assert "1 empty" in first.stderr
    assert "teacher calls this run: 3" in first.stderr
    export = tmp_path / "t" / ".distil" / "labeled.parquet"
    ls = read_labeled(export)
    assert sorted(ls.texts) == sorted({r["text"] for r in ROWS if r["text"]})
    assert pq.read_table(export).column_names[:3] == ["text", "teacher_label", "teacher_probs"]

    second = distil("label", str(task), str(inputs), "--out", str(tmp_path / "out.jsonl"), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "teacher calls this run: 0" in second.stderr and "from journal: 3" in second.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    with Journal(tmp_path / "t" / ".distil" / "journal.sqlite") as j:
        rows = list(j.rows())
    assert len(rows) == 3 and all(r.status == "done" and r.attempts == 1 for r in rows)


def test_max_calls_stops_with_exit_3_and_keeps_answers(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", batch=1)
    inputs = write_csv(tmp_path / "in.csv", [{"text": f"card number {i}"} for i in range(6)])
    proc = distil("label", str(task), str(inputs), "--max-calls", "4", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "--max-calls" in proc.stderr and "2 inputs not asked" in proc.stderr
    proc = distil("label", str(task), str(inputs), cwd=tmp_path)
    assert proc.returncode == 0 and "teacher calls this run: 2" in proc.stderr


def test_dry_run_shows_the_estimate_and_sends_nothing(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    inputs = write_csv(tmp_path / "in.csv", ROWS)
    proc = distil("label", str(task), str(inputs), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0 and "estimated cost" in proc.stderr and "to ask: 3" in proc.stderr
    with Journal(tmp_path / "t" / ".distil" / "journal.sqlite") as j:
        assert list(j.rows()) == []


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("empty.csv", b"", ["empty.csv", "empty"]),
        ("header_only.csv", b"text\n", ["no data rows"]),
        ("wrong_col.csv", b"body\nhello\n", ["'text'", "not found", "['body']"]),
        ("binary.csv", b"\x00\x01\x02PK\x03\x04" * 50, ["binary"]),
        ("latin1.csv", "text\nok\ncaf\xe9 au lait\n".encode("latin-1"), ["not UTF-8", "line 3"]),
        ("blank.csv", b"text\n\"\"\n\"  \"\n", ["every row is empty"]),
        ("ragged.csv", b"text\nhello\n\"a\",\"b\"\n", ["row 2", "expected 1 fields"]),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": \n', ["line 2", "not valid JSON"]),
        ("unterminated.csv", b'text\nok\n"open quote\nmore\n', ["row 2 (line 3)", "never closed"]),
        ("surrogate.jsonl", b'{"text": "ok"}\n{"text": "x \\ud800"}\n', ["line 2", "lone UTF-16 surrogate"]),
        ("deep.jsonl", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}\n", ["line 1", "nested too deeply"]),
        ("data.xlsx", b"whatever", ["cannot tell the format"]),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, name: str, content: bytes, needles: list[str]) -> None:
    task = write_task(tmp_path / "t")
    path = tmp_path / name
    path.write_bytes(content)
    proc = distil("label", str(task), str(path), cwd=tmp_path)
    assert_clean_error(proc, 2, *needles)


def test_missing_input_file_and_task_file(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    assert_clean_error(distil("label", str(task), "nope.csv", cwd=tmp_path), 2, "no such file")
    assert_clean_error(distil("label", "missing.toml", "x.csv", cwd=tmp_path), 2, "not found", "distil init")


def test_unknown_task_key_names_it(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    task.write_text(task.read_text() + "\ntemprature = 0.3\n")
    inputs = write_csv(tmp_path / "in.csv", ROWS)
    assert_clean_error(distil("label", str(task), str(inputs), cwd=tmp_path), 2, "unknown key 'teacher.temprature'")


def test_function_teacher_that_cannot_be_imported(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t", fn="no_such_function")
    inputs = write_csv(tmp_path / "in.csv", ROWS)
    proc = distil("label", str(task), str(inputs), cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "no_such_function" in proc.stderr


def _openai_task(folder: Path, base_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "task.toml"
    p.write_text(
        'name="x"\nlabels=["card","cash"]\n[teacher]\nkind="openai"\nmodel="m"\n'
        f'base_url="{base_url}"\nmax_retries=1\ntimeout_s=2\n',
        encoding="utf-8",
    )
    return p


def test_unreachable_endpoint_is_one_line_and_journal_intact(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    task = _openai_task(tmp_path / "t", f"http://127.0.0.1:{port}/v1")
    inputs = write_csv(tmp_path / "in.csv", ROWS)
    proc = distil("label", str(task), str(inputs), cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and f"127.0.0.1:{port}" in proc.stderr
    with Journal(tmp_path / "t" / ".distil" / "journal.sqlite") as j:
        assert all(r.status in ("pending", "failed") for r in j.rows())


def test_journal_command_lists_counts_per_teacher(tmp_path: Path) -> None:
    task = write_task(tmp_path / "t")
    inputs = write_csv(tmp_path / "in.csv", ROWS)
    assert distil("label", str(task), str(inputs), cwd=tmp_path).returncode == 0
    proc = distil("journal", str(task), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "function" in proc.stdout and "done 3" in proc.stdout and "pending 0" in proc.stdout


@pytest.mark.slow
def test_train_with_a_gold_validation_file_records_retention(tmp_path: Path) -> None:
    from conftest import banking77

    labels = ["card_arrival", "exchange_rate", "pin_blocked"]
    by_label = [[(t, lab) for t, lab in banking77("train") if lab == want] for want in labels]
    rows = [r for trio in zip(*by_label, strict=False) for r in trio]  # interleaved: every slice has all 3
    task = write_banking_task(tmp_path / "t", labels)
    pool = write_csv(tmp_path / "pool.csv", [{"text": t} for t, _ in rows[:150]])
    valid = write_csv(tmp_path / "valid.csv", [{"text": t, "intent": g} for t, g in rows[150:210]],
                      columns=("text", "intent"))
    assert distil("label", str(task), str(pool), cwd=tmp_path).returncode == 0
    proc = distil("train", str(task), "--out", str(tmp_path / "s"), "--students", "ngram",
                  "--valid", str(valid), "--label-column", "intent", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "retention vs gold (validation)" in proc.stdout
    import json

    cfg = json.loads((tmp_path / "s" / "distil_config.json").read_text())
    assert cfg["selected_by"] == "val_retention"
    assert cfg["task_path"] == "../t/task.toml"  # relative to the artifact: no absolute path ships with it
    # 60 texts; the oracle teacher does not know one whose leading newline the reader strips (invalid)
    assert 55 <= cfg["validation"]["n"] <= 60
    bad = write_csv(tmp_path / "bad.csv", [{"text": "x", "intent": "nope"}], columns=("text", "intent"))
    proc = distil("train", str(task), "--out", str(tmp_path / "s2"), "--students", "ngram",
                  "--valid", str(bad), "--label-column", "intent", cwd=tmp_path)
    assert_clean_error(proc, 2, "row 1", "'intent'", "nope")


def test_the_ood_guard_knobs_reach_the_router(tmp_path: Path) -> None:
    from distil.cli.commands import _train_options
    from distil.cli.parser import build_parser

    args = build_parser().parse_args(["train", "t.toml", "--out", "s", "--ood-quantile", "0.95", "--ood-k", "3",
                                      "--ood-space", "static"])
    assert _train_options(args)["routing"] == {"ood_quantile": 0.95, "k": 3, "ood_space": "static"}
    task = write_task(tmp_path / "t")
    for flag, value in (("--ood-quantile", "1.5"), ("--ood-k", "0"), ("--level", "0.3"), ("--folds", "1"),
                        ("--grid-size", "0"), ("--router-target", "1.2")):
        proc = distil("train", str(task), "--out", str(tmp_path / "s"), flag, value, cwd=tmp_path)
        assert_clean_error(proc, 2, value)
        assert flag in proc.stderr, proc.stderr


def test_the_routing_score_knobs_reach_the_router_and_bad_ones_are_refused_before_training(tmp_path: Path) -> None:
    from distil.cli.commands import _train_options
    from distil.cli.parser import build_parser

    parse = build_parser().parse_args
    args = parse(["train", "t.toml", "--out", "s", "--route-score", "confidence", "--acceptor-with", "none"])
    assert _train_options(args)["routing"] == {"score": "confidence", "acceptor_with": ()}
    args = parse(["train", "t.toml", "--out", "s", "--students", "ngram,static", "--acceptor-with", "ngram"])
    assert _train_options(args)["routing"] == {"acceptor_with": ("ngram",)}
    task = write_task(tmp_path / "t")
    for extra, words in ((["--acceptor-with", "gpt"], ("--acceptor-with", "'gpt'")),
                         (["--students", "ngram,static", "--cascade", "ngram,static", "--acceptor-with", "ngram"],
                          ("--acceptor-with", "--cascade")),
                         (["--route-score", "vibes"], ("--route-score", "vibes"))):
        proc = distil("train", str(task), "--out", str(tmp_path / "s"), *extra, cwd=tmp_path)
        assert_clean_error(proc, 2, *words)
    assert not (tmp_path / "s").exists()


def test_train_before_any_labeling_names_the_command_that_fixes_it(tmp_path: Path) -> None:
    task = write_banking_task(tmp_path / "t", ["card_arrival", "exchange_rate"])
    proc = distil("train", str(task), "--out", str(tmp_path / "s"), "--students", "ngram", cwd=tmp_path)
    assert_clean_error(proc, 2, "nothing is labeled yet", "distil label")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["train", "run"])
def test_an_unknown_student_is_one_clear_line(tmp_path: Path, command: str) -> None:
    task = write_banking_task(tmp_path / "t", ["card_arrival", "exchange_rate"])
    extra = [str(write_csv(tmp_path / "pool.csv", [{"text": "my card"}]))] if command == "run" else []
    proc = distil(command, str(task), *extra, "--out", str(tmp_path / "s"), "--students", "ngram,gpt", cwd=tmp_path)
    assert_clean_error(proc, 2, "--students", "'gpt'", "tuned")


def test_every_command_help_says_what_it_does_its_defaults_and_what_to_run_next() -> None:
    from distil.cli.parser import NEXT, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fit = next(a for a in sub.choices["teacher"]._actions if isinstance(a, argparse._SubParsersAction))
    for name, cmd in [*sub.choices.items(), *fit.choices.items()]:
        text = cmd.format_help()
        assert cmd.description, name
        if name != "teacher":
            assert NEXT[name] in " ".join(text.split()) or NEXT[name][:40] in text, name
        for action in cmd._actions:
            real_default = action.default not in (None, False, argparse.SUPPRESS)
            if action.option_strings and real_default and action.dest != "help":
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
            if action.dest != "help":
                assert action.help, (name, action.dest)
