"""Timing regressions measured again in a fresh process (harness.timing.reruns, ``--fourbit-timing-reruns``): the
command it builds, how re-run results replace the first ones, and the plugin end to end on a toy suite whose
timings depend on which process measures them (each new process takes the next factor of a list)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from harness.results.records import Result
from harness.timing.reruns import RerunCommand, fresh_process_command, plugin_arguments, replace_with_reruns
from tests.conftest import REPO
from tests.test_plugin_baselines import TOY_MODULE

pytest_plugins = ["pytester"]


# ------------------------------------------------------------------------------------------ the command


def test_plugin_arguments_keep_every_p_option_in_order() -> None:
    args = ["suites", "-p", "no:cacheprovider", "-pkernel_gate_check", "-p=mine", "--impl", "x", "-q", "--pdb"]
    assert plugin_arguments(args) == ("-p", "no:cacheprovider", "-p", "kernel_gate_check", "-p", "mine")
    assert plugin_arguments(["-p"]) == ()  # a dangling -p names nothing


def test_the_fresh_process_runs_the_targets_once_and_writes_results(tmp_path: Path) -> None:
    command = RerunCommand("/py", tmp_path, ("-p", "slow"), ("--impl", "a"))
    argv = fresh_process_command(command, ["/abs/t.py::test_x[a]"], tmp_path / "r.json")
    assert argv[:4] == ["/py", "-m", "pytest", "/abs/t.py::test_x[a]"]
    assert argv[argv.index("--fourbit-json") + 1] == str(tmp_path / "r.json")
    assert argv[argv.index("--fourbit-timing-reruns") + 1] == "0"  # the child does not re-run in turn
    assert "-p" in argv and "slow" in argv and argv[argv.index("--impl") + 1] == "a"


def _timing(case: str, value: float, verdict: str, metric: str = "over_dense") -> Result:
    return Result("kernels", case, "impl", metric, value, kind="timing", baseline=1.0, verdict=verdict)


def test_rerun_results_replace_the_first_ones_which_are_kept_in_extra() -> None:
    first = [_timing("a", 1.5, "regressed"), _timing("b", 1.0, "ok"), _timing("a", 1.4, "regressed", "copy")]
    again = [_timing("a", 1.02, "ok"), Result("kernels", "all cases", "impl", "x", 1.0, kind="aggregate")]
    replaced, kept = replace_with_reruns(first, again)
    assert [r.value for r in replaced] == [1.02, 1.0, 1.4]
    assert replaced[0].extra["first_process"] == {"value": 1.5, "verdict": "regressed", "statistic": ""}
    assert replaced[0].extra["rerun_in_fresh_process"] is True
    assert kept == first[1:]  # not measured again: left as they were, never dropped


def test_missing_entries_and_aggregates_of_the_child_replace_nothing() -> None:
    first = [_timing("a", 1.5, "regressed")]
    replaced, kept = replace_with_reruns(first, [_timing("a", 0.0, "missing")])
    assert replaced == first and kept == first


# ------------------------------------------------------------------------------------------ the plugin

TOY_SUITE = """
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.fourbit_aggregate("ratio")
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = json.loads((ROOT / "settings.json").read_text())
FACTORS = json.loads((ROOT / "factors.json").read_text())
FACTOR = FACTORS[0]  # each process that imports this module takes the next factor (the last one stays)
(ROOT / "factors.json").write_text(json.dumps(FACTORS[1:] or FACTORS))
if FACTOR == "crash":
    raise RuntimeError("this process cannot measure")


@pytest.mark.parametrize("case", range(SETTINGS["cases"]))
def test_case(quantizer, record, case):
    ratio = (1.0 + case / 100) * FACTOR
    rounds = [ratio * r for r in (0.98, 1.0, 1.02, 0.99, 1.01)]
    record("ratio", ratio, case=f"c{case}", kind="timing", samples=rounds, unit="x copy")
