"""The one owner of how the harness's stored files look on disk: baselines and result files alike.

Both are JSON documents with an integer ``schema_version``, read through :func:`read_document` and
:func:`migrate` (one versioning scheme, one table of migrations per file kind), written through
:func:`write_json_atomically` (sorted keys, fixed indentation, a temporary file and ``os.replace``), and
both store non-finite numbers the same way (:func:`encode_number`: JSON has no NaN or infinity).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InvalidArgument, ResultFileFormatError, StoredFileError
from harness.results.records import Result, SuiteSummary, TestOutcome

__all__ = [
    "OLDEST_READABLE_RESULTS_SCHEMA",
    "OUTCOMES_SINCE_SCHEMA",
    "RESULTS_MIGRATIONS",
    "RESULTS_SCHEMA_VERSION",
    "Migration",
    "SavedRun",
    "decode_number",
    "encode_number",
    "load_results",
    "load_run",
    "migrate",
    "read_document",
    "save_results",
    "write_json_atomically",
]

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a parsed document of schema ``v`` into one of schema ``v + 1``."""

RESULTS_SCHEMA_VERSION = 3
"""Version of the result-file layout this harness writes."""
OUTCOMES_SINCE_SCHEMA = 3
"""The first result-file version that stores the tests' outcomes (top-level ``"outcomes"``)."""


def _no_outcomes_stored(document: dict[str, Any]) -> dict[str, Any]:
    """2 -> 3: version 3 added the top-level ``"outcomes"`` list; an older file stored none."""
    return {**document, "outcomes": []}


RESULTS_MIGRATIONS: dict[int, Migration] = {1: lambda document: document, 2: _no_outcomes_stored}
"""Version 2 only added the kind ``aggregate`` (a version-1 file is a valid version-2 file); version 3 added the
tests' outcomes (an older file reads as one with none, and :attr:`SavedRun.schema_version` says it stored none)."""
OLDEST_READABLE_RESULTS_SCHEMA = min(RESULTS_MIGRATIONS)


def encode_number(value: float | None) -> float | str | None:
    """A number as stored: finite numbers and None as they are, NaN and infinities as the strings "nan", "inf" and
    "-inf" (``float()`` reads them back), so a lossless SQNR of inf stays inf."""
    return value if value is None or math.isfinite(value) else repr(value)


