"""pytest-xdist (harness.pytest_plugin.distributed): ``-n 2`` gives the outcomes, results, verdicts, baseline and files
of one process; the controller alone writes and prints; timing tests refuse to share the CPU."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.results.files import load_run

pytest_plugins = ["pytester"]

TOY_MODULE = """
from harness import Capabilities, FormatSpec, QuantizedTensor


class Toy:
    spec = FormatSpec(format="toy", codebook=None, scale="none")
    capabilities = Capabilities()

    def __init__(self, name):
        self.name = name

    def quantize(self, x):
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": x.detach().clone()})

    def dequantize(self, q):
        return q.storage["weight"].clone()


def toys():
    return [Toy("toy-a"), Toy("toy-b")]
"""

TEST_MODULE = """
import pytest

pytestmark = pytest.mark.fourbit_summary(headline=("err",))


def test_good(quantizer, record):
    record("err", 1.0 if quantizer.name == "toy-a" else 2.0)
    record("err", 3.0, case="second")


def test_bad(quantizer):
    if quantizer.name == "toy-b":
        pytest.fail(f"{quantizer.name} rounds 0.5 the wrong way")


@pytest.mark.parametrize("n", range(6))
def test_many(quantizer, record, n):
    record("count", float(n), case=f"n{n}")


def test_skipped(quantizer):
    pytest.skip("not on this machine")


@pytest.mark.xfail(reason="known toy bug", strict=True)
def test_known(quantizer):
    assert False


def test_plain():
    pass
"""

TIMED_MODULE = """
import pytest


@pytest.mark.fourbit_timing
def test_timed(quantizer, record):
    record("seconds", 1.0, kind="timing", direction="lower")


@pytest.fixture
def benchmark():
    return None


def test_uses_benchmark(benchmark):
    pass


def test_untimed(quantizer):
    pass
"""


@pytest.fixture
def toy_project(inner_pytest: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A toy project (two implementations, a test of each outcome, recorded metrics) that xdist workers can import
    (they are fresh processes: the project goes on PYTHONPATH, not only on this process's sys.path)."""
    (inner_pytest.path / "toyquant.py").write_text(textwrap.dedent(TOY_MODULE))
    (inner_pytest.path / "properties").mkdir()
    (inner_pytest.path / "properties" / "test_toy.py").write_text(textwrap.dedent(TEST_MODULE))
    (inner_pytest.path / "baselines").mkdir()
    monkeypatch.setenv("PYTHONPATH", str(inner_pytest.path))
    return inner_pytest


def _run(project: pytest.Pytester, name: str, *extra: str) -> tuple[pytest.RunResult, Path, Path]:
    json_path, md_path = project.path / f"{name}.json", project.path / f"{name}.md"
    result = project.runpytest(
        "properties",
        "-p", "no:cacheprovider",
        "--fourbit-no-entry-points",
        "--quantizer", "toyquant:toys",
        "--impl", "toy-*",
        "--baseline-dir", str(project.path / "baselines"),
        f"--fourbit-json={json_path}",
        f"--fourbit-md={md_path}",
        *extra,
    )  # fmt: skip
    return result, json_path, md_path


def _stored(path: Path) -> dict[str, object]:
    """A result file's records, in their order (the controller lists them in collection order, not in the order
    the workers finished them)."""
    document = json.loads(path.read_text())
    return {key: document.get(key) for key in ("results", "outcomes", "suites")}


def _summary_lines(result: pytest.RunResult) -> list[str]:
    """The fourbit summary section's lines (pytest's closing line has the duration: left out)."""
    section = result.stdout.str().split("fourbit summary", 1)[1].splitlines()[1:]
    return [line for line in section if not line.startswith("=")]


def test_two_workers_give_what_one_process_gives(toy_project: pytest.Pytester) -> None:
    alone, alone_json, alone_md = _run(toy_project, "alone", "--update-baselines")
    baseline_file = next((toy_project.path / "baselines").glob("*.json"))
    written_alone = json.loads(baseline_file.read_text())
    baseline_file.unlink()
    spread, spread_json, spread_md = _run(toy_project, "spread", "--update-baselines", "-n", "2")
    assert "gw0" in spread.stdout.str() or "2 workers" in spread.stdout.str()  # it really ran on workers

    assert alone.ret == spread.ret == pytest.ExitCode.TESTS_FAILED
    assert spread.parseoutcomes() == alone.parseoutcomes()
    assert _stored(spread_json) == _stored(alone_json)
    assert len(load_run(spread_json).results) == 2 * (2 + 6)
    assert any(o.outcome == "failed" and "toy-b rounds 0.5" in o.message for o in load_run(spread_json).outcomes)
    assert spread_md.read_text() == alone_md.read_text()
    assert _summary_lines(spread) == [line.replace("alone.", "spread.") for line in _summary_lines(alone)]
    assert spread.stdout.str().count("fourbit summary") == 1  # one summary, the controller's

    written_spread = json.loads(baseline_file.read_text())  # the controller wrote it, from the passing tests only
    for document in (written_alone, written_spread):
        for entry in document["metrics"].values():
            entry.pop("recorded_at", None)
    assert written_spread["metrics"] == written_alone["metrics"]
    assert len(written_spread["metrics"]) == 2 * (2 + 6)


def test_two_workers_judge_against_the_baseline_and_form_missing_entries(toy_project: pytest.Pytester) -> None:
    _run(toy_project, "write", "--update-baselines")
    (toy_project.path / "properties" / "test_toy.py").write_text(
        textwrap.dedent(TEST_MODULE).replace('    record("err", 3.0, case="second")\n', "")
    )
    result, json_path, _ = _run(toy_project, "compare", "-n", "2", "--fourbit-strict")
    verdicts = {(r.implementation, r.case, r.verdict) for r in load_run(json_path).results}
    assert ("toy-a", "second", "missing") in verdicts and ("toy-b", "second", "missing") in verdicts
    assert ("toy-a", "test_good[toy-a]", "ok") in verdicts
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # strict: missing entries fail the run

    _, json_path, _ = _run(toy_project, "narrow", "-n", "2", "-k", "many", "--fourbit-strict")
    assert {r.verdict for r in load_run(json_path).results} == {"ok"}  # the workers' deselection reached here


def test_timing_tests_refuse_to_share_the_cpu(toy_project: pytest.Pytester) -> None:
    (toy_project.path / "properties" / "test_timed.py").write_text(textwrap.dedent(TIMED_MODULE))
    result, json_path, _ = _run(toy_project, "timed", "-n", "2")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert (
        "3 timing tests (properties) cannot share the CPU with other pytest-xdist workers: run them in a run of "
        'their own without -n, and the rest with -n and -m "not fourbit_timing"'
    ) in out
    assert "passed" not in out.splitlines()[-1] and load_run(json_path).outcomes == []  # no test ran

    result, _, _ = _run(toy_project, "untimed", "-n", "2", "-m", "not fourbit_timing", "--deselect",
                        "properties/test_timed.py::test_uses_benchmark")  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the toy suite's failing test, nothing refused
    assert "cannot share the CPU" not in result.stdout.str()

    alone, _, _ = _run(toy_project, "alone", "-k", "timed")  # one process: timing runs
    alone.assert_outcomes(passed=5)
