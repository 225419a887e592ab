"""A saved run keeps what the run decided: each test's outcome, node id and short message are recorded by the plugin
(harness.pytest_plugin.output), stored in the result file, listed first by ``fourbit report`` (which exits 1 when a
test failed), and compared per property by ``fourbit compare`` (harness.results.compare.compare_outcomes)."""

from __future__ import annotations

import textwrap

import pytest

from harness.cli import main
from harness.errors import InvalidArgument
from harness.report.model import Outcome, RunSummary
from harness.results.compare import OutcomeChange, compare_outcomes, shared_keys
from harness.results.files import load_run
from harness.results.records import MESSAGE_LIMIT, Result, TestOutcome, fold_outcomes

pytest_plugins = ["pytester"]

# ------------------------------------------------------------------------------------------ the record


def test_the_report_s_outcome_is_the_result_file_s_record() -> None:
    assert Outcome is TestOutcome  # defined once
    outcome = Outcome("ref-nf4", "exact_zero", "passed", "properties")  # the report's positional fields
    assert (outcome.nodeid, outcome.message, outcome.key) == ("", "", ("properties", "ref-nf4", "exact_zero"))


def test_an_outcome_round_trips_through_its_json_record() -> None:
    outcome = TestOutcome("a", "p", "failed", "s", nodeid="s/test_x.py::test_p[a]", message="Failed: why")
    record = outcome.as_json()
    assert record == {
        "nodeid": "s/test_x.py::test_p[a]",
        "suite": "s",
        "implementation": "a",
        "property": "p",
        "outcome": "failed",
        "message": "Failed: why",
    }
    assert TestOutcome.from_json(record) == outcome
    assert TestOutcome.from_json({"nodeid": "n", "outcome": "skipped"}) == TestOutcome("", "", "skipped", nodeid="n")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ([], "TestOutcome record=[], expected an object"),
        ({"outcome": "passed"}, "TestOutcome record lacks nodeid"),
        ({}, "TestOutcome record lacks nodeid and outcome"),
        ({"nodeid": "n", "outcome": "fine"}, "TestOutcome.outcome='fine', expected one of ("),
        ({"nodeid": "n", "outcome": "failed", "message": ["x"]}, "TestOutcome.message=['x'], expected a string"),
        ({"nodeid": 3, "outcome": "failed"}, "TestOutcome.nodeid=3, expected a string"),
    ],
    ids=["not-object", "no-nodeid", "empty", "bad-outcome", "message-list", "nodeid-number"],
)
def test_a_malformed_outcome_record_is_one_line(record: object, problem: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        TestOutcome.from_json(record)
    assert str(excinfo.value).startswith(problem) and "\n" not in str(excinfo.value)


def test_a_long_message_is_cut() -> None:
    outcome = TestOutcome("a", "p", "failed", message="x" * (MESSAGE_LIMIT + 100))
    assert len(outcome.message) == MESSAGE_LIMIT and outcome.message.endswith("...")


def test_folding_a_property_s_outcomes() -> None:
    assert fold_outcomes(["passed", "error"]) == "failed"
    assert fold_outcomes(["passed", "xfailed"]) == "xfailed"  # a known bug is never hidden by a pass
    assert fold_outcomes(["skipped", "xpassed"]) == "passed"
    assert fold_outcomes(["skipped"]) == "skipped"
    with pytest.raises(InvalidArgument):
        fold_outcomes([])


def test_the_summary_s_failures_and_matrix_outcomes() -> None:
    outcomes = [
        TestOutcome("a", "p", "passed", "s", nodeid="s/t.py::test_p[a]"),
        TestOutcome("", "test_plain", "failed", "s", nodeid="s/t.py::test_plain", message="boom"),
        TestOutcome("a", "q", "error", "s", nodeid="s/t.py::test_q[a]", message="error in setup: x"),
    ]
    summary = RunSummary(outcomes)
    assert [o.nodeid for o in summary.failures] == ["s/t.py::test_plain", "s/t.py::test_q[a]"]
    assert [o.prop for o in summary.property_outcomes] == ["p", "q"]
    (section,) = summary.sections()
    assert [o.prop for o in section.outcomes] == ["p", "q"]  # a test about no implementation has no matrix cell


# ------------------------------------------------------------------------------------------ comparison


def _o(impl: str, prop: str, outcome: str, nodeid: str = "", message: str = "") -> TestOutcome:
    return TestOutcome(
        impl, prop, outcome, "properties", nodeid=nodeid or f"t.py::test_{prop}[{impl}]", message=message
    )  # type: ignore[arg-type]


def test_compare_outcomes_per_property() -> None:
    old = [
        _o("a", "regresses", "passed"),
        _o("a", "fixed", "failed"),
        _o("a", "same", "passed"),
        _o("a", "known_then_fails", "passed", "t.py::f32"),
        _o("a", "known_then_fails", "xfailed", "t.py::bf16"),
        _o("a", "skipped_then_fails", "skipped"),
        _o("a", "gone", "passed"),
    ]
    new = [
        _o("a", "regresses", "passed", "t.py::f32"),
        _o("a", "regresses", "failed", "t.py::bf16", "Failed: bf16 is off"),
        _o("a", "fixed", "passed"),
        _o("a", "same", "passed"),
        _o("a", "known_then_fails", "failed", "t.py::f32", "boom"),
        _o("a", "known_then_fails", "xfailed", "t.py::bf16"),
        _o("a", "skipped_then_fails", "error"),
        _o("b", "fresh", "passed"),
    ]
    changes = {c.prop: c for c in compare_outcomes(old, new)}
    assert {prop: (c.old, c.new, c.change) for prop, c in changes.items()} == {
        "regresses": ("passed", "failed", "regressed"),
        "fixed": ("failed", "passed", "fixed"),
        "same": ("passed", "passed", "unchanged"),
        "known_then_fails": ("xfailed", "failed", "regressed"),  # the f32 case passed and now fails
        "skipped_then_fails": ("skipped", "failed", "changed"),  # it never passed: not a regression
        "fresh": (None, "passed", "new"),
        "gone": ("passed", None, "missing"),
    }
    assert changes["regresses"].failures == (_o("a", "regresses", "failed", "t.py::bf16", "Failed: bf16 is off"),)
    assert list(changes)[-1] == "gone"  # the new run's order, then what only the old run had


def test_shared_keys_count_metrics_and_properties() -> None:
    result = Result("properties", "c", "a", "mse", 1.0)
    other = Result("kernels", "c", "b", "ratio", 1.0)
    assert shared_keys([result], [], [result, other], []) == 1
    assert shared_keys([], [_o("a", "p", "passed")], [], [_o("a", "p", "failed")]) == 1
    assert shared_keys([result], [_o("a", "p", "passed")], [other], [_o("b", "p", "passed")]) == 0
    assert shared_keys([], [], [], []) == 0
    missing = Result("properties", "c", "a", "mse", 1.0, verdict="missing")
    assert shared_keys([missing], [], [result], []) == 0  # a missing metric is not one the old run measured


def test_an_outcome_change_has_the_key_of_its_property() -> None:
    change = OutcomeChange("s", "a", "p", "passed", "failed", "regressed")
    assert change.key == ("s", "a", "p")


# ------------------------------------------------------------------------------------------ a plugin run

TOY_MODULE = """
from harness import Capabilities, FormatSpec, QuantizedTensor


class Toy:
    name = "toy-a"
    spec = FormatSpec(format="toy", codebook=None, scale="none")
    capabilities = Capabilities()

    def quantize(self, x):
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.detach().clone()})

    def dequantize(self, q):
        return q.storage["weight"].clone()


def toy_a():
    return Toy()
"""

TEST_MODULE = """
import pytest


@pytest.fixture
def broken():
    raise RuntimeError("the fixture broke")


def test_good(quantizer, record):
    record("err", 1.0)


def test_bad(quantizer):
    pytest.fail("toy-a rounds 0.5 the wrong way")


def test_assertion(quantizer):
    assert 1 == 2, "one is not two"


def test_skipped(quantizer):
    pytest.skip("not on this machine")


def test_setup_error(quantizer, broken):
    pass


@pytest.mark.xfail(reason="known toy bug", strict=True)
def test_known(quantizer):
    assert False


def test_plain():
    pass
"""

FILE = "properties/test_toy.py"


@pytest.fixture
def toy_run(inner_pytest: pytest.Pytester) -> tuple[pytest.RunResult, str]:
    """A run of the toy project with one test of each outcome, and its result file."""
    (inner_pytest.path / "toyquant.py").write_text(textwrap.dedent(TOY_MODULE))
    (inner_pytest.path / "properties").mkdir()
    (inner_pytest.path / "baselines").mkdir()  # empty: every metric is new
    (inner_pytest.path / FILE).write_text(textwrap.dedent(TEST_MODULE))
    json_path = str(inner_pytest.path / "run.json")
    result = inner_pytest.runpytest(
        "properties",
        "-p", "no:cacheprovider",
        "--fourbit-no-entry-points",
        "--quantizer", "toyquant:toy_a",
        "--impl", "toy-a",
        "--baseline-dir", str(inner_pytest.path / "baselines"),
        f"--fourbit-json={json_path}",
    )  # fmt: skip
    return result, json_path


def test_a_run_stores_each_test_s_outcome_and_message(toy_run: tuple[pytest.RunResult, str]) -> None:
    result, json_path = toy_run
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1, errors=1)
    stored = {
        o.nodeid.removeprefix(f"{FILE}::"): (o.implementation, o.prop, o.outcome) for o in load_run(json_path).outcomes
    }
    assert stored == {
        "test_good[toy-a]": ("toy-a", "good", "passed"),
        "test_bad[toy-a]": ("toy-a", "bad", "failed"),
        "test_assertion[toy-a]": ("toy-a", "assertion", "failed"),
        "test_skipped[toy-a]": ("toy-a", "skipped", "skipped"),
        "test_setup_error[toy-a]": ("toy-a", "setup_error", "error"),
        "test_known[toy-a]": ("toy-a", "known", "xfailed"),
        "test_plain": ("", "test_plain", "passed"),  # about no implementation: recorded all the same
    }
    messages = {o.nodeid.removeprefix(f"{FILE}::"): o.message for o in load_run(json_path).outcomes}
    assert messages["test_bad[toy-a]"] == "Failed: toy-a rounds 0.5 the wrong way"
    assert messages["test_assertion[toy-a]"].startswith("AssertionError: one is not two")
    assert messages["test_skipped[toy-a]"] == "not on this machine"
    assert messages["test_setup_error[toy-a]"] == "error in setup: RuntimeError: the fixture broke"
    assert messages["test_known[toy-a]"] == "known toy bug"
    assert messages["test_good[toy-a]"] == messages["test_plain"] == ""
    assert all(o.suite == "properties" for o in load_run(json_path).outcomes)
    summary = result.stdout.str().split("fourbit summary", 1)[1]
    assert "│ setup error │ FAIL" in summary and "test_plain" not in summary  # the matrix as before


