"""The fourbit command: listing, running a suite, and exit codes (0 pass, 1 failure or broken plugin, 2 usage)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from rich.console import Console

from harness.cli import find_suites_dir, main
from harness.report import RunSummary, render_run
from harness.results.baselines import load_baseline
from harness.results.environment import environment_key
from harness.results.files import load_results, save_results
from harness.results.records import Result, SuiteSummary

CaptureStr = pytest.CaptureFixture[str]

ROOT = Path(__file__).resolve().parents[1]


def test_list_shows_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("ref-nf4", "ref-fp4", "ref-af4", "ref-int4", "ref-nf4-dq", "fp32", "fp16", "bf16"):
        assert name in out
    assert "high-nibble-first" in out and "8-bit/256" in out


def test_list_reports_a_broken_plugin_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--quantizer", "no_such_module_xyz:thing"]) == 1
    out = capsys.readouterr().out
    assert "plugins that failed to load" in out and "no_such_module_xyz" in out


def test_unknown_suite_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nosuch", "--suites-dir", str(ROOT / "suites")]) == 2
    assert "unknown suite 'nosuch'" in capsys.readouterr().err


def test_unknown_implementation_is_a_usage_error() -> None:
    assert main(["run", "properties", "--suites-dir", str(ROOT / "suites"), "--impl", "no-such-impl"]) == 2


def test_malformed_quantizer_spec_is_a_usage_error() -> None:
    assert main(["run", "properties", "--suites-dir", str(ROOT / "suites"), "--quantizer", "nocolon"]) == 2


def test_missing_suites_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--suites-dir", str(tmp_path)]) == 2
    assert "has no properties/ suite" in capsys.readouterr().err
    assert find_suites_dir(str(ROOT / "suites")) == ROOT / "suites"


def test_run_properties_for_one_implementation_passes() -> None:
    argv = ["run", "properties", "--suites-dir", str(ROOT / "suites"), "--impl", "ref-int4"]
    assert main([*argv, "--", "-q", "-p", "no:cacheprovider", "-k", "codebook or exact_zero"]) == 0


def test_run_exits_1_when_a_property_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wrong_book.py").write_text(
        "from harness import ReferenceQuantizer\n"
        "class Uniform(ReferenceQuantizer):\n"
        "    def __init__(self):\n"
        "        super().__init__('int4', name='uniform-called-nf4')\n"
        "        import dataclasses\n"
        "        self.spec = dataclasses.replace(self.spec, format='nf4')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["run", "properties", "--suites-dir", str(ROOT / "suites"), "--quantizer", "wrong_book:Uniform"]
    assert main([*argv, "--impl", "uniform-called-nf4", "--", "-q", "-p", "no:cacheprovider", "-k", "codebook"]) == 1


# ------------------------------------------------------------------------------ result files, baselines

ENVIRONMENT = {"libraries": {"torch": "2.13.0"}, "git": {"commit": "abc123", "dirty": False}}


def _results(verdict: str = "ok", value: float = 1.0) -> list[Result]:
    return [
        Result("properties", "gauss-block64", "ref-nf4", "mse", value, baseline=1.0, verdict=verdict, statistic="s"),
        Result("properties", "gauss-block64", "ref-nf4", "sqnr_db", 20.0, unit="dB", direction="higher", verdict="ok"),
    ]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a usage error prints (and nothing that looks like a traceback)."""
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fourbit: error: "), captured.err
    return lines[0]


