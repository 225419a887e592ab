"""The one owner of how the harness's stored files look on disk: baselines and result files alike.

Both are JSON documents with an integer ``schema_version``, read through :func:`read_document` and
:func:`migrate` (one versioning scheme, one table of migrations per file kind), checked field by field against
their schema (:class:`Shape`: a wrong type is refused at load time, naming the file and the field, instead of
crashing a later reader with AttributeError), written through :func:`write_json_atomically` (sorted keys, fixed
indentation, a temporary file and ``os.replace``; a killed writer's temporary file is removed by a later write),
and both store non-finite numbers the same way (:func:`encode_number`: JSON has no NaN or infinity).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import InvalidArgument, ResultFileFormatError, StoredFileError
from harness.results.records import Result, SuiteSummary, TestOutcome

__all__ = [
    "BOOLEAN",
    "ENVIRONMENT_SHAPE",
    "INTEGER",
    "NUMBER",
    "NUMBERS",
    "OLDEST_READABLE_RESULTS_SCHEMA",
    "OUTCOMES_SINCE_SCHEMA",
    "OUTCOME_SHAPE",
    "PARTIAL_SUFFIX",
    "RESULTS_DOCUMENT_SHAPE",
    "RESULTS_MIGRATIONS",
    "RESULTS_SCHEMA_VERSION",
    "RESULT_SHAPE",
    "STALE_TEMPORARY_AGE_S",
    "SUITE_SHAPE",
    "TEXT",
    "FieldError",
    "Migration",
    "PartialResults",
    "SavedRun",
    "Shape",
    "check_environment",
    "conform",
    "decode_number",
    "describe_value",
    "encode_number",
    "list_of",
    "load_partial",
    "load_results",
    "load_run",
    "migrate",
    "object_of",
    "partial_path",
    "read_document",
    "remove_stale_temporaries",
    "save_results",
    "scalar",
    "write_json_atomically",
]

Migration = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a parsed document of schema ``v`` into one of schema ``v + 1``."""

RESULTS_SCHEMA_VERSION = 3
"""Version of the result-file layout this harness writes."""
OUTCOMES_SINCE_SCHEMA = 3
"""The first result-file version that stores the tests' outcomes (top-level ``"outcomes"``)."""
STALE_TEMPORARY_AGE_S = 600.0
"""A write removes a temporary file of its target left by an earlier writer only once it is this old (seconds since
it was last written) and its writer's process is gone: a live writer's temporary file is written for well under a
second, so one untouched for ten minutes belongs to a writer that was killed (or, on another machine sharing the
folder, one stalled for ten minutes: deleting its file makes its ``os.replace`` fail, never corrupts the target)."""


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


# ---------------------------------------------------------------------------------------------- schemas


class FieldError(ValueError):
    """A stored value that does not fit its file's schema. ``where`` is its path in the document
    (``results[3].samples``, ``metrics['s::c::i::m'].runs[0]``) and ``problem`` the one-line sentence a loader hands
    to its StoredFileError: ``<where> is malformed (<why>)``, the form every record-level problem of a stored file
    takes."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        self.why = why
        self.problem = f"{where} is malformed ({why})"
        super().__init__(self.problem)


def describe_value(value: object) -> str:
    """A stored value as a message names it: its JSON type, and a scalar's value (``a string ('123')``), cut short
    and escaped by ``repr`` so the message stays one short line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float, str)):
        kind = "a string" if isinstance(value, str) else "an integer" if isinstance(value, int) else "a number"
        shown = repr(value)
        return f"{kind} ({shown if len(shown) <= 40 else shown[:37] + '...'})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _anything(value: object) -> bool:
    return True


