"""The ``function`` teacher: a team's existing Python code as the teacher.

``[teacher] callable = "package.module:name"`` names a callable that takes a list of texts and
returns one result per text, each one of:

- a label string (must be one of the task's labels exactly) → probability 1 on that label;
- a ``{label: probability}`` dict (labels not named get 0; the values are renormalised);
- a list of probabilities (or scores) in the task's label order.

The current working directory and the task file's folder are put on the import path.  A result
outside the label set is ``invalid`` (raw kept, never mapped); if the callable raises for a batch,
each text is retried alone and a text that raises is ``failed`` with the exception's message.
``attr`` may be dotted (``module:obj.method``).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
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


def load_callable(ref: str, search: Sequence[Path] = ()) -> Callable[..., Any]:
    """Import ``module:attr`` (attr may be dotted) with ``search`` folders on ``sys.path``.

    Raises :class:`ConfigError` naming what is missing and where it looked.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"[teacher].callable: expected 'module:callable', found {ref!r}")
    for folder in reversed([str(Path(p).resolve()) for p in search]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = ", ".join(str(p) for p in search) or "sys.path"
        missing = exc.name or module_name
        raise ConfigError(
            f"[teacher].callable {ref!r}: cannot import module {module_name!r} "
            f"(module {missing!r} not found; looked in {where} and the installed packages)",
            hint="check the spelling, install the package, or put the module next to the task file",
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"[teacher].callable {ref!r}: importing module {module_name!r} failed: "
            f"{type(exc).__name__}: {exc}",
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ConfigError(
                f"[teacher].callable {ref!r}: module {module_name!r} has no attribute {attr!r}",
                hint=f"callables it defines: {public[:20]}",
            ) from None
    if not callable(obj):
        raise ConfigError(
            f"[teacher].callable {ref!r}: {attr!r} is a {type(obj).__name__}, not a callable",
        )
    return obj  # type: ignore[no-any-return]


class FunctionTeacher(Teacher):
    """Calls ``module:callable`` with batches of texts; see the module docstring for the contract."""

    kind = "function"

    def __init__(self, spec: FunctionTeacherSpec, task: Task) -> None:
        super().__init__(task.label_names)
        self.spec = spec
        self.task = task
        self.fn = load_callable(spec.callable, [Path.cwd(), task.base_dir])

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
        """One Answer per text, calling the function on chunks of ``batch_size`` texts."""
        items = list(texts)
        out: list[Answer] = []
        size = self.spec.batch_size
        for start in range(0, len(items), size):
            out.extend(self._chunk(items[start : start + size]))
        return out
