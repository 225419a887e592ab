"""A fault of a quantizer stays in that quantizer's tests: the other implementations' tests still run, their
results are saved and reported.

* **Hangs.** Every test about an implementation (or recording a metric) runs under a time limit, through
  pytest-timeout: ``--fourbit-timeout SECONDS`` (``fourbit run --timeout``; 0: none), else a default per suite
  (:data:`SUITE_TIMEOUTS`). A test's own ``@pytest.mark.timeout`` is kept, and so is pytest-timeout's own
  ``--timeout`` / ``timeout`` ini / ``PYTEST_TIMEOUT`` when given without ``--fourbit-timeout``. With the signal
  method (the default on POSIX) the limit raises :class:`TimeLimitExceeded` inside the test, and again every few
  seconds until the test ends: a BaseException, so that hypothesis does not take it for a failing example and
  call the hanging code again to shrink it (it does so with pytest-timeout's own ``pytest.fail``).
* **KeyboardInterrupt or SystemExit raised by the code under test** fail that test (naming the exception and the
  implementation) instead of stopping the session. A real Ctrl-C still stops the run: a SIGINT handler installed
  for the session records that the signal arrived before raising KeyboardInterrupt as Python's does.
* **What only another process can see** (the process ended by ``os._exit``, a crash, or a hang in native code
  that no signal interrupts): under ``fourbit run``, which runs pytest in a child process and names a folder in
  ``$FOURBIT_RUN_STATE``, this plugin keeps :class:`RunState` files there: that the session started and finished,
  the test running now (with its time limit) and the reports and results of every test done. ``fourbit run``
  (harness.cli) exits 3 naming the implementation when the session did not finish, and when a test outlives its
  limit it ends the process and starts a fresh one, which replays the tests already done (their reports and
  results, so the summary and the result file are the whole run's), fails the test it ended and runs the rest.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from harness.pytest_plugin._options import add_option

__all__ = [
    "DEFAULT_TIMEOUT",
    "STATE_ENV",
    "SUITE_TIMEOUTS",
    "RunState",
    "RunningTest",
    "TimeLimitExceeded",
    "grace_seconds",
]

SUITE_TIMEOUTS: dict[str, float] = {"properties": 120.0, "agreement": 90.0, "kernels": 300.0, "accuracy": 3600.0}
"""Default time limit of one test, by suite (seconds), from the slowest test of each suite measured on a 2-core CPU
machine shared with other jobs (torch 2.13 CPU, bitsandbytes 0.50.2, torchao 0.18): properties 5.3 s
(bnb-nf4's first test, which pays the library's warm-up) and 47 s with ``--hypothesis-profile fourbit-thorough``;
agreement 8.7 s; kernels 9.9 s, plus a fresh-process re-run of a timing (about 30 s) when one is needed; accuracy
1265 s (the first CoQA test of a 4-bit implementation, which also evaluates the fp32 reference: two full CoQA runs
of SmolLM2-135M). That leaves 2.5x (accuracy, thorough properties) to 10x and more for slower or busier machines;
``--fourbit-timeout`` changes them all."""

DEFAULT_TIMEOUT = 300.0
"""Time limit of a test about an implementation outside the four suites (a project's own tests, of unknown cost)."""

STATE_ENV = "FOURBIT_RUN_STATE"
"""Names the folder of :class:`RunState` files (set by ``fourbit run`` for its child process only; the plugin
takes it out of the environment, so processes the run starts, such as fresh-process re-runs, do not write it)."""


class TimeLimitExceeded(BaseException):
    """Raised inside a test that ran past its time limit. A BaseException: code under test that catches Exception
    does not swallow it, and hypothesis does not retry the hanging code (it retries on Exception and pytest.fail)."""


def grace_seconds(timeout: float) -> float:
    """How long past its limit a test may take to stop before ``fourbit run`` ends its process: the limit raises
    inside the test at once, unless the process is stuck where no Python code runs (a native call)."""
    return max(2.0, min(30.0, timeout / 2))


# ------------------------------------------------------------------------------------------- run state files


@dataclass(frozen=True)
class RunningTest:
    """The test a pytest process under ``fourbit run`` is running: its node id, its implementation ("" for a
    test about none), its time limit (None: none) and when it started (``time.time()``)."""

    nodeid: str
    implementation: str
    timeout: float | None
    started: float

    def overdue(self, now: float) -> bool:
        """Whether the test has outlived its limit and the grace after it (see :func:`grace_seconds`)."""
        return self.timeout is not None and now > self.started + self.timeout + grace_seconds(self.timeout)

    def describe(self) -> str:
        """``NODEID (implementation NAME)``, for a one-line message."""
        return f"{self.nodeid} (implementation {self.implementation})" if self.implementation else self.nodeid


@dataclass(frozen=True)
class DoneTest:
    """A test a previous process of the same ``fourbit run`` finished: its reports (pytest's serializable form)
    and what it recorded (harness.results.records.Result.as_json)."""

    nodeid: str
    reports: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)


