"""Every field of a stored file is checked against its schema when the file is read (issue 18, item 9).

A baseline or result file with a wrongly typed field used to load and crash a later reader: an ``environment``
whose ``cpu`` is a number broke timing_machine (AttributeError in the middle of a timing test), one whose ``git``
is a string broke ``fourbit report``. Now the loader refuses it with a StoredFileError subclass whose one-line
message names the file and the field (``environment.cpu is malformed (expected an object, got an integer (5))``),
and ``fourbit report`` exits 2 with that line. The schemas are declared once (harness.results.files: the
environment and the result file; harness.results.baselines: the baseline entry).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import BaselineFormatError, ResultFileFormatError, StoredFileError
from harness.results.baselines import BaselineEntry, load_baseline
from harness.results.environment import environment_fingerprint, timing_machine
from harness.results.files import ENVIRONMENT_SHAPE, load_run
from harness.results.records import Result, TestOutcome

ENTRY = BaselineEntry("kernels", "c", "bnb-nf4", "dequantize_ratio", 1.25, "timing", "lower", runs=(1.0, 1.5))
RESULT = Result(
    "accuracy",
    "coqa",
    "ref-nf4",
    "coqa_f1",
    0.625,
    unit="F1",
    kind="sampled",
    direction="higher",
    samples=(1.0, 0.25),
    ci_low=0.5,
    ci_high=0.75,
    tolerance=0.02,
    data_hash="sha256:0123",
    baseline=0.75,
    verdict="ok",
    statistic="mean",
    extra={"items": 2},
)
OUTCOME = TestOutcome("ref-nf4", "exact_zero", "passed", "properties", nodeid="p/test_v.py::test_exact_zero[ref-nf4]")
DEEP = 100_000
"""Far deeper than Python's recursion limit: what a hostile or broken file may hold."""


def _baseline_file(folder: Path, *, environment: Any = None, entry: Any = None) -> Path:
    document = {
        "schema_version": 1,
        "environment_key": "cpu-x86_64",
        "environment": {} if environment is None else environment,
        "metrics": {ENTRY.key: ENTRY.as_json() if entry is None else entry},
    }
    path = folder / "baselines" / "cpu-x86_64.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _result_file(folder: Path, *, environment: Any = None, result: Any = None, outcome: Any = None) -> Path:
    document = {
        "schema_version": 3,
        "environment": {} if environment is None else environment,
        "results": [RESULT.as_json() if result is None else result],
        "outcomes": [OUTCOME.as_json() if outcome is None else outcome],
    }
    path = folder / "results.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _message(excinfo: pytest.ExceptionInfo[StoredFileError], path: Path) -> str:
    """The error's message, checked to be one line naming the file."""
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_the_files_as_written_load(tmp_path: Path) -> None:
    """The schemas accept what the harness writes: the real fingerprint, every field of a record."""
    fingerprint = environment_fingerprint()
    ENVIRONMENT_SHAPE.check(fingerprint, "environment")
    assert load_baseline(_baseline_file(tmp_path, environment=fingerprint)).entries == {ENTRY.key: ENTRY}
    run = load_run(_result_file(tmp_path, environment=fingerprint))
    assert (run.environment, run.results, run.outcomes) == (fingerprint, [RESULT], [OUTCOME])
    assert timing_machine(run.environment)


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {"python": "3.11.9", "cpu": {"machine": "x86_64", "flags": ["avx2"]}},  # fields may be absent
        {"cuda": None, "git": None, "cpu": {"count": None}, "libraries": {"torch": None}},  # null where allowed
        {"from_a_newer_harness": {"anything": [1, "x"]}, "cpu": {"cache_kib": 1024}},  # unknown fields: ignored
    ],
    ids=["empty", "some-fields", "nulls", "unknown-fields"],
)
def test_partial_and_newer_environments_load(tmp_path: Path, environment: dict[str, Any]) -> None:
    assert load_baseline(_baseline_file(tmp_path, environment=environment)).environment == environment
    assert load_run(_result_file(tmp_path, environment=environment)).environment == environment
    timing_machine(environment)  # which is what a wrongly typed one used to crash


