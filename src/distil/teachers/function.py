"""The ``function`` teacher: a team's existing Python code as the teacher.

``[teacher] callable = "package.module:name"`` (or ``"path/to/rules.py:name"``) names a callable
that takes a list of texts and returns one result per text, each one of:

- a label string (must be one of the task's labels exactly) → probability 1 on that label;
- a ``{label: probability}`` dict (labels not named get 0; the values are renormalised);
- a list of probabilities (or scores) in the task's label order.

**A task file naming a function runs that code.**  The module is imported when the teacher is first
asked (never on ``distil label --dry-run``, nor for ``identity()``/``describe()``), and the import
path is never widened: a module name is looked up in the installed packages and ``PYTHONPATH``
only, so a stray ``pyarrow.py`` in the current folder or next to the task file is never run.  A
file next to the task file is named explicitly by its path, ``rules.py:classify`` (relative to the
task file's folder), and loaded from that file alone.  A result outside the label set is
``invalid`` (raw kept, never mapped); if the callable raises for a batch, each text is retried
alone and a text that raises is ``failed`` with the exception's message.  ``attr`` may be dotted
(``module:obj.method``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from distil.errors import ConfigError
from distil.teachers.base import Answer, Teacher

if TYPE_CHECKING:
    from distil.task import FunctionTeacherSpec, Task

log = logging.getLogger(__name__)


def _raw(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)[:2000]
    except (TypeError, ValueError):
        return repr(value)[:2000]


def load_callable(ref: str, base_dir: Path | None = None) -> Callable[..., Any]:
    """Import ``module:attr`` or ``path/file.py:attr`` (attr may be dotted) and return the callable.

    A module name is imported from ``sys.path`` as it is (never widened); a ``.py`` path is relative
    to ``base_dir`` (the task file's folder) and loaded from that file alone.  Raises
    :class:`ConfigError` naming what is missing and where it looked.
    """
    where, _, attr = ref.rpartition(":")
    if not where or not attr:
        raise ConfigError(f"[teacher].callable: expected 'module:callable', found {ref!r}")
    module = _load_file(ref, where, base_dir) if where.endswith(".py") else _import_module(ref, where, base_dir)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ConfigError(
                f"[teacher].callable {ref!r}: module {where!r} has no attribute {attr!r}",
                hint=f"callables it defines: {public[:20]}",
            ) from None
    if not callable(obj):
        raise ConfigError(
            f"[teacher].callable {ref!r}: {attr!r} is a {type(obj).__name__}, not a callable",
        )
    return obj  # type: ignore[no-any-return]


def check_callable(ref: str, base_dir: Path | None = None) -> None:
    """Fail early (:class:`ConfigError`) when the module or file ``ref`` names does not exist — without
    running any of its code (only a top-level module is looked up; the file is not read)."""
    where = ref.rpartition(":")[0]
    if where.endswith(".py"):
        path = Path(where) if Path(where).is_absolute() else (base_dir or Path.cwd()) / where
        if not path.is_file():
            raise ConfigError(
                f"[teacher].callable {ref!r}: no file {path}", hint="a .py path is relative to the task file's folder"
            )
        return
    top = where.split(".")[0]
    try:
        found = top in sys.modules or importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise _not_found(ref, where, top, base_dir)


def _not_found(ref: str, module_name: str, missing: str, base_dir: Path | None) -> ConfigError:
    """The error for a module that is not installed, with the file form when a file by that name exists."""
    local = base_dir / (module_name.replace(".", "/") + ".py") if base_dir is not None else None
    hint = (
        f"{local} exists: name the file to run it, callable = \"{local.name}:{ref.rpartition(':')[2]}\""
        if local is not None and local.is_file()
        else "check the spelling, install the package, or name a file: callable = \"rules.py:classify\""
    )
    return ConfigError(
        f"[teacher].callable {ref!r}: cannot import module {module_name!r} "
        f"(module {missing!r} not found among the installed packages and PYTHONPATH)",
        hint=hint,
    )


def _import_module(ref: str, module_name: str, base_dir: Path | None) -> ModuleType:
    """``module_name`` from the installed packages and ``PYTHONPATH`` (the import path as it is)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _not_found(ref, module_name, exc.name or module_name, base_dir) from None
    except Exception as exc:
        raise _import_failed(ref, module_name, exc) from exc


def _load_file(ref: str, where: str, base_dir: Path | None) -> ModuleType:
    """The module in the file ``where`` (relative to ``base_dir``), loaded from that file alone."""
    check_callable(ref, base_dir)
    path = Path(where) if Path(where).is_absolute() else (base_dir or Path.cwd()) / where
    resolved = path.resolve()
    name = f"distil_function_teacher_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"[teacher].callable {ref!r}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failed(ref, str(path), exc) from exc
    return module


def _import_failed(ref: str, what: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"[teacher].callable {ref!r}: importing {what!r} failed: {type(exc).__name__}: {exc}",
    )


class FunctionTeacher(Teacher):
    """Calls ``module:callable`` with batches of texts; see the module docstring for the contract."""

    kind = "function"

    def __init__(self, spec: FunctionTeacherSpec, task: Task) -> None:
        super().__init__(task.label_names)
        self.spec = spec
        self.task = task
        self._fn: Callable[..., Any] | None = None
        check_callable(spec.callable, task.base_dir)

    @property
    def fn(self) -> Callable[..., Any]:
        """The callable, imported on first use (so a dry run or a fingerprint runs none of its code)."""
        if self._fn is None:
            self._fn = load_callable(self.spec.callable, self.task.base_dir)
        return self._fn

    def identity(self) -> dict[str, Any]:
        """The callable's reference and the declared version (bump it when the code's answers change)."""
        return {"callable": self.spec.callable, "version": self.spec.version}

    def describe(self) -> str:
        """E.g. ``function:rules:classify@v1``."""
        return f"function:{self.spec.callable}@v{self.spec.version}"

    # -- results ---------------------------------------------------------------------------
    def _answer(self, value: Any) -> Answer:
        """Turn one result into an Answer (done or invalid)."""
        k = len(self.labels)
        if isinstance(value, str):
            if value in self.labels:
                probs = [0.0] * k
                probs[self.labels.index(value)] = 1.0
                return Answer(status="done", probs=probs, method="function", raw=value)
            return Answer(
                status="invalid", raw=value, method="function",
                error=f"label {value!r} is not one of the task's labels",
            )
        if isinstance(value, Mapping):
            unknown = [str(key) for key in value if key not in self.labels]
            if unknown:
                return Answer(
                    status="invalid", raw=_raw(dict(value)), method="function",
                    error=f"labels {unknown} are not among the task's labels",
                )
            vec = [value.get(lab, 0.0) for lab in self.labels]
            return self._from_scores(vec, value)
        if hasattr(value, "tolist") and not isinstance(value, str | bytes):
            value = value.tolist()  # numpy arrays and scalars
        if isinstance(value, list | tuple):
            if len(value) != k:
                return Answer(
                    status="invalid", raw=_raw(value), method="function",
                    error=f"expected {k} probabilities in label order, found {len(value)}",
                )
            return self._from_scores(list(value), value)
        return Answer(
            status="invalid", raw=_raw(value), method="function",
            error=f"expected a label, a {{label: probability}} dict or a list of {k} probabilities, "
            f"found {type(value).__name__}",
        )

    def _from_scores(self, vec: list[Any], original: Any) -> Answer:
        bad = [
            v for v in vec
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0
        ]
        if bad:
            return Answer(
                status="invalid", raw=_raw(original), method="function",
                error=f"probabilities must be finite numbers >= 0, found {bad[:3]}",
            )
        total = float(sum(vec))
        if total <= 0:
            return Answer(
                status="invalid", raw=_raw(original), method="function", error="all probabilities are 0",
            )
        probs = [float(v) / total for v in vec]
        return Answer(status="done", probs=probs, method="function", raw=_raw(original))

    def _call(self, texts: list[str]) -> list[Any]:
        result = self.fn(list(texts))
        if isinstance(result, str | bytes | Mapping) or not hasattr(result, "__iter__"):
            raise TypeError(
                f"{self.spec.callable} must return a list with one result per text, "
                f"found {type(result).__name__}"
            )
        out = result.tolist() if hasattr(result, "tolist") else list(result)
        if len(out) != len(texts):
            raise ValueError(f"{self.spec.callable} returned {len(out)} results for {len(texts)} texts")
        return out

    def _chunk(self, texts: list[str]) -> list[Answer]:
        t0 = time.perf_counter()
        answers: list[Answer]
        try:
            answers = [self._answer(v) for v in self._call(texts)]
        except Exception as exc:
            if len(texts) == 1:
                answers = [Answer(status="failed", method="function", error=f"{type(exc).__name__}: {exc}")]
            else:
                log.warning(
                    "%s raised for a batch of %d (%s: %s); calling it once per text",
                    self.spec.callable, len(texts), type(exc).__name__, exc,
                )
                answers = []
                for text in texts:
                    try:
                        answers.append(self._answer(self._call([text])[0]))
                    except Exception as item_exc:
                        answers.append(
                            Answer(status="failed", method="function",
                                   error=f"{type(item_exc).__name__}: {item_exc}")
                        )
        latency = (time.perf_counter() - t0) * 1000.0 / len(texts)
        for a in answers:
            a.latency_ms = latency
        return answers

    def predict_batch(self, texts: Sequence[str]) -> list[Answer]:
        """One Answer per text, calling the function on chunks of ``batch_size`` texts.

        The first call imports the callable; a callable that cannot be imported is a
        :class:`ConfigError` (not a failed answer per text).
        """
        items = list(texts)
        if items:
            _ = self.fn
        out: list[Answer] = []
        size = self.spec.batch_size
        for start in range(0, len(items), size):
            out.extend(self._chunk(items[start : start + size]))
        return out