class RunState:
    """The folder ``fourbit run`` shares with its pytest process. The process writes ``started`` (configured),
    ``current.json`` (the test running now, or none), a line of ``done.jsonl`` per finished test, ``interrupted``
    (a SIGINT arrived) and ``finished`` (after the end-of-run summary and files). ``fourbit run`` writes a line of
    ``ended.jsonl`` per test whose process it ended; it keeps ``done.jsonl`` and ``ended.jsonl`` from one process
    to the next and clears the rest (:meth:`new_process`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    # -- the pytest process

    def mark_started(self) -> None:
        (self.folder / "started").touch()

    def mark_running(self, test: RunningTest | None) -> None:
        """The test running now (None: between tests), replaced atomically so a reader never sees half of it."""
        partial = self.folder / "current.json.partial"
        partial.write_text(json.dumps(asdict(test) if test is not None else None), encoding="utf-8")
        os.replace(partial, self.folder / "current.json")

    def add_done(self, done: DoneTest) -> None:
        """One line per finished test; written (and closed) as soon as the test ends, so it survives a kill."""
        line = json.dumps(asdict(done), default=repr)
        with open(self.folder / "done.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def mark_interrupted(self) -> None:
        (self.folder / "interrupted").touch()

    def mark_finished(self, exitstatus: int | None) -> None:
        """The session ended and wrote its summary and files; its exit status, for a process that then does not
        exit (a thread left running)."""
        (self.folder / "finished").write_text("" if exitstatus is None else str(exitstatus), encoding="utf-8")

    def done_tests(self) -> dict[str, DoneTest]:
        """The tests earlier processes finished, by node id (a line cut short by a kill is left out)."""
        return {
            record["nodeid"]: DoneTest(record["nodeid"], record.get("reports", []), record.get("results", []))
            for record in self._lines("done.jsonl")
        }

    def ended_tests(self) -> dict[str, str]:
        """The tests ``fourbit run`` ended the process of, by node id: the failure message of each."""
        return {record["nodeid"]: str(record["message"]) for record in self._lines("ended.jsonl")}

    # -- fourbit run

    def new_process(self) -> None:
        """Clear what describes one process (keeping the tests done and ended), before starting the next."""
        for name in ("started", "current.json", "interrupted", "finished"):
            (self.folder / name).unlink(missing_ok=True)

    def started(self) -> bool:
        return (self.folder / "started").exists()

    def interrupted(self) -> bool:
        return (self.folder / "interrupted").exists()

    def finished(self) -> bool:
        return (self.folder / "finished").exists()

    def finished_status(self) -> int | None:
        """The exit status the finished session recorded (None: none recorded)."""
        try:
            return int((self.folder / "finished").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def running(self) -> RunningTest | None:
        """The test the process is running, or None (between tests, or no test started yet)."""
        try:
            record = json.loads((self.folder / "current.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return RunningTest(**record) if isinstance(record, dict) else None

    def add_ended(self, test: RunningTest, message: str) -> None:
        with open(self.folder / "ended.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"nodeid": test.nodeid, "message": message}) + "\n")

    def _lines(self, name: str) -> Iterator[dict[str, Any]]:
        try:
            text = (self.folder / name).read_text(encoding="utf-8")
        except OSError:
            return
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("nodeid"), str):
                yield record


# ------------------------------------------------------------------------------------------------- the plugin


@dataclass
class _FaultState:
    exitstatus: int | None = None
    sigint_watched: bool = False
    """Whether this session's SIGINT handler is installed (else a KeyboardInterrupt cannot be told apart)."""
    sigterm_watched: bool = False
    """Whether SIGTERM ends the run as Ctrl-C does (installed where SIGTERM had its default action)."""
    signal_received: bool = False
    previous_handler: Any = None
    run_state: RunState | None = None