# ------------------------------------------------------------------------------------------ environment

BAD_ENVIRONMENTS = [
    ("x", "environment is malformed (expected an object, got a string ('x'))"),
    ([], "environment is malformed (expected an object, got a list)"),
    ({"cpu": 5}, "environment.cpu is malformed (expected an object, got an integer (5))"),
    ({"cpu": {"model": 5}}, "environment.cpu.model is malformed (expected a string, got an integer (5))"),
    ({"cpu": {"count": "2"}}, "environment.cpu.count is malformed (expected an integer or null, got a string ('2'))"),
    ({"cpu": {"flags": "avx2"}}, "environment.cpu.flags is malformed (expected a list of strings, got a string"),
    ({"cpu": {"flags": ["avx2", 1]}}, "environment.cpu.flags[1] is malformed (expected a string, got an integer"),
    ({"cuda": "H100"}, "environment.cuda is malformed (expected an object or null, got a string ('H100'))"),
    ({"cuda": {"capability": 9.0}}, "environment.cuda.capability is malformed (expected a string, got a number"),
    ({"libraries": ["torch"]}, "environment.libraries is malformed (expected an object of package name -> version"),
    ({"libraries": {"torch": 2}}, "environment.libraries['torch'] is malformed (expected a string or null, got an"),
    ({"git": "abc123"}, "environment.git is malformed (expected an object or null, got a string ('abc123'))"),
    ({"git": {"dirty": "no"}}, "environment.git.dirty is malformed (expected a boolean, got a string ('no'))"),
    ({"torch_threads": True}, "environment.torch_threads is malformed (expected an integer, got a boolean (true))"),
    ({"python": 3.11}, "environment.python is malformed (expected a string, got a number (3.11))"),
]
ENVIRONMENT_IDS = [
    "string",
    "list",
    "cpu-number",
    "cpu-model",
    "cpu-count",
    "cpu-flags-string",
    "cpu-flags-item",
    "cuda-string",
    "cuda-capability",
    "libraries-list",
    "libraries-version",
    "git-string",
    "git-dirty",
    "torch-threads-bool",
    "python-number",
]
FILE_KINDS: dict[str, tuple[Callable[..., Path], Callable[[Path], Any], type[StoredFileError]]] = {
    "baseline": (_baseline_file, load_baseline, BaselineFormatError),
    "results": (_result_file, load_run, ResultFileFormatError),
}


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize(("environment", "problem"), BAD_ENVIRONMENTS, ids=ENVIRONMENT_IDS)
def test_a_wrongly_typed_environment_is_refused_naming_the_field(
    tmp_path: Path, kind: str, environment: Any, problem: str
) -> None:
    write, load, error = FILE_KINDS[kind]
    path = write(tmp_path, environment=environment)
    with pytest.raises(error) as excinfo:
        load(path)
    assert problem in _message(excinfo, path)


def test_a_baseline_environment_that_crashed_timing_tests_is_refused(tmp_path: Path) -> None:
    """{"cpu": 5} loaded, then timing_machine(baseline.environment) raised AttributeError inside a timing test."""
    with pytest.raises(AttributeError):
        timing_machine({"cpu": 5})
    path = _baseline_file(tmp_path, environment={"cpu": 5})
    with pytest.raises(BaselineFormatError) as excinfo:
        load_baseline(path)
    assert _message(excinfo, path) == (
        f"baseline {str(path)!r}: environment.cpu is malformed (expected an object, got an integer (5))"
    )


# ------------------------------------------------------------------------------------------ baseline entries

