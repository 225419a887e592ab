"""The record gate: the ``record`` fixture, the comparison of every recorded metric with the baseline on the spot,
the run's implementation verdicts and missing entries at its end, and ``--update-baselines``.

Which baseline: ``--baseline-dir`` (``fourbit run`` passes the checkout's or ``./baselines``); else
``<rootdir>/baselines`` when it exists; else the file shipped with the installed package (``harness/_baselines``,
mapped from the repository's baselines/ at build time), read-only and with only its exact entries: timing and
sampled entries belong to the machine and the data that wrote them. An update writes into ``--baseline-dir`` or
``<rootdir>/baselines``, else ``./baselines`` (created), never into the installed package.

A metric that regressed fails the test that recorded it (after harness.pytest_plugin.reruns had its chance to
measure it again); an implementation verdict that regressed fails the run. Baselines change only through
``--update-baselines``, from the metrics of passing tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.pytest_plugin import output
from harness.pytest_plugin._options import add_option
from harness.pytest_plugin.selection import pair_id

if TYPE_CHECKING:
    from harness.results.baselines import Baseline
    from harness.results.records import Result
    from harness.timing.remeasure import RemeasurePolicy

__all__ = [
    "NO_BASELINE_NOTE",
    "SHIPPED_NOTE",
    "Recorder",
    "baseline_dir",
    "declare_aggregates",
    "declared_aggregates",
    "item_results",
    "mark_narrowed",
    "policy",
    "record",
    "reorder",
    "replace_item_results",
    "run_results",
    "shipped_baselines",
    "was_narrowed",
]

SHIPPED_NOTE = "baseline: shipped with fourbit-harness (exact metrics only)"
"""The summary line of a run compared with the shipped baseline."""
NO_BASELINE_NOTE = "no baseline: nothing gated"
"""The start of the summary line of a run that had no baseline to compare with."""


@dataclass
class _GateState:
    baseline: Baseline | None = None
    baseline_file: Path | None = None
    machine: str | None = None
    item_results: dict[str, list[Result]] = field(default_factory=dict)
    """What each test recorded, in the order the tests ran (a fresh-process re-run replaces a test's list)."""
    run_results: list[Result] = field(default_factory=list)
    """Formed at the end of the run: implementation verdicts and missing entries."""
    passed: set[str] = field(default_factory=set)
    deselected: bool = False
    aggregates: set[tuple[str, str]] = field(default_factory=set)
    """(suite, metric) pairs whose implementations are also judged over all their cases (harness.results.aggregate)."""


_STATE = pytest.StashKey[_GateState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-baselines", "fourbit: baselines and regression gating")
    add_option(
        group,
        "--baseline-dir",
        repeat_in_reruns=False,  # a re-run gets it as an absolute path (harness.pytest_plugin.reruns)
        default=None,
        metavar="DIR",
        help="folder of baseline files, one per environment key (default: <rootdir>/baselines when it exists, else "
        "the one shipped with fourbit-harness, exact metrics only; an update then writes ./baselines)",
    )
    add_option(
        group,
        "--update-baselines",
        repeat_in_reruns=False,
        action="store_true",
        default=False,
        help="write this run's metrics (of passing tests) into the baseline file instead of comparing",
    )
    add_option(
        group,
        "--fourbit-strict",
        repeat_in_reruns=False,
        action="store_true",
        default=False,
        help="metrics without a baseline (new) and baseline entries this run did not produce (missing) fail",
    )


class _PassedTests:
    """Remembers which tests passed: only their metrics may be written into a baseline."""

    def __init__(self, state: _GateState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self.state.passed.add(report.nodeid)
        elif report.failed:
            self.state.passed.discard(report.nodeid)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _GateState()
    config.pluginmanager.register(_PassedTests(config.stash[_STATE]), "fourbit-passed-tests")
    config.addinivalue_line(
        "markers",
        "fourbit_aggregate(metric): also judge each implementation by the median change of this timing metric over "
        "all its cases in the run (harness.results.aggregate)",
    )


# ---------------------------------------------------------------------------------------------- what others read


def baseline_dir(config: pytest.Config) -> Path | None:
    """``--baseline-dir``, else ``<rootdir>/baselines`` when it exists, else None: a compared run then uses the
    shipped baseline (:func:`shipped_baselines`, exact metrics only) and an update writes ``./baselines`` (the
    folder pytest was started in)."""
    explicit = config.getoption("baseline_dir")
    if explicit:
        return Path(explicit)
    default = Path(config.rootpath) / "baselines"
    return default if default.is_dir() else None


def shipped_baselines() -> Path | None:
    """The baseline folder the installed package carries (``harness/_baselines``), or None where there is none (a
    checkout or an editable install: they have the repository's baselines/ itself)."""
    from importlib.resources import files

    folder = Path(str(files("harness").joinpath("_baselines")))
    return folder if folder.is_dir() else None


def _in_installed_package(path: Path) -> bool:
    import harness

    package = Path(harness.__file__).resolve().parent
    resolved = path.resolve()
    return resolved == package or package in resolved.parents


def policy(config: pytest.Config) -> RemeasurePolicy:
    """The run's re-measurement policy (harness.timing.remeasure), from its options."""
    from harness.timing.remeasure import RemeasurePolicy

    return RemeasurePolicy(
        fresh_process_reruns=int(config.getoption("fourbit_timing_reruns")),
        strict=bool(config.getoption("fourbit_strict")),
    )


def item_results(config: pytest.Config, nodeid: str) -> list[Result]:
    """What test ``nodeid`` recorded (empty when nothing)."""
    return list(config.stash[_STATE].item_results.get(nodeid, ()))


def replace_item_results(config: pytest.Config, nodeid: str, results: list[Result]) -> None:
    """Put a re-measurement of test ``nodeid`` in the place of what it recorded."""
    config.stash[_STATE].item_results[nodeid] = list(results)


def run_results(config: pytest.Config) -> list[Result]:
    """Every result of the run: each test's records in the order the tests ran, then the implementation verdicts
    and the missing entries formed at its end."""
    state = config.stash[_STATE]
    return [r for results in state.item_results.values() for r in results] + state.run_results


def declared_aggregates(config: pytest.Config) -> set[tuple[str, str]]:
    """The (suite, metric) pairs whose implementations are also judged over all their cases."""
    return set(config.stash[_STATE].aggregates)


def declare_aggregates(config: pytest.Config, pairs: list[tuple[str, str]]) -> None:
    """(suite, metric) pairs declared by tests collected elsewhere (a pytest-xdist worker's, on the controller)."""
    config.stash[_STATE].aggregates.update(pairs)


def reorder(config: pytest.Config, order: dict[str, int]) -> None:
    """List the tests' records in ``order`` (node id -> position; unknown ones last, as they came)."""
    state = config.stash[_STATE]
    state.item_results = dict(sorted(state.item_results.items(), key=lambda item: order.get(item[0], len(order))))


def was_narrowed(config: pytest.Config) -> bool:
    """Whether tests were deselected (-k, -m, --deselect): the run answers only for the cases it ran."""
    return config.stash[_STATE].deselected


def mark_narrowed(config: pytest.Config) -> None:
    """Tests were deselected elsewhere (by a pytest-xdist worker)."""
    config.stash[_STATE].deselected = True


def _timing_machine(config: pytest.Config) -> str:
    """This machine as timing baselines know it (harness.results.environment.timing_machine), computed once."""
    state = config.stash[_STATE]
    if state.machine is None:
        from harness.results.environment import environment_fingerprint, timing_machine

        state.machine = timing_machine(environment_fingerprint())
    return state.machine


# ---------------------------------------------------------------------------------------------- the session


def pytest_sessionstart(session: pytest.Session) -> None:
    """Read this environment's baseline once (the shipped one, exact entries only, when the user has none); a
    corrupt or unreadable file stops the run as a usage error, and so does an update aimed into the installed
    package."""
    from harness._validation import why_not_writable
    from harness.errors import BaselineFormatError
    from harness.pytest_plugin.distributed import is_worker
    from harness.results.baselines import Baseline, baseline_path, load_baseline
    from harness.results.environment import environment_key

    config = session.config
    state = config.stash[_STATE]
    updating = bool(config.getoption("update_baselines"))
    explicit = config.getoption("baseline_dir")
    if explicit and not updating and not Path(explicit).is_dir():
        raise pytest.UsageError(
            f"--baseline-dir {explicit}: no such folder; expected a folder of baseline files (`fourbit baseline "
            "update --baseline-dir DIR` creates one), or leave the option out"
        )
    directory = baseline_dir(config)
    key = environment_key()
    if directory is None and not updating:
        _use_shipped_baseline(config, key)
        if state.baseline is None:
            output.note(config, f"{NO_BASELINE_NOTE} (no baseline folder; `fourbit baseline update` writes one)")
        return
    state.baseline_file = baseline_path(directory or Path(config.invocation_params.dir) / "baselines", key)
    if updating and _in_installed_package(state.baseline_file):
        raise pytest.UsageError(
            f"--update-baselines: {state.baseline_file} is inside the installed fourbit-harness package, whose "
            "shipped baselines are read-only; pass --baseline-dir DIR (default: ./baselines)"
        )
    problem = why_not_writable(state.baseline_file) if updating and not is_worker(config) else None
    if problem:
        raise pytest.UsageError(f"--update-baselines: {state.baseline_file}: {problem}")
    if not state.baseline_file.exists():
        state.baseline = Baseline(key) if updating else None
        if not updating:
            output.note(config, f"{NO_BASELINE_NOTE} (no file for this environment: {state.baseline_file})")
        return
    try:
        state.baseline = load_baseline(state.baseline_file)
    except BaselineFormatError as exc:
        raise pytest.UsageError(str(exc)) from None


def _use_shipped_baseline(config: pytest.Config, key: str) -> None:
    """Compare with the installed package's baseline for ``key``, if it ships one: its exact entries only (timing
    and sampled entries belong to the machine and the data that wrote them), and never written."""
    from harness.errors import BaselineFormatError
    from harness.results.baselines import Baseline, baseline_path, load_baseline

    folder = shipped_baselines()
    if folder is None or not baseline_path(folder, key).is_file():
        return
    try:
        shipped = load_baseline(baseline_path(folder, key))
    except BaselineFormatError as exc:
        raise pytest.UsageError(str(exc)) from None
    exact = {name: entry for name, entry in shipped.entries.items() if entry.kind == "exact"}
    config.stash[_STATE].baseline = Baseline(shipped.environment_key, shipped.environment, exact)
    output.note(config, SHIPPED_NOTE)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    for item in items:
        for marker in item.iter_markers("fourbit_aggregate"):
            if len(marker.args) != 1 or not isinstance(marker.args[0], str) or marker.kwargs:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.fourbit_aggregate{marker.args!r}, expected one metric name, "
                    'e.g. @pytest.mark.fourbit_aggregate("over_dense")'
                )
            state.aggregates.add((item.path.parent.name, marker.args[0]))


def pytest_deselected(items: list[pytest.Item]) -> None:
    """A narrowed run (-k, -m, --deselect) only answers for the cases it ran (see missing_entries)."""
    if items:
        items[0].config.stash[_STATE].deselected = True


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A metric that regressed (or, under --fourbit-strict, has no baseline or stayed inconclusive) fails the test
    that recorded it, once the re-runs (harness.pytest_plugin.reruns, an inner wrapper) are done."""
    result: Any = yield
    judge = policy(item.config)
    bad = [r for r in item_results(item.config, item.nodeid) if judge.fails(r)]
    if bad:
        from harness.report.terminal import regression_message

        pytest.fail("\n".join(regression_message(r) for r in bad), pytrace=False)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Missing entries and implementation verdicts of a compared run, or the baseline of an updating one; a
    plugin that failed to load, a failing implementation verdict, or (under --fourbit-strict) a missing entry
    fails the run."""
    from harness.pytest_plugin.distributed import is_worker
    from harness.pytest_plugin.selection import load_errors

    config = session.config
    if is_worker(config):
        return  # the controller judges the run and writes the baseline, from what every worker sent
    state = config.stash[_STATE]
    failed = bool(load_errors(config))
    if state.baseline is not None and not config.getoption("update_baselines"):
        from harness.results.compare import missing_entries, not_gated

        narrowed = (
            state.deselected
            or bool(config.getoption("keyword") or config.getoption("markexpr"))
            or any("::" in str(arg) for arg in config.args)  # test ids named on the command line
        )
        produced = run_results(config)
        scope: set[tuple[str, ...]] = {
            (r.suite, r.implementation, r.case) if narrowed else (r.suite, r.implementation) for r in produced
        }
        aggregates = _aggregates(session)
        missing = missing_entries(state.baseline, produced, scope)
        state.run_results.extend(aggregates + missing)
        for line in not_gated(produced):
            output.note(config, line)
        judge = policy(config)
        failed = failed or any(judge.fails_run(r) for r in aggregates)
        failed = failed or bool(missing and config.getoption("fourbit_strict"))
    if config.getoption("update_baselines"):
        failed = not _write_baseline(config) or failed
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def form_aggregates(config: pytest.Config, results: list[Result]) -> list[Result]:
    """The implementation verdicts of the declared (suite, metric) pairs, formed from ``results``."""
    from harness.results.aggregate import aggregate_timing
    from harness.results.compare import DEFAULT_MIN_EFFECT

    return [
        aggregate
        for suite, metric in sorted(config.stash[_STATE].aggregates)
        for aggregate in aggregate_timing(results, suite, metric, min_effect=DEFAULT_MIN_EFFECT)
    ]


def _aggregates(session: pytest.Session) -> list[Result]:
    """Implementation-level verdicts; a failing one is formed again from a fresh-process re-run
    (harness.pytest_plugin.reruns) and, if it still regresses, fails the run (no single test did)."""
    from harness.pytest_plugin.reruns import remeasure_aggregates
    from harness.report.terminal import regression_message
    from harness.results.aggregate import shared_shift
    from harness.results.compare import DEFAULT_MIN_EFFECT

    config = session.config
    aggregates = remeasure_aggregates(session, form_aggregates(config, run_results(config)))
    for message in [regression_message(r) for r in aggregates if r.verdict == "regressed"]:
        output.note(config, message)
    for message in shared_shift(aggregates, min_effect=DEFAULT_MIN_EFFECT):
        output.note(config, message)
    return aggregates


def _write_baseline(config: pytest.Config) -> bool:
    """Fold the metrics of passing tests into this environment's baseline file, under its lock and into what the
    file holds now (another run may have written it since this one started: harness.results.baselines
    .merge_into_baseline_file). False, with a line in the summary, when the file could not be written."""
    from harness.errors import StoredFileError
    from harness.results.baselines import baseline_path, merge_into_baseline_file
    from harness.results.environment import environment_fingerprint, environment_key

    state = config.stash[_STATE]
    passed = [r for item, results in state.item_results.items() if item in state.passed for r in results]
    left_out = sum(len(v) for k, v in state.item_results.items() if k not in state.passed)
    if not passed:
        output.note(config, "--update-baselines: no metrics from passing tests; baseline not written")
        return True
    key = environment_key()
    path = state.baseline_file or baseline_path(Path(config.invocation_params.dir) / "baselines", key)
    try:
        count = merge_into_baseline_file(path, key, passed, environment_fingerprint())
    except (StoredFileError, OSError) as exc:
        output.note(config, f"--update-baselines: not written: {exc}")
        return False
    note = f" ({left_out} metrics of failing tests left out)" if left_out else ""
    output.note(config, f"baseline {path}: wrote {count} metrics{note}")
    return True


class Recorder:
    """The ``record`` fixture: ``record(metric, value, *, case=None, unit=, kind=, direction=, samples=,
    ci_low=, ci_high=, tolerance=, data_hash=, extra=)`` stores a metric of the current test's implementation,
    compared with the baseline on the spot (a regression fails this test when it returns).
    ``record.preview(...)`` compares without storing, for a test that re-measures an ambiguous timing once."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        callspec = getattr(request.node, "callspec", None)
        params = callspec.params if callspec is not None else {}
        implementation = getattr(params.get("quantizer"), "name", None)
        pair = params.get("quantizer_pair")
        if isinstance(pair, tuple) and len(pair) == 2:
            implementation = pair_id(pair[0].name, pair[1].name)
        self.implementation = implementation if isinstance(implementation, str) else "-"
        self.suite = request.node.path.parent.name

    def preview(self, metric: str, value: float, *, case: str | None = None, **fields: Any) -> Result:
        from harness.results.records import Result

        config = self._request.config
        result = Result(
            suite=self.suite,
            case=case or self._request.node.name,
            implementation=self.implementation,
            metric=metric,
            value=value,
            **fields,
        )
        if config.getoption("update_baselines"):
            return result
        from harness.results.compare import apply_verdict

        return apply_verdict(result, config.stash[_STATE].baseline, _timing_machine(config))

    def __call__(self, metric: str, value: float, *, case: str | None = None, **fields: Any) -> Result:
        result = self.preview(metric, value, case=case, **fields)
        node = self._request.node
        self._request.config.stash[_STATE].item_results.setdefault(node.nodeid, []).append(result)
        node.user_properties.append((f"fourbit:{result.case}:{metric}", result.value))
        return result


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Recorder:
    """Record a metric of the current test's implementation (see :class:`Recorder`)."""
    return Recorder(request)
