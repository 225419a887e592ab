"""Implementation-level timing verdicts (harness.results.aggregate): the rule on hand-made results, what baselines do
with aggregates, and the plugin end to end (a marked suite whose cases each pass, whose implementation fails)."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path

import pytest

from harness.errors import InvalidArgument
from harness.results.aggregate import AGGREGATE_CASE, aggregate_metric_name, aggregate_timing, shared_shift
from harness.results.baselines import Baseline, BaselineEntry, update_baseline
from harness.results.compare import compare_result, compare_runs
from harness.results.records import Result
from tests.test_plugin_baselines import TOY_MODULE

pytest_plugins = ["pytester"]

SUITE, METRIC = "kernels", "over_dense"


def _result(case: int, factor: float, *, impl: str = "impl", verdict: str = "ok", **fields: object) -> Result:
    """A compared timing result of ``case`` whose value is ``factor`` times its baseline of 2.0."""
    defaults: dict[str, object] = {"suite": SUITE, "metric": METRIC, "kind": "timing", "direction": "lower"}
    defaults.update(fields)
    return Result(
        case=f"case-{case}",
        implementation=impl,
        value=2.0 * factor,
        baseline=2.0,
        verdict=verdict,
        **defaults,  # type: ignore[arg-type]
    )


def _only(results: list[Result]) -> Result:
    assert len(results) == 1, results
    return results[0]


def test_a_slowdown_of_every_case_regresses_the_implementation() -> None:
    factors = [1.13, 1.18, 1.21, 1.16, 1.24, 1.19, 1.15, 1.22]
    aggregate = _only(aggregate_timing([_result(i, f) for i, f in enumerate(factors)], SUITE, METRIC))
    assert aggregate.verdict == "regressed", aggregate.statistic
    assert aggregate.kind == "aggregate"
    assert (aggregate.case, aggregate.metric) == (AGGREGATE_CASE, aggregate_metric_name(METRIC))
    assert aggregate.value == pytest.approx(math.sqrt(1.18 * 1.19))  # the middle two of eight, in log space
    assert aggregate.samples == pytest.approx(factors)
    assert "8 worse, 0 better" in aggregate.statistic


def test_the_median_is_of_the_log_changes() -> None:
    factors = [1.1, 1.3, 1.2, 1.4, 1.25, 1.15]
    aggregate = _only(aggregate_timing([_result(i, f) for i, f in enumerate(factors)], SUITE, METRIC))
    logs = sorted(math.log(f) for f in factors)
    assert aggregate.value == pytest.approx(math.exp((logs[2] + logs[3]) / 2))


def test_noise_within_the_minimum_effect_is_ok() -> None:
    factors = [1.04, 0.97, 1.08, 1.02, 0.99, 1.06, 1.03, 1.05]  # all but two worse, median +3.5%
    aggregate = _only(aggregate_timing([_result(i, f) for i, f in enumerate(factors)], SUITE, METRIC))
    assert aggregate.verdict == "ok", aggregate.statistic


def test_a_few_slow_cases_do_not_regress_the_implementation() -> None:
    """What one process once did to ref-fp4 (harness.results.aggregate): five cases +12..+23%, three not."""
    factors = [1.12, 1.14, 1.15, 1.18, 1.23, 1.05, 0.99, 0.97]
    aggregate = _only(aggregate_timing([_result(i, f) for i, f in enumerate(factors)], SUITE, METRIC))
    assert math.log(aggregate.value) > math.log1p(0.10)  # past the minimum effect...
    assert aggregate.verdict == "ok", aggregate.statistic  # ...but 6 of 8 worse is no evidence (p = 0.145)
    assert "6 worse, 2 better" in aggregate.statistic


def test_a_speedup_of_every_case_is_improved_and_direction_higher_flips() -> None:
    faster = [0.8, 0.82, 0.85, 0.79, 0.84, 0.81]
    assert _only(aggregate_timing([_result(i, f) for i, f in enumerate(faster)], SUITE, METRIC)).verdict == "improved"
    higher = [_result(i, f, direction="higher") for i, f in enumerate(faster)]  # e.g. GB/s: lower is worse
    aggregate = _only(aggregate_timing(higher, SUITE, METRIC))
    assert aggregate.verdict == "regressed", aggregate.statistic
    assert aggregate.direction == "higher"
    assert aggregate.samples == pytest.approx(faster)
    assert aggregate.value == pytest.approx(math.sqrt(0.81 * 0.82))  # value / baseline, like the samples
    assert "median change -18.5% over 6 cases" in aggregate.statistic


def test_only_compared_uncontended_results_of_the_suite_and_metric_count() -> None:
    slow = [_result(i, 1.2) for i in range(5)]
    others = [
        _result(5, 3.0, verdict="new"),
        _result(6, 3.0, verdict="missing"),
        _result(7, 3.0, verdict="inconclusive", extra={"contended": True}),
        _result(8, 3.0, suite="properties"),
        _result(9, 3.0, metric="kernel_over_copy"),
        _result(10, 3.0, kind="info"),
    ]
    aggregate = _only(aggregate_timing(slow + others, SUITE, METRIC))
    assert aggregate.extra["cases"] == [f"case-{i}" for i in range(5)]
    assert aggregate.value == pytest.approx(1.2)


def test_a_case_recorded_twice_counts_once_as_its_last_result() -> None:
    rerun = [_result(0, 1.3) for _ in range(4)] + [_result(0, 1.0)]  # one case, recorded five times
    assert aggregate_timing(rerun, SUITE, METRIC) == []  # one case is too few
    results = [_result(i, 1.2) for i in range(5)] + [_result(0, 0.9)]  # case-0 again, faster
    aggregate = _only(aggregate_timing(results, SUITE, METRIC))
    assert aggregate.extra["cases"] == [f"case-{i}" for i in range(1, 5)] + ["case-0"]
    assert "4 worse, 1 better" in aggregate.statistic


def test_left_out_contended_cases_make_an_unregressed_implementation_inconclusive() -> None:
    contended = [_result(i, 1.4, verdict="inconclusive", extra={"contended": True}) for i in range(3)]
    steady = [_result(i, 1.01) for i in range(3, 8)]
    aggregate = _only(aggregate_timing(contended + steady, SUITE, METRIC))
    assert aggregate.verdict == "inconclusive", aggregate.statistic
    assert aggregate.extra["contended_cases"] == ["case-0", "case-1", "case-2"]
    assert "3 case(s) left out" in aggregate.statistic
    slow = [_result(i, 1.2) for i in range(3, 8)]  # the others show the regression on their own
    assert _only(aggregate_timing(contended + slow, SUITE, METRIC)).verdict == "regressed"


def test_values_or_baselines_that_are_not_positive_and_finite_are_left_out() -> None:
    odd = [
        _result(5, math.nan),
        _result(6, math.inf),
        _result(7, 0.0),
        dataclasses.replace(_result(8, 1.0), baseline=math.inf),
        dataclasses.replace(_result(9, 1.0), baseline=0.0),
        dataclasses.replace(_result(10, 1.0), baseline=None),
    ]
    aggregate = _only(aggregate_timing([_result(i, 1.2) for i in range(5)] + odd, SUITE, METRIC))
    assert aggregate.extra["cases"] == [f"case-{i}" for i in range(5)]


def test_an_ok_verdict_reports_the_p_value_of_the_side_its_median_is_on() -> None:
    factors = [1.05, 1.04, 1.06, 0.9, 0.95, 1.02]  # median +3%, 4 worse of 6: p = 0.344 (the other side: 0.891)
    aggregate = _only(aggregate_timing([_result(i, f) for i, f in enumerate(factors)], SUITE, METRIC))
    assert aggregate.verdict == "ok"
    assert "sign test p=0.344" in aggregate.statistic


def test_too_few_cases_form_no_aggregate_and_implementations_are_separate() -> None:
    results = [_result(i, 1.3, impl="four") for i in range(4)] + [_result(i, 1.3, impl="five") for i in range(5)]
    aggregates = aggregate_timing(results, SUITE, METRIC)
    assert [(a.implementation, a.verdict) for a in aggregates] == [("five", "regressed")]
    assert aggregate_timing(results, SUITE, METRIC, min_cases=4)[0].implementation == "four"


def _family(factor_of: dict[str, float], cases: int = 8) -> list[Result]:
    """Each implementation's cases at its factor, spread +-2% so the sign test has signs to count."""
    return [
        _result(i, factor * (1 + (i - (cases - 1) / 2) / 200), impl=impl)
        for impl, factor in factor_of.items()
        for i in range(cases)
    ]


