"""Result files (``--fourbit-json``): the record layout, the round trip, clear errors; and the atomic writer
shared with baselines: a killed or failing writer leaves the old file, a later write removes what a killed writer
left (never a live writer's temporary file), and new files follow the umask."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.errors import InvalidArgument, ResultFileFormatError
from harness.results.files import (
    OUTCOMES_SINCE_SCHEMA,
    RESULTS_SCHEMA_VERSION,
    STALE_TEMPORARY_AGE_S,
    SavedRun,
    load_results,
    load_run,
    remove_stale_temporaries,
    save_results,
    write_json_atomically,
)
from harness.results.records import Result, SuiteSummary, TestOutcome

REPO = Path(__file__).resolve().parents[1]
ENVIRONMENT = {"python": "3.11.9", "libraries": {"torch": "2.13.0"}, "git": {"commit": "abc123", "dirty": False}}

RECORD_FIELDS = {
    # the fields the result-file format promises (issue), then the ones the harness adds to explain a verdict
    *("suite", "case", "implementation", "metric", "value", "unit", "kind", "direction"),
    *("ci_low", "ci_high", "samples", "baseline", "verdict"),
    *("tolerance", "data_hash", "statistic", "extra"),
}

# Every field set to something other than its default.
FULL = Result(
    suite="accuracy",
    case="coqa-smollm2",
    implementation="ref-nf4",
    metric="coqa_f1",
    value=0.625,
    unit="F1",
    kind="sampled",
    direction="higher",
    samples=(1.0, 0.5, 0.25, 0.75),
    ci_low=0.375,
    ci_high=0.875,
    tolerance=0.02,
    data_hash="sha256:0123",
    baseline=0.75,
    verdict="regressed",
    statistic="mean 0.625 vs baseline 0.75: regressed",
)


# ------------------------------------------------------------------------------------------ result files


def test_save_then_load_returns_every_field(tmp_path: Path) -> None:
    timing = Result("kernels", "4096x4096", "bnb-nf4", "dequantize_ratio", 1.25, kind="timing", samples=(1.2, 1.3))
    path = save_results(tmp_path / "results.json", [FULL, timing], ENVIRONMENT)
    environment, results = load_results(path)
    assert environment == ENVIRONMENT
    assert results == [FULL, timing]


def test_the_file_layout_is_exactly_the_documented_one(tmp_path: Path) -> None:
    path = save_results(tmp_path / "results.json", [FULL], ENVIRONMENT)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert set(document) == {"schema_version", "environment", "results", "outcomes"}
    assert document["schema_version"] == RESULTS_SCHEMA_VERSION == 3
    assert document["outcomes"] == []  # none given
    (record,) = document["results"]
    assert set(record) == RECORD_FIELDS
    assert record["samples"] == list(FULL.samples)
    assert {name: record[name] for name in ("value", "baseline", "verdict", "kind")} == {
        "value": FULL.value,
        "baseline": FULL.baseline,
        "verdict": FULL.verdict,
        "kind": FULL.kind,
    }


def test_nan_is_written_as_a_string_and_read_back_as_nan(tmp_path: Path) -> None:
    broken = Result("properties", "c", "zoo-x", "mse", math.nan, samples=(1.0, math.nan), baseline=math.nan)
    path = save_results(tmp_path / "results.json", [broken], {})
    text = path.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    (record,) = json.loads(text)["results"]
    assert (record["value"], record["samples"], record["baseline"]) == ("nan", [1.0, "nan"], "nan")
    (loaded,) = load_results(path)[1]
    assert math.isnan(loaded.value) and math.isnan(loaded.samples[1]) and loaded.samples[0] == 1.0


def test_infinity_survives_the_round_trip(tmp_path: Path) -> None:
    lossless = Result("properties", "c", "fp32", "sqnr_db", math.inf, direction="higher", ci_high=math.inf)
    (loaded,) = load_results(save_results(tmp_path / "results.json", [lossless], {}))[1]
    assert (loaded.value, loaded.ci_high) == (math.inf, math.inf)


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_corrupt_json_names_the_file_line_and_column(tmp_path: Path) -> None:
    text = '{"schema_version": 1,\n "results": [\n  {"suite": }\n ]}\n'
    with pytest.raises(json.JSONDecodeError) as decode:
        json.loads(text)
    path = _write_text(tmp_path / "corrupt.json", text)
    with pytest.raises(ResultFileFormatError) as excinfo:
        load_results(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"line {decode.value.lineno}, column {decode.value.colno}" in message


@pytest.mark.parametrize("version", [0, RESULTS_SCHEMA_VERSION + 1, None, "2", True])
def test_another_schema_version_is_refused(tmp_path: Path, version: object) -> None:
    document: dict[str, Any] = {"schema_version": version, "environment": {}, "results": []}
    path = _write_text(tmp_path / "other.json", json.dumps(document))
    with pytest.raises(ResultFileFormatError) as excinfo:
        load_results(path)
    assert str(path) in str(excinfo.value)
    assert f"schema_version={version!r}, expected an integer from 1 to {RESULTS_SCHEMA_VERSION}" in str(excinfo.value)
    assert ("newer fourbit-harness" in str(excinfo.value)) == (version == RESULTS_SCHEMA_VERSION + 1)


def test_a_version_1_file_is_read(tmp_path: Path) -> None:
    """Version 2 only added the kind ``aggregate``: files of version 1 (no aggregates) read as they are."""
    document = {"schema_version": 1, "environment": {"x": 1}, "results": [FULL.as_json()]}
    environment, results = load_results(_write_text(tmp_path / "v1.json", json.dumps(document)))
    assert (environment, results) == ({"x": 1}, [FULL])


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "expected an object with a 'results' list"),
        ({"schema_version": RESULTS_SCHEMA_VERSION, "results": {}}, "expected an object with a 'results' list"),
        ({"schema_version": RESULTS_SCHEMA_VERSION, "results": [FULL.as_json(), {"suite": "s"}]}, "results[1]"),
        ({"schema_version": RESULTS_SCHEMA_VERSION, "results": [FULL.as_json() | {"kind": "fast"}]}, "results[0]"),
        ({"schema_version": RESULTS_SCHEMA_VERSION, "results": [FULL.as_json() | {"value": "x"}]}, "results[0]"),
        ({"schema_version": RESULTS_SCHEMA_VERSION, "results": [7]}, "results[0]"),
    ],
    ids=["list", "results-object", "record-lacks-fields", "bad-kind", "bad-value", "record-not-object"],
)
def test_a_malformed_file_names_the_file_and_the_record(tmp_path: Path, document: Any, problem: str) -> None:
    path = _write_text(tmp_path / "bad.json", json.dumps(document))
    with pytest.raises(ResultFileFormatError) as excinfo:
        load_results(path)
    assert str(path) in str(excinfo.value) and problem in str(excinfo.value)


def test_a_missing_file_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(ResultFileFormatError, match="no such file"):
        load_results(tmp_path / "absent.json")


# ------------------------------------------------------------------------------------------ test outcomes

OUTCOMES = [
    TestOutcome("ref-nf4", "exact_zero", "passed", "properties", nodeid="p/test_v.py::test_exact_zero[ref-nf4]"),
    TestOutcome(
        "zoo-x", "exact_zero", "failed", "properties", nodeid="p/test_v.py::test_exact_zero[zoo-x]", message="Failed: 0"
    ),
    TestOutcome(
        "bnb-fp4", "packing", "skipped", "properties", nodeid="p/test_p.py::test_packing[bnb-fp4]", message="r"
    ),
    TestOutcome("", "test_plain", "xfailed", "other", nodeid="other/test_o.py::test_plain", message="known"),
]


def test_a_saved_run_keeps_its_tests_outcomes(tmp_path: Path) -> None:
    path = save_results(tmp_path / "results.json", [FULL], ENVIRONMENT, outcomes=OUTCOMES)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["outcomes"][1] == {
        "nodeid": "p/test_v.py::test_exact_zero[zoo-x]",
        "suite": "properties",
        "implementation": "zoo-x",
        "property": "exact_zero",
        "outcome": "failed",
        "message": "Failed: 0",
    }
    run = load_run(path)
    assert run == SavedRun(environment=ENVIRONMENT, results=[FULL], suites={}, outcomes=OUTCOMES)
    assert run.stores_outcomes and run.schema_version == RESULTS_SCHEMA_VERSION


@pytest.mark.parametrize("version", [1, 2])
def test_a_file_older_than_outcomes_reads_as_one_without_them(tmp_path: Path, version: int) -> None:
    document = {"schema_version": version, "environment": {"x": 1}, "results": [FULL.as_json()]}
    run = load_run(_write_text(tmp_path / f"v{version}.json", json.dumps(document)))
    assert (run.environment, run.results, run.outcomes, run.schema_version) == ({"x": 1}, [FULL], [], version)
    assert not run.stores_outcomes and version < OUTCOMES_SINCE_SCHEMA


def _one_line_refusal(tmp_path: Path, document: dict[str, Any]) -> str:
    """The message that refuses ``document`` as a result file: one line naming the file."""
    path = _write_text(tmp_path / "bad.json", json.dumps(document))
    with pytest.raises(ResultFileFormatError) as excinfo:
        load_run(path)
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("outcomes", "problem"),
    [
        ({}, "outcomes is malformed (expected a list of test outcomes, got an object)"),
        (None, "outcomes is malformed (expected a list of test outcomes, got null)"),
        ([OUTCOMES[0].as_json(), 7], "outcomes[1] is malformed (expected an object, got an integer (7))"),
        ([{"outcome": "passed"}], "outcomes[0] is malformed (lacks the field 'nodeid')"),
        ([OUTCOMES[0].as_json() | {"outcome": "ok"}], "outcomes[0] is malformed (TestOutcome.outcome='ok', expected"),
        (
            [OUTCOMES[0].as_json() | {"message": 3}],
            "outcomes[0].message is malformed (expected a string, got an integer (3))",
        ),
    ],
    ids=["object", "null", "record-not-object", "no-nodeid", "bad-outcome", "message-number"],
)
def test_malformed_outcomes_name_the_file_and_the_index(tmp_path: Path, outcomes: Any, problem: str) -> None:
    assert problem in _one_line_refusal(
        tmp_path, {"schema_version": RESULTS_SCHEMA_VERSION, "results": [], "outcomes": outcomes}
    )


def test_a_version_3_file_without_outcomes_is_malformed(tmp_path: Path) -> None:
    path = _write_text(tmp_path / "bad.json", json.dumps({"schema_version": 3, "results": []}))
    with pytest.raises(ResultFileFormatError, match="no 'outcomes' list, which schema 3 and later hold"):
        load_run(path)


# ------------------------------------------------------------------------------------------ suite declarations

WIDE = SuiteSummary(headline=("level_agreement", "max_abs_diff"), pair_matrix=("level_agreement", "code_agreement"))


def test_a_saved_run_keeps_its_suites_declarations(tmp_path: Path) -> None:
    suites = {"agreement": WIDE, "properties": SuiteSummary()}
    path = save_results(tmp_path / "results.json", [FULL], ENVIRONMENT, suites)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["schema_version"] == RESULTS_SCHEMA_VERSION  # an optional key: no new schema version
    assert document["suites"] == {
        "agreement": {
            "headline": ["level_agreement", "max_abs_diff"],
            "pair_matrix": ["level_agreement", "code_agreement"],
        },
        "properties": {"headline": [], "pair_matrix": []},
    }
    assert load_run(path) == SavedRun(environment=ENVIRONMENT, results=[FULL], suites=suites)
    assert load_results(path) == (ENVIRONMENT, [FULL])


def test_a_file_without_declarations_reads_as_none(tmp_path: Path) -> None:
    path = save_results(tmp_path / "results.json", [FULL], ENVIRONMENT, {})
    assert "suites" not in json.loads(path.read_text(encoding="utf-8"))  # nothing declared: nothing written
    assert load_run(path).suites == {}


@pytest.mark.parametrize(
    ("suites", "problem"),
    [
        ([], "suites is malformed (expected an object of suite name -> summary, got a list)"),
        (None, "suites is malformed (expected an object of suite name -> summary, got null)"),
        ({"agreement": ["level_agreement"]}, "suites['agreement'] is malformed (expected an object, got a list)"),
        (
            {"agreement": {"headline": "level_agreement"}},
            "suites['agreement'].headline is malformed (expected a list of metric names, got a string",
        ),
        ({"agreement": {"pair_matrix": [1]}}, "suites['agreement'].pair_matrix[0] is malformed (expected a string"),
        ({"agreement": {"pair_matrix": [""]}}, "suites['agreement'] is malformed (SuiteSummary.pair_matrix=['']"),
    ],
    ids=["list", "null", "entry-not-object", "headline-string", "pair-matrix-number", "pair-matrix-empty-name"],
)
def test_malformed_declarations_name_the_file_and_the_field(tmp_path: Path, suites: Any, problem: str) -> None:
    assert problem in _one_line_refusal(
        tmp_path, {"schema_version": RESULTS_SCHEMA_VERSION, "results": [], "suites": suites}
    )


def test_suite_summary_takes_lists_and_checks_its_fields() -> None:
    summary = SuiteSummary(headline=["a", "b"], pair_matrix="c")  # type: ignore[arg-type]
    assert (summary.headline, summary.pair_matrix) == (("a", "b"), ("c",))
    assert SuiteSummary(pair_matrix=None) == SuiteSummary()  # type: ignore[arg-type]
    assert SuiteSummary.from_json(summary.as_json()) == summary
    assert SuiteSummary.from_json({"headline": ["a"], "from_a_newer_harness": 1}) == SuiteSummary(headline=("a",))
    for bad in ({"headline": "ab"}, {"headline": ("a", 1)}, {"pair_matrix": 3}, {"pair_matrix": ("",)}):
        with pytest.raises(InvalidArgument, match=r"^SuiteSummary\.\w+=.*, expected [^\n]*$"):
            SuiteSummary(**bad)


# ------------------------------------------------------------------------------------------ atomic writes

OLD = {"schema_version": 1, "metrics": {"old": 1}}

# The writer under test, in a process of its own: os.fsync (which a durable writer calls on the temporary file
# before renaming it into place) reports on stdout and then blocks, so the parent can kill the writer at
# exactly that point. Nothing of the harness is patched.
KILLED_WRITER = """
import os
import sys
import time