def test_report_of_a_run_with_failures_lists_them_first_and_exits_1(
    toy_run: tuple[pytest.RunResult, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, json_path = toy_run
    capsys.readouterr()
    assert main(["report", json_path]) == 1
    out = capsys.readouterr().out
    failures = out.index("fourbit: FAILED TESTS (2 failed, 1 error)")
    matrix = out.index("┃ property    ┃ toy-a ┃")  # the verdict matrix, after the failures
    assert failures < matrix < out.index("fourbit properties: metrics")
    assert "│ setup error │ FAIL" in out[matrix:]
    table = out[failures:matrix]
    for text in ("test_bad[toy-a]", "toy-a rounds 0.5 the wrong way", "one is not two", "the fixture broke"):
        assert text in table
    assert "test_good" not in table and "test_skipped" not in table
    assert out.splitlines()[-1] == "tests: 2 passed, 2 failed, 1 skipped, 1 xfailed, 1 error"


def test_a_run_of_tests_about_no_implementation_prints_no_summary(inner_pytest: pytest.Pytester) -> None:
    inner_pytest.makepyfile(test_plain="def test_plain():\n    pass\n")
    json_path = inner_pytest.path / "run.json"
    result = inner_pytest.runpytest(
        "-p", "no:cacheprovider", "--fourbit-no-entry-points", f"--fourbit-json={json_path}"
    )
    assert result.ret == pytest.ExitCode.OK
    assert "fourbit summary" not in result.stdout.str()  # as before outcomes were kept
    assert [(o.nodeid, o.outcome) for o in load_run(json_path).outcomes] == [("test_plain.py::test_plain", "passed")]


def test_a_module_that_fails_to_collect_is_an_error(inner_pytest: pytest.Pytester) -> None:
    (inner_pytest.path / "properties").mkdir()
    (inner_pytest.path / "properties" / "test_broken.py").write_text("import no_such_module_here\n")
    json_path = inner_pytest.path / "run.json"
    result = inner_pytest.runpytest(
        "-p", "no:cacheprovider", "--fourbit-no-entry-points", f"--fourbit-json={json_path}"
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    (outcome,) = load_run(json_path).outcomes
    assert (outcome.nodeid, outcome.suite, outcome.outcome) == ("properties/test_broken.py", "properties", "error")
    assert outcome.message == "collection error: ModuleNotFoundError: No module named 'no_such_module_here'"