_STATE = pytest.StashKey[_FaultState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-faults", "fourbit: faults of an implementation")
    suites = ", ".join(f"{suite} {seconds:g}" for suite, seconds in SUITE_TIMEOUTS.items())
    add_option(
        group,
        "--fourbit-timeout",
        repeat_in_reruns=True,  # a fresh-process re-run of a test is held to the same limit
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"time limit of each test about an implementation; a test past it fails and the run goes on (0: no "
        f"limit; default by suite: {suites}, other tests {DEFAULT_TIMEOUT:g}; a test's own timeout marker is kept)",
    )


def pytest_configure(config: pytest.Config) -> None:
    timeout = config.getoption("fourbit_timeout")
    if timeout is not None and timeout < 0:
        raise pytest.UsageError(f"--fourbit-timeout={timeout:g}, expected 0 (no limit) or more seconds")
    state = _FaultState()
    config.stash[_STATE] = state
    folder = os.environ.pop(STATE_ENV, None)
    if folder and not hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller keeps the state
        state.run_state = RunState(Path(folder))
        state.run_state.mark_started()
        config.pluginmanager.register(_StateKeeper(config, state.run_state), "fourbit-run-state")
        done, ended = state.run_state.done_tests(), state.run_state.ended_tests()
        if done or ended:
            config.pluginmanager.register(_Replay(config, done, ended), "fourbit-run-replay")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    _restore_signal_handlers(state)
    if state.run_state is not None:
        state.run_state.mark_finished(state.exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_STATE].exitstatus = int(exitstatus)


# ---------------------------------------------------------------------------------------------- time limits


def _timeout_plugin(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("timeout")


def _user_timeout(config: pytest.Config) -> float | None:
    """pytest-timeout's own setting, when the user gave one: ``--timeout``, ``$PYTEST_TIMEOUT``, ini ``timeout``."""
    for value in (config.getoption("timeout", None), os.environ.get("PYTEST_TIMEOUT"), config.getini("timeout")):
        if value not in (None, ""):
            return float(value)
    return None


def _about_an_implementation(config: pytest.Config, item: pytest.Item) -> bool:
    from harness.pytest_plugin.selection import item_key

    return item_key(config, item.nodeid) is not None or "record" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after harness.pytest_plugin.selection knows what each test is about
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test about an implementation that has no timeout marker of its own the run's limit: --fourbit-timeout,
    else pytest-timeout's own setting (left to pytest-timeout), else its suite's default."""
    if not _timeout_plugin(config):
        return
    chosen = config.getoption("fourbit_timeout")
    if chosen is None and _user_timeout(config) is not None:
        return
    for item in items:
        if item.get_closest_marker("timeout") is not None or not _about_an_implementation(config, item):
            continue
        seconds = chosen if chosen is not None else SUITE_TIMEOUTS.get(item.path.parent.name, DEFAULT_TIMEOUT)
        item.add_marker(pytest.mark.timeout(seconds))


def _time_limit(item: pytest.Item) -> float | None:
    """The limit pytest-timeout applies to ``item`` (None: none)."""
    if not _timeout_plugin(item.config):
        return None
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = _user_timeout(item.config)
    seconds = float(value) if value is not None else 0.0
    return seconds if seconds > 0 else None


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # pytest-timeout's hook: unknown when it is disabled
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's signal method for a test about an implementation, raising :class:`TimeLimitExceeded`
    (which names the implementation) instead of ``pytest.fail`` (which hypothesis catches, then calls the hanging
    code again). Other tests, other methods, and threads other than the main one are left to pytest-timeout."""
    if (
        settings.method != "signal"
        or threading.current_thread() is not threading.main_thread()
        or not _about_an_implementation(item.config, item)
    ):
        return None
    from pytest_timeout import is_debugging

    message = f"Timeout: {_subject(item)} ran past its time limit of {settings.timeout:g} s"

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        if not settings.disable_debugger_detection and is_debugging():
            return
        raise TimeLimitExceeded(message)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's cancel hook calls it
    signal.signal(signal.SIGALRM, on_alarm)
    # raised again until the test ends, should code under test (or a library around it) swallow the first
    signal.setitimer(signal.ITIMER_REAL, settings.timeout, max(0.5, min(5.0, settings.timeout / 4)))
    return True


def _subject(item: pytest.Item) -> str:
    """``the test of implementation NAME``, or ``the test`` for a test about none."""
    from harness.pytest_plugin.selection import item_key

    key = item_key(item.config, item.nodeid)
    return f"the test of implementation {key.implementation!r}" if key is not None else "the test"


# ------------------------------------------------------------------------- KeyboardInterrupt and SystemExit


def pytest_sessionstart(session: pytest.Session) -> None:
    """Watch SIGINT, so that a KeyboardInterrupt can be told apart: from Ctrl-C, or raised by the code under test.
    Left alone when SIGINT is ignored or this is not the main thread (a KeyboardInterrupt then stops the run)."""
    state = session.config.stash[_STATE]
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN, SIG_DFL, or set outside Python
        return

    def on_sigint(signum: int, frame: FrameType | None) -> Any:
        state.signal_received = True
        if state.run_state is not None:
            state.run_state.mark_interrupted()
        return previous(signum, frame)  # Python's own handler raises KeyboardInterrupt

    state.previous_handler = previous
    signal.signal(signal.SIGINT, on_sigint)
    state.sigint_watched = True
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:

        def on_sigterm(signum: int, frame: FrameType | None) -> Any:
            """SIGTERM (what CI time limits send) ends the run as Ctrl-C does: the tests done so far are
            summarised and written, instead of the process vanishing with nothing."""
            state.signal_received = True
            if state.run_state is not None:
                state.run_state.mark_interrupted()
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, on_sigterm)
        state.sigterm_watched = True


def _restore_signal_handlers(state: _FaultState) -> None:
    if state.sigint_watched and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, state.previous_handler)
        state.sigint_watched = False
    if state.sigterm_watched and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        state.sigterm_watched = False