from harness.results.files import write_json_atomically


def stalled_fsync(fd):
    print("in fsync", flush=True)
    time.sleep(600)


os.fsync = stalled_fsync
rows = [[index, index * 0.5, "padding to make the document large"] for index in range(300_000)]
write_json_atomically(sys.argv[1], {"schema_version": 1, "metrics": {"new": rows}})
print("finished", flush=True)
"""


def _temporaries(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


@contextmanager
def _stalled_writer(target: Path) -> Iterator[subprocess.Popen[str]]:
    """A writer of ``target`` in a process of its own, stopped inside its write window (its temporary file written,
    not yet renamed into place); killed when the block ends if the block did not."""
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(target)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        line = writer.stdout.readline()
        assert line == "in fsync\n", line + writer.communicate(timeout=60)[1]
        yield writer
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def _kill(writer: subprocess.Popen[str]) -> None:
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = write_json_atomically(tmp_path / "cpu-x86_64.json", OLD)
    old_bytes = target.read_bytes()
    with _stalled_writer(target) as writer:
        (temporary,) = _temporaries(tmp_path, target.name)
        assert temporary.stat().st_size > len(old_bytes)  # the new document is (being) written ...
        assert target.read_bytes() == old_bytes  # ... beside the old file, not over it
        assert temporary.name.startswith(f".{target.name}.{writer.pid}.")  # named after its writer
        _kill(writer)
    assert target.read_bytes() == old_bytes
    assert json.loads(target.read_text(encoding="utf-8")) == OLD
    # what the killed writer left behind is a hidden .tmp file, which no reader of *.json picks up
    assert [p.name for p in tmp_path.glob("*.json")] == [target.name]
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in tmp_path.iterdir() if p != target)


def _age(path: Path, seconds: float) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def test_a_later_write_removes_a_killed_writer_s_temporary_file_but_never_a_live_one_s(tmp_path: Path) -> None:
    target = write_json_atomically(tmp_path / "cpu-x86_64.json", OLD)
    with _stalled_writer(target) as writer:
        (temporary,) = _temporaries(tmp_path, target.name)
        _age(temporary, STALE_TEMPORARY_AGE_S + 60)  # old enough, but its writer is alive (stalled, not dead)
        write_json_atomically(target, {"schema_version": 1, "metrics": {"while": 1}})
        assert _temporaries(tmp_path, target.name) == [temporary]
        _kill(writer)
    _age(temporary, 60)  # its writer is dead, but the file is recent: kept for now (a writer elsewhere may own it)
    write_json_atomically(target, {"schema_version": 1, "metrics": {"recent": 1}})
    assert _temporaries(tmp_path, target.name) == [temporary]
    _age(temporary, STALE_TEMPORARY_AGE_S + 60)
    write_json_atomically(target, {"schema_version": 1, "metrics": {"after": 1}})
    assert _temporaries(tmp_path, target.name) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert json.loads(target.read_text(encoding="utf-8")) == {"schema_version": 1, "metrics": {"after": 1}}


def _finished_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_only_stale_temporaries_of_the_target_itself_are_removed(tmp_path: Path) -> None:
    dead = _finished_pid()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        files = {
            f".b.json.{dead}.abcd1234.tmp": ("old, its writer gone", STALE_TEMPORARY_AGE_S + 1, False),
            ".b.json.k2_ab9x0.tmp": ("old, from a writer before pids were in the name", STALE_TEMPORARY_AGE_S, False),
            f".b.json.{dead}.efgh5678.tmp": ("recent, its writer gone", STALE_TEMPORARY_AGE_S - 30, True),
            f".b.json.{alive.pid}.ijkl9012.tmp": ("old, its writer alive", 10 * STALE_TEMPORARY_AGE_S, True),
            f".b.json.{os.getpid()}.mnop3456.tmp": (
                "old, this process's (another thread)",
                2 * STALE_TEMPORARY_AGE_S,
                True,
            ),
            f".b.json.bak.{dead}.abcd1234.tmp": (
                "old, of another target (b.json.bak)",
                2 * STALE_TEMPORARY_AGE_S,
                True,
            ),
            f".a.json.{dead}.abcd1234.tmp": ("old, of another target (a.json)", 2 * STALE_TEMPORARY_AGE_S, True),
            f".b.json.{dead}.abcd1234.tmp.keep": ("not a temporary name", 2 * STALE_TEMPORARY_AGE_S, True),
            "b.json.tmp": ("not hidden: not ours", 2 * STALE_TEMPORARY_AGE_S, True),
        }
        for name, (_why, age, _kept) in files.items():
            (tmp_path / name).write_text("{}", encoding="utf-8")
            _age(tmp_path / name, age)
        write_json_atomically(tmp_path / "b.json", OLD)
        left = {p.name for p in tmp_path.iterdir()} - {"b.json"}
        for name, (why, _age_s, kept) in files.items():
            assert (name in left) == kept, f"{name} ({why}) was {'removed' if kept else 'kept'}"
        assert remove_stale_temporaries(tmp_path / "b.json") == []  # nothing more to remove
        removed = remove_stale_temporaries(tmp_path / "b.json", older_than_s=0)  # age aside: only the dead writer's
        assert [p.name for p in removed] == [f".b.json.{dead}.efgh5678.tmp"]
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.parametrize("bad_value", [object(), math.nan, {1, 2}], ids=["object", "nan", "set"])
def test_a_document_that_cannot_be_serialized_leaves_the_old_file(tmp_path: Path, bad_value: object) -> None:
    target = write_json_atomically(tmp_path / "b.json", OLD)
    old_bytes = target.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        write_json_atomically(target, {"schema_version": 1, "metrics": {"bad": bad_value}})
    assert target.read_bytes() == old_bytes
    assert list(tmp_path.iterdir()) == [target]


def test_a_failure_after_the_temporary_file_exists_removes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_json_atomically(tmp_path / "b.json", OLD)
    old_bytes = target.read_bytes()
    seen: list[list[Path]] = []

    def failing_fsync(fd: int) -> None:
        seen.append(_temporaries(tmp_path, target.name))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomically(target, {"schema_version": 1, "metrics": {"new": 2}})
    assert len(seen) == 1 and len(seen[0]) == 1  # the failure really came while the temporary file existed
    assert seen[0][0].name.startswith(f".b.json.{os.getpid()}.")  # named after its writer
    assert target.read_bytes() == old_bytes
    assert list(tmp_path.iterdir()) == [target]


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test (and put the old one back)."""
    original = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(original)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_a_new_file_follows_the_umask(tmp_path: Path, umask: Any, mask: int) -> None:
    umask(mask)
    path = write_json_atomically(tmp_path / "new.json", OLD)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_rewriting_keeps_the_file_s_permissions(tmp_path: Path, umask: Any) -> None:
    umask(0o022)
    path = write_json_atomically(tmp_path / "b.json", OLD)
    path.chmod(0o640)
    write_json_atomically(path, {"schema_version": 1, "metrics": {}})
    assert path.stat().st_mode & 0o777 == 0o640


def test_missing_folders_are_created_and_the_text_is_sorted(tmp_path: Path) -> None:
    document = {"b": [3, 1], "a": {"z": 1, "y": None}}
    path = write_json_atomically(tmp_path / "deep" / "er" / "r.json", document)
    assert path.read_text(encoding="utf-8") == json.dumps(document, indent=2, sort_keys=True) + "\n"