def decode_number(value: object) -> float:
    """Inverse of :func:`encode_number` for a number that must be there: an int, a float or one of its strings."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{value!r} is not a number")
    if isinstance(value, str) and value not in ("nan", "inf", "-inf"):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _file_mode(path: Path) -> int:
    """The existing file's permissions, or the default for a new file under the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_json_atomically(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as sorted, indented JSON via a temp file in the same folder and ``os.replace``:
    a reader sees the old file or the new one, never half of one, even if the writer is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, _file_mode(path))  # mkstemp creates 0600; a results file is as readable as any other
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_document(path: Path, fail: Callable[[str], StoredFileError], expected: str = "an object") -> dict[str, Any]:
    """The parsed top-level object of a stored file; a missing, unreadable, corrupt or non-object file raises
    ``fail(problem)`` (``expected`` describes the object, for that message)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot be read ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise fail("is nested too deeply to be a file this harness wrote") from None
    if not isinstance(document, dict):
        raise fail(f"top level is {type(document).__name__}, expected {expected}")
    return document


def migrate(
    document: dict[str, Any],
    *,
    current: int,
    migrations: Mapping[int, Migration],
    fail: Callable[[str], StoredFileError],
    rewrite_hint: str,
) -> dict[str, Any]:
    """Bring a parsed document to schema ``current`` through ``migrations``, or raise ``fail`` saying why not:
    a version that is not an integer, newer than this harness, or older than the oldest migration."""
    version = document.get("schema_version")
    oldest = min(migrations, default=current)
    readable = f"expected an integer from {oldest} to {current}"
    if not isinstance(version, int) or isinstance(version, bool):
        raise fail(f"schema_version={version!r}, {readable}")
    if version > current:
        raise fail(f"schema_version={version}, {readable}: written by a newer fourbit-harness, upgrade it")
    if version < oldest:
        raise fail(f"schema_version={version}, {readable}: too old, {rewrite_hint}")
    while version < current:
        document = migrations[version](dict(document))
        version += 1
        document["schema_version"] = version
    return document


def save_results(
    path: str | Path,
    results: Sequence[Result],
    environment: Mapping[str, Any],
    suites: Mapping[str, SuiteSummary] | None = None,
    *,
    outcomes: Sequence[TestOutcome] | None = None,
) -> Path:
    """The ``--json`` file: ``{"schema_version", "environment", "results": [...], "outcomes": [...]}`` (each test's
    outcome, :class:`TestOutcome`; none given: an empty list), and ``"suites": {name: summary}`` when suites
    declared how their results are shown (:class:`SuiteSummary`), so a saved run renders as it did at the end of
    the run. Readers ignore top-level keys they do not know: ``"suites"`` needed no new schema version."""
    document: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "environment": dict(environment),
        "results": [r.as_json() for r in results],
        "outcomes": [o.as_json() for o in outcomes or ()],
    }
    if suites:
        document["suites"] = {name: summary.as_json() for name, summary in suites.items()}
    return write_json_atomically(path, document)


@dataclass(frozen=True)
class SavedRun:
    """A ``--json`` file read back: the environment it ran in, its results, its suites' declarations (empty for a
    file written without them), its tests' outcomes, and the schema version it was written with (before
    migration: a file older than :data:`OUTCOMES_SINCE_SCHEMA` stored no outcomes)."""

    environment: dict[str, Any]
    results: list[Result]
    suites: dict[str, SuiteSummary]
    outcomes: list[TestOutcome] = field(default_factory=list)
    schema_version: int = RESULTS_SCHEMA_VERSION

    @property
    def stores_outcomes(self) -> bool:
        """Whether the file could hold test outcomes (an older one has none, whatever its run decided)."""
        return self.schema_version >= OUTCOMES_SINCE_SCHEMA


def load_run(path: str | Path) -> SavedRun:
    """Read a ``--json`` file back; a problem is a ResultFileFormatError naming the file (and the record or field)."""
    path = Path(path)

    def fail(problem: str) -> ResultFileFormatError:
        return ResultFileFormatError(str(path), problem)

    document = read_document(path, fail, expected="an object with a 'results' list")
    written = document.get("schema_version")
    document = migrate(
        document,
        current=RESULTS_SCHEMA_VERSION,
        migrations=RESULTS_MIGRATIONS,
        fail=fail,
        rewrite_hint="run it again with this harness",
    )
    if not isinstance(document.get("results"), list):
        raise fail("expected an object with a 'results' list")
    results = []
    for index, record in enumerate(document["results"]):
        try:
            results.append(Result.from_json(record))
        except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
            raise fail(f"results[{index}] is malformed ({exc!r})") from None
    environment = document.get("environment")
    return SavedRun(
        environment=environment if isinstance(environment, dict) else {},
        results=results,
        suites=_suites(document.get("suites", {}), fail),
        outcomes=_outcomes(document, fail),
        schema_version=written if isinstance(written, int) else RESULTS_SCHEMA_VERSION,
    )


def _outcomes(document: dict[str, Any], fail: Callable[[str], ResultFileFormatError]) -> list[TestOutcome]:
    if "outcomes" not in document:
        raise fail(f"no 'outcomes' list, which schema {OUTCOMES_SINCE_SCHEMA} and later hold (one record per test)")
    stored = document["outcomes"]
    if not isinstance(stored, list):
        raise fail(f"'outcomes' is malformed ({type(stored).__name__}), expected a list of test outcomes")
    outcomes = []
    for index, record in enumerate(stored):
        try:
            outcomes.append(TestOutcome.from_json(record))
        except InvalidArgument as exc:
            raise fail(f"outcomes[{index}] is malformed ({exc})") from None
    return outcomes


def _suites(stored: object, fail: Callable[[str], ResultFileFormatError]) -> dict[str, SuiteSummary]:
    if not isinstance(stored, dict):
        raise fail(f"'suites' is malformed ({type(stored).__name__}), expected an object of suite name -> summary")
    suites = {}
    for name, record in stored.items():
        try:
            suites[name] = SuiteSummary.from_json(record)
        except InvalidArgument as exc:
            raise fail(f"suites[{name!r}] is malformed ({exc})") from None
    return suites


def load_results(path: str | Path) -> tuple[dict[str, Any], list[Result]]:
    """Read a ``--json`` file back: (environment, results); see :func:`load_run` for the suites' declarations too."""
    run = load_run(path)
    return run.environment, run.results