@dataclass(frozen=True)
class Shape:
    """What one stored JSON value must look like: a small schema, declared once per file kind and checked whole at
    load time, so a wrong type is refused naming the file and the field instead of reaching a reader that trusts it.

    ``expected`` says it in a message's words; ``accepts`` decides the value itself; ``nullable``: null is allowed
    too. A list's ``items`` and an object's ``fields`` (those in ``required`` must be there) are shapes in turn, and
    so is ``values``: every value of an object keyed by names (``libraries``: package -> version). An object may
    hold fields its shape does not name: a newer harness may store more, and readers ignore what they do not know.
    """

    expected: str
    accepts: Callable[[object], bool] = _anything
    nullable: bool = False
    items: Shape | None = None
    fields: Mapping[str, Shape] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    values: Shape | None = None

    def check(self, value: object, where: str) -> None:
        """Raise :class:`FieldError` for the first part of ``value`` (found at ``where``) that does not fit."""
        if value is None and self.nullable:
            return
        if not self.accepts(value):
            expected = f"{self.expected} or null" if self.nullable else self.expected
            raise FieldError(where, f"expected {expected}, got {describe_value(value)}")
        if self.items is not None and isinstance(value, list):
            for index, item in enumerate(value):
                self.items.check(item, f"{where}[{index}]")
        if isinstance(value, dict):
            missing = [name for name in sorted(self.required) if name not in value]
            if missing:
                names = " and ".join(repr(name) for name in missing)
                raise FieldError(where, f"lacks the field{'s' if len(missing) > 1 else ''} {names}")
            for name, shape in self.fields.items():
                if name in value:
                    shape.check(value[name], f"{where}.{name}")
            if self.values is not None:
                for key, item in value.items():
                    self.values.check(item, f"{where}[{key!r}]")

    def or_null(self) -> Shape:
        """This shape with null allowed too."""
        return replace(self, nullable=True)


def scalar(expected: str, accepts: Callable[[object], bool]) -> Shape:
    """A value with no parts (a string, a number, a choice among names)."""
    return Shape(expected, accepts)


def list_of(items: Shape, expected: str) -> Shape:
    """A JSON list whose every item fits ``items``."""
    return Shape(expected, lambda value: isinstance(value, list), items=items)


def object_of(
    fields: Mapping[str, Shape] | None = None,
    *,
    required: Sequence[str] = (),
    values: Shape | None = None,
    expected: str = "an object",
) -> Shape:
    """A JSON object with these ``fields`` (``required`` ones must be there), every value fitting ``values``."""
    return Shape(
        expected,
        lambda value: isinstance(value, dict),
        fields=dict(fields or {}),
        required=frozenset(required),
        values=values,
    )


def _is_number(value: object) -> bool:
    """What :func:`decode_number` reads: an int or a float (not a boolean), or "nan", "inf", "-inf"."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or value in ("nan", "inf", "-inf")


TEXT = scalar("a string", lambda value: isinstance(value, str))
INTEGER = scalar("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool))
BOOLEAN = scalar("a boolean", lambda value: isinstance(value, bool))
NUMBER = scalar('a number (or "nan", "inf", "-inf")', _is_number)
NUMBERS = list_of(NUMBER, "a list of numbers")

ENVIRONMENT_SHAPE = object_of(
    {
        "python": TEXT,
        "implementation": TEXT,
        "platform": TEXT,
        "cpu": object_of(
            {"model": TEXT, "machine": TEXT, "count": INTEGER.or_null(), "flags": list_of(TEXT, "a list of strings")}
        ),
        "torch_threads": INTEGER,
        "cuda": object_of(
            {"device": TEXT, "capability": TEXT, "cuda": TEXT.or_null(), "driver": TEXT.or_null()}
        ).or_null(),
        "libraries": object_of(values=TEXT.or_null(), expected="an object of package name -> version"),
        "git": object_of({"commit": TEXT, "dirty": BOOLEAN}).or_null(),
    }
)
"""The environment fingerprint stored in baselines and result files (harness.results.environment): every field it
writes, with its type. Fields may be absent (files written by hand or by an older harness lack some), but one that
is there has its type: timing_machine, environment_key and ``fourbit report`` read them without further checks."""


def conform(value: Any, shape: Shape, where: str, fail: Callable[[str], StoredFileError]) -> Any:
    """``value`` itself once it fits ``shape``; otherwise ``fail(problem)`` naming the field (``where`` and below)."""
    try:
        shape.check(value, where)
    except FieldError as exc:
        raise fail(exc.problem) from None
    return value


def check_environment(value: object, fail: Callable[[str], StoredFileError]) -> dict[str, Any]:
    """A stored ``"environment"`` checked against :data:`ENVIRONMENT_SHAPE`; absent or null reads as none ({})."""
    if value is None:
        return {}
    return dict(conform(value, ENVIRONMENT_SHAPE, "environment", fail))


# ---------------------------------------------------------------------------------------------- writing


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
    a reader sees the old file or the new one, never half of one, even if the writer is killed.

    The temporary file is ``.<name>.<pid>.<random>.tmp``: hidden, and naming its writer, so that a writer killed
    inside the write window (whose full-size temporary file nothing else would ever remove) is cleaned up by the
    next write of the same target (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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
    remove_stale_temporaries(path)
    return path


def _temporary_pattern(path: Path) -> re.Pattern[str]:
    """The names of ``path``'s temporary files: ``.<name>.<pid>.<8 random characters>.tmp``, and the same without the
    pid (what writers before the pid was in the name left behind)."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")


