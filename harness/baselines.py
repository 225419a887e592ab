"""Stored baselines: one JSON file per environment key, a versioned schema, atomic writes, compare rules per kind.

A baseline file (``baselines/cpu-x86_64.json``) maps each measurement key
``suite::case::implementation::metric`` to what a later run needs to judge a new value:

* ``exact``: the value (and an optional tolerance the suite chose);
* ``timing``: the folded value and the per-run median ratios it came from (their spread is the noise a
  new run is judged against; several runs are folded in, one per ``--update-baselines``);
* ``sampled``: the per-item scores and the hash of the items (a paired bootstrap needs the same items).

Files are written with sorted keys and fixed indentation, so a review diff shows exactly what moved, and
through a temporary file and ``os.replace``: a writer killed mid-write leaves the old file intact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from harness.errors import BaselineFormatError
from harness.results import VERDICTS, Result, write_json_atomically

__all__ = [
    "MAX_FOLDED_RUNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "VERDICTS",
    "Baseline",
    "BaselineEntry",
    "apply_verdict",
    "baseline_path",
    "compare_result",
    "compare_runs",
    "entry_from_result",
    "load_baseline",
    "missing_entries",
    "save_baseline",
    "update_baseline",
]

SCHEMA_VERSION = 1
"""Version of the baseline (and result) file layout this harness writes."""
MAX_FOLDED_RUNS = 10
"""A timing baseline keeps the median ratios of this many most recent runs (its run-to-run spread): two
sessions of five ``--update-baselines`` runs. The machine's state moves between sessions more than within one
(gate checks here, unchanged tree against the same one-session baseline, median over runs of an
implementation's median change of over_dense: ref-nf4 +0.4% in one session and +9.3% in a later one, the
other implementations -0.8% and +3.3%), so a baseline folded from one session sits off centre for the next;
folded from two, its median sits between them and its spread includes the move."""
DEFAULT_EXACT_REL_TOL = 1e-6
"""Exact metrics are computed from fixed seeds; this only absorbs last-bit differences between BLAS builds."""
DEFAULT_MIN_EFFECT = 0.10
"""Timing: a ratio must move by more than this (and significantly) to count; see DESIGN.md for why."""

CONTENDED_CPU_SHARE = 0.85
"""Timing: a run whose rounds got less than this share of their CPUs (``extra["cpu_share"]``, see
harness.timing.TimingRun.cpu_share) cannot show a regression: one that crosses the gate is ``inconclusive``.
On the project's 2-core machine single-threaded timings got 0.97-1.0 of their CPU at load 1-3 (the kernel
gate check's runs); at load 3, before the share was recorded, dequantize/copy ratios of an unchanged tree rose
20-24%. The threshold sits below what a lightly shared machine gives."""

Verdict = Literal["ok", "improved", "regressed", "new", "missing", "inconclusive"]

MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``MIGRATIONS[v]`` turns a schema-``v`` document into a schema-``v + 1`` one. Schema 1 is the first
published layout, so the table is empty; a layout change adds an entry and bumps :data:`SCHEMA_VERSION`."""


