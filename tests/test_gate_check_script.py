"""scripts/kernel_gate_check.py, the measurement behind the gate-check tables in docs/lab/: what it counts as a
flagged run, which tests a slowed scenario runs, and the reference table it prints."""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kernel_gate_check.py"


@pytest.fixture(scope="module")
def gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kernel_gate_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _gated(impl: str, case: str, metric: str, change: float, verdict: str = "ok") -> dict[str, Any]:
    return {
        "case": case, "implementation": impl, "metric": metric, "value": 2.0 * (1 + change), "baseline": 2.0,
        "verdict": verdict, "rounds": 10, "retimed": False, "load_average_1m": 1.0,
    }  # fmt: skip


def _aggregate(impl: str, change: float, verdict: str) -> dict[str, Any]:
    return {"implementation": impl, "metric": "over_dense_median", "value": 1 + change, "verdict": verdict, "cases": 8}


def test_a_run_is_flagged_by_a_case_or_by_an_implementation(gate: ModuleType) -> None:
    quiet = gate.RunRecord(
        "unchanged", 0, 0, 100.0, [_gated("a", "c", "over_dense", 0.02)], [_aggregate("a", 0.02, "ok")]
    )
    by_case = gate.RunRecord("unchanged", 1, 1, 100.0, [_gated("a", "c", "over_dense", 0.4, "regressed")])
    by_impl = gate.RunRecord(
        "unchanged", 2, 1, 100.0, [_gated("a", "c", "over_dense", 0.15)], [_aggregate("a", 0.15, "regressed")]
    )
    assert [(r.flagged, r.flagged_by_case, r.flagged_by_aggregate) for r in (quiet, by_case, by_impl)] == [
        (False, False, False),
        (True, True, False),
        (True, False, True),
    ]
    table = gate.summary_table([quiet, by_case, by_impl], [gate.Scenario("unchanged", 1.0)], "a")
    assert "| unchanged | 3 | 2 of 3 | 1 | 1 |" in table
    assert "| unchanged | a | 1 of 2 | +8.5% [+2.0%, +15.0%] |" in table


def test_slowed_scenarios_run_the_same_tests_unless_told_otherwise(gate: ModuleType, tmp_path: Path) -> None:
    args = gate._parse(["--impl", "ref-nf4", "--impl", "bnb-nf4", "--runs", "1"])
    command = gate._pytest_command(args, tmp_path, tmp_path / "r.json", update=False, slowed_only=args.slowed_only)
    assert command.count("--impl") == 2
    args = gate._parse(["--impl", "ref-nf4", "--impl", "bnb-nf4", "--runs", "1", "--slowed-only"])
    command = gate._pytest_command(args, tmp_path, tmp_path / "r.json", update=False, slowed_only=args.slowed_only)
    assert [command[i + 1] for i, part in enumerate(command) if part == "--impl"] == ["ref-nf4"]


def test_the_reference_table_shows_offset_and_run_to_run_spread(gate: ModuleType) -> None:
    runs = [
        gate.RunRecord(
            "unchanged",
            i,
            0,
            1.0,
            [_gated("a", "c", "kernel_over_copy", copy), _gated("a", "c", "over_dense", dense)],
        )
        for i, (copy, dense) in enumerate([(-0.15, 0.01), (-0.17, -0.02), (-0.16, 0.02)])
    ]
    table = gate.reference_table(runs)
    copy_logs = [math.log(1 + c) for c in (-0.15, -0.17, -0.16)]
    dense_logs = [math.log(1 + d) for d in (0.01, -0.02, 0.02)]

    expected = (
        f"| a | {abs(statistics.median(copy_logs)):.1%}, {statistics.stdev(copy_logs):.1%} | "
        f"{abs(statistics.median(dense_logs)):.1%}, {statistics.stdev(dense_logs):.1%} |"
    )
    assert expected in table


