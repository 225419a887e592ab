"""One error tree for everything the harness raises on purpose.

Messages follow the ``name=value!r, expected ...`` pattern so a user sees what
was wrong and what would have been right, without reading a traceback.
"""

from __future__ import annotations

__all__ = [
    "BaselineFormatError",
    "BaselineLockTimeout",
    "ContractViolation",
    "FourbitError",
    "ImplementationError",
    "InvalidArgument",
    "MissingDependency",
    "PluginError",
    "ResultFileFormatError",
    "StoredFileError",
    "UsageError",
]


class FourbitError(Exception):
    """Base class of every error the harness raises deliberately."""


class InvalidArgument(FourbitError, ValueError):
    """A value handed to the harness is outside what it accepts (bad tensor, bad block size, ...)."""


class UsageError(FourbitError):
    """The command line or pytest options ask for something that does not exist."""


class PluginError(FourbitError):
    """A third-party plugin could not be loaded (import error, factory raised, bad object)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class MissingDependency(PluginError):
    """A built-in or plugin needs a library that is not installed (or a device that is not there).

    Not a failure: the registry lists ``names`` as unavailable and their tests skip with ``hint``."""

    def __init__(self, source: str, names: tuple[str, ...], reason: str, hint: str = "") -> None:
        super().__init__(source, reason + (f" ({hint})" if hint else ""))
        self.names = tuple(names)
        self.reason = reason
        self.hint = hint


class ContractViolation(PluginError):
    """A loaded object does not satisfy the Quantizer contract (missing field, wrong type, duplicate name)."""


class ImplementationError(FourbitError):
    """An implementation raised while handling a case it claims to support; keeps the original message."""

    def __init__(self, implementation: str, operation: str, original: BaseException) -> None:
        super().__init__(f"{implementation}: {operation} raised {type(original).__name__}: {original}")
        self.implementation = implementation
        self.operation = operation
        self.original = original


class StoredFileError(FourbitError):
    """A file the harness stored (a baseline or a result file) is unreadable, corrupt, or of a schema version this
    harness cannot read. ``what`` names the kind of file, ``path`` the file and ``problem`` what is wrong with it."""

    def __init__(self, what: str, path: str, problem: str) -> None:
        super().__init__(f"{what} {path!r}: {problem}")
        self.what = what
        self.path = path
        self.problem = problem


class BaselineFormatError(StoredFileError):
    """A baseline file (``baselines/<environment key>.json``) cannot be used."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__("baseline", path, problem)


class ResultFileFormatError(StoredFileError):
    """A result file (``--fourbit-json``, ``fourbit run --json``) cannot be used."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__("results", path, problem)


class BaselineLockTimeout(StoredFileError):
    """A baseline update could not take the baseline file's lock (``<file>.lock`` beside it) within ``waited_s``
    seconds: another writer (a second ``fourbit baseline update`` into the same folder) held it all that time, still
    folding its run in or hung. Nothing was written; waiting, rather than writing without the lock, is what keeps
    the other writer's entries (harness.results.baselines.merge_into_baseline_file)."""

    def __init__(self, path: str, waited_s: float) -> None:
        super().__init__(
            "baseline",
            path,
            f"another writer held its lock for {waited_s:g} s, the longest this update waits; nothing was written "
            "(run the update again when the other one has finished)",
        )
        self.waited_s = waited_s