BAD_ENTRY_FIELDS: list[tuple[str, Any, str]] = [
    ("suite", 5, "expected a string, got an integer (5)"),
    ("case", None, "expected a string, got null"),
    ("implementation", ["bnb-nf4"], "expected a string, got a list"),
    ("metric", {}, "expected a string, got an object"),
    ("unit", 3, "expected a string, got an integer (3)"),
    ("value", "fast", 'expected a number (or "nan", "inf", "-inf"), got a string (\'fast\')'),
    ("value", True, "got a boolean (true)"),
    ("kind", "aggregate", "expected one of exact, timing, sampled, info, got a string ('aggregate')"),
    ("kind", 1, "expected one of exact, timing, sampled, info, got an integer (1)"),
    ("direction", "up", "expected one of higher, lower, got a string ('up')"),
    ("tolerance", "tight", "expected a number"),
    ("runs", "12", "expected a list of numbers, got a string ('12')"),
    ("runs", [1.0, "x"], "got a string ('x')"),
    ("samples", "123", "expected a list of numbers, got a string ('123')"),
    ("samples", [None], "expected a number"),
    ("data_hash", 5, "expected a string or null, got an integer (5)"),
]


@pytest.mark.parametrize(
    ("name", "value", "problem"), BAD_ENTRY_FIELDS, ids=[f"{n}-{type(v).__name__}" for n, v, _ in BAD_ENTRY_FIELDS]
)
def test_every_wrongly_typed_field_of_a_baseline_entry_is_named(
    tmp_path: Path, name: str, value: Any, problem: str
) -> None:
    path = _baseline_file(tmp_path, entry=ENTRY.as_json() | {name: value})
    with pytest.raises(BaselineFormatError) as excinfo:
        load_baseline(path)
    message = _message(excinfo, path)
    assert re.search(rf"metrics\[{re.escape(repr(ENTRY.key))}\]\.{name}(\[\d+\])? is malformed \(", message), message
    assert problem in message, message


def test_samples_as_a_string_is_refused_not_read_as_digits(tmp_path: Path) -> None:
    path = _baseline_file(tmp_path, entry=ENTRY.as_json() | {"kind": "sampled", "samples": "123"})
    with pytest.raises(BaselineFormatError) as excinfo:
        load_baseline(path)
    assert _message(excinfo, path).endswith(
        f"metrics[{ENTRY.key!r}].samples is malformed (expected a list of numbers, got a string ('123'))"
    )
    path = _result_file(tmp_path, result=RESULT.as_json() | {"samples": "123"})
    with pytest.raises(ResultFileFormatError) as excinfo_results:
        load_run(path)
    assert _message(excinfo_results, path).endswith(
        "results[0].samples is malformed (expected a list of numbers or null, got a string ('123'))"
    )


# ------------------------------------------------------------------------------------------ result files

BAD_RESULT_FIELDS: list[tuple[str, Any]] = [
    ("suite", 5),
    ("case", None),
    ("implementation", []),
    ("metric", {}),
    ("value", "x"),
    ("unit", 3),
    ("kind", 1),
    ("direction", ["lower"]),
    ("samples", [1.0, "x"]),
    ("ci_low", "low"),
    ("ci_high", []),
    ("tolerance", {}),
    ("baseline", True),
    ("data_hash", 5),
    ("verdict", 3),
    ("statistic", 5),
    ("extra", [1, 2]),
]


@pytest.mark.parametrize(("name", "value"), BAD_RESULT_FIELDS, ids=[name for name, _ in BAD_RESULT_FIELDS])
def test_every_wrongly_typed_field_of_a_result_is_named(tmp_path: Path, name: str, value: Any) -> None:
    path = _result_file(tmp_path, result=RESULT.as_json() | {name: value})
    with pytest.raises(ResultFileFormatError) as excinfo:
        load_run(path)
    assert re.search(rf"results\[0\]\.{name}(\[\d+\])? is malformed \(expected ", _message(excinfo, path))


BAD_OUTCOME_FIELDS: list[tuple[str, Any]] = [
    ("nodeid", 5),
    ("outcome", ["passed"]),
    ("implementation", None),
    ("property", []),
    ("suite", {}),
    ("message", 3),
]