def _own_failure(item: pytest.Item, when: str) -> Generator[None, Any, Any]:
    """Around one phase of a test: a KeyboardInterrupt or SystemExit with no SIGINT behind it becomes the test's
    failure, naming the exception and the implementation, and the session goes on."""
    try:
        return (yield)
    except (KeyboardInterrupt, SystemExit) as exc:
        __tracebackhide__ = True
        state = item.config.stash[_STATE]
        if state.signal_received or (isinstance(exc, KeyboardInterrupt) and not state.sigint_watched):
            raise
        raised = f"{type(exc).__name__}({', '.join(map(repr, exc.args))})"
        cause = "no SIGINT arrived" if isinstance(exc, KeyboardInterrupt) else "a plugin asked to exit"
        raise pytest.fail.Exception(
            f"{raised} raised in the {when} of {_subject(item)} ({cause}): it fails this test, the run goes on"
        ) from exc


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _own_failure(item, "setup"))


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    return (yield from _own_failure(item, "call"))


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    return (yield from _own_failure(item, "teardown"))


# -------------------------------------------------------------------------------- the run state, kept and replayed


def _implementation(config: pytest.Config, nodeid: str) -> str:
    from harness.pytest_plugin.selection import item_key

    key = item_key(config, nodeid)
    return key.implementation if key is not None else ""


class _StateKeeper:
    """Under ``fourbit run``: the test running now, and each finished test's reports and recorded results."""

    def __init__(self, config: pytest.Config, run_state: RunState) -> None:
        self.config = config
        self.run_state = run_state
        self.reports: list[dict[str, Any]] = []
        self.running: str | None = None
        """The test this process runs now (a pytest-xdist controller runs none: its workers' reports pass by)."""
        self.replayed: set[str] = set()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
        if item.nodeid in self.replayed:
            return (yield)
        running = RunningTest(item.nodeid, _implementation(self.config, item.nodeid), _time_limit(item), time.time())
        self.run_state.mark_running(running)
        self.running, self.reports = item.nodeid, []
        try:
            return (yield)
        finally:
            from harness.pytest_plugin import gate

            results = [result.as_json() for result in gate.item_results(self.config, item.nodeid)]
            self.run_state.add_done(DoneTest(item.nodeid, self.reports, results))
            self.run_state.mark_running(None)
            self.running, self.reports = None, []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid != self.running:
            return
        serialized = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        if serialized is not None:
            self.reports.append(serialized)


class _Replay:
    """Under ``fourbit run``, in a process started after one was ended: the tests done before are not run again,
    their reports and results are replayed in their place (so the summary, the counts and the files are the whole
    run's), and a test whose process was ended is reported failed with the reason."""

    def __init__(self, config: pytest.Config, done: dict[str, DoneTest], ended: dict[str, str]) -> None:
        self.config = config
        self.done = done
        self.ended = ended
        keeper = config.pluginmanager.get_plugin("fourbit-run-state")
        if isinstance(keeper, _StateKeeper):
            keeper.replayed.update(done, ended)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if item.nodeid in self.done:
            reports = [self._report(data) for data in self.done[item.nodeid].reports]
            self._restore_results(item, self.done[item.nodeid].results)
        elif item.nodeid in self.ended:
            reports = _ended_reports(item, self.ended[item.nodeid])
        else:
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _report(self, data: dict[str, Any]) -> pytest.TestReport:
        return self.config.hook.pytest_report_from_serializable(config=self.config, data=data)

    def _restore_results(self, item: pytest.Item, records: list[dict[str, Any]]) -> None:
        from harness.pytest_plugin import gate
        from harness.results.records import Result

        gate.replace_item_results(self.config, item.nodeid, [Result.from_json(record) for record in records])


def _ended_reports(item: pytest.Item, message: str) -> list[pytest.TestReport]:
    """The reports of a test whose process ``fourbit run`` ended: set up, failed with ``message``, torn down."""
    keywords: dict[str, Any] = {name: 1 for name in item.keywords}
    return [
        pytest.TestReport(item.nodeid, item.location, keywords, "passed", None, "setup"),
        pytest.TestReport(item.nodeid, item.location, keywords, "failed", message, "call"),
        pytest.TestReport(item.nodeid, item.location, keywords, "passed", None, "teardown"),
    ]
