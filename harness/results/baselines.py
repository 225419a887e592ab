"""Stored baselines: one JSON file per environment key, read, validated, folded and written (harness.results.files).

A baseline file (``baselines/cpu-x86_64.json``) maps each measurement key
``suite::case::implementation::metric`` to what a later run needs to judge a new value:

* ``exact``: the value (and an optional tolerance the suite chose);
* ``timing``: the folded value and the per-run median ratios it came from (their spread is the noise a
  new run is judged against; several runs are folded in, one per ``--update-baselines``);
* ``sampled``: the per-item scores and the hash of the items (a paired bootstrap needs the same items).

Files are written with sorted keys and fixed indentation, so a review diff shows exactly what moved, and
through a temporary file and ``os.replace``: a writer killed mid-write leaves the old file intact. Two runs
updating the same file fold their entries in one after the other, under a lock on the file
(:func:`merge_into_baseline_file`), so neither loses the other's. Every field is checked against its schema
when the file is read (:data:`ENTRY_SHAPE`). How a result is judged against an entry lives in
harness.results.compare.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.errors import BaselineFormatError, BaselineLockTimeout
from harness.results.files import (
    NUMBER,
    NUMBERS,
    TEXT,
    Migration,
    check_environment,
    conform,
    decode_number,
    encode_number,
    migrate,
    object_of,
    read_document,
    scalar,
    write_json_atomically,
)
from harness.results.records import DIRECTIONS, KINDS, Result

__all__ = [
    "BASELINE_SHAPE",
    "DEFAULT_LOCK_TIMEOUT_S",
    "ENTRY_SHAPE",
    "MAX_FOLDED_RUNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Baseline",
    "BaselineEntry",
    "baseline_key",
    "baseline_lock_path",
    "baseline_path",
    "entry_from_result",
    "load_baseline",
    "merge_into_baseline_file",
    "save_baseline",
    "update_baseline",
]

SCHEMA_VERSION = 1
"""Version of the baseline file layout this harness writes."""
DEFAULT_LOCK_TIMEOUT_S = 60.0
"""How long :func:`merge_into_baseline_file` waits for another writer of the same file: folding a run in and writing
the file takes well under a second, so a minute means the other writer is hung, not busy."""
MAX_FOLDED_RUNS = 10
"""A timing baseline keeps the median ratios of this many most recent runs (its run-to-run spread): two
sessions of five ``--update-baselines`` runs. A machine's state moves between sessions more than within one,
so a baseline folded from one session sits off centre for the next; folded from two, its median sits between
them and its spread includes the move (docs/design.md, "Why a timing baseline folds two sessions")."""


MIGRATIONS: dict[int, Migration] = {}
"""``MIGRATIONS[v]`` turns a schema-``v`` document into a schema-``v + 1`` one. Schema 1 is the first
published layout, so the table is empty; a layout change adds an entry and bumps :data:`SCHEMA_VERSION`."""


def baseline_key(suite: str, case: str, implementation: str, metric: str) -> str:
    """The key an entry is stored under: ``suite::case::implementation::metric``."""
    return "::".join((suite, case, implementation, metric))


@dataclass(frozen=True)
class BaselineEntry:
    """What is stored for one measurement."""

    suite: str
    case: str
    implementation: str
    metric: str
    value: float
    kind: str
    direction: str
    unit: str = ""
    tolerance: float | None = None
    runs: tuple[float, ...] = ()
    samples: tuple[float, ...] = ()
    data_hash: str | None = None

    @property
    def key(self) -> str:
        return baseline_key(self.suite, self.case, self.implementation, self.metric)

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "suite": self.suite,
            "case": self.case,
            "implementation": self.implementation,
            "metric": self.metric,
            "value": encode_number(self.value),
            "kind": self.kind,
            "direction": self.direction,
            "unit": self.unit,
        }
        optional = {
            "tolerance": self.tolerance,
            "runs": [encode_number(v) for v in self.runs],
            "samples": [encode_number(v) for v in self.samples],
            "data_hash": self.data_hash,
        }
        document.update({name: value for name, value in optional.items() if value not in (None, [])})
        return document


@dataclass
class Baseline:
    """The contents of one baseline file."""

    environment_key: str
    environment: dict[str, Any] = field(default_factory=dict)
    entries: dict[str, BaselineEntry] = field(default_factory=dict)

    def get(self, result: Result) -> BaselineEntry | None:
        return self.entries.get(baseline_key(*result.key))


def baseline_path(directory: str | Path, environment_key: str) -> Path:
    return Path(directory) / f"{environment_key}.json"


# ---------------------------------------------------------------------------------------------- reading


def _fail(path: Path, problem: str) -> BaselineFormatError:
    return BaselineFormatError(str(path), problem)


_STORED_KINDS = tuple(kind for kind in KINDS if kind != "aggregate")
"""The kinds a baseline stores: an aggregate is a verdict over one run, formed again by every run."""
ENTRY_SHAPE = object_of(
    {
        **dict.fromkeys(("suite", "case", "implementation", "metric", "unit"), TEXT),
        "value": NUMBER,
        "kind": scalar(f"one of {', '.join(_STORED_KINDS)}", lambda value: value in _STORED_KINDS),
        "direction": scalar(f"one of {', '.join(DIRECTIONS)}", lambda value: value in DIRECTIONS),
        "tolerance": NUMBER.or_null(),
        "runs": NUMBERS,
        "samples": NUMBERS,
        "data_hash": TEXT.or_null(),
    },
    required=("suite", "case", "implementation", "metric", "value", "kind", "direction"),
)
"""An entry of a baseline file's ``"metrics"`` (:meth:`BaselineEntry.as_json`), every field with its type."""
BASELINE_SHAPE = object_of(
    {"environment_key": TEXT, "metrics": object_of(values=ENTRY_SHAPE)},
    required=("metrics",),
)
"""A whole baseline file after migration, but its environment (harness.results.files.ENVIRONMENT_SHAPE)."""


