"""The plugin's baseline flow end to end, through pytester: write a baseline, compare with it, fail the test
whose metric regressed, new and missing metrics, --fourbit-strict, a corrupt file, result files, the baseline
shipped with the package, known library failures, and implementations whose library is not installed.

The test project is a toy quantizer and two tests whose recorded values (and whether they fail) come from
settings.json, so each run changes only what it is about.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import harness
from harness.pytest_plugin import gate
from harness.report.markdown import render_markdown
from harness.report.model import Outcome, RunSummary
from harness.report.terminal import regression_message
from harness.results.baselines import Baseline, BaselineEntry, load_baseline, save_baseline
from harness.results.compare import compare_result
from harness.results.environment import environment_key
from harness.results.files import load_results
from harness.results.records import Result

pytest_plugins = ["pytester"]

PYTEST_VERSION = metadata.version("pytest")

TOY_MODULE = """
from harness import Capabilities, FormatSpec, QuantizedTensor
from harness.errors import MissingDependency


class Toy:
    def __init__(self, name):
        self.name = name
        self.spec = FormatSpec(format="toy", codebook=None, scale="none")
        self.capabilities = Capabilities()

    def quantize(self, x):
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.detach().clone()})

    def dequantize(self, q):
        return q.storage["weight"].clone()


def toy_a():
    return Toy("toy-a")


def needs_gpu():
    raise MissingDependency("toyquant:needs_gpu", ("toy-gpu",), "needs a CUDA device", "pip install toygpu[cuda]")
"""

TEST_MODULE = """
import json
from pathlib import Path

SETTINGS = Path(__file__).resolve().parents[1] / "settings.json"


def _run(name, record):
    settings = json.loads(SETTINGS.read_text())[name]
    for metric, value in settings["metrics"].items():
        if isinstance(value, dict):  # every field given: a timing or sampled metric
            record(metric, **value)
        else:
            record(metric, value, unit="u", direction="lower")
    assert not settings["fail"], f"{name} was told to fail"


def test_a(quantizer, record):
    _run("test_a", record)


def test_b(quantizer, record):
    _run("test_b", record)
"""

SUITE = "properties"
IMPL = "toy-a"
CASE_A, CASE_B = f"test_a[{IMPL}]", f"test_b[{IMPL}]"


def _key(case: str, metric: str) -> str:
    return f"{SUITE}::{case}::{IMPL}::{metric}"


class Project:
    """A pytester project with the toy quantizer, the two tests, and a baseline folder."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.path = pytester.path
        (self.path / "toyquant.py").write_text(textwrap.dedent(TOY_MODULE))
        (self.path / SUITE).mkdir()
        (self.path / SUITE / "test_metrics.py").write_text(textwrap.dedent(TEST_MODULE))
        self.baseline_dir = self.path / "baselines"
        self.baseline_file = self.baseline_dir / f"{environment_key()}.json"
        self.settings(a={"err": 1.0}, b={"other": 2.0})

    def settings(self, *, a: dict[str, Any], b: dict[str, Any], fail: tuple[str, ...] = ()) -> None:
        document = {
            "test_a": {"metrics": a, "fail": "test_a" in fail},
            "test_b": {"metrics": b, "fail": "test_b" in fail},
        }
        (self.path / "settings.json").write_text(json.dumps(document))

    def run(
        self, *args: str, impl: str = IMPL, quantizer: str = "toyquant:toy_a", baseline_dir: bool = True
    ) -> pytest.RunResult:
        """A run of the project; ``baseline_dir=False`` passes no --baseline-dir (the plugin picks the baseline)."""
        if baseline_dir:
            self.baseline_dir.mkdir(parents=True, exist_ok=True)
        return self.pytester.runpytest(
            SUITE,
            "-p", "no:cacheprovider",
            "--fourbit-no-entry-points",
            "--quantizer", quantizer,
            "--impl", impl,
            *(["--baseline-dir", str(self.baseline_dir)] if baseline_dir else []),
            *args,
        )  # fmt: skip

    def set_baseline_value(self, key: str, value: float) -> BaselineEntry:
        baseline = load_baseline(self.baseline_file)
        baseline.entries[key] = dataclasses.replace(baseline.entries[key], value=value)
        save_baseline(self.baseline_file, baseline)
        return baseline.entries[key]


def _output(result: pytest.RunResult) -> str:
    return result.stdout.str() + "\n" + result.stderr.str()


@pytest.fixture
def project(inner_pytest: pytest.Pytester) -> Project:
    return Project(inner_pytest)


