"""Stored baselines: one JSON file per environment key, read, validated, folded and written (harness.results.files).

A baseline file (``baselines/cpu-x86_64.json``) maps each measurement key
``suite::case::implementation::metric`` to what a later run needs to judge a new value:

* ``exact``: the value (and an optional tolerance the suite chose);
* ``timing``: the folded value and the per-run median ratios it came from (their spread is the noise a
  new run is judged against; several runs are folded in, one per ``--update-baselines``);
* ``sampled``: the per-item scores and the hash of the items (a paired bootstrap needs the same items).

Files are written with sorted keys and fixed indentation, so a review diff shows exactly what moved, and
through a temporary file and ``os.replace``: a writer killed mid-write leaves the old file intact. How a result
is judged against an entry lives in harness.results.compare.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import BaselineFormatError
from harness.results.files import Migration, decode_number, encode_number, migrate, read_document, write_json_atomically
from harness.results.records import DIRECTIONS, KINDS, Result

__all__ = [
    "MAX_FOLDED_RUNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Baseline",
    "BaselineEntry",
    "baseline_key",
    "baseline_path",
    "entry_from_result",
    "load_baseline",
    "save_baseline",
    "update_baseline",
]

SCHEMA_VERSION = 1
"""Version of the baseline file layout this harness writes."""
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


def _entry_from_json(path: Path, key: str, raw: object) -> BaselineEntry:
    if not isinstance(raw, dict):
        raise _fail(path, f"metrics[{key!r}] is {type(raw).__name__}, expected an object")

    def field_of(name: str, convert: Callable[[Any], Any], default: Any = ...) -> Any:
        if name not in raw:
            if default is ...:
                raise _fail(path, f"metrics[{key!r}] lacks the field {name!r}")
            return default
        value = raw[name]
        try:
            return convert(value)
        except (TypeError, ValueError):
            raise _fail(path, f"metrics[{key!r}].{name}={value!r} is malformed") from None

    number = decode_number

    def optional_number(value: Any) -> float | None:
        return None if value is None else number(value)

    def numbers(value: Any) -> tuple[float, ...]:
        if not isinstance(value, list):
            raise TypeError(value)
        return tuple(number(v) for v in value)

    def text(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value

    entry = BaselineEntry(
        suite=field_of("suite", text),
        case=field_of("case", text),
        implementation=field_of("implementation", text),
        metric=field_of("metric", text),
        value=field_of("value", number),
        kind=field_of("kind", text),
        direction=field_of("direction", text),
        unit=field_of("unit", text, ""),
        tolerance=field_of("tolerance", optional_number, None),
        runs=field_of("runs", numbers, ()),
        samples=field_of("samples", numbers, ()),
        data_hash=field_of("data_hash", lambda v: None if v is None else text(v), None),
    )
    if entry.kind not in KINDS or entry.kind == "aggregate":
        raise _fail(path, f"metrics[{key!r}].kind={entry.kind!r}, expected exact, timing, sampled or info")
    if entry.direction not in DIRECTIONS:
        raise _fail(path, f"metrics[{key!r}].direction={entry.direction!r}, expected higher or lower")
    if entry.key != key:
        expected = "the key suite::case::implementation::metric"
        raise _fail(path, f"metrics[{key!r}] describes {entry.key!r}, expected {expected}")
    return entry


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file; any problem is a BaselineFormatError naming the file."""
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
    metrics = document.get("metrics")
    if not isinstance(metrics, dict):
        raise fail("has no 'metrics' object")
    entries = {key: _entry_from_json(path, key, raw) for key, raw in metrics.items()}
    environment = document.get("environment") or {}
    if not isinstance(environment, dict):
        raise fail("'environment' is not an object")
    return Baseline(str(document.get("environment_key", path.stem)), environment, entries)


# ---------------------------------------------------------------------------------------------- writing


def _document(baseline: Baseline) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "environment_key": baseline.environment_key,
        "environment": baseline.environment,
        "metrics": {key: entry.as_json() for key, entry in sorted(baseline.entries.items())},
    }


def save_baseline(path: str | Path, baseline: Baseline) -> Path:
    return write_json_atomically(path, _document(baseline))


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
