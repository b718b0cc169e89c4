"""Print the code-shape figures the architecture issue tracks.

Usage: python scripts/code_stats.py [--min-lines N] [paths...]

Lists every function of at least N lines (default 100) under src/distil and counts them, so that a
change can quote a before/after. The complexity findings come from ruff (``ruff check --select C901``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def long_functions(root: Path, min_lines: int) -> list[tuple[int, str]]:
    """Return (length, "file:line name") for each function of at least ``min_lines`` lines."""
    found: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length >= min_lines:
                    found.append((length, f"{path}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


def main() -> int:
    """Print the long functions and their count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-lines", type=int, default=100)
    parser.add_argument("paths", nargs="*", default=["src/distil"])
    args = parser.parse_args()
    rows = [row for p in args.paths for row in long_functions(Path(p), args.min_lines)]
    for length, where in rows:
        print(f"{length:5d}  {where}")
    print(f"functions of {args.min_lines}+ lines: {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