@pytest.fixture
def with_baseline(project: Project) -> Project:
    """The project after ``--update-baselines`` stored err=1.0 (test_a) and other=2.0 (test_b)."""
    result = project.run("--update-baselines")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    return project


# ------------------------------------------------------------------------------------------ write, compare


def test_update_baselines_writes_the_environment_file(project: Project) -> None:
    assert not project.baseline_dir.exists()
    result = project.run("--update-baselines")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)
    assert f"baseline {project.baseline_file}: wrote 2 metrics" in result.stdout.str()
    baseline = load_baseline(project.baseline_file)
    assert baseline.environment_key == environment_key()
    assert {key: (e.value, e.unit, e.direction, e.kind) for key, e in baseline.entries.items()} == {
        _key(CASE_A, "err"): (1.0, "u", "lower", "exact"),
        _key(CASE_B, "other"): (2.0, "u", "lower", "exact"),
    }
    assert baseline.environment["cpu"]["machine"]  # the fingerprint is stored beside the numbers


def test_an_unchanged_run_passes_with_every_metric_ok(with_baseline: Project) -> None:
    before = with_baseline.baseline_file.read_bytes()
    result = with_baseline.run()
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)
    assert "baseline: 2 ok" in result.stdout.str()
    assert "REGRESSIONS" not in result.stdout.str()
    assert with_baseline.baseline_file.read_bytes() == before  # comparing never writes the baseline


def test_a_regressed_metric_fails_the_test_that_recorded_it(with_baseline: Project) -> None:
    entry = with_baseline.set_baseline_value(_key(CASE_A, "err"), 0.5)  # lower is better: 1.0 is now worse
    with_baseline.set_baseline_value(_key(CASE_B, "other"), 3.0)  # and 2.0 better: improved does not fail
    result = with_baseline.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert f"FAILED {SUITE}/test_metrics.py::{CASE_A}" in out
    expected = compare_result(Result(SUITE, CASE_A, IMPL, "err", 1.0, unit="u"), entry)
    assert expected.verdict == "regressed"
    message = regression_message(expected)
    assert message in out  # the failure names the metric, the baseline, the current value and the statistic
    for part in ("err of toy-a", "baseline 0.5", "now 1 u", expected.statistic):
        assert part in message
    assert "REGRESSIONS" in out
    assert "baseline: 1 improved, 1 regressed" in out


def test_a_new_metric_fails_only_under_strict(with_baseline: Project) -> None:
    with_baseline.settings(a={"err": 1.0, "fresh": 0.25}, b={"other": 2.0})
    result = with_baseline.run()
    assert result.ret == pytest.ExitCode.OK, _output(result)
    assert "baseline: 2 ok, 1 new" in result.stdout.str()

    result = with_baseline.run("--fourbit-strict")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert f"FAILED {SUITE}/test_metrics.py::{CASE_A}" in out
    assert f"fresh of {IMPL} on {CASE_A} ({SUITE}): no baseline (--fourbit-strict)" in out


def test_a_missing_metric_is_shown_and_fails_only_under_strict(with_baseline: Project) -> None:
    with_baseline.settings(a={"err": 1.0}, b={})  # test_b no longer records "other"
    result = with_baseline.run()
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "baseline: 1 ok, 1 missing" in out
    row_b = next(line for line in out.splitlines() if "│ test_b" in line)  # the metrics table's row of test_b
    assert row_b.split("│")[-2].strip() == "missing"  # in the column of "other"

    result = with_baseline.run("--fourbit-strict")
    result.assert_outcomes(passed=2)  # no test produced it, so none fails; the run does
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    assert "baseline: 1 ok, 1 missing" in result.stdout.str()


def test_a_corrupt_baseline_is_a_usage_error_naming_the_file(with_baseline: Project) -> None:
    with_baseline.baseline_file.write_text('{"schema_version": 1, "metrics": {', encoding="utf-8")
    result = with_baseline.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, _output(result)
    assert str(with_baseline.baseline_file) in result.stderr.str()
    assert "not valid JSON" in result.stderr.str()
    assert "Traceback" not in _output(result) and "passed" not in result.stdout.str()


def test_update_baselines_leaves_out_the_metrics_of_failing_tests(with_baseline: Project) -> None:
    with_baseline.settings(a={"err": 5.0}, b={"other": 4.0}, fail=("test_a",))
    result = with_baseline.run("--update-baselines")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)
    assert "wrote 1 metrics (1 metrics of failing tests left out)" in result.stdout.str()
    entries = load_baseline(with_baseline.baseline_file).entries
    assert {key: e.value for key, e in entries.items()} == {_key(CASE_A, "err"): 1.0, _key(CASE_B, "other"): 4.0}