def _by_impl(results: list[Result]) -> dict[str, Result]:
    return {a.implementation: a for a in aggregate_timing(results, SUITE, METRIC)}


def test_a_spell_of_every_implementation_is_not_a_regression_of_any() -> None:
    """The machine's drift moves every implementation's ratio at once (+15-20% for a whole family:
    docs/lab/2026-11-24-kernel-gate-checks.md)."""
    aggregates = _by_impl(_family({"a": 1.18, "b": 1.16, "c": 1.2, "d": 1.17}))
    assert {a.verdict for a in aggregates.values()} == {"ok"}, [a.statistic for a in aggregates.values()]
    a = aggregates["a"]
    assert a.extra["peers"] == ["b", "c", "d"]
    assert a.extra["peer_change"] == pytest.approx(1.17, rel=1e-3)  # the median of b, c, d's medians
    assert a.extra["absolute_change"] == pytest.approx(1.18, rel=1e-3)
    assert a.value == pytest.approx(1.18 / 1.17, rel=1e-3)
    assert "relative to 3 other implementations (their median change +17.0%; +18.0% against the baseline" in (
        a.statistic
    )
    assert a.unit == "x baseline, relative to the other implementations"


def test_one_implementation_slowed_while_the_others_drift_down_regresses() -> None:
    """A 1.2x slowdown read as +8% against the baseline while the machine made everything 10% faster."""
    aggregates = _by_impl(_family({"slowed": 1.08, "b": 0.9, "c": 0.91, "d": 0.89}))
    assert aggregates["slowed"].verdict == "regressed", aggregates["slowed"].statistic
    assert aggregates["slowed"].value == pytest.approx(1.08 / 0.9, rel=1e-3)
    assert aggregates["slowed"].samples == pytest.approx([r.value / 2.0 / 0.9 for r in _family({"x": 1.08})], rel=1e-4)
    assert [aggregates[i].verdict for i in "bcd"] == ["ok", "ok", "ok"]  # one slowed peer moves the median little
    alone = _only(aggregate_timing(_family({"slowed": 1.08}), SUITE, METRIC))
    assert alone.verdict == "ok"  # against the baseline alone, +8% is within the minimum effect