def test_report_renders_a_saved_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: CaptureStr) -> None:
    monkeypatch.chdir(tmp_path)
    save_results("results.json", _results(), ENVIRONMENT)
    assert main(["report", "results.json"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "results.json: 2 results; torch 2.13.0, commit abc123"
    assert "fourbit properties: metrics" in out and "baseline: 2 ok" in out
    assert "REGRESSIONS" not in out


AGREEMENT = SuiteSummary(
    headline=("level_agreement", "code_agreement", "disagreements_off_midpoint", "max_abs_diff", "mean_abs_diff"),
    pair_matrix=("level_agreement", "code_agreement"),
)


def _agreement_run() -> list[Result]:
    pair, extra = "ref-nf4~bnb-nf4", {"format": "nf4"}
    return [
        Result("agreement", "gauss-333x77", pair, "level_agreement", 0.75, direction="higher", extra=extra),
        Result("agreement", "gauss-333x77", pair, "code_agreement", 0.5, direction="higher", extra=extra),
        Result("agreement", "gauss-333x77", pair, "max_abs_diff", 0.5, extra=extra),
        Result("agreement", "gauss-333x77", pair, "codebook_max_diff", 1e-4, extra=extra),  # kept, not shown
    ]


def test_report_renders_a_saved_run_as_its_suites_declared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: CaptureStr
) -> None:
    """The declarations travel in the file: the pair matrix and only the headline metrics, as at the run's end."""
    monkeypatch.setenv("COLUMNS", "100")  # the report is printed 120 wide
    path = save_results(tmp_path / "results.json", _agreement_run(), ENVIRONMENT, {"agreement": AGREEMENT})
    assert main(["report", str(path)]) == 0
    first, *rest = capsys.readouterr().out.splitlines(keepends=True)
    console = Console(file=io.StringIO(), width=120)
    console.print(render_run(RunSummary(results=_agreement_run(), suites={"agreement": AGREEMENT})))
    assert "".join(rest) == console.file.getvalue()  # type: ignore[attr-defined]
    text = "".join(rest)
    assert "fourbit: nf4 agreement" in text and "cell: level / code agreement, case gauss-333x77" in text
    assert "75.00000%" in text and "50.00000%" in text
    assert "max_abs_diff" in text and "codebook_max_diff" not in text
    assert first.startswith(f"{path}: 4 results;")


def test_report_exits_1_when_a_result_regressed(tmp_path: Path, capsys: CaptureStr) -> None:
    path = save_results(tmp_path / "results.json", _results("regressed", 1.5), ENVIRONMENT)
    assert main(["report", str(path)]) == 1
    out = capsys.readouterr().out
    assert "fourbit: REGRESSIONS" in out and "baseline: 1 ok, 1 regressed" in out


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"schema_version": 1, "results": [', "not valid JSON (line 1, column "),
        ('{"schema_version": 0, "environment": {}, "results": []}', "schema_version=0"),
        ('{"schema_version": 1, "results": [{"suite": "s"}]}', "results[0] is malformed"),
        ('{"schema_version": 2, "results": [], "suites": {"agreement": 1}}', "suites['agreement'] is malformed"),
    ],
    ids=["corrupt", "old", "malformed", "malformed-suites"],
)
def test_report_of_a_bad_file_is_one_error_line(tmp_path: Path, capsys: CaptureStr, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    assert main(["report", str(path)]) == 2
    line = _error_line(capsys)
    assert str(path) in line and problem in line


def test_report_of_a_missing_file_is_a_usage_error(tmp_path: Path, capsys: CaptureStr) -> None:
    assert main(["report", str(tmp_path / "absent.json")]) == 2
    assert "no such file" in _error_line(capsys)


def test_compare_exits_1_when_the_new_run_regressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: CaptureStr
) -> None:
    monkeypatch.chdir(tmp_path)
    save_results("old.json", _results(value=1.0), ENVIRONMENT)
    save_results("new.json", _results(value=1.5), ENVIRONMENT)
    assert main(["compare", "old.json", "new.json"]) == 1
    out = capsys.readouterr().out
    assert "fourbit compare: old.json -> new.json" in out
    assert "1 ok, 1 regressed" in out
    assert main(["compare", "new.json", "old.json"]) == 0  # the other way round it is an improvement
    assert "1 ok, 1 improved" in capsys.readouterr().out
    assert main(["compare", "old.json", "old.json"]) == 0
    assert "2 ok" in capsys.readouterr().out


def test_compare_with_a_corrupt_file_is_a_usage_error(tmp_path: Path, capsys: CaptureStr) -> None:
    old = save_results(tmp_path / "old.json", _results(), ENVIRONMENT)
    new = tmp_path / "new.json"
    new.write_text("{", encoding="utf-8")
    assert main(["compare", str(old), str(new)]) == 2
    assert str(new) in _error_line(capsys)