def test_update_baselines_with_every_test_failing_writes_nothing(project: Project) -> None:
    project.settings(a={"err": 1.0}, b={"other": 2.0}, fail=("test_a", "test_b"))
    result = project.run("--update-baselines")
    result.assert_outcomes(failed=2)
    assert "no metrics from passing tests; baseline not written" in result.stdout.str()
    assert not project.baseline_file.exists()


def test_update_baselines_keeps_the_entries_of_tests_not_run(with_baseline: Project) -> None:
    with_baseline.settings(a={"err": 7.0}, b={"other": 4.0})
    result = with_baseline.run("--update-baselines", "-k", "test_b")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    entries = load_baseline(with_baseline.baseline_file).entries
    assert {key: e.value for key, e in entries.items()} == {_key(CASE_A, "err"): 1.0, _key(CASE_B, "other"): 4.0}


def _timing(ratio: float) -> dict[str, Any]:
    rounds = (0.98, 1.0, 1.02, 0.99, 1.01)
    return {"value": ratio, "kind": "timing", "samples": [ratio * r for r in rounds], "unit": "x copy"}


def test_timing_runs_fold_across_updates_and_a_slowdown_fails(project: Project) -> None:
    for ratio in (1.2, 1.4):
        project.settings(a={"ratio": _timing(ratio)}, b={})
        assert project.run("--update-baselines").ret == pytest.ExitCode.OK
    entry = load_baseline(project.baseline_file).entries[_key(CASE_A, "ratio")]
    assert (entry.kind, entry.runs, entry.value) == ("timing", (1.2, 1.4), statistics.median((1.2, 1.4)))

    slower = _timing(1.5 * entry.value)
    expected = compare_result(Result(SUITE, CASE_A, IMPL, "ratio", **slower), entry)
    assert expected.verdict == "regressed", expected.statistic
    project.settings(a={"ratio": slower}, b={})
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    assert regression_message(expected) in result.stdout.str()

    project.settings(a={"ratio": _timing(entry.value)}, b={})
    result = project.run()
    assert result.ret == pytest.ExitCode.OK, _output(result)
    assert "baseline: 1 ok" in result.stdout.str()