def _entry_from_json(path: Path, key: str, raw: dict[str, Any]) -> BaselineEntry:
    """An entry whose fields fit :data:`ENTRY_SHAPE`, made into a BaselineEntry (stored under its own key)."""
    entry = BaselineEntry(
        suite=raw["suite"],
        case=raw["case"],
        implementation=raw["implementation"],
        metric=raw["metric"],
        value=decode_number(raw["value"]),
        kind=raw["kind"],
        direction=raw["direction"],
        unit=raw.get("unit", ""),
        tolerance=None if raw.get("tolerance") is None else decode_number(raw["tolerance"]),
        runs=tuple(decode_number(v) for v in raw.get("runs", ())),
        samples=tuple(decode_number(v) for v in raw.get("samples", ())),
        data_hash=raw.get("data_hash"),
    )
    if entry.key != key:
        expected = "the key suite::case::implementation::metric"
        raise _fail(path, f"metrics[{key!r}] describes {entry.key!r}, expected {expected}")
    return entry


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file, every field against its schema (:data:`BASELINE_SHAPE`, the environment's
    too); any problem is a BaselineFormatError naming the file and the field."""
    path = Path(path)

    def fail(problem: str) -> BaselineFormatError:
        return _fail(path, problem)

    document = read_document(path, fail)
    document = migrate(
        document,
        current=SCHEMA_VERSION,
        migrations=MIGRATIONS,
        fail=fail,
        rewrite_hint="rewrite it with `fourbit baseline update`",
    )
    if not isinstance(document.get("metrics"), dict):
        raise fail("has no 'metrics' object")
    for name, shape in BASELINE_SHAPE.fields.items():
        if name in document:
            conform(document[name], shape, name, fail)
    entries = {key: _entry_from_json(path, key, raw) for key, raw in document["metrics"].items()}
    environment = check_environment(document.get("environment"), fail)
    return Baseline(document.get("environment_key", path.stem), environment, entries)


# ---------------------------------------------------------------------------------------------- writing


def _document(baseline: Baseline) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "environment_key": baseline.environment_key,
        "environment": baseline.environment,
        "metrics": {key: entry.as_json() for key, entry in sorted(baseline.entries.items())},
    }


def save_baseline(path: str | Path, baseline: Baseline) -> Path:
    """Write ``baseline`` whole (atomically). Two runs updating one file should use
    :func:`merge_into_baseline_file`, which does not lose the other run's entries."""
    return write_json_atomically(path, _document(baseline))