def test_compare_sees_a_lossless_implementation_become_lossy(tmp_path: Path) -> None:
    def sqnr(value: float) -> list[Result]:
        return [Result("properties", "gauss", "fp32", "sqnr_db", value, unit="dB", direction="higher")]

    old = save_results(tmp_path / "old.json", sqnr(math.inf), ENVIRONMENT)
    new = save_results(tmp_path / "new.json", sqnr(30.0), ENVIRONMENT)
    assert main(["compare", str(old), str(new)]) == 1


TINY_TEST = """
import json
from pathlib import Path


def test_tiny(record):
    record("tiny_metric", json.loads((Path(__file__).parent / "value.json").read_text()), direction="lower")
"""


def test_run_and_baseline_update_on_a_tiny_suite(tmp_path: Path, capsys: CaptureStr) -> None:
    """`fourbit baseline update` writes baselines/ beside suites/, `fourbit run` compares with it and exits 1 on a
    regression, and its --json file says so."""
    suites = tmp_path / "suites"
    (suites / "properties").mkdir(parents=True)
    (suites / "properties" / "test_fourbit_cli_tiny.py").write_text(TINY_TEST, encoding="utf-8")
    value_file = suites / "properties" / "value.json"
    value_file.write_text("1.0", encoding="utf-8")
    common = ["--suites-dir", str(suites)]
    pytest_args = ["--", "-q", "-p", "no:cacheprovider", "--fourbit-no-entry-points"]

    assert main(["baseline", "update", "properties", *common, *pytest_args]) == 0
    baseline_file = tmp_path / "baselines" / f"{environment_key()}.json"
    entries = load_baseline(baseline_file).entries
    assert {key: entry.value for key, entry in entries.items()} == {"properties::test_tiny::-::tiny_metric": 1.0}

    results_file = tmp_path / "results.json"
    assert main(["run", "properties", *common, "--json", str(results_file), *pytest_args]) == 0
    assert [r.verdict for r in load_results(results_file)[1]] == ["ok"]

    value_file.write_text("2.0", encoding="utf-8")
    assert main(["run", "properties", *common, "--json", str(results_file), *pytest_args]) == 1
    assert [(r.verdict, r.baseline, r.value) for r in load_results(results_file)[1]] == [("regressed", 1.0, 2.0)]
    assert load_baseline(baseline_file).entries == entries  # `run` never writes the baseline
    capsys.readouterr()
    assert main(["report", str(results_file)]) == 1


def test_run_of_an_unknown_or_absent_suite_is_a_usage_error(tmp_path: Path, capsys: CaptureStr) -> None:
    (tmp_path / "suites" / "properties").mkdir(parents=True)
    assert main(["run", "nosuchsuite", "--suites-dir", str(tmp_path / "suites")]) == 2
    assert "unknown suite 'nosuchsuite'" in _error_line(capsys)
    assert main(["run", "kernels", "--suites-dir", str(tmp_path / "suites")]) == 2
    assert "suite 'kernels' is not in" in _error_line(capsys)


# ------------------------------------------------------------------------------------------ test outcomes


def _outcomes(failed: str | None = None) -> list:
    """The test outcomes of the run of ``_results()``: exact_zero passed (or failed with the message given), packing
    passed."""
    from harness.results.records import TestOutcome

    node = "properties/test_values.py::test_{}[ref-nf4]"
    exact_zero = "passed" if failed is None else "failed"
    return [
        TestOutcome(
            "ref-nf4", "exact_zero", exact_zero, "properties", nodeid=node.format("exact_zero"), message=failed or ""
        ),
        TestOutcome("ref-nf4", "packing", "passed", "properties", nodeid=node.format("packing")),
    ]


def test_report_lists_failed_tests_first_and_exits_1(tmp_path: Path, capsys: CaptureStr) -> None:
    failed = _outcomes("Failed: 0.0 -> 0.0039 (code 7)")
    path = save_results(tmp_path / "results.json", _results(), ENVIRONMENT, outcomes=failed)
    assert main(["report", str(path)]) == 1  # every metric ok, yet a test failed
    out = capsys.readouterr().out
    lines = out.splitlines()
    failures = next(i for i, line in enumerate(lines) if "fourbit: FAILED TESTS (1 failed)" in line)
    matrix = next(i for i, line in enumerate(lines) if line.startswith("┃ property"))  # the verdict matrix
    metrics = next(i for i, line in enumerate(lines) if "fourbit properties: metrics" in line)
    assert failures < matrix < metrics
    assert "test_values.py::test_exact_zero[ref-nf4]" in out and "Failed: 0.0 -> 0.0039 (code 7)" in out
    assert out.splitlines()[-1] == "tests: 1 passed, 1 failed"

    path = save_results(tmp_path / "results.json", _results(), ENVIRONMENT, outcomes=_outcomes())
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "FAILED TESTS" not in out and out.splitlines()[-1] == "tests: 2 passed"