def _key(suite: str, case: str, implementation: str, metric: str) -> str:
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
        return _key(self.suite, self.case, self.implementation, self.metric)

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "suite": self.suite,
            "case": self.case,
            "implementation": self.implementation,
            "metric": self.metric,
            "value": self.value,
            "kind": self.kind,
            "direction": self.direction,
            "unit": self.unit,
        }
        optional = {
            "tolerance": self.tolerance,
            "runs": [_finite(v) for v in self.runs],
            "samples": [_finite(v) for v in self.samples],
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
        return self.entries.get(_key(*result.key))


def baseline_path(directory: str | Path, environment_key: str) -> Path:
    return Path(directory) / f"{environment_key}.json"


# ---------------------------------------------------------------------------------------------- reading


def _fail(path: Path, problem: str) -> BaselineFormatError:
    return BaselineFormatError(f"baseline {str(path)!r}: {problem}")


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

    def number(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(value)
        return float(value)  # "inf", "-inf" and "nan" are how non-finite numbers are stored

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
    if entry.kind not in ("exact", "timing", "sampled", "info"):
        raise _fail(path, f"metrics[{key!r}].kind={entry.kind!r}, expected exact, timing, sampled or info")
    if entry.direction not in ("higher", "lower"):
        raise _fail(path, f"metrics[{key!r}].direction={entry.direction!r}, expected higher or lower")
    if entry.key != key:
        expected = "the key suite::case::implementation::metric"
        raise _fail(path, f"metrics[{key!r}] describes {entry.key!r}, expected {expected}")
    return entry


def migrate(document: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring a parsed document to :data:`SCHEMA_VERSION`, or say why it cannot be read."""
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(path, f"schema_version={version!r}, expected an integer (this harness writes {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise _fail(
            path,
            f"schema_version={version} is newer than this harness reads ({SCHEMA_VERSION}); upgrade fourbit-harness",
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise _fail(
                path,
                f"schema_version={version} is too old (this harness reads {min(MIGRATIONS, default=SCHEMA_VERSION)}"
                f" to {SCHEMA_VERSION}); rewrite it with `fourbit baseline update`",
            )
        document = step(dict(document))
        version += 1
        document["schema_version"] = version
    return document


def load_baseline(path: str | Path) -> Baseline:
    """Read and validate a baseline file; any problem is a BaselineFormatError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot be read ({exc})") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(document, dict):
        raise _fail(path, f"top level is {type(document).__name__}, expected an object")
    document = migrate(document, path)
    metrics = document.get("metrics")
    if not isinstance(metrics, dict):
        raise _fail(path, "has no 'metrics' object")
    entries = {key: _entry_from_json(path, key, raw) for key, raw in metrics.items()}
    environment = document.get("environment") or {}
    if not isinstance(environment, dict):
        raise _fail(path, "'environment' is not an object")
    return Baseline(str(document.get("environment_key", path.stem)), environment, entries)


# ---------------------------------------------------------------------------------------------- writing


def _finite(value: float) -> float | str:
    """JSON has no NaN/inf: store them as strings that float() reads back."""
    return value if math.isfinite(value) else repr(value)


def _document(baseline: Baseline) -> dict[str, Any]:
    metrics = {}
    for key, entry in sorted(baseline.entries.items()):
        doc = entry.as_json()
        doc["value"] = _finite(entry.value)
        metrics[key] = doc
    return {
        "schema_version": SCHEMA_VERSION,
        "environment_key": baseline.environment_key,
        "environment": baseline.environment,
        "metrics": metrics,
    }


def save_baseline(path: str | Path, baseline: Baseline) -> Path:
    return write_json_atomically(path, _document(baseline))


def update_baseline(baseline: Baseline, results: Iterable[Result], environment: dict[str, Any]) -> int:
    """Fold this run's results into ``baseline`` (in place); returns how many entries were written.

    Exact and sampled entries are replaced; a timing entry keeps the median ratios of the last
    :data:`MAX_FOLDED_RUNS` runs and stores their median as its value. Entries of metrics this run did not
    produce are kept (updating one suite must not drop another's baseline)."""
    from harness.stats import fold_runs

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


# ---------------------------------------------------------------------------------------------- comparing


def compare_result(result: Result, entry: BaselineEntry | None) -> Result:
    """``result`` with ``baseline``, ``verdict`` and ``statistic`` filled in by the rule of its kind."""
    from harness import stats

    if result.kind == "aggregate":
        return result  # judged when it was formed, over this run's compared results (harness.aggregate)
    if result.kind == "info":
        return replace(
            result,
            baseline=None if entry is None else entry.value,
            verdict=None,
            statistic="shown, never gated",
        )
    if entry is None:
        return replace(result, verdict="new", statistic="no baseline for this metric")
    if entry.kind != result.kind or entry.direction != result.direction:
        return replace(
            result,
            baseline=entry.value,
            verdict="new",
            statistic=f"baseline is {entry.kind}/{entry.direction}, this run {result.kind}/{result.direction}: "
            "not compared (update the baseline)",
        )
    direction: Literal["higher", "lower"] = "higher" if result.direction == "higher" else "lower"
    if result.kind == "exact":
        tolerance = result.tolerance if result.tolerance is not None else entry.tolerance
        comparison = stats.compare_exact(
            result.value,
            entry.value,
            direction=direction,
            rel_tol=DEFAULT_EXACT_REL_TOL if tolerance is None else tolerance,
        )
    elif result.kind == "timing":
        if not result.samples:
            return replace(result, baseline=entry.value, verdict="new", statistic="no per-round samples to compare")
        min_effect = result.tolerance if result.tolerance is not None else DEFAULT_MIN_EFFECT
        comparison = stats.compare_timing(
            result.samples, entry.value, entry.runs or (entry.value,), direction=direction, min_effect=min_effect
        )
        inconclusive = _inconclusive(result) if comparison.verdict == "regressed" else None
        if inconclusive is not None:
            reason, flags = inconclusive
            return replace(
                result,
                baseline=entry.value,
                verdict="inconclusive",
                statistic=f"{comparison.statistic}; but {reason}",
                extra={**result.extra, **flags},
            )
        if comparison.ambiguous:
            extra = {**result.extra, "ambiguous": True}
            return replace(
                result, baseline=entry.value, verdict=comparison.verdict, statistic=comparison.statistic, extra=extra
            )
    else:
        if result.data_hash != entry.data_hash or len(result.samples) != len(entry.samples) or not result.samples:
            return replace(
                result,
                baseline=entry.value,
                verdict="new",
                statistic=f"items differ from the baseline's (data hash {entry.data_hash} vs {result.data_hash}, "
                f"{len(entry.samples)} vs {len(result.samples)} items): not compared",
            )
        tolerance = result.tolerance if result.tolerance is not None else (entry.tolerance or 0.0)
        comparison = stats.compare_sampled(result.samples, entry.samples, direction=direction, tolerance=tolerance)
    return replace(result, baseline=entry.value, verdict=comparison.verdict, statistic=comparison.statistic)


def _inconclusive(result: Result) -> tuple[str, dict[str, Any]] | None:
    """Why a timing regression cannot be trusted, and the flags to add to its extra: its ratio moved against
    one reference only (the suite sets ``extra["uncorroborated"]``), or its rounds got too little of their CPU
    (``extra["cpu_share"]``)."""
    uncorroborated = result.extra.get("uncorroborated")
    if uncorroborated:
        return f"{uncorroborated}: a reference moved, not (only) the kernel: inconclusive", {}
    share = result.extra.get("cpu_share")
    if isinstance(share, (int, float)) and share < CONTENDED_CPU_SHARE:
        reason = (
            f"the rounds got {share:.0%} of their CPU (other jobs held the rest; under {CONTENDED_CPU_SHARE:.0%} a "
            "slowdown cannot be told from contention): inconclusive, re-run on a quieter machine"
        )
        return reason, {"contended": True}
    return None


def apply_verdict(result: Result, baseline: Baseline | None, machine: str | None = None) -> Result:
    """Compare with ``baseline`` when there is one (no baseline file at all: every metric is new).

    ``machine`` is this run's :func:`harness.environment.timing_machine`: a timing whose baseline was written on
    other hardware is not compared (verdict new, with both machines named), since the same environment key
    (``cpu-x86_64``) covers CPUs whose kernel/copy ratios differ."""
    entry = None if baseline is None else baseline.get(result)
    if result.kind == "timing" and entry is not None and machine is not None and baseline is not None:
        from harness.environment import timing_machine

        stored = timing_machine(baseline.environment) if baseline.environment else None
        if stored is not None and stored != machine:
            return replace(
                result,
                baseline=entry.value,
                verdict="new",
                statistic=f"baseline timed on {stored}, this run on {machine}: not compared (write a baseline on "
                "this machine: fourbit baseline update)",
            )
    return compare_result(result, entry)


def missing_entries(baseline: Baseline, results: Iterable[Result], scope: Iterable[tuple[str, ...]]) -> list[Result]:
    """Baseline entries inside ``scope`` that this run did not produce.

    ``scope`` holds (suite, implementation) pairs for a full run, or (suite, implementation, case) triples
    when the run was narrowed (``-k``, ``--deselect``): then only the cases that ran can miss a metric."""
    produced = {_key(*r.key) for r in results}
    covered = set(scope)
    missing = []
    for key, entry in sorted(baseline.entries.items()):
        if key in produced:
            continue
        if (entry.suite, entry.implementation) not in covered and (
            entry.suite,
            entry.implementation,
            entry.case,
        ) not in covered:
            continue
        missing.append(
            Result(
                suite=entry.suite,
                case=entry.case,
                implementation=entry.implementation,
                metric=entry.metric,
                value=math.nan,
                unit=entry.unit,
                kind=entry.kind,  # type: ignore[arg-type]  # validated when loaded
                direction=entry.direction,  # type: ignore[arg-type]
                baseline=entry.value,
                verdict="missing",
                statistic="in the baseline, not produced by this run",
            )
        )
    return missing


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


def compare_runs(old: Iterable[Result], new: Iterable[Result]) -> list[Result]:
    """Every metric of ``new`` judged against ``old`` by the rule of its kind, then the implementation verdicts
    (harness.aggregate) that ``new`` carried, formed again from these comparisons, then ``old``'s metrics that
    ``new`` lacks as missing. Results already marked missing in a file are not metrics and are skipped, and so
    are the files' own aggregates (verdicts over one run against its baseline, not measurements)."""
    from harness.aggregate import aggregate_timing

    new = list(new)
    old_entries = {_key(*r.key): entry_from_result(r) for r in old if r.verdict != "missing" and r.kind != "aggregate"}
    new_results = [r for r in new if r.verdict != "missing" and r.kind != "aggregate"]
    compared = [compare_result(r, old_entries.get(_key(*r.key))) for r in new_results]
    declared = sorted({(r.suite, str(r.extra.get("aggregate_of"))) for r in new if r.kind == "aggregate"})
    aggregates = [a for suite, metric in declared for a in aggregate_timing(compared, suite, metric)]
    baseline = Baseline("compare", entries=old_entries)
    scope = {(entry.suite, entry.implementation) for entry in old_entries.values()}
    return compared + aggregates + missing_entries(baseline, new_results, scope)
