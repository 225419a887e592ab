"""A fault of a quantizer stays in its own tests (harness.pytest_plugin.faults, and ``fourbit run``'s child process
in harness.cli): a hang, ``os._exit``, a KeyboardInterrupt or SystemExit raised inside ``quantize``; while a real
Ctrl-C still stops the run.

Each run is the properties suite's ``test_exact_zero`` for float32 only, over ref-int4, one faulty implementation
and ``good-after`` (ref-int4 under another name, registered after the faulty one, so it runs after it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.pytest_plugin.faults import DEFAULT_TIMEOUT, SUITE_TIMEOUTS
from harness.results.files import load_run
from harness.results.records import TestOutcome

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "suites"
ONE_TEST = ["-q", "-p", "no:cacheprovider", "-k", "exact_zero and float32"]
LIMIT = "5"
"""The time limit the hang tests set (seconds): a healthy test here takes well under a second, but the first of a
run pays torch's warm-up, and a 2-core machine shared with other jobs once took over 2 s for it."""

FAULTY = """
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

from harness import ReferenceQuantizer


class Faulty(ReferenceQuantizer):
    def __init__(self, name, fault):
        super().__init__("int4", name=name)
        self.fault = fault

    def quantize(self, x):
        self.fault()
        return super().quantize(x)


def _hang():
    while True:
        time.sleep(0.05)


def _native_hang():
    # where no Python code runs: the time limit's SIGALRM never reaches this thread, and the native call
    # does not return to the interpreter
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    ctypes.CDLL(None).sleep(3600)


def _exit():
    os._exit(0)


def _keyboard_interrupt():
    raise KeyboardInterrupt


def _system_exit():
    sys.exit(3)


def _wait_for_ctrl_c():
    Path(os.environ["FOURBIT_TEST_MARKER"]).touch()
    time.sleep(120)


def hang():
    return Faulty("bad-hang", _hang)


def native_hang():
    return Faulty("bad-native-hang", _native_hang)


def exiting():
    return Faulty("bad-exit", _exit)


def interrupting():
    return [Faulty("bad-keyboard-interrupt", _keyboard_interrupt), Faulty("bad-system-exit", _system_exit)]


def waiting():
    return Faulty("bad-waiting", _wait_for_ctrl_c)


def good_after():
    return ReferenceQuantizer("int4", name="good-after")
"""


@pytest.fixture
def faulty(tmp_path: Path) -> Path:
    path = tmp_path / "faulty_quantizers.py"
    path.write_text(FAULTY, encoding="utf-8")
    return path


def _selection(faulty: Path, attr: str, implementations: list[str]) -> list[str]:
    """``--quantizer`` and ``--impl`` for ref-int4, ``faulty:attr`` (providing ``implementations``) and good-after."""
    selected = [argument for name in ["ref-int4", *implementations, "good-after"] for argument in ("--impl", name)]
    return ["--quantizer", f"{faulty}:{attr}", "--quantizer", f"{faulty}:good_after", *selected]


def _run_arguments(faulty: Path, attr: str, implementations: list[str], results: Path) -> list[str]:
    """``fourbit run properties`` over :func:`_selection`, writing ``results`` (without the installed plugins, whose
    libraries take seconds to import)."""
    return [
        "run", "properties", "--suites-dir", str(SUITES), *_selection(faulty, attr, implementations),
        "--no-entry-points", "--json", str(results),
    ]  # fmt: skip


def _outcomes(results: Path) -> dict[str, TestOutcome]:
    """The saved run's outcomes, by implementation (one test each here)."""
    return {outcome.implementation: outcome for outcome in load_run(results).outcomes}


def _fourbit_errors(err: str) -> list[str]:
    """The CLI's own error lines (the child's warnings share stderr)."""
    return [line for line in err.splitlines() if line.startswith("fourbit: error:")]


# ---------------------------------------------------------------------------------------------------- hangs


