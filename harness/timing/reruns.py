"""Re-run timing tests in a fresh process before a regression fails them.

Why a fresh process: some false alarms on a shared machine last as long as the process that measured them (one
case slow by 1.7-2.5x through its in-process re-time; docs/design.md), while a slower kernel is slower in any
process. So a timing regression is measured again by a new interpreter running only the tests concerned,
against the same baseline, and that measurement is the one recorded. A slow spell of the whole machine, which
the new process also sees, is not cleared.

This module builds and runs that process; harness.timing.remeasure says when, and
harness.pytest_plugin.reruns wires it into a run (``--fourbit-timing-reruns``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import ResultFileFormatError
from harness.results.files import load_results
from harness.results.records import Result

__all__ = ["FreshRun", "RerunCommand", "fresh_process_command", "plugin_arguments", "replace_with_reruns", "run_fresh"]

DEFAULT_TIMEOUT_SECONDS = 1800.0
"""A re-run that takes longer than this is stopped and its regression stands (it is not a pass)."""
OUTPUT_TAIL_CHARS = 2000


@dataclass(frozen=True)
class RerunCommand:
    """How to start pytest again as the current run was started: the interpreter, the folder it ran in, the
    ``-p`` plugins it was given and the options that shape what a test measures (implementations, baseline,
    threads, shapes). Built from the pytest config by the plugin; plain data so the command can be tested."""

    python: str
    cwd: Path
    plugins: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class FreshRun:
    """What a fresh process returned: its results (empty when it wrote none) and, if it went wrong, why."""

    results: list[Result]
    error: str | None = None


def plugin_arguments(arguments: Sequence[str]) -> tuple[str, ...]:
    """The ``-p NAME`` / ``-pNAME`` / ``-p=NAME`` plugin options of a pytest command line, as ``("-p", NAME)``
    pairs in order: a plugin the run was started with (a conftest of the gate check) must load again."""
    found: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "-p" and index + 1 < len(arguments):
            found += ["-p", arguments[index + 1]]
            index += 2
            continue
        if argument.startswith("-p") and len(argument) > 2 and not argument.startswith("--"):
            found += ["-p", argument[2:].removeprefix("=")]
        index += 1
    return tuple(found)


def fresh_process_command(command: RerunCommand, targets: Sequence[str], json_path: Path) -> list[str]:
    """``python -m pytest TARGETS`` with the run's plugins and options, results written to ``json_path``, no
    cache written, and no re-run of its own (``--fourbit-timing-reruns 0``): the child measures once."""
    return [
        command.python,
        "-m",
        "pytest",
        *targets,
        "-q",
        "-p",
        "no:cacheprovider",
        *command.plugins,
        *command.options,
        "--fourbit-json",
        str(json_path),
        "--fourbit-timing-reruns",
        "0",
    ]


def run_fresh(command: RerunCommand, targets: Sequence[str], timeout: float = DEFAULT_TIMEOUT_SECONDS) -> FreshRun:
    """Run ``targets`` (pytest node ids with absolute paths) in a new interpreter and read back its results.

    The child inherits the environment (PYTHONPATH, the gate check's slowdown) except GITHUB_STEP_SUMMARY: the
    parent writes the run's summary once. Its exit status is not a verdict (a regression it confirms exits 1);
    no results file, a timeout or a file that cannot be read is an ``error`` and the caller keeps what it had."""
    environment = {name: value for name, value in os.environ.items() if name != "GITHUB_STEP_SUMMARY"}
    with tempfile.TemporaryDirectory(prefix="fourbit-rerun-") as folder:
        json_path = Path(folder) / "rerun.json"
        argv = fresh_process_command(command, targets, json_path)
        try:
            completed = subprocess.run(
                argv,
                cwd=command.cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return FreshRun([], f"the re-run did not finish within {timeout:.0f} s")
        except OSError as exc:
            return FreshRun([], f"the re-run could not start: {exc}")
        if not json_path.exists():
            tail = (completed.stdout + completed.stderr)[-OUTPUT_TAIL_CHARS:]
            return FreshRun([], f"the re-run wrote no results (exit {completed.returncode}):\n{tail}")
        try:
            _, results = load_results(json_path)
        except ResultFileFormatError as exc:
            return FreshRun([], str(exc))
    return FreshRun(results)


def replace_with_reruns(first: Iterable[Result], reruns: Iterable[Result]) -> tuple[list[Result], list[Result]]:
    """``first`` with each result replaced by the re-run's result of the same suite, implementation, case and
    metric (the first measurement kept in ``extra["first_process"]``); returns (the new list, the results
    the re-run did not measure again, which are kept as they were)."""
    fresh = {r.key: r for r in reruns if r.kind != "aggregate" and r.verdict != "missing"}
    replaced: list[Result] = []
    kept: list[Result] = []
    for result in first:
        again = fresh.get(result.key)
        if again is None:
            replaced.append(result)
            kept.append(result)
            continue
        before = {"value": result.value, "verdict": result.verdict, "statistic": result.statistic}
        replaced.append(replace(again, extra={**again.extra, "rerun_in_fresh_process": True, "first_process": before}))
    return replaced, kept
