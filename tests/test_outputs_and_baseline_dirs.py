"""Outputs and options that cannot work are one-line usage errors before any test runs (harness._validation
.why_not_writable, harness.pytest_plugin.output and .gate); an output that fails at the end is reported in one line
while the others are still written; a run with nothing to compare with says so."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from harness._validation import why_not_writable
from harness.results.files import load_run

pytest_plugins = ["pytester"]

SUITE = """
def test_good(quantizer, record):
    record("err", 1.0)
"""


@pytest.fixture
def project(inner_pytest: pytest.Pytester) -> pytest.Pytester:
    (inner_pytest.path / "properties").mkdir()
    (inner_pytest.path / "properties" / "test_toy.py").write_text(textwrap.dedent(SUITE))
    return inner_pytest


def _run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest(
        "properties", "-p", "no:cacheprovider", "--fourbit-no-entry-points", "--impl", "ref-nf4", *args
    )


def test_why_not_writable(tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert why_not_writable(tmp_path / "new" / "deeper" / "out.json") is None  # folders are created
    assert why_not_writable(a_file) is None
    assert why_not_writable(tmp_path) == "is a folder, expected a file path"
    assert why_not_writable(a_file / "out.json") == f"{a_file} is a file, not a folder"
    assert why_not_writable(a_file / "x" / "out.json") == f"{a_file} is a file, not a folder"
    assert why_not_writable(a_file, folder=True) == "is a file, expected a folder"
    assert why_not_writable(tmp_path / "plots", folder=True) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_not_writable(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    assert why_not_writable(folder / "out.json") == f"folder {folder} is not writable"


@pytest.mark.parametrize(
    ("option", "where", "problem"),
    [
        ("--fourbit-json", ".", "is a folder, expected a file path"),
        ("--fourbit-md", "a_file/out.md", "a_file is a file, not a folder"),
        ("--fourbit-plots", "a_file", "is a file, expected a folder"),
    ],
)
def test_an_output_that_cannot_be_written_is_a_usage_error_before_the_run(
    project: pytest.Pytester, option: str, where: str, problem: str
) -> None:
    (project.path / "a_file").write_text("x")
    path = project.path / where
    result = _run(project, f"{option}={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: {option} {path}: ") and problem in errors[0]
    assert "passed" not in result.stdout.str()  # no test ran


def test_an_output_that_fails_at_the_end_is_one_line_and_the_others_are_written(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    json_path, md_path = project.path / "run.json", project.path / "out" / "run.md"
    project.makeconftest(
        f"""
        import pathlib

        def pytest_sessionfinish(session):
            pathlib.Path({str(md_path.parent)!r}).write_text("now a file")  # the folder became a file mid-run
        """
    )
    result = _run(project, f"--fourbit-json={json_path}", f"--fourbit-md={md_path}")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # what the run was asked to keep is not all there
    assert f"--fourbit-md {md_path}: not written (" in out
    assert f"results: {json_path}" in out and load_run(json_path).outcomes  # the other file was written
    assert "fourbit summary" in out


def test_a_baseline_folder_that_does_not_exist_is_a_usage_error(project: pytest.Pytester) -> None:
    missing = project.path / "typo-baselines"
    result = _run(project, f"--baseline-dir={missing}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: --baseline-dir {missing}: no such folder" in result.stderr.str()
    assert not missing.exists()


def test_an_update_creates_the_baseline_folder(project: pytest.Pytester) -> None:
    folder = project.path / "new" / "baselines"
    assert _run(project, f"--baseline-dir={folder}", "--update-baselines").ret == pytest.ExitCode.OK
    assert len(list(folder.glob("*.json"))) == 1


def test_an_update_into_a_path_under_a_file_is_a_usage_error(project: pytest.Pytester) -> None:
    (project.path / "a_file").write_text("x")
    result = _run(project, f"--baseline-dir={project.path / 'a_file'}", "--update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --update-baselines: " in result.stderr.str() and "is a file, not a folder" in result.stderr.str()


def test_a_run_with_no_baseline_says_nothing_was_gated(project: pytest.Pytester) -> None:
    (project.path / "empty").mkdir()
    result = _run(project, f"--baseline-dir={project.path / 'empty'}")
    assert result.ret == pytest.ExitCode.OK
    assert "no baseline: nothing gated (no file for this environment: " in result.stdout.str()
    assert result.stdout.lines[-1].startswith("=") and "1 passed, 1 metric(s) not gated in " in result.stdout.lines[-1]


def test_what_was_not_gated_is_said_with_its_reason() -> None:
    from harness.results.compare import not_gated
    from harness.results.records import Result

    elsewhere = "baseline timed on AMD EPYC (2 cores), this run on Intel Xeon (2 cores): not compared"
    results = [
        Result("kernels", f"c{i}", "a", "ratio", 1.0, kind="timing", baseline=2.0, verdict="new", statistic=elsewhere)
        for i in range(3)
    ]
    results += [Result("properties", "c", "a", "mse", 1.0, verdict="new", statistic="no baseline for this metric")]
    results += [Result("kernels", "c", "b", "ratio", 1.0, kind="timing", baseline=1.0, verdict="inconclusive")]
    results += [Result("properties", "c", "b", "mse", 1.0, baseline=1.0, verdict="ok")]
    assert not_gated(results) == [
        f"not gated: 3 timing metrics: {elsewhere}",
        "not gated: 1 exact metric: no baseline entry",
        "not gated: 1 timing metric: inconclusive (the CPU was shared: re-run on a quieter machine)",
    ]
    assert not_gated(results[-1:]) == []


def test_a_run_says_which_metrics_it_did_not_gate(project: pytest.Pytester) -> None:
    folder = project.path / "baselines"
    assert _run(project, f"--baseline-dir={folder}", "--update-baselines").ret == pytest.ExitCode.OK
    (project.path / "properties" / "test_toy.py").write_text(textwrap.dedent(SUITE) + '    record("new_metric", 2.0)\n')
    out = _run(project, f"--baseline-dir={folder}").stdout.str()
    assert "not gated: 1 exact metric: no baseline entry" in out


VIOLATING_SUITE = """
from harness.checks import PropertyViolation


def deep_inside_the_checks(name):
    raise PropertyViolation(name, "exact zero", "input 0.0 at index (3,) came back as 1e-08, expected 0.0")


def test_exact_zero(quantizer):
    deep_inside_the_checks(quantizer.name)
"""


def test_a_property_failure_is_the_harness_s_message_not_a_traceback(inner_pytest: pytest.Pytester) -> None:
    (inner_pytest.path / "properties").mkdir()
    (inner_pytest.path / "properties" / "test_violated.py").write_text(textwrap.dedent(VIOLATING_SUITE))
    message = (
        "PropertyViolation: ref-nf4: exact zero violated: input 0.0 at index (3,) came back as 1e-08, expected 0.0"
    )
    result = _run(inner_pytest)
    out = result.stdout.str()
    failure = out.split("= FAILURES =", 1)[1].split("fourbit summary", 1)[0]
    shown = [line for line in failure.splitlines() if line.strip() and not line.startswith(("=", "_"))]
    assert shown == [message]
    result = _run(inner_pytest, "--tb=long")
    assert "def deep_inside_the_checks(name):" in result.stdout.str()  # asked for: pytest's traceback