def test_a_hanging_quantize_fails_its_own_test_and_the_run_goes_on(
    faulty: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A hang in Python: the time limit (fourbit run --timeout 2) raises inside the test; that implementation's
    test fails, the next implementation still runs, the summary is printed and the result file is written."""
    results = tmp_path / "results.json"
    arguments = _run_arguments(faulty, "hang", ["bad-hang"], results)
    assert main([*arguments, "--timeout", LIMIT, "--", *ONE_TEST]) == 1
    out, err = capfd.readouterr()
    outcomes = _outcomes(results)
    assert {name: o.outcome for name, o in outcomes.items()} == {
        "ref-int4": "passed",
        "bad-hang": "failed",
        "good-after": "passed",
    }
    assert "'bad-hang' ran past its time limit of 5 s" in outcomes["bad-hang"].message
    assert "fourbit summary" in out and "1 failed, 2 passed" in out
    assert not _fourbit_errors(err)


@pytest.mark.slow
def test_a_hang_in_native_code_ends_its_process_and_the_run_goes_on_in_a_fresh_one(
    faulty: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A hang where the limit's signal never reaches Python (a native call): fourbit run ends the process after
    the limit and its grace, and a fresh one replays the test done, fails the hung one and runs the rest."""
    results = tmp_path / "results.json"
    arguments = _run_arguments(faulty, "native_hang", ["bad-native-hang"], results)
    assert main([*arguments, "--timeout", LIMIT, "--", *ONE_TEST]) == 1
    out, err = capfd.readouterr()
    outcomes = _outcomes(results)
    assert {name: o.outcome for name, o in outcomes.items()} == {
        "ref-int4": "passed",
        "bad-native-hang": "failed",
        "good-after": "passed",
    }
    assert "did not stop" in outcomes["bad-native-hang"].message
    assert "its process was ended, the remaining tests go on in a fresh one" in err
    assert "fourbit summary" in out and "1 failed, 2 passed" in out


DRAWN_INPUTS_TEST = """
import torch
from hypothesis import given, settings, strategies as st


def test_drawn_inputs(quantizer):
    @settings(max_examples=5, deadline=None, database=None)
    @given(st.integers(1, 4))
    def check(rows):
        quantizer.quantize(torch.ones(rows, 64))

    check()
"""


@pytest.mark.timeout(120, method="thread")  # should the hang come back, this process ends instead of hanging
def test_a_hang_on_a_hypothesis_drawn_input_is_not_called_again(faulty: Path, inner_pytest: pytest.Pytester) -> None:
    """The limit raises a BaseException, which hypothesis does not take for a failing example: with pytest-timeout's
    own pytest.fail it would call the hanging code again to shrink the example, and hang for good."""
    inner_pytest.makepyfile(test_drawn=DRAWN_INPUTS_TEST)
    arguments = ["--quantizer", f"{faulty}:hang", "--impl", "bad-hang", "--fourbit-no-entry-points"]
    started = time.monotonic()
    result = inner_pytest.runpytest("test_drawn.py", *arguments, "--fourbit-timeout", "1", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TimeLimitExceeded: Timeout: the test of implementation 'bad-hang' ran past its*"])
    assert time.monotonic() - started < 30


def test_each_test_about_an_implementation_gets_its_suites_time_limit(inner_pytest: pytest.Pytester) -> None:
    """Default by suite; --fourbit-timeout for every test about an implementation (0: none); a test's own marker
    and tests about no implementation are left alone; pytest-timeout's own --timeout is left to it."""
    inner_pytest.makepyfile(
        test_local="""
        import pytest

        def test_about(quantizer):
            pass

        @pytest.mark.timeout(123)
        def test_marked(quantizer):
            pass

        def test_plain():
            pass
        """
    )

    def limits(*arguments: str) -> dict[str, object]:
        items, _ = inner_pytest.inline_genitems(*arguments, "--impl", "ref-int4", "-p", "no:cacheprovider")
        return {
            item.name: (marker.args[0] if (marker := item.get_closest_marker("timeout")) else None) for item in items
        }

    codebook = str(SUITES / "properties" / "test_codebook.py")
    assert limits(codebook) == {"test_codebook[ref-int4]": SUITE_TIMEOUTS["properties"]}
    local = {"test_about[ref-int4]": DEFAULT_TIMEOUT, "test_marked[ref-int4]": 123, "test_plain": None}
    assert limits("test_local.py") == local
    assert limits("test_local.py", "--fourbit-timeout", "0") == {**local, "test_about[ref-int4]": 0.0}
    assert limits("test_local.py", "--timeout", "7") == {**local, "test_about[ref-int4]": None}


# ------------------------------------------------------------------------------------------ ending the process


def test_os_exit_in_quantize_is_exit_3_naming_the_implementation(
    faulty: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """os._exit(0) inside quantize ends the pytest process with status 0 and no summary: fourbit run does not
    take that for a pass, it exits 3 with one line naming the test and the implementation."""
    results = tmp_path / "results.json"
    assert main([*_run_arguments(faulty, "exiting", ["bad-exit"], results), "--", *ONE_TEST]) == 3
    out, err = capfd.readouterr()
    (line,) = _fourbit_errors(err)
    assert "exited with status 0 during" in line
    assert "test_exact_zero[bad-exit-float32] (implementation bad-exit)" in line
    assert "fourbit summary" not in out and not results.exists()


# ------------------------------------------------------------------------------ KeyboardInterrupt, SystemExit


def test_keyboard_interrupt_and_system_exit_in_quantize_fail_only_that_implementation(
    faulty: Path, inner_pytest: pytest.Pytester, tmp_path: Path
) -> None:
    """Raised inside quantize with no SIGINT behind them, they fail that implementation's test (naming the
    exception and the implementation) and the implementations after it still run; plain pytest, in process."""
    results = tmp_path / "results.json"
    selection = _selection(faulty, "interrupting", ["bad-keyboard-interrupt", "bad-system-exit"])
    result = inner_pytest.runpytest(
        str(SUITES / "properties"), *selection, "--fourbit-no-entry-points", "--fourbit-json", str(results), *ONE_TEST
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = _outcomes(results)
    assert {name: o.outcome for name, o in outcomes.items()} == {
        "ref-int4": "passed",
        "bad-keyboard-interrupt": "failed",
        "bad-system-exit": "failed",
        "good-after": "passed",
    }
    assert "KeyboardInterrupt() raised in the call of the test of implementation 'bad-keyboard-interrupt'" in (
        outcomes["bad-keyboard-interrupt"].message
    )
    assert "SystemExit(3) raised in the call of the test of implementation 'bad-system-exit'" in (
        outcomes["bad-system-exit"].message
    )


@pytest.mark.slow
@pytest.mark.parametrize("to", ["process group", "fourbit only"])
def test_a_real_ctrl_c_still_stops_the_run(faulty: Path, tmp_path: Path, to: str) -> None:
    """SIGINT while bad-waiting's quantize sleeps: to the process group (a terminal's Ctrl-C reaches fourbit
    and pytest), or to the fourbit process only (it passes it on). The run stops: good-after never runs, the
    session still ends with its summary and result file, and the exit status is not 0."""
    results = tmp_path / "results.json"
    marker = tmp_path / "waiting"
    command = [sys.executable, "-m", "harness.cli", *_run_arguments(faulty, "waiting", ["bad-waiting"], results)]
    environment = {**os.environ, "FOURBIT_TEST_MARKER": str(marker), "COLUMNS": "200"}
    process = subprocess.Popen(
        [*command, "--", *ONE_TEST],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored, even under a shell's `&`
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert process.poll() is None and time.monotonic() < deadline, "bad-waiting's quantize never ran"
            time.sleep(0.1)
        time.sleep(0.5)  # inside time.sleep
        sent = time.monotonic()
        if to == "process group":
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert time.monotonic() - sent < 60, "the run went on after Ctrl-C"
    assert process.returncode == 1, output
    assert "KeyboardInterrupt" in output and "fourbit summary" in output
    outcomes = _outcomes(results)
    assert outcomes["ref-int4"].outcome == "passed"
    assert "good-after" not in outcomes and "bad-waiting" not in outcomes