def test_json_and_markdown_files(with_baseline: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    step_summary = with_baseline.path / "step_summary.md"
    step_summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    json_path, md_path = with_baseline.path / "out" / "results.json", with_baseline.path / "out" / "summary.md"
    result = with_baseline.run(f"--fourbit-json={json_path}", f"--fourbit-md={md_path}")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    assert f"results: {json_path}" in result.stdout.str() and f"markdown summary: {md_path}" in result.stdout.str()

    environment, results = load_results(json_path)
    assert environment["cpu"]["machine"]
    assert [(r.key, r.value, r.baseline, r.verdict) for r in results] == [
        ((SUITE, CASE_A, IMPL, "err"), 1.0, 1.0, "ok"),
        ((SUITE, CASE_B, IMPL, "other"), 2.0, 2.0, "ok"),
    ]
    outcomes = [Outcome(IMPL, "a", "passed", SUITE), Outcome(IMPL, "b", "passed", SUITE)]
    markdown = md_path.read_text(encoding="utf-8")
    assert markdown == render_markdown(RunSummary(outcomes, results))
    assert step_summary.read_text(encoding="utf-8") == "earlier step\n" + markdown  # appended, not replaced


# ------------------------------------------------------------------------------------------ the shipped baseline


def _ship(project: Project, monkeypatch: pytest.MonkeyPatch, err: float) -> Path:
    """A baseline shipped with the package (gate.shipped_baselines): an exact ``err`` of test_a, a timing ``other``
    of test_b and a sampled metric no test records. Only the exact entry may be used."""
    shipped = project.path / "installed" / "harness" / "_baselines"
    key = environment_key()
    entries = [
        BaselineEntry(SUITE, CASE_A, IMPL, "err", err, kind="exact", direction="lower", unit="u"),
        BaselineEntry(SUITE, CASE_B, IMPL, "other", 9.0, kind="timing", direction="lower", runs=(9.0, 9.0)),
        BaselineEntry(SUITE, CASE_B, IMPL, "f1", 0.5, kind="sampled", direction="higher", samples=(0.5,)),
    ]
    file = save_baseline(shipped / f"{key}.json", Baseline(key, {}, {e.key: e for e in entries}))
    monkeypatch.setattr(gate, "shipped_baselines", lambda: shipped)
    return file


def test_without_a_baseline_of_its_own_a_run_is_gated_by_the_shipped_exact_entries(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = _ship(project, monkeypatch, err=1.0)
    before = shipped.read_bytes()
    result = project.run(baseline_dir=False)
    assert result.ret == pytest.ExitCode.OK, _output(result)
    out = result.stdout.str()
    assert gate.SHIPPED_NOTE in out
    assert "baseline: 1 ok, 1 new" in out  # the timing entry of "other" and the sampled "f1" (not missing) left out

    _ship(project, monkeypatch, err=0.5)  # lower is better: 1.0 regressed
    result = project.run(baseline_dir=False)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)
    _ship(project, monkeypatch, err=1.0)
    assert shipped.read_bytes() == before  # read, never written


def test_an_update_without_a_baseline_folder_writes_baselines_here_not_the_shipped_file(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = _ship(project, monkeypatch, err=0.5)
    before = shipped.read_bytes()
    result = project.run("--update-baselines", baseline_dir=False)
    assert result.ret == pytest.ExitCode.OK, _output(result)
    assert f"baseline {project.baseline_file}: wrote 2 metrics" in result.stdout.str()  # ./baselines, created
    assert shipped.read_bytes() == before
    entries = load_baseline(project.baseline_file).entries
    assert {key: e.value for key, e in entries.items()} == {_key(CASE_A, "err"): 1.0, _key(CASE_B, "other"): 2.0}

    result = project.run(baseline_dir=False)  # ./baselines exists now: the shipped file is not used
    assert result.ret == pytest.ExitCode.OK, _output(result)
    assert "baseline: 2 ok" in result.stdout.str() and gate.SHIPPED_NOTE not in result.stdout.str()


def test_an_update_into_the_installed_package_is_a_usage_error(project: Project) -> None:
    inside = Path(harness.__file__).resolve().parent / "_baselines_of_a_test"
    result = project.run("--update-baselines", "--baseline-dir", str(inside), baseline_dir=False)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, _output(result)
    assert "inside the installed fourbit-harness package" in result.stderr.str()
    assert not inside.exists()


# ------------------------------------------------------------------------------------------ known failures


def _known_failures(project: Project, library: str) -> None:
    (project.path / SUITE / "known_failures.toml").write_text(
        textwrap.dedent(
            f"""
            [[known_failure]]
            implementations = ["toy-*"]
            tests = ["test_a*"]
            library = "{library}"
            reason = "toy rounds ties the wrong way"
            """
        ),
        encoding="utf-8",
    )


def test_a_known_failure_is_an_xfail_with_its_reason(project: Project) -> None:
    _known_failures(project, f"pytest=={PYTEST_VERSION}")
    project.settings(a={"err": 1.0}, b={"other": 2.0}, fail=("test_a",))
    result = project.run("-rxX")
    assert result.ret == pytest.ExitCode.OK, _output(result)
    result.assert_outcomes(passed=1, xfailed=1)
    out = result.stdout.str()
    assert f"XFAIL {SUITE}/test_metrics.py::{CASE_A}" in out
    assert f"known pytest=={PYTEST_VERSION} bug: toy rounds ties the wrong way" in out

    result = project.run("--fourbit-no-known-failures")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)


def test_a_fixed_known_failure_fails_as_a_strict_xpass(project: Project) -> None:
    _known_failures(project, f"pytest=={PYTEST_VERSION}")
    result = project.run("-rxX")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)
    assert "[XPASS(strict)]" in result.stdout.str()


def test_a_known_failure_of_another_library_version_does_not_apply(project: Project) -> None:
    _known_failures(project, "pytest==0.0.1")
    project.settings(a={"err": 1.0}, b={"other": 2.0}, fail=("test_a",))
    result = project.run()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, _output(result)
    result.assert_outcomes(passed=1, failed=1)


def test_a_malformed_known_failures_file_is_a_usage_error(project: Project) -> None:
    (project.path / SUITE / "known_failures.toml").write_text('[[known_failure]]\nlibrary = "pytest"\n')
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, _output(result)
    assert "known_failures.toml: known_failure #1: library='pytest'" in result.stderr.str()


# ------------------------------------------------------------------------------------------ unavailable


def test_an_unavailable_implementation_skips_with_the_install_hint(project: Project) -> None:
    result = project.run("-rs", impl="toy-gpu", quantizer="toyquant:needs_gpu")
    assert result.ret == pytest.ExitCode.OK, _output(result)  # --impl naming only it is not a usage error
    result.assert_outcomes(skipped=2)
    out = result.stdout.str()
    assert "toy-gpu: needs a CUDA device (pip install toygpu[cuda])" in out
    assert "failed to load" not in out
