"""Two baseline updates into the same file at the same time keep both writers' entries (issue 18, item 1).

The race is run for real: two processes, started together at a barrier each round, fold their own entries into
the same file. Each writer's results come through a slow iterable, so its read of the file and its write are a
fraction of a second apart, which makes the old read-everything-then-write-everything update lose an entry in
practically every round. The same race run with that old update (the control) shows the race is really there;
:func:`merge_into_baseline_file`, which reads, folds and writes under a lock on the file, keeps every entry.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from harness.errors import BaselineFormatError, BaselineLockTimeout, StoredFileError
from harness.results.baselines import (
    Baseline,
    baseline_key,
    baseline_lock_path,
    load_baseline,
    merge_into_baseline_file,
    save_baseline,
    update_baseline,
)
from harness.results.records import Result

KEY = "cpu-x86_64"
ROUNDS = 10
WRITERS = 2
METRICS_PER_WRITER = 3
HOLD_S = 0.03
"""Each result of a writer arrives this much later: its read and its write are ``METRICS_PER_WRITER * HOLD_S``
apart, a window the other writer's read falls into when both start at the barrier."""


def _results(writer: int, round_: int) -> list[Result]:
    return [
        Result("properties", f"round-{round_}", f"writer-{writer}", f"m{index}", float(writer * 100 + index))
        for index in range(METRICS_PER_WRITER)
    ]


def _slowly(results: Iterable[Result]) -> Iterator[Result]:
    """The results one at a time, each after a pause: the writer holds what it read while the other one reads."""
    for result in results:
        time.sleep(HOLD_S)
        yield result


def _read_then_write(path: Path, environment_key: str, results: Iterable[Result], environment: dict[str, Any]) -> int:
    """The update as it was (harness.pytest_plugin.gate._write_baseline before this fix): read the file, fold this
    run's results in, write the file whole. No lock: what another writer wrote in between is overwritten."""
    baseline = load_baseline(path) if path.exists() else Baseline(environment_key)
    count = update_baseline(baseline, results, environment)
    save_baseline(path, baseline)
    return count


UPDATES: dict[str, Callable[..., int]] = {"locked": merge_into_baseline_file, "read-then-write": _read_then_write}


def _writer(folders: dict[str, str], writer: int, barrier: Any) -> None:
    """One writer process: for each update, every round, wait for the other writer at the barrier, then fold this
    writer's entries into that round's file."""
    for update, folder in folders.items():
        for round_ in range(ROUNDS):
            barrier.wait(timeout=120)
            path = Path(folder) / f"round-{round_}.json"
            UPDATES[update](path, KEY, _slowly(_results(writer, round_)), {"python": f"writer-{writer}"})


def _seed(folder: Path) -> str:
    """Every round's file starts with an entry of an earlier run (which both writers must keep too)."""
    seed = Result("properties", "earlier", "ref-nf4", "mse", 0.5)
    for round_ in range(ROUNDS):
        merge_into_baseline_file(folder / f"round-{round_}.json", KEY, [seed], {})
    return baseline_key(*seed.key)


def _missing(folder: Path, seed: str) -> dict[int, set[str]]:
    """The keys each round's file should hold and does not."""
    missing = {}
    for round_ in range(ROUNDS):
        expected = {seed} | {baseline_key(*r.key) for w in range(WRITERS) for r in _results(w, round_)}
        stored = set(json.loads((folder / f"round-{round_}.json").read_text(encoding="utf-8"))["metrics"])
        if expected - stored:
            missing[round_] = expected - stored
    return missing


