"""What a run shows and writes: the ``fourbit summary`` at the end of the terminal output, ``--fourbit-json``,
``--fourbit-md`` (also appended to ``$GITHUB_STEP_SUMMARY``) and ``--fourbit-plots``.

Other plugins add one-line notes for the summary through :func:`note`; suites declare how their results are
summarised with ``pytestmark = pytest.mark.fourbit_summary(headline=(...), pair_matrix=...)``
(harness.results.records.SuiteSummary), which the result file keeps for ``fourbit report``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.pytest_plugin._options import add_option
from harness.pytest_plugin.selection import item_key, load_errors

if TYPE_CHECKING:
    from harness.report.model import Outcome, RunSummary
    from harness.results.records import OutcomeName, SuiteSummary

__all__ = ["declare_suite", "note", "notes", "reorder", "run_summary", "suite_summaries"]


@dataclass
class _OutputState:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    tests: dict[str, tuple[str, str]] = field(default_factory=dict)
    """node id -> (suite, test name) of every collected test: what a test about no implementation is about."""
    notes: list[str] = field(default_factory=list)
    suites: dict[str, SuiteSummary] = field(default_factory=dict)
    partial: Any = None
    """The result file's partial twin while the run goes (harness.results.files.PartialResults)."""


_STATE = pytest.StashKey[_OutputState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-output", "fourbit: reports")
    add_option(
        group,
        "--fourbit-json",
        repeat_in_reruns=False,
        default=None,
        metavar="PATH",
        help="write the run's results as JSON",
    )
    add_option(
        group,
        "--fourbit-md",
        repeat_in_reruns=False,
        default=None,
        metavar="PATH",
        help="write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when set)",
    )
    add_option(
        group,
        "--fourbit-plots",
        repeat_in_reruns=False,
        default=None,
        metavar="DIR",
        help="write PNG plots of the results into DIR",
    )


class _Outcomes:
    """Collects each test's outcome (harness.results.records.TestOutcome) with its node id and a short message,
    under its implementation and property (harness.pytest_plugin.selection) when it is about one; and a module that
    failed to collect, as an ``error``. A failure in setup or teardown is an ``error`` (unless the test itself
    already failed), a skip keeps its reason, a known failure (xfail) its reason."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and report.outcome == "passed":
            return
        outcomes = self.config.stash[_STATE].outcomes
        previous = outcomes.get(report.nodeid)
        if previous is not None and previous.failing:
            return  # a teardown after a failed call must not hide the failure
        if report.when != "call" and report.outcome == "skipped" and previous is not None:
            return
        name, message = _outcome_of(report)
        outcomes[report.nodeid] = self._outcome(report.nodeid, name, message)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.config.stash[_STATE].outcomes[report.nodeid] = self._outcome(
                report.nodeid, "error", _short("collection error: " + _crash_message(report))
            )

    def _outcome(self, nodeid: str, outcome: OutcomeName, message: str) -> Outcome:
        from harness.report.model import Outcome

        key = item_key(self.config, nodeid)
        if key is not None:
            implementation, prop, suite = key.implementation, key.prop, key.suite
        else:
            implementation, (suite, prop) = "", self.config.stash[_STATE].tests.get(nodeid) or _where(nodeid)
        return Outcome(implementation, prop, outcome, suite, nodeid=nodeid, message=message)


def _where(nodeid: str) -> tuple[str, str]:
    """(suite, test name) of a node id: the folder of its file and the test without its parameters."""
    path, _, rest = nodeid.partition("::")
    return Path(path).parent.name, rest.split("[", 1)[0]


_MESSAGE_LINES = 5


def _short(text: str) -> str:
    """The first lines of a message (harness.results.records.TestOutcome caps its length)."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return "\n".join(lines[:_MESSAGE_LINES]) + ("\n..." if len(lines) > _MESSAGE_LINES else "")


def _crash_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The failure's own message (a ``pytest.fail`` or an assertion's), else the last line of the report (a
    collection error's exception)."""
    own = getattr(report, _MESSAGE_ATTRIBUTE, None)
    if isinstance(own, str):
        return own
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if isinstance(message, str) and message.strip():
        return message
    text = report.longreprtext.strip()
    last = text.splitlines()[-1] if text else ""
    return last[2:].strip() if last.startswith("E ") else last  # pytest's "E   " marks an error line


_MESSAGE_ATTRIBUTE = "fourbit_message"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A property the harness found violated, or an implementation that raised, is reported as the harness's own
    message (implementation, property, input, index, value, got and expected) and hypothesis's falsifying
    example: the traceback through the harness's checks says nothing more, and hid the message in 40 lines.
    ``--tb=long`` (or any ``--tb`` other than the default) keeps pytest's traceback."""
    report = yield
    if report.when == "call" and report.failed and call.excinfo is not None and item.config.option.tbstyle == "auto":
        message = _harness_failure(call.excinfo.value)
        if message is not None:
            setattr(report, _MESSAGE_ATTRIBUTE, message)
            notes = [str(note) for note in getattr(call.excinfo.value, "__notes__", ())]
            report.longrepr = "\n".join([message, *notes])
    return report


def _harness_failure(exc: BaseException) -> str | None:
    """``Type: message`` of a failure the harness words itself, else None (pytest shows its traceback)."""
    from harness.checks import PropertyViolation
    from harness.errors import ImplementationError

    if isinstance(exc, (PropertyViolation, ImplementationError)):
        return f"{type(exc).__name__}: {exc}"
    return None


def _outcome_of(report: pytest.TestReport) -> tuple[OutcomeName, str]:
    """The outcome of one phase of a test (not a passing setup or teardown), and its message."""
    wasxfail = getattr(report, "wasxfail", None)
    if report.skipped and wasxfail is not None:
        return "xfailed", _short(wasxfail or _crash_message(report))
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext
        return "skipped", _short(str(reason).removeprefix("Skipped: "))
    if report.passed:
        return ("xpassed", _short(wasxfail)) if wasxfail is not None else ("passed", "")
    if report.when != "call":
        return "error", _short(f"error in {report.when}: {_crash_message(report)}")
    return "failed", _short(_crash_message(report))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _OutputState()
    config.pluginmanager.register(_Outcomes(config), "fourbit-outcomes")
    config.addinivalue_line(
        "markers",
        "fourbit_summary(headline=(metric, ...), pair_matrix=metric or (metric, ...)): how the end-of-run summary "
        "shows this suite's results (the metrics a wide suite shows in the terminal; metrics of pairs drawn as a "
        "matrix)",
    )


def note(config: pytest.Config, message: str) -> None:
    """A line for the end-of-run summary (each distinct line once)."""
    notes = config.stash[_STATE].notes
    if message not in notes:
        notes.append(message)


def notes(config: pytest.Config) -> list[str]:
    """The summary's notes so far."""
    return list(config.stash[_STATE].notes)


def suite_summaries(config: pytest.Config) -> dict[str, SuiteSummary]:
    """The suites' ``fourbit_summary`` declarations read at collection."""
    return dict(config.stash[_STATE].suites)


def declare_suite(config: pytest.Config, suite: str, summary: SuiteSummary) -> None:
    """A suite's declaration read elsewhere (by a pytest-xdist worker); the first one read stands."""
    config.stash[_STATE].suites.setdefault(suite, summary)


def reorder(config: pytest.Config, order: dict[str, int]) -> None:
    """List the tests' outcomes in ``order`` (node id -> position; unknown ones last, as they came)."""
    state = config.stash[_STATE]
    state.outcomes = dict(sorted(state.outcomes.items(), key=lambda item: order.get(item[0], len(order))))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Read each suite's ``fourbit_summary`` declaration (a bad one is a usage error naming the test), and remember
    the suite and name of every test (for the outcomes of tests about no implementation)."""
    from harness.errors import InvalidArgument
    from harness.results.records import SuiteSummary

    state = config.stash[_STATE]
    suites = state.suites
    for item in items:
        suite = item.path.parent.name
        state.tests[item.nodeid] = (suite, _where(item.nodeid)[1])
        marker = item.get_closest_marker("fourbit_summary")
        if marker is None or suite in suites:
            continue
        try:
            if marker.args:
                raise InvalidArgument(f"positional arguments {marker.args!r}, expected keywords")
            suites[suite] = SuiteSummary(**marker.kwargs)
        except (InvalidArgument, TypeError) as exc:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.fourbit_summary: {exc}; expected headline=(metric, ...), "
                "pair_matrix=metric or (metric, ...)"
            ) from None


def run_summary(config: pytest.Config) -> RunSummary:
    """Everything the end-of-run summary shows, as one record (harness.report.model.RunSummary)."""
    from harness.pytest_plugin.gate import run_results
    from harness.report.model import RunSummary

    state = config.stash[_STATE]
    return RunSummary(
        outcomes=list(state.outcomes.values()),
        results=run_results(config),
        load_errors=load_errors(config),
        suites=dict(state.suites),
    )


_OUTPUT_OPTIONS = (("fourbit_json", "--fourbit-json", False), ("fourbit_md", "--fourbit-md", False))
_FOLDER_OPTIONS = (("fourbit_plots", "--fourbit-plots", True),)


def pytest_sessionstart(session: pytest.Session) -> None:
    """An output that cannot be written (a folder given as the file, a path under a file, a read-only folder) is
    a usage error before any test runs, not a traceback at the end."""
    from harness._validation import why_not_writable
    from harness.pytest_plugin.distributed import is_worker

    config = session.config
    if is_worker(config):
        return
    for dest, flag, folder in _OUTPUT_OPTIONS + _FOLDER_OPTIONS:
        path = config.getoption(dest)
        problem = why_not_writable(path, folder=folder) if path else None
        if problem:
            kind = "a folder" if folder else "a file"
            raise pytest.UsageError(f"{flag} {path}: {problem}; expected {kind} this run can write")
    json_path = config.getoption("fourbit_json")
    if json_path:
        from harness.results.environment import environment_fingerprint
        from harness.results.files import PartialResults

        partial = PartialResults(json_path, environment_fingerprint())
        config.stash[_STATE].partial = partial
        config.pluginmanager.register(_FinishedTests(config, partial), "fourbit-finished-tests")


class _FinishedTests:
    """Appends each test to the result file's partial twin when its last report is in (harness.results.files
    .PartialResults), so a killed run leaves the tests it finished."""

    def __init__(self, config: pytest.Config, partial: Any) -> None:
        self.config = config
        self.partial = partial

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        from harness.pytest_plugin.gate import item_results

        outcome = self.config.stash[_STATE].outcomes.get(report.nodeid)
        self.partial.add(outcome, item_results(self.config, report.nodeid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the files the run was asked for (after the record gate formed the run's last results): each one that
    can be written is, whatever happens to the others; one that cannot is a line in the summary and fails the
    run (what it was asked to keep is not there)."""
    from harness.pytest_plugin.distributed import is_worker

    config = session.config
    if is_worker(config):
        return  # the controller writes the files, from what every worker sent
    summary = run_summary(config)
    failures: list[str] = []
    for what, write in _writers(config, summary):
        try:
            written = write()
        except OSError as exc:
            failures.append(what)
            note(config, f"{what}: not written ({exc.strerror or exc})")
        else:
            if written:
                note(config, written)
    partial = config.stash[_STATE].partial
    if partial is not None:
        json_written = not any(what.startswith("--fourbit-json") for what in failures)
        partial.close(remove=json_written)  # kept when the result file could not be written: what finished
    if failures and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _writers(config: pytest.Config, summary: RunSummary) -> list[tuple[str, Callable[[], str]]]:
    """(what, write) for each file the run was asked for; ``write`` returns its summary line."""
    from harness.report.markdown import render_markdown

    writers: list[tuple[str, Callable[[], str]]] = []
    json_path = config.getoption("fourbit_json")
    if json_path:

        def write_json() -> str:
            from harness.results.environment import environment_fingerprint
            from harness.results.files import save_results

            save_results(
                json_path, summary.results, environment_fingerprint(), suites=summary.suites, outcomes=summary.outcomes
            )
            return f"results: {json_path}"

        writers.append((f"--fourbit-json {json_path}", write_json))
    md_path = config.getoption("fourbit_md")
    if md_path:

        def write_md() -> str:
            Path(md_path).parent.mkdir(parents=True, exist_ok=True)
            Path(md_path).write_text(render_markdown(summary), encoding="utf-8")
            return f"markdown summary: {md_path}"

        writers.append((f"--fourbit-md {md_path}", write_md))
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:

        def append_step_summary() -> str:
            with open(step_summary, "a", encoding="utf-8") as handle:
                handle.write(render_markdown(summary))
            return ""

        writers.append((f"$GITHUB_STEP_SUMMARY {step_summary}", append_step_summary))
    plots_dir = config.getoption("fourbit_plots")
    if plots_dir:

        def write_plots() -> str:
            from harness.report.plots import write_plots as draw

            written = draw(summary.results, Path(plots_dir))
            return f"plots: {', '.join(str(p) for p in written) or 'none (no plottable results)'}"

        writers.append((f"--fourbit-plots {plots_dir}", write_plots))
    return writers


