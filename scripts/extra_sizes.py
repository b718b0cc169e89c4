"""Print what each extra of distil weighs on disk: the installed closure of its requirements.

Run with the project's venv after ``make install-llm``:  ``.venv/bin/python scripts/extra_sizes.py``.
Sizes are the installed files of each distribution (site-packages), summed over the closure of the
extra's requirements (markers evaluated for this interpreter); shared packages count in every
extra that needs them. The weight packages (weights.txt) are listed on their own.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def norm(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_size(dist: metadata.Distribution) -> int:
    """Bytes of the files a distribution installed."""
    total = 0
    for f in dist.files or []:
        p = Path(str(dist.locate_file(f)))
        if p.is_file():
            total += p.stat().st_size
    return total


DISTS = {norm(d.metadata["Name"]): d for d in metadata.distributions()}


def closure(reqs: list[str], extras: set[str] | None = None) -> set[str]:
    """Installed distributions needed by ``reqs`` (recursively)."""
    seen: set[str] = set()
    todo = [(r, extras or set()) for r in reqs]
    while todo:
        raw, ex = todo.pop()
        req = Requirement(raw)
        env_ok = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (ex or {""}))
        if not env_ok:
            continue
        name = norm(req.name)
        if name == "distil":
            todo += [(r, set(req.extras)) for r in DISTS["distil"].requires or []]
            continue
        if name in seen or name not in DISTS:
            continue
        seen.add(name)
        sub = DISTS[name].requires or []
        todo += [(r, set(req.extras)) for r in sub]
    return seen


def mb(names: set[str]) -> float:
    """Megabytes of the named distributions."""
    return sum(dist_size(DISTS[n]) for n in names) / 1e6


def main() -> None:
    """One line per extra: packages and MB."""
    distil = DISTS["distil"]
    base = [r for r in distil.requires or [] if "extra ==" not in r]
    rows = [("core (no extra)", closure(base))]
    for extra in ["local", "train", "serve", "report", "hf", "llm", "ray", "dev", "all"]:
        rows.append((extra, closure([*base, f"distil[{extra}]"])))
    print(f"{'extra':<16} {'packages':>8} {'MB':>8}")
    for name, names in rows:
        print(f"{name:<16} {len(names):>8} {mb(names):>8.0f}")
    weights = [ln.split("==")[0] for ln in Path("weights.txt").read_text().splitlines() if "==" in ln]
    for w in weights:
        if norm(w) in DISTS:
            print(f"{'weights: ' + w:<48} {dist_size(DISTS[norm(w)]) / 1e6:>8.0f} MB")


if __name__ == "__main__":
    main()