@pytest.mark.parametrize(("name", "value"), BAD_OUTCOME_FIELDS, ids=[name for name, _ in BAD_OUTCOME_FIELDS])
def test_every_wrongly_typed_field_of_an_outcome_is_named(tmp_path: Path, name: str, value: Any) -> None:
    path = _result_file(tmp_path, outcome=OUTCOME.as_json() | {name: value})
    with pytest.raises(ResultFileFormatError) as excinfo:
        load_run(path)
    message = _message(excinfo, path)
    assert f"outcomes[0].{name} is malformed (expected a string, got " in message, message


def test_a_value_the_record_refuses_names_the_record(tmp_path: Path) -> None:
    """The types are the schema's; the allowed kinds and outcomes are the record classes' (records.py)."""
    path = _result_file(tmp_path, result=RESULT.as_json() | {"kind": "fast"})
    with pytest.raises(ResultFileFormatError, match=re.escape("results[0] is malformed (Result.kind='fast'")):
        load_run(path)
    path = _result_file(tmp_path, outcome=OUTCOME.as_json() | {"outcome": "won"})
    with pytest.raises(ResultFileFormatError, match=re.escape("outcomes[0] is malformed (TestOutcome.outcome='won'")):
        load_run(path)


# ------------------------------------------------------------------------------------------ nesting


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("where", ["top-level", "environment", "inside-a-record"])
def test_deeply_nested_json_is_one_line_not_a_recursion_error(tmp_path: Path, kind: str, where: str) -> None:
    write, load, error = FILE_KINDS[kind]
    path = write(tmp_path)
    text = path.read_text(encoding="utf-8")
    if where == "top-level":
        text = _nested(DEEP)
    elif where == "environment":
        text = text.replace('"environment": {}', f'"environment": {{"x": {_nested(DEEP)}}}', 1)
    else:
        text = text.replace('"suite": ', f'"deep": {_nested(DEEP)}, "suite": ', 1)
    assert len(text) >= 2 * DEEP  # the nesting is in the file (each replace found its place)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error) as excinfo:
        load(path)
    assert _message(excinfo, path).endswith("is nested too deeply to be a file this harness wrote")


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_nesting_within_the_limit_in_unchecked_fields_loads(tmp_path: Path, kind: str) -> None:
    """The checks follow the schema only: deep values in fields it leaves open (unknown fields, ``extra``) cost
    no recursion."""
    write, load, _error = FILE_KINDS[kind]
    deep = json.loads(_nested(500))
    if kind == "baseline":
        path = write(tmp_path, environment={"x": deep}, entry=ENTRY.as_json() | {"x": deep})
    else:
        path = write(tmp_path, environment={"x": deep}, result=RESULT.as_json() | {"extra": {"x": deep}})
    assert load(path).environment == {"x": deep}


# ------------------------------------------------------------------------------------------ fourbit report


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        ({"environment": {"git": "abc123"}}, "environment.git is malformed (expected an object or null"),
        ({"environment": {"libraries": {"torch": 2}}}, "environment.libraries['torch'] is malformed"),
        ({"outcome": OUTCOME.as_json() | {"message": 3}}, "outcomes[0].message is malformed (expected a string"),
        ({"result": RESULT.as_json() | {"samples": "123"}}, "results[0].samples is malformed"),
    ],
    ids=["git-string", "library-version-number", "outcome-message", "samples-string"],
)
def test_fourbit_report_of_a_wrongly_typed_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: dict[str, Any], problem: str
) -> None:
    path = _result_file(tmp_path, **fault)
    assert main(["report", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith(f"fourbit: error: results {str(path)!r}: ") and problem in line, line


def test_fourbit_report_of_a_deeply_nested_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.json"
    path.write_text(_nested(DEEP), encoding="utf-8")
    assert main(["report", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"fourbit: error: results {str(path)!r}: is nested too deeply to be a file this harness wrote"