NOT_GATED_STAT = "metric(s) not gated"
"""What pytest's closing line calls the recorded metrics no baseline judged (new or inconclusive)."""


class _NotGated:
    """A stand-in counted by pytest's closing line (it counts the entries of each key of its stats)."""

    count_towards_summary = True


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from harness.pytest_plugin.distributed import is_worker

    if is_worker(config):
        return
    summary = run_summary(config)
    if not (summary.property_outcomes or summary.results or summary.load_errors):
        return
    ungated = sum(1 for result in summary.results if result.verdict in ("new", "inconclusive"))
    if ungated:
        # pytest's last line counts every key of its stats: "58 passed, 30 metric(s) not gated in 6.1s" (in yellow)
        terminalreporter.stats.setdefault(NOT_GATED_STAT, []).extend([_NotGated()] * ungated)
    from rich.console import Console

    from harness.report.terminal import render_run

    buffer = io.StringIO()
    markup = bool(terminalreporter.hasmarkup)
    console = Console(
        file=buffer,
        width=max(terminalreporter._tw.fullwidth, 120),
        force_terminal=markup,
        color_system="standard" if markup else None,
        highlight=False,
    )
    console.print(render_run(summary))
    for message in config.stash[_STATE].notes:
        console.print(message, markup=False)
    terminalreporter.section("fourbit summary", sep="=")
    terminalreporter.write(buffer.getvalue())