def test_rejudge_forms_the_implementation_verdicts_again_from_saved_runs(gate: ModuleType, tmp_path: Path) -> None:
    from harness.results.files import save_results
    from harness.results.records import Result

    def run(factor: float) -> list[Result]:
        stale = Result("kernels", "all cases", "a", "over_dense_median", 9.0, kind="aggregate", verdict="regressed")
        cases = [
            Result("kernels", f"c{i}", "a", "over_dense", 2.0 * factor, kind="timing", baseline=2.0, verdict="ok")
            for i in range(6)
        ]
        return [*cases, stale]

    save_results(tmp_path / "unchanged-00.json", run(1.01), {})
    save_results(tmp_path / "slowed_1.2x-00.json", run(1.2), {})
    save_results(tmp_path / "baseline-00.json", run(1.0), {})  # baseline runs are not judged
    records, scenarios = gate.rejudged_records(tmp_path, "kernels", "over_dense")
    assert [(s.name, s.factor) for s in scenarios] == [("unchanged", 1.0), ("slowed 1.2x", 1.2)]
    verdicts = {r.scenario: [(a["verdict"], round(a["value"], 3)) for a in r.aggregates] for r in records}
    assert verdicts == {"unchanged": [("ok", 1.01)], "slowed 1.2x": [("regressed", 1.2)]}  # the stale one is gone


def test_the_summary_counts_fresh_process_reruns_and_those_they_cleared(gate: ModuleType) -> None:
    cleared = {**_gated("a", "c", "over_dense", 0.02), "fresh_rerun": True, "first_verdict": "regressed"}
    confirmed = {**_gated("a", "d", "over_dense", 0.3, "regressed"), "fresh_rerun": True, "first_verdict": "regressed"}
    aggregate = {**_aggregate("a", 0.03, "ok"), "fresh_rerun": True, "first_verdict": "regressed"}
    record = gate.RunRecord(
        "unchanged", 0, 1, 100.0, [cleared, confirmed, _gated("a", "e", "over_dense", 0.0)], [aggregate]
    )
    table = gate.summary_table([record], [gate.Scenario("unchanged", 1.0)], "a")
    assert "| 3 (2 cleared) |" in table


def test_the_summary_counts_inconclusive_results_and_the_runs_that_had_them(gate: ModuleType) -> None:
    """What a default run passes and --fourbit-strict fails: inconclusive cases and implementation verdicts."""
    two = gate.RunRecord(
        "unchanged",
        0,
        0,
        100.0,
        [_gated("a", "c", "over_dense", 0.3, "inconclusive"), _gated("a", "d", "over_dense", 0.0)],
        [_aggregate("a", 0.05, "inconclusive")],
    )
    none = gate.RunRecord("unchanged", 1, 0, 100.0, [_gated("a", "c", "over_dense", 0.01)])
    one = gate.RunRecord("unchanged", 2, 0, 100.0, [_gated("b", "c", "kernel_over_copy", 0.2, "inconclusive")])
    table = gate.summary_table([two, none, one], [gate.Scenario("unchanged", 1.0)], "a")
    assert "| unchanged | 3 | 0 of 3 | 0 | 0 | 4 | 0 | 3 (2 runs) |" in table


def test_rejudge_keeps_a_verdict_formed_from_a_fresh_process_rerun(gate: ModuleType, tmp_path: Path) -> None:
    from harness.results.files import save_results
    from harness.results.records import Result

    cases = [
        Result("kernels", f"c{i}", "a", "over_dense", 2.4, kind="timing", baseline=2.0, verdict="ok") for i in range(6)
    ]
    rerun = Result(
        "kernels", "all cases", "a", "over_dense_median", 1.01, kind="aggregate", verdict="ok",
        extra={"rerun_in_fresh_process": True, "first_process": {"verdict": "regressed", "value": 1.2}},
    )  # fmt: skip
    save_results(tmp_path / "unchanged-00.json", [*cases, rerun], {})
    (record,), _ = gate.rejudged_records(tmp_path, "kernels", "over_dense")
    assert [(a["verdict"], a["value"], a["fresh_rerun"]) for a in record.aggregates] == [("ok", 1.01, True)]
    (first,), _ = gate.rejudged_records(tmp_path, "kernels", "over_dense", first_process=True)
    assert [(a["verdict"], round(a["value"], 3)) for a in first.aggregates] == [("regressed", 1.2)]
