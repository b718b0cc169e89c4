"""The Dockerfile (no Docker daemon here): what it copies exists, what it installs is a real extra
without torch, and its command line is one `distil serve` accepts."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path

from distil.cli.commands import cmd_serve
from distil.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(r.split(None, 1)[0].upper(), r.split(None, 1)[1]) for r in rows]


def test_the_dockerfile_serves_an_artifact_with_a_command_distil_accepts() -> None:
    steps = _instructions()
    entry = json.loads(next(v for k, v in steps if k == "ENTRYPOINT"))
    cmd = json.loads(next(v for k, v in steps if k == "CMD"))
    assert entry[:2] == ["distil", "serve"]
    args = build_parser().parse_args([*entry[1:], *cmd])
    assert args.fn is cmd_serve and args.host == "0.0.0.0" and args.token_env  # never open beyond loopback
    assert f"EXPOSE {args.port}" in {f"{k} {v}" for k, v in steps}
    for k, v in steps:
        if k == "COPY" and "$" not in v:
            for src in shlex.split(v)[:-1]:
                assert (ROOT / src).exists(), src
    install = next(v for k, v in steps if k == "RUN" and "pip install" in v)
    extras = install.split('".[', 1)[1].split(']"', 1)[0].split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in extras:
        assert extra in declared and not any(d.startswith("torch") for d in declared[extra]), extra