def baseline_lock_path(path: str | Path) -> Path:
    """The lock file of a baseline file: ``<file>.lock`` beside it, left in place after use: the lock is the
    kernel's (flock), released when its holder exits however it exits, so a leftover lock file blocks no one."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def merge_into_baseline_file(
    path: str | Path,
    environment_key: str,
    results: Iterable[Result],
    environment: dict[str, Any],
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> int:
    """Fold this run's ``results`` into the baseline file at ``path`` as it is now, and return how many entries
    were written (:func:`update_baseline`).

    Reading a baseline at the start of a run and writing it whole at the end loses the entries another run wrote
    in between: two ``fourbit baseline update`` runs into one folder each wrote back what they had read plus their
    own, and the last one to finish won. Here the read, the fold and the (atomic) write happen under a lock on the
    file (:func:`baseline_lock_path`, filelock), so a second writer waits, then reads what the first one wrote and
    adds to it. A new file starts empty under ``environment_key``; a corrupt one raises BaselineFormatError, as
    :func:`load_baseline` does, and is left as it is. A writer that cannot take the lock within ``lock_timeout``
    seconds (a negative one: wait as long as it takes) raises BaselineLockTimeout and writes nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(baseline_lock_path(path), timeout=lock_timeout)
    try:
        lock.acquire()
    except Timeout:
        raise BaselineLockTimeout(str(path), lock_timeout) from None
    try:
        baseline = load_baseline(path) if path.exists() else Baseline(environment_key)
        count = update_baseline(baseline, results, environment)
        save_baseline(path, baseline)
    finally:
        lock.release()
    return count


def update_baseline(baseline: Baseline, results: Iterable[Result], environment: dict[str, Any]) -> int:
    """Fold this run's results into ``baseline`` (in place); returns how many entries were written.

    Exact and sampled entries are replaced; a timing entry keeps the median ratios of the last
    :data:`MAX_FOLDED_RUNS` runs and stores their median as its value. Entries of metrics this run did not
    produce are kept (updating one suite must not drop another's baseline)."""
    from harness.results.stats import fold_runs

    count = 0
    for result in results:
        if result.kind == "aggregate":
            continue  # a verdict over a run, recomputed by every run
        entry = entry_from_result(result)
        if result.kind == "timing":
            previous = baseline.entries.get(entry.key)
            kept = previous.runs if previous is not None and previous.kind == "timing" else ()
            runs = (*kept, result.value)[-MAX_FOLDED_RUNS:]
            value, _spread = fold_runs(runs)
            entry = replace(entry, value=value, runs=runs)
        baseline.entries[entry.key] = entry
        count += 1
    baseline.environment = environment
    return count


def entry_from_result(result: Result) -> BaselineEntry:
    """A saved result seen as a one-run baseline (for ``fourbit compare OLD.json NEW.json``)."""
    return BaselineEntry(
        suite=result.suite,
        case=result.case,
        implementation=result.implementation,
        metric=result.metric,
        value=result.value,
        kind=result.kind,
        direction=result.direction,
        unit=result.unit,
        tolerance=result.tolerance,
        runs=(result.value,) if result.kind == "timing" else (),
        samples=result.samples if result.kind == "sampled" else (),
        data_hash=result.data_hash,
    )