def test_report_of_a_file_older_than_outcomes_says_it_holds_none(tmp_path: Path, capsys: CaptureStr) -> None:
    import json

    document = {"schema_version": 2, "environment": ENVIRONMENT, "results": [r.as_json() for r in _results()]}
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert main(["report", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[1]
        == f"{path} holds no test outcomes (schema 2, written before result files kept them: pass/fail unknown)"
    )


def test_report_of_a_malformed_outcome_is_one_error_line(tmp_path: Path, capsys: CaptureStr) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"schema_version": 3, "results": [], "outcomes": [{"nodeid": "t", "outcome": "won"}]}')
    assert main(["report", str(path)]) == 2
    line = _error_line(capsys)
    assert str(path) in line and "outcomes[0] is malformed (TestOutcome.outcome='won', expected one of (" in line


def test_compare_exits_1_when_a_passing_property_now_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: CaptureStr
) -> None:
    monkeypatch.chdir(tmp_path)
    save_results("old.json", _results(), ENVIRONMENT, outcomes=_outcomes())
    save_results("new.json", _results(), ENVIRONMENT, outcomes=_outcomes("Failed: boom"))
    assert main(["compare", "old.json", "new.json"]) == 1  # the metrics are unchanged
    out = capsys.readouterr().out
    assert out.index("fourbit compare: test outcomes old.json -> new.json") < out.index(
        "fourbit compare: old.json -> new.json"
    )
    regression = next(line for line in out.splitlines() if "regressed" in line and "exact_zero" in line)
    assert "passed" in regression and "failed" in regression and "Failed: boom" in out  # the new run's message
    assert "test outcomes: 1 regressed, 1 unchanged" in out and "2 ok" in out

    assert main(["compare", "new.json", "old.json"]) == 0  # the other way round it was fixed
    assert "test outcomes: 1 fixed, 1 unchanged" in capsys.readouterr().out


def test_compare_of_runs_with_nothing_in_common_is_a_usage_error(tmp_path: Path, capsys: CaptureStr) -> None:
    from harness.results.records import TestOutcome

    kernels = [Result("kernels", "4096x4096", "bnb-nf4", "dequantize_ratio", 1.25, kind="timing", samples=(1.25,))]
    plain = [TestOutcome("bnb-nf4", "timing", "passed", "kernels", nodeid="kernels/test_k.py::test_timing[bnb-nf4]")]
    old = save_results(tmp_path / "old.json", _results(), ENVIRONMENT, outcomes=_outcomes())
    new = save_results(tmp_path / "new.json", kernels, ENVIRONMENT, outcomes=plain)
    assert main(["compare", str(old), str(new)]) == 2
    assert _error_line(capsys) == (
        f"fourbit: error: {old} and {new} have nothing in common: {old} holds 2 results and 2 test outcomes "
        f"(suite properties; implementation ref-nf4), {new} 1 result and 1 test outcome (suite kernels; "
        "implementation bnb-nf4)"
    )
    empty = save_results(tmp_path / "empty.json", [], ENVIRONMENT)
    assert main(["compare", str(empty), str(empty)]) == 2
    assert "have nothing in common" in _error_line(capsys)


def test_compare_with_a_file_older_than_outcomes_compares_the_metrics(tmp_path: Path, capsys: CaptureStr) -> None:
    import json

    old = tmp_path / "v2.json"
    old.write_text(json.dumps({"schema_version": 2, "results": [r.as_json() for r in _results()]}), encoding="utf-8")
    new = save_results(tmp_path / "new.json", _results(), ENVIRONMENT, outcomes=_outcomes("Failed: boom"))
    assert main(["compare", str(old), str(new)]) == 0  # no outcome to regress from
    out = capsys.readouterr().out
    assert f"test outcomes not compared: {old} holds none (schema 2)" in out and "2 ok" in out
