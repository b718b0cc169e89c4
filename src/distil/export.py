"""A copy of an artifact for outside the company: without the held-out texts, or without the OOD
guard's reference features, with what each omission costs written into the copy itself.

What the omissions cost (said in the copy's model card and by ``distil export``):

* ``heldout=False`` drops ``heldout.parquet``, the only raw customer text in an artifact.  Lost:
  ``distil drift`` (it compares traffic with that split) and re-fitting the router on it.  Serving
  is unchanged, and ``distil serve --target-agreement`` still re-certifies from ``calibration.npz``
  (scores only, no text).
* ``ood_reference=False`` drops ``ood.npz`` (the training texts' feature vectors the guard compares
  with) and turns the guard off in ``router.json``.  Lost: off-topic inputs are no longer sent to the
  teacher; the student answers them when it is confident.  The stored threshold was certified with the
  guard in place, so its guarantee no longer covers traffic the guard would have flagged.

``train_texts.sha256`` (16-byte hashes of the training texts, used by ``distil eval`` to count test
texts seen in training) stays: a hash reveals a text only to someone who can guess it exactly.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distil.artifact import CONFIG_FILE, Artifact, config_path, load_artifact
from distil.data import atomic_write_text
from distil.errors import ConfigError, storage_error

HELDOUT_FILE = "heldout.parquet"
_HELDOUT_LOSS = (
    "heldout.parquet (the held-out teacher-labeled texts): `distil drift` and re-fitting the router need it; "
    "serving and `distil serve --target-agreement` (from calibration.npz, scores only) do not"
)
_OOD_LOSS = (
    "ood.npz (the training texts' features the OOD guard compares with): the guard is off, off-topic inputs "
    "are answered by the student when it is confident, and the stored threshold's guarantee no longer covers "
    "traffic the guard would have flagged"
)


@dataclass
class ExportResult:
    """Where the copy went and what it left out (each entry: the file and what is lost without it)."""

    out: Path
    omitted: list[str] = field(default_factory=list)
    onnx: str | None = None  # the parity line, or why the member needs no ONNX

    def summary(self) -> str:
        """What ``distil export`` prints."""
        head = [self.onnx] if self.onnx else []
        if not self.omitted:
            return "\n".join([*head, f"wrote {self.out}: a full copy (held-out texts and OOD reference included)"])
        lost = "\n".join(f"  - left out {line}" for line in self.omitted)
        return "\n".join([*head, f"wrote {self.out}", lost])


@dataclass
class OnnxOptions:
    """``--onnx``: export the chosen encoder/finetune member to ONNX (``fp32`` or ``int8``), refused below
    ``min_agreement`` label agreement with the torch member on the held-out texts (None: the default bound)."""

    quantize: str = "fp32"
    min_agreement: float | None = None


def export_artifact(
    artifact_dir: str | Path,
    out: str | Path,
    *,
    heldout: bool = True,
    ood_reference: bool = True,
    onnx: OnnxOptions | None = None,
) -> ExportResult:
    """Copy the artifact to ``out`` (a new folder), leaving out what is asked; written whole or not at all.

    With ``onnx`` the chosen member is exported to ONNX after a parity check (see :mod:`distil.onnx_export`);
    a refused check leaves nothing behind.
    """
    art = load_artifact(artifact_dir)
    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest}: already exists", hint="export into a new or empty folder")
    stage = dest.with_name(f".{dest.name}.export-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        shutil.copytree(art.path, stage, ignore=shutil.ignore_patterns(".*"))
        onnx_line, onnx_record = _onnx(art, stage, onnx) if onnx is not None else (None, None)
        omitted = _omit(stage, heldout=heldout, ood_reference=ood_reference)
        _record(stage, omitted, onnx_record)
        if dest.exists():
            dest.rmdir()
        os.rename(stage, dest)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise storage_error(exc, "write the exported artifact") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return ExportResult(dest, omitted, onnx_line)


def _onnx(art: Artifact, stage: Path, opts: OnnxOptions) -> tuple[str, dict[str, Any] | None]:
    """Export the chosen member in ``stage`` to ONNX after the parity check; (the line to print, the record)."""
    from distil import onnx_export as ox

    member = stage / "ladder" / art.chosen
    kind = str(json.loads((member / "student.json").read_text(encoding="utf-8"))["name"])
    if kind not in ox.ONNX_MEMBERS:
        return (f"onnx: not needed, the chosen member {art.chosen!r} ({kind}) predicts in numpy without torch "
                "already; copied unchanged", None)
    bound = ox.min_agreement(opts.quantize, opts.min_agreement)
    ox.require_onnx(export=True)
    texts = art.heldout().texts
    torch_student = art.student()
    ox.write_onnx_member(torch_student, member, opts.quantize)
    parity = ox.check_parity(torch_student, member, texts, opts.quantize, bound)
    ox.refuse_below(parity)
    record = {"member": art.chosen, "source": kind, "quantize": opts.quantize, "file": f"ladder/{art.chosen}/"
              f"{ox.ONNX_FILE}", "opset": ox.OPSET, "parity": parity.as_dict()}
    return parity.summary(), record


def _omit(folder: Path, *, heldout: bool, ood_reference: bool) -> list[str]:
    """Remove the files asked for from the staged copy; what each removal costs."""
    omitted = []
    if not heldout and (folder / HELDOUT_FILE).exists():
        (folder / HELDOUT_FILE).unlink()
        omitted.append(_HELDOUT_LOSS)
    if not ood_reference:
        from distil.route import OOD_FILE, ROUTER_FILE

        router = folder / ROUTER_FILE
        if router.exists():
            cfg = json.loads(router.read_text(encoding="utf-8"))
            cfg["ood"] = None
            atomic_write_text(router, json.dumps(cfg, indent=2), what="router config")
        if (folder / OOD_FILE).exists():
            (folder / OOD_FILE).unlink()
        omitted.append(_OOD_LOSS)
    return omitted


def _record(folder: Path, omitted: list[str], onnx: dict[str, Any] | None = None) -> None:
    """Note the omissions (and the ONNX export) in distil's config (read back by :func:`omitted_files`)
    and the omissions in the model card."""
    cfg_file = config_path(folder)
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    cfg["exported"] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "omitted": omitted}
    if onnx is not None:
        cfg["exported"]["onnx"] = onnx
    atomic_write_text(folder / CONFIG_FILE, json.dumps(cfg, indent=2), what="artifact config")
    if not omitted:
        return
    card = folder / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    lines = "\n".join(f"- {line}" for line in omitted)
    atomic_write_text(card, f"{text.rstrip()}\n\n## Left out of this copy\n{lines}\n", what="model card")


def omitted_files(config: dict[str, object]) -> list[str]:
    """What an exported artifact's config says was left out (empty for a full artifact)."""
    exported = config.get("exported")
    omitted = exported.get("omitted") if isinstance(exported, dict) else None
    return [str(x) for x in omitted] if isinstance(omitted, list) else []
