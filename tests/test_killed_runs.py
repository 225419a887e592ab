"""A killed run keeps what it finished (issue 18, item 2): SIGTERM ends a run as Ctrl-C does, with its summary and
result file; after a SIGKILL the finished tests are in the result file's partial twin, which ``fourbit report``
reads, saying the run did not finish (exit 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.files import load_partial, load_run, partial_path

SUITE = """
import pathlib
import time


def test_first(quantizer, record):
    record("err", 1.0)


def test_second(quantizer, record):
    record("err", 2.0)
    pathlib.Path("started").write_text("x")
    time.sleep(120)
"""


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    (tmp_path / "properties").mkdir()
    (tmp_path / "properties" / "test_slow.py").write_text(textwrap.dedent(SUITE))
    json_path = tmp_path / "run.json"
    environment = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "properties", "-p", "no:cacheprovider", "--fourbit-no-entry-points",
         "--impl", "ref-nf4", f"--fourbit-json={json_path}", "-p", "no:timeout"],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (tmp_path / "started").exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0] if run.poll() else "slow"
        time.sleep(0.2)
    return run, json_path


@pytest.mark.slow
def test_sigterm_ends_the_run_with_its_summary_and_result_file(tmp_path: Path) -> None:
    run, json_path = _start(tmp_path)
    run.send_signal(signal.SIGTERM)
    out = run.communicate(timeout=120)[0]
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "fourbit summary" in out and "KeyboardInterrupt" in out
    saved = load_run(json_path)
    assert {o.prop: o.outcome for o in saved.outcomes}.get("first") == "passed"
    assert not partial_path(json_path).exists()  # folded into the result file


@pytest.mark.slow
def test_after_sigkill_the_finished_tests_are_kept_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, json_path = _start(tmp_path)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    assert not json_path.exists()
    kept = load_partial(json_path)
    assert [(o.prop, o.outcome) for o in kept.outcomes] == [("first", "passed")]
    assert [(r.metric, r.value) for r in kept.results] == [("err", 1.0)]
    capsys.readouterr()
    assert main(["report", str(json_path)]) == 1  # a run that did not finish is not a pass
    out = capsys.readouterr().out
    assert f"{json_path}: the run did not finish (killed?); 1 finished tests read from" in out


def test_a_partial_file_cut_by_the_kill_reads_up_to_its_last_whole_line(tmp_path: Path) -> None:
    from harness.results.files import PartialResults
    from harness.results.records import Result, TestOutcome

    partial = PartialResults(tmp_path / "run.json", {})
    partial.add(TestOutcome("a", "p", "passed", "s", nodeid="s/t.py::p"), [Result("s", "c", "a", "m", 1.0)])
    partial.add(TestOutcome("a", "q", "failed", "s", nodeid="s/t.py::q"), [])
    partial.close(remove=False)
    path = partial_path(tmp_path / "run.json")
    path.write_text(path.read_text() + '{"outcome": {"nodeid": "s/t.py::r", "outc')
    kept = load_partial(tmp_path / "run.json")
    assert [o.outcome for o in kept.outcomes] == ["passed", "failed"] and len(kept.results) == 1