def _running(pid: int) -> bool:
    """Whether process ``pid`` may still be running on this machine: when in doubt (another user's process, a
    platform without signal 0) it may, and its temporary file is kept."""
    if pid == os.getpid() or os.name != "posix":
        return True  # this process: another thread may be writing; elsewhere os.kill(pid, 0) would end the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, under another user
    return True


def remove_stale_temporaries(
    path: str | Path, *, older_than_s: float = STALE_TEMPORARY_AGE_S, now: float | None = None
) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it, and return them.

    A temporary file is stale when it was last written ``older_than_s`` seconds ago or more and the writer its name
    names is not running on this machine (or its name names none: an older harness's). A live writer's file is
    never removed, even a stalled one's, and nor is a file of another target (the name must match this target's
    exactly). Errors are ignored: another writer may be removing the same files, and cleaning up must never fail
    the write that triggered it."""
    path = Path(path)
    pattern = _temporary_pattern(path)
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = [entry for entry in os.scandir(path.parent) if pattern.fullmatch(entry.name)]
    except OSError:
        return []
    for entry in candidates:
        match = pattern.fullmatch(entry.name)
        assert match is not None
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            if match.group(1) is not None and _running(int(match.group(1))):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


# ---------------------------------------------------------------------------------------------- reading


def read_document(path: Path, fail: Callable[[str], StoredFileError], expected: str = "an object") -> dict[str, Any]:
    """The parsed top-level object of a stored file; a missing, unreadable, corrupt or non-object file raises
    ``fail(problem)`` (``expected`` describes the object, for that message). A document nested deeper than Python's
    recursion limit is refused the same way (one line, not a RecursionError)."""
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


# ---------------------------------------------------------------------------------------------- result files


RESULT_SHAPE = object_of(
    {
        **dict.fromkeys(("suite", "case", "implementation", "metric", "unit", "kind", "direction"), TEXT),
        "value": NUMBER.or_null(),
        "samples": list_of(NUMBER.or_null(), "a list of numbers").or_null(),
        **dict.fromkeys(("ci_low", "ci_high", "tolerance", "baseline"), NUMBER.or_null()),
        **dict.fromkeys(("data_hash", "verdict", "statistic"), TEXT.or_null()),
        "extra": object_of().or_null(),
    },
    required=("suite", "case", "implementation", "metric", "value"),
)
"""A record of a result file's ``"results"`` (:meth:`Result.as_json`): the types; the allowed kinds, directions and
verdicts are checked by :class:`Result` itself (records.py names them once). A null value reads as NaN."""
OUTCOME_SHAPE = object_of(
    dict.fromkeys(("nodeid", "outcome", "implementation", "property", "suite", "message"), TEXT),
    required=("nodeid", "outcome"),
)
"""A record of ``"outcomes"`` (:meth:`TestOutcome.as_json`); the allowed outcomes are checked by TestOutcome."""
_METRIC_NAMES = list_of(TEXT, "a list of metric names")
SUITE_SHAPE = object_of(
    {
        "headline": _METRIC_NAMES,
        "pair_matrix": Shape(
            "a list of metric names or one name",
            lambda value: isinstance(value, (str, list)),
            nullable=True,
            items=TEXT,
        ),
    }
)
"""An entry of ``"suites"`` (:meth:`SuiteSummary.as_json`); empty names are refused by SuiteSummary."""
RESULTS_DOCUMENT_SHAPE = object_of(
    {
        "results": list_of(RESULT_SHAPE, "a list of result records"),
        "outcomes": list_of(OUTCOME_SHAPE, "a list of test outcomes"),
        "suites": object_of(values=SUITE_SHAPE, expected="an object of suite name -> summary"),
    }
)
"""A whole result file after migration, but its environment (:data:`ENVIRONMENT_SHAPE`, absent or null: none)."""


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
    """Read a ``--json`` file back, every field checked against its schema (:data:`RESULTS_DOCUMENT_SHAPE`,
    :data:`ENVIRONMENT_SHAPE`); a problem is a ResultFileFormatError naming the file and the record or field."""
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
    shapes = RESULTS_DOCUMENT_SHAPE.fields
    stored_results = conform(document["results"], shapes["results"], "results", fail)
    results = [_record(Result.from_json, record, f"results[{i}]", fail) for i, record in enumerate(stored_results)]
    stored_suites = conform(document.get("suites", {}), shapes["suites"], "suites", fail)
    suites = {
        name: _record(SuiteSummary.from_json, record, f"suites[{name!r}]", fail)
        for name, record in stored_suites.items()
    }
    if "outcomes" not in document:
        raise fail(f"no 'outcomes' list, which schema {OUTCOMES_SINCE_SCHEMA} and later hold (one record per test)")
    stored_outcomes = conform(document["outcomes"], shapes["outcomes"], "outcomes", fail)
    outcomes = [
        _record(TestOutcome.from_json, record, f"outcomes[{i}]", fail) for i, record in enumerate(stored_outcomes)
    ]
    return SavedRun(
        environment=check_environment(document.get("environment"), fail),
        results=results,
        suites=suites,
        outcomes=outcomes,
        schema_version=written if isinstance(written, int) else RESULTS_SCHEMA_VERSION,
    )


def _record(
    read: Callable[[dict[str, Any]], Any], record: dict[str, Any], where: str, fail: Callable[[str], StoredFileError]
) -> Any:
    """A record whose types fit its shape, made into its class; a value the class refuses (an unknown kind or
    outcome, an empty metric name) is ``<where> is malformed (<the class's message>)``."""
    try:
        return read(record)
    except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
        raise fail(FieldError(where, str(exc) if isinstance(exc, InvalidArgument) else repr(exc)).problem) from None


PARTIAL_SUFFIX = ".partial.jsonl"
"""Beside a ``--json`` file while its run is going: one JSON line per finished test (its outcome and what it
recorded), so that a run killed before its end (SIGKILL, a power cut) leaves what it finished. The run removes it
once the result file is written; :func:`load_partial` reads what a killed run left."""


def partial_path(path: str | Path) -> Path:
    """Where the run writing result file ``path`` keeps its finished tests until it ends."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


class PartialResults:
    """Appends each finished test to :func:`partial_path` as it comes (flushed: a killed process loses nothing it
    wrote), and removes the file when the run's result file has been written."""

    def __init__(self, path: str | Path, environment: Mapping[str, Any]) -> None:
        self.path = partial_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("w", encoding="utf-8")
        self._write({"schema_version": RESULTS_SCHEMA_VERSION, "environment": dict(environment)})

    def _write(self, record: Mapping[str, Any]) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()

    def add(self, outcome: TestOutcome | None, results: Sequence[Result]) -> None:
        """One finished test: its outcome (None for a test not about the run's report) and its results."""
        self._write(
            {"outcome": None if outcome is None else outcome.as_json(), "results": [r.as_json() for r in results]}
        )

    def close(self, *, remove: bool) -> None:
        self._handle.close()
        if remove:
            self.path.unlink(missing_ok=True)


def load_partial(path: str | Path) -> SavedRun:
    """What a run that did not finish left beside result file ``path`` (:data:`PARTIAL_SUFFIX`): the tests it
    finished, in order. A last line cut off by the kill is left out; any other bad line is a ResultFileFormatError."""
    source = partial_path(path)

    def fail(problem: str) -> ResultFileFormatError:
        return ResultFileFormatError(str(source), problem)

    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    records: list[Any] = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):
                break  # the write the kill interrupted
            raise fail(f"line {number} is not JSON") from None
    if not records or not isinstance(records[0], dict) or records[0].get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise fail(f"expected a first line with schema_version {RESULTS_SCHEMA_VERSION}")
    results: list[Result] = []
    outcomes: list[TestOutcome] = []
    shapes = RESULTS_DOCUMENT_SHAPE.fields
    for number, record in enumerate(records[1:], 2):
        if not isinstance(record, dict):
            raise fail(f"line {number} is malformed (expected an object)")
        stored = conform(record.get("results", []), shapes["results"], f"line {number}: results", fail)
        results += [_record(Result.from_json, r, f"line {number}: results[{i}]", fail) for i, r in enumerate(stored)]
        if record.get("outcome") is not None:
            outcomes.append(_record(TestOutcome.from_json, record["outcome"], f"line {number}: outcome", fail))
    return SavedRun(
        environment=check_environment(records[0].get("environment"), fail),
        results=results,
        suites={},
        outcomes=outcomes,
    )


def load_results(path: str | Path) -> tuple[dict[str, Any], list[Result]]:
    """Read a ``--json`` file back: (environment, results); see :func:`load_run` for the suites' declarations too."""
    run = load_run(path)
    return run.environment, run.results