@pytest.fixture(scope="module")
def races(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, set[str]]]:
    """Both updates raced by one pair of writer processes (a process takes seconds to import the harness, so
    the two are not started twice): for each update, each round's keys that are missing from its file."""
    folders = {update: tmp_path_factory.mktemp(update) for update in UPDATES}
    seeds = {update: _seed(folder) for update, folder in folders.items()}
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads forked mid-state
    barrier = context.Barrier(WRITERS)
    arguments = {update: str(folder) for update, folder in folders.items()}
    writers = [context.Process(target=_writer, args=(arguments, w, barrier)) for w in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
    assert [p.exitcode for p in writers] == [0] * WRITERS, "a writer process failed (its traceback is above)"
    return {update: _missing(folder, seeds[update]) for update, folder in folders.items()}


@pytest.mark.slow  # two processes that import the harness (torch): seconds each
def test_two_concurrent_updates_keep_both_writers_entries(races: dict[str, dict[int, set[str]]]) -> None:
    assert races["locked"] == {}  # every round: the earlier entry and both writers' entries


@pytest.mark.slow
def test_the_control_read_then_write_loses_a_writer_s_entries(races: dict[str, dict[int, set[str]]]) -> None:
    """The same race with the old update loses entries: the test above fails without the lock."""
    missing = races["read-then-write"]
    assert missing, "the race never happened: the test above would pass without the lock too"
    for lost in missing.values():  # what is lost is one writer's whole run, never the file's earlier entry
        writers = {key.split("::")[2] for key in lost}
        assert len(writers) == 1 and len(lost) == METRICS_PER_WRITER, lost


# ------------------------------------------------------------------------------------------ one writer


def test_a_new_file_is_created_and_a_second_merge_keeps_the_first(tmp_path: Path) -> None:
    path = tmp_path / "baselines" / f"{KEY}.json"
    first = [Result("kernels", "c", "bnb-nf4", "dequantize_ratio", 1.0, kind="timing")]
    assert merge_into_baseline_file(path, KEY, first, {"python": "3.11.9"}) == 1
    second = [Result("kernels", "c", "bnb-nf4", "dequantize_ratio", 2.0, kind="timing"), _results(0, 0)[0]]
    assert merge_into_baseline_file(path, KEY, second, {"python": "3.12.1"}) == 2
    baseline = load_baseline(path)
    assert baseline.environment_key == KEY and baseline.environment == {"python": "3.12.1"}
    timing = baseline.entries["kernels::c::bnb-nf4::dequantize_ratio"]
    assert timing.runs == (1.0, 2.0)  # folded with the run already in the file, as update_baseline does
    assert set(baseline.entries) == {timing.key, baseline_key(*_results(0, 0)[0].key)}


def test_a_writer_that_cannot_take_the_lock_times_out_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / f"{KEY}.json"
    merge_into_baseline_file(path, KEY, _results(0, 0), {})
    before = path.read_bytes()
    with FileLock(baseline_lock_path(path)):  # another writer, holding the lock
        started = time.monotonic()
        with pytest.raises(BaselineLockTimeout) as excinfo:
            merge_into_baseline_file(path, KEY, _results(1, 0), {}, lock_timeout=0.2)
        waited = time.monotonic() - started
    error = excinfo.value
    assert 0.2 <= waited < 10
    assert isinstance(error, StoredFileError) and error.path == str(path) and error.waited_s == 0.2
    message = str(error)
    assert "\n" not in message and str(path) in message and "0.2 s" in message, message
    assert path.read_bytes() == before
    assert merge_into_baseline_file(path, KEY, _results(1, 0), {}, lock_timeout=0.2) == METRICS_PER_WRITER


def test_a_corrupt_file_is_refused_under_the_lock_and_the_lock_is_released(tmp_path: Path) -> None:
    path = tmp_path / f"{KEY}.json"
    path.write_text('{"schema_version": 1, "metrics": {"a": ', encoding="utf-8")
    with pytest.raises(BaselineFormatError, match="not valid JSON"):
        merge_into_baseline_file(path, KEY, _results(0, 0), {})
    assert path.read_text(encoding="utf-8") == '{"schema_version": 1, "metrics": {"a": '  # left for the user
    with FileLock(baseline_lock_path(path), timeout=0):  # released: taken at once
        pass


def test_two_pytest_runs_updating_one_baseline_folder_keep_both(tmp_path: Path) -> None:
    """The fault as a user met it: two ``--update-baselines`` runs of different implementations into one folder
    at the same time; the plugin folds each run into the file under its lock (harness.pytest_plugin.gate)."""
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "properties").mkdir()
    (tmp_path / "properties" / "test_toy.py").write_text(
        textwrap.dedent(
            """
            import time

            def test_metric(quantizer, record):
                record("err", 1.0)
                time.sleep(0.5)
            """
        )
    )
    folder = tmp_path / "baselines"
    command = [sys.executable, "-m", "pytest", "properties", "-p", "no:cacheprovider", "--fourbit-no-entry-points"]
    command += ["--update-baselines", f"--baseline-dir={folder}", "-q"]
    environment = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    runs = [
        subprocess.Popen([*command, "--impl", impl], cwd=tmp_path, env=environment, stdout=subprocess.PIPE, text=True)
        for impl in ("ref-nf4", "ref-fp4")
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    (file,) = folder.glob("*.json")
    implementations = {entry.implementation for entry in load_baseline(file).entries.values()}
    assert implementations == {"ref-nf4", "ref-fp4"}