"""


class Toy:
    """A toy project with a marked kernels suite, its baseline written at factor 1.0."""

    def __init__(self, pytester: pytest.Pytester, cases: int) -> None:
        self.pytester = pytester
        self.path = pytester.path
        (self.path / "toyquant.py").write_text(textwrap.dedent(TOY_MODULE))
        (self.path / "kernels").mkdir()
        (self.path / "kernels" / "test_toy.py").write_text(textwrap.dedent(TOY_SUITE))
        (self.path / "settings.json").write_text(json.dumps({"cases": cases}))
        for _ in range(3):
            assert self.run([1.0], "--update-baselines").ret == pytest.ExitCode.OK

    def run(self, factors: list[Any], *args: str) -> pytest.RunResult:
        (self.path / "factors.json").write_text(json.dumps(factors))
        return self.pytester.runpytest(
            "kernels", "-p", "no:cacheprovider", "--fourbit-no-entry-points", "--quantizer", "toyquant:toy_a",
            "--impl", "toy-a", "--baseline-dir", "baselines", "--fourbit-json", "run.json", *args,
        )  # fmt: skip

    def results(self) -> list[dict[str, Any]]:
        saved: list[dict[str, Any]] = json.loads((self.path / "run.json").read_text())["results"]
        return saved

    def factors_left(self) -> list[Any]:
        left: list[Any] = json.loads((self.path / "factors.json").read_text())
        return left


@pytest.fixture
def fresh_processes(inner_pytest: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """inner_pytest whose child processes import this working tree's harness and the toy project."""
    path = os.pathsep.join(filter(None, [str(REPO), str(inner_pytest.path), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    return inner_pytest


def test_a_case_slow_only_in_its_first_process_passes_after_the_fresh_rerun(fresh_processes: pytest.Pytester) -> None:
    toy = Toy(fresh_processes, cases=1)
    result = toy.run([1.5, 1.0])
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=1)
    (ratio,) = [r for r in toy.results() if r["metric"] == "ratio"]
    assert ratio["verdict"] == "ok" and ratio["value"] == pytest.approx(1.0)
    assert ratio["extra"]["first_process"]["verdict"] == "regressed"
    assert ratio["extra"]["first_process"]["value"] == pytest.approx(1.5)
    assert "re-run in a fresh process: ratio regressed -> ok" in output


def test_a_case_slow_in_the_fresh_process_too_fails_with_the_second_measurement(
    fresh_processes: pytest.Pytester,
) -> None:
    toy = Toy(fresh_processes, cases=1)
    result = toy.run([1.5, 1.4])
    output = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert "re-run in a fresh process: ratio regressed -> regressed" in output
    (ratio,) = [r for r in toy.results() if r["metric"] == "ratio"]
    assert ratio["value"] == pytest.approx(1.4) and ratio["verdict"] == "regressed"
    assert "ratio of toy-a on c0 (kernels) regressed" in output


def test_no_reruns_fails_on_the_first_measurement_and_starts_no_process(fresh_processes: pytest.Pytester) -> None:
    toy = Toy(fresh_processes, cases=1)
    result = toy.run([1.5, 1.0], "--fourbit-timing-reruns", "0")
    result.assert_outcomes(failed=1)
    assert toy.factors_left() == [1.0]  # no second process imported the suite
    assert "fresh process" not in result.stdout.str()


def test_a_rerun_that_measures_nothing_leaves_the_regression_standing(fresh_processes: pytest.Pytester) -> None:
    toy = Toy(fresh_processes, cases=1)
    result = toy.run([1.5, "crash"])
    result.assert_outcomes(failed=1)
    assert "not measured again: ratio" in result.stdout.str()
    (ratio,) = [r for r in toy.results() if r["metric"] == "ratio"]
    assert ratio["value"] == pytest.approx(1.5) and "first_process" not in ratio["extra"]


def test_a_negative_rerun_count_is_a_usage_error(fresh_processes: pytest.Pytester) -> None:
    toy = Toy(fresh_processes, cases=1)
    result = toy.run([1.0], "--fourbit-timing-reruns", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--fourbit-timing-reruns=-1, expected 0 (never) or more" in result.stderr.str()


@pytest.mark.parametrize(("second", "verdict", "exit_code"), [(1.0, "ok", 0), (1.12, "regressed", 1)])
def test_an_implementation_verdict_is_formed_again_from_a_fresh_process(
    fresh_processes: pytest.Pytester, second: float, verdict: str, exit_code: int
) -> None:
    toy = Toy(fresh_processes, cases=6)
    result = toy.run([1.12, second])
    output = result.stdout.str()
    result.assert_outcomes(passed=6)  # no case alone regressed past its minimum effect
    assert result.ret == exit_code, output
    (aggregate,) = [r for r in toy.results() if r["kind"] == "aggregate"]
    assert aggregate["verdict"] == verdict
    assert aggregate["value"] == pytest.approx(second * 1.0, rel=0.02)  # the median case of the re-run
    assert aggregate["extra"]["first_process"]["verdict"] == "regressed"
    assert "ratio_median of toy-a (kernels): re-run in a fresh process (6 tests): regressed (1.1" in output
    cases = [r for r in toy.results() if r["metric"] == "ratio"]
    assert len(cases) == 6
    assert all(r["value"] / r["baseline"] == pytest.approx(1.12) for r in cases)  # the cases keep run 1's values


def test_a_timing_without_a_baseline_is_not_rerun_under_strict(fresh_processes: pytest.Pytester) -> None:
    toy = Toy(fresh_processes, cases=1)
    (fresh_processes.path / "empty-baselines").mkdir()
    result = toy.run([1.5, 1.0, 7.0], "--fourbit-strict", "--baseline-dir", "empty-baselines")
    result.assert_outcomes(failed=1)  # "new" fails under --fourbit-strict...
    assert "no baseline" in result.stdout.str()
    assert toy.factors_left() == [1.0, 7.0]  # ...and a second process could not change that: none was started