def test_with_fewer_than_two_peers_the_change_is_against_the_baseline_alone() -> None:
    aggregates = _by_impl(_family({"a": 1.2, "b": 1.2}))
    assert [a.verdict for a in aggregates.values()] == ["regressed", "regressed"]
    assert aggregates["a"].value == pytest.approx(1.2, rel=1e-3)
    assert aggregates["a"].extra["peers"] == [] and aggregates["a"].extra["peer_change"] is None
    assert "against the baseline alone (fewer than 2 other implementations)" in aggregates["a"].statistic
    assert aggregates["a"].unit == "x baseline"


def test_peers_are_of_the_same_direction_and_need_an_aggregate_of_their_own() -> None:
    results = _family({"a": 1.3, "b": 1.0, "c": 1.0})
    results += [_result(i, 1.3, impl="higher", direction="higher") for i in range(8)]
    results += [_result(i, 1.3, impl="short") for i in range(3)]  # too few cases for an aggregate
    aggregates = _by_impl(results)
    assert aggregates["a"].extra["peers"] == ["b", "c"]
    assert aggregates["higher"].extra["peers"] == []


def test_a_move_shared_by_every_implementation_is_reported() -> None:
    moved = aggregate_timing(_family({"a": 1.15, "b": 1.16, "c": 1.14}), SUITE, METRIC)
    (message,) = shared_shift(moved)
    assert message.startswith(f"{METRIC}_median ({SUITE}): the 3 implementations moved together, median +15.0%")
    assert "(slower)" in message
    faster = aggregate_timing(_family({"a": 0.85, "b": 0.86, "c": 0.84}), SUITE, METRIC)
    assert "(faster)" in shared_shift(faster)[0]
    assert shared_shift(aggregate_timing(_family({"a": 1.05, "b": 1.06, "c": 1.04}), SUITE, METRIC)) == []
    alone = aggregate_timing(_family({"a": 1.5}), SUITE, METRIC)
    assert shared_shift(alone) == []  # judged against the baseline, its verdict already shows the move


