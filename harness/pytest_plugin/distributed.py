"""Scale-out on pytest-xdist (``pytest suites/properties -n 4``, or ``fourbit run --workers 4``): the workers run
the tests, the controller decides the run.

A worker judges each metric on the spot, as a single process does (it reads the same baseline), and sends what
each test recorded with that test's reports (extra attributes on a report travel with it: pytest serializes a
report's ``__dict__``); at its end it sends what its collection declared (the suites' summary markers, the
implementation-level aggregates, whether tests were deselected) and its summary notes through xdist's
``workeroutput``. Only the controller forms the missing entries and implementation verdicts, writes the baseline
and the result, Markdown and plot files, and prints the one summary: ``-n N`` gives the results, verdicts and files
of one process.

Timing tests never share the CPU: a test marked ``fourbit_timing`` (the kernels suite) or using pytest-benchmark's
``benchmark`` fixture makes a run with more than one worker stop before any test runs, with one line saying how to
run them (exit 2, as pytest reports an interrupted session). The workers would time each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness.pytest_plugin import gate, output, selection

__all__ = ["TIMING_MARKER", "is_controller", "is_worker", "timing_items", "worker_count"]

TIMING_MARKER = "fourbit_timing"

_RESULTS_ATTRIBUTE = "fourbit_results"
_ITEM_ATTRIBUTE = "fourbit_item"
_WORKER_OUTPUT_KEY = "fourbit"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{TIMING_MARKER}: the test times code; it refuses to run beside other pytest-xdist workers, which would share "
        "its CPU",
    )


def is_worker(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (it runs tests; the controller decides the run)."""
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """Whether this process is the controller of pytest-xdist workers (it runs no test itself)."""
    return config.pluginmanager.has_plugin("dsession")


def worker_count(config: pytest.Config) -> int:
    """How many workers share this run (1 without pytest-xdist)."""
    workerinput = getattr(config, "workerinput", None)
    return int(workerinput.get("workercount", 1)) if workerinput else 1


def timing_items(items: list[pytest.Item]) -> list[pytest.Item]:
    """The tests that time code: marked ``fourbit_timing``, or using pytest-benchmark's ``benchmark`` fixture."""
    return [
        item
        for item in items
        if item.get_closest_marker(TIMING_MARKER) is not None or "benchmark" in getattr(item, "fixturenames", ())
    ]


# ---------------------------------------------------------------------------------------------- worker side


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a worker of several, stop the run before any test when timing tests were selected (after -m/-k
    deselection, so ``-m "not fourbit_timing"`` runs the rest)."""
    if worker_count(config) < 2:
        return
    timed = timing_items(items)
    if not timed:
        return
    suites = sorted({item.path.parent.name for item in timed})
    session.shouldstop = (
        f"{len(timed)} timing tests ({', '.join(suites)}) cannot share the CPU with other pytest-xdist workers: run "
        f'them in a run of their own without -n, and the rest with -n and -m "not {TIMING_MARKER}"'
    )
    config.hook.pytest_deselected(items=list(items))
    items[:] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a worker, attach what the test recorded and what it is about to its reports, for the controller."""
    report: Any = yield
    config = item.config
    if is_worker(config):
        key = selection.item_key(config, item.nodeid)
        setattr(report, _ITEM_ATTRIBUTE, list(key) if key is not None else None)
        if report.when != "setup":
            recorded = gate.item_results(config, item.nodeid)
            setattr(report, _RESULTS_ATTRIBUTE, [result.as_json() for result in recorded])
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On a worker, send what its collection declared and its summary notes to the controller."""
    config = session.config
    if not is_worker(config):
        return
    workeroutput: dict[str, Any] = config.workeroutput  # type: ignore[attr-defined]
    workeroutput[_WORKER_OUTPUT_KEY] = {
        "suites": {name: summary.as_json() for name, summary in output.suite_summaries(config).items()},
        "aggregates": [list(pair) for pair in gate.declared_aggregates(config)],
        "deselected": gate.was_narrowed(config),
        "notes": output.notes(config),
    }


# ---------------------------------------------------------------------------------------------- controller side


def pytest_sessionstart(session: pytest.Session) -> None:
    """On the controller (xdist registers it during configure), listen to the workers' reports."""
    if is_controller(session.config):
        session.config.pluginmanager.register(_Controller(session.config), "fourbit-xdist-controller")


class _Controller:
    """Folds what the workers send into the controller's state, which the other plugin parts then read as if the
    tests had run here."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.order: dict[str, int] = {}

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Keep the collection order (every worker collects the same): the summary and files list the tests in it,
        not in the order the workers finished them."""
        if not self.order:
            self.order = {nodeid: index for index, nodeid in enumerate(ids)}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Put the tests' records in collection order before the other plugin parts judge and write (this hook
        is called before theirs: a plugin registered later runs first among ``tryfirst`` ones)."""
        gate.reorder(self.config, self.order)
        output.reorder(self.config, self.order)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take a worker's records of a test before the other plugins read its report."""
        from harness.results.records import Result

        key = getattr(report, _ITEM_ATTRIBUTE, None)
        if isinstance(key, (list, tuple)) and len(key) == 3:
            selection.remember_item_key(self.config, report.nodeid, selection.ItemKey(*key))
        recorded = getattr(report, _RESULTS_ATTRIBUTE, None)
        if isinstance(recorded, list):
            gate.replace_item_results(self.config, report.nodeid, [Result.from_json(record) for record in recorded])

    @pytest.hookimpl(tryfirst=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Fold in what a finished worker declared (a crashed worker sends nothing: its tests' reports already
        carried their records)."""
        from harness.results.records import SuiteSummary

        sent = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY)
        if not isinstance(sent, dict):
            return
        for name, summary in sent.get("suites", {}).items():
            output.declare_suite(self.config, name, SuiteSummary.from_json(summary))
        gate.declare_aggregates(self.config, [(suite, metric) for suite, metric in sent.get("aggregates", [])])
        if sent.get("deselected"):
            gate.mark_narrowed(self.config)
        for message in sent.get("notes", []):
            output.note(self.config, message)