@pytest.mark.parametrize(("argument", "value"), [("confidence", 1.0), ("confidence", 0.0), ("min_effect", -0.1)])
def test_bad_parameters_are_invalid_arguments(argument: str, value: float) -> None:
    with pytest.raises(InvalidArgument, match=argument):
        aggregate_timing([_result(i, 1.2) for i in range(5)], SUITE, METRIC, **{argument: value})  # type: ignore[arg-type]


def test_aggregates_are_never_stored_and_never_compared_again() -> None:
    aggregate = _only(aggregate_timing([_result(i, 1.2) for i in range(5)], SUITE, METRIC))
    baseline = Baseline("env")
    assert update_baseline(baseline, [aggregate], {}) == 0
    assert baseline.entries == {}
    entry = BaselineEntry(SUITE, AGGREGATE_CASE, "impl", aggregate.metric, 1.0, "aggregate", "lower")
    assert compare_result(aggregate, entry) is aggregate
    assert compare_runs([aggregate], [aggregate]) == []


# ------------------------------------------------------------------------------------------ the plugin

MARKED_SUITE = """
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.fourbit_aggregate("ratio")
FACTOR = json.loads((Path(__file__).resolve().parents[1] / "factor.json").read_text())


@pytest.mark.parametrize("case", range(6))
def test_case(quantizer, record, case):
    ratio = (1.0 + case / 100) * FACTOR
    rounds = [ratio * r for r in (0.98, 1.0, 1.02, 0.99, 1.01)]
    record("ratio", ratio, case=f"c{case}", kind="timing", samples=rounds, unit="x copy")
"""


def _project(pytester: pytest.Pytester, suite: str = MARKED_SUITE) -> Path:
    (pytester.path / "toyquant.py").write_text(textwrap.dedent(TOY_MODULE))
    (pytester.path / "kernels").mkdir()
    (pytester.path / "kernels" / "test_marked.py").write_text(textwrap.dedent(suite))
    return pytester.path


def _run(pytester: pytest.Pytester, factor: float, *args: str) -> pytest.RunResult:
    (pytester.path / "factor.json").write_text(json.dumps(factor))
    (pytester.path / "baselines").mkdir(exist_ok=True)
    return pytester.runpytest(
        "kernels", "-p", "no:cacheprovider", "--fourbit-no-entry-points", "--quantizer", "toyquant:toy_a",
        "--impl", "toy-a", "--baseline-dir", str(pytester.path / "baselines"), *args,
    )  # fmt: skip


def test_the_plugin_fails_a_run_whose_implementation_regressed_while_every_case_passed(
    inner_pytest: pytest.Pytester,
) -> None:
    _project(inner_pytest)
    for _ in range(3):
        assert _run(inner_pytest, 1.0, "--update-baselines").ret == pytest.ExitCode.OK
    stored = json.loads(next((inner_pytest.path / "baselines").glob("*.json")).read_text())["metrics"]
    assert len(stored) == 6 and all(entry["kind"] == "timing" for entry in stored.values())

    result = _run(inner_pytest, 1.0, "--fourbit-json", "same.json")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "baseline: 7 ok" in result.stdout.str()  # six cases and the implementation

    result = _run(inner_pytest, 1.12, "--fourbit-json", "slow.json")
    output = result.stdout.str()
    result.assert_outcomes(passed=6)  # no single case is significant past its 10% minimum effect...
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output  # ...the implementation is
    saved = json.loads((inner_pytest.path / "slow.json").read_text())["results"]
    aggregate = next(r for r in saved if r["kind"] == "aggregate")
    assert (aggregate["implementation"], aggregate["verdict"]) == ("toy-a", "regressed")
    assert {r["verdict"] for r in saved if r["kind"] == "timing"} == {"ok"}
    assert "ratio_median of toy-a on all cases (kernels) regressed" in output
    assert "6 worse, 0 better" in output


THREE_TOYS = """
from toyquant import Toy


def three():
    return [Toy("toy-a"), Toy("toy-b"), Toy("toy-c")]
"""

FACTOR_PER_IMPL_SUITE = MARKED_SUITE.replace(
    "    ratio = (1.0 + case / 100) * FACTOR", "    ratio = (1.0 + case / 100) * FACTOR[quantizer.name]"
)


def test_the_plugin_judges_each_implementation_against_the_others_of_the_run(
    inner_pytest: pytest.Pytester,
) -> None:
    """All three move +12% together: no implementation regressed, and the run says what moved. Only toy-b
    moves +12%: toy-b regressed (the others are the control), though every case passed."""
    _project(inner_pytest, FACTOR_PER_IMPL_SUITE)
    (inner_pytest.path / "threetoys.py").write_text(textwrap.dedent(THREE_TOYS))

    def run(factors: dict[str, float], *args: str) -> pytest.RunResult:
        (inner_pytest.path / "factor.json").write_text(json.dumps(factors))
        return inner_pytest.runpytest(
            "kernels", "-p", "no:cacheprovider", "--fourbit-no-entry-points", "--quantizer", "threetoys:three",
            "--impl", "toy-*", "--baseline-dir", str(inner_pytest.path / "baselines"), *args,
        )  # fmt: skip

    same = {"toy-a": 1.0, "toy-b": 1.0, "toy-c": 1.0}
    for _ in range(3):
        assert run(same, "--update-baselines").ret == pytest.ExitCode.OK

    together = run({"toy-a": 1.12, "toy-b": 1.12, "toy-c": 1.12}, "--fourbit-json", "together.json")
    output = together.stdout.str()
    together.assert_outcomes(passed=18)
    assert together.ret == pytest.ExitCode.OK, output
    assert "ratio_median (kernels): the 3 implementations moved together, median +12.0%" in output
    saved = json.loads((inner_pytest.path / "together.json").read_text())["results"]
    aggregates = {r["implementation"]: r for r in saved if r["kind"] == "aggregate"}
    assert {r["verdict"] for r in aggregates.values()} == {"ok"}
    assert aggregates["toy-a"]["extra"]["peers"] == ["toy-b", "toy-c"]
    assert aggregates["toy-a"]["extra"]["absolute_change"] == pytest.approx(1.12)
    assert aggregates["toy-a"]["value"] == pytest.approx(1.0)

    alone = run({"toy-a": 1.0, "toy-b": 1.12, "toy-c": 1.0}, "--fourbit-timing-reruns", "0")
    output = alone.stdout.str()
    alone.assert_outcomes(passed=18)
    assert alone.ret == pytest.ExitCode.TESTS_FAILED, output
    assert "ratio_median of toy-b on all cases (kernels) regressed" in output
    assert "relative to 2 other implementations (their median change +0.0%" in output
    assert "moved together" not in output


def test_a_malformed_aggregate_marker_is_a_usage_error(
    inner_pytest: pytest.Pytester,
) -> None:
    _project(inner_pytest, MARKED_SUITE.replace('fourbit_aggregate("ratio")', "fourbit_aggregate()"))
    result = _run(inner_pytest, 1.0)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected one metric name" in result.stderr.str()


def test_comparing_two_result_files_forms_the_implementation_verdicts_again() -> None:
    def run(factor: float, verdict: str) -> list[Result]:
        cases = [
            Result(SUITE, f"case-{i}", "impl", METRIC, 2.0 * factor * (1 + i / 100), kind="timing", samples=(1.0,))
            for i in range(6)
        ]
        stale = Result(SUITE, AGGREGATE_CASE, "impl", aggregate_metric_name(METRIC), 9.0, kind="aggregate")
        stale = dataclasses.replace(stale, verdict=verdict, extra={"aggregate_of": METRIC})
        return [*cases, stale]

    compared = compare_runs(run(1.0, "ok"), run(1.2, "ok"))
    aggregates = [r for r in compared if r.kind == "aggregate"]
    assert [(a.implementation, a.verdict) for a in aggregates] == [("impl", "regressed")]
    assert aggregates[0].value == pytest.approx(1.2)
    same = [r for r in compare_runs(run(1.0, "regressed"), run(1.0, "regressed")) if r.kind == "aggregate"]
    assert [a.verdict for a in same] == ["ok"]  # the files' own verdicts are not carried over
