"""Fresh-process re-runs of timings that failed: ``--fourbit-timing-reruns N``.

The policy (harness.timing.remeasure) says what is worth measuring again; harness.timing.reruns starts the
process and reads its results back. This plugin wires the two into a run: after a test (inside the record
gate's check, so the re-measurement is what gets judged) and for failing implementation verdicts at the end.
The child is started the way this run was (harness.pytest_plugin._options: every option declared with
``repeat_in_reruns``), with the baseline folder as an absolute path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.pytest_plugin import gate, output
from harness.pytest_plugin._options import add_option, repeated_arguments
from harness.pytest_plugin.selection import item_key

if TYPE_CHECKING:
    from harness.results.records import Result
    from harness.timing.reruns import RerunCommand

__all__ = ["remeasure_aggregates", "rerun_command"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-timing", "fourbit: timing")
    add_option(
        group,
        "--fourbit-timing-reruns",
        repeat_in_reruns=False,  # the child measures once (harness.timing.reruns passes 0)
        type=int,
        default=1,
        metavar="N",
        help="a timing regression (of a case, or of an implementation over its cases) is measured again in a "
        "fresh process up to N times before it fails; the last measurement is recorded (default 1, 0: never)",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    reruns = session.config.getoption("fourbit_timing_reruns")
    if reruns < 0:
        raise pytest.UsageError(f"--fourbit-timing-reruns={reruns}, expected 0 (never) or more")


def rerun_command(config: pytest.Config) -> RerunCommand:
    """How harness.timing.reruns starts this run again: same interpreter, folder, ``-p`` plugins, rootdir, ini file,
    baseline folder (absolute), and every option that shapes what a test measures."""
    from harness.timing.reruns import RerunCommand, plugin_arguments

    here = Path(config.invocation_params.dir)
    options: list[str] = ["--rootdir", str(config.rootpath)]
    if config.inipath is not None:
        options += ["-c", str(config.inipath)]
    directory = gate.baseline_dir(config)
    if directory is not None:
        options += ["--baseline-dir", str((here / directory).resolve())]
    options += repeated_arguments(config)
    plugins = plugin_arguments([str(a) for a in config.invocation_params.args])
    return RerunCommand(sys.executable, here, plugins, tuple(options))


def _target(item: pytest.Item) -> str:
    """The item as a command-line argument that works from any folder: its file's absolute path and its name."""
    return f"{Path(item.path).resolve()}::{item.nodeid.split('::', 1)[1]}" if "::" in item.nodeid else str(item.path)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After the test: while the policy finds a timing worth measuring again, measure the test again in a fresh
    process (at most ``--fourbit-timing-reruns`` times) and record that instead."""
    result: Any = yield
    config = item.config
    judge = gate.policy(config)
    for _ in range(judge.fresh_process_reruns):
        if not judge.any_worth_remeasuring(gate.item_results(config, item.nodeid)):
            break
        _rerun_case(item)
    return result


def _rerun_case(item: pytest.Item) -> None:
    from harness.timing.reruns import replace_with_reruns, run_fresh

    config = item.config
    fresh = run_fresh(rerun_command(config), [_target(item)])
    first = gate.item_results(config, item.nodeid)
    if fresh.error is not None:
        output.note(
            config, f"{item.nodeid}: re-run in a fresh process failed, the first measurement stands: {fresh.error}"
        )
        return
    again, kept = replace_with_reruns(first, fresh.results)
    gate.replace_item_results(config, item.nodeid, again)
    changes = ", ".join(
        f"{new.metric} {old.verdict} -> {new.verdict}"
        for old, new in zip(first, again, strict=True)
        if old.kind == "timing" and old is not new
    )
    note = f"; not measured again: {', '.join(r.metric for r in kept)}" if kept else ""
    output.note(config, f"{item.nodeid}: re-run in a fresh process: {changes or 'nothing measured'}{note}")


def remeasure_aggregates(session: pytest.Session, aggregates: list[Result]) -> list[Result]:
    """``aggregates`` with each failing implementation verdict formed again from one fresh process that re-runs
    every test of those implementations which recorded a timing (at most ``--fourbit-timing-reruns`` times); the
    cases' own results and outcomes stay those of this run."""
    config = session.config
    judge = gate.policy(config)
    for _ in range(judge.fresh_process_reruns):
        flagged = {(r.suite, r.implementation) for r in aggregates if judge.fails_run(r)}
        if not flagged:
            break
        aggregates = _rerun_aggregates(session, aggregates, flagged)
    return aggregates


def _rerun_aggregates(session: pytest.Session, aggregates: list[Result], flagged: set[tuple[str, str]]) -> list[Result]:
    from harness.timing.reruns import replace_with_reruns, run_fresh

    config = session.config
    items = []
    for item in session.items:
        key = item_key(config, item.nodeid)
        timed = any(r.kind == "timing" for r in gate.item_results(config, item.nodeid))
        if key is not None and (key.suite, key.implementation) in flagged and timed:
            items.append(item)
    names = ", ".join(f"{impl} ({suite})" for suite, impl in sorted(flagged))
    fresh = run_fresh(rerun_command(config), [_target(item) for item in items])
    if fresh.error is not None:
        output.note(
            config,
            f"implementation verdicts of {names}: re-run in a fresh process failed, the first verdicts stand: "
            f"{fresh.error}",
        )
        return aggregates
    again, _ = replace_with_reruns(gate.run_results(config), fresh.results)
    formed = {(r.suite, r.implementation, r.metric): r for r in gate.form_aggregates(config, again)}
    updated: list[Result] = []
    for first in aggregates:
        if (first.suite, first.implementation) not in flagged:
            updated.append(first)
            continue
        new = formed.get((first.suite, first.implementation, first.metric), first)
        before = {"value": first.value, "verdict": first.verdict, "statistic": first.statistic}
        if new is not first:
            new = replace(new, extra={**new.extra, "rerun_in_fresh_process": True, "first_process": before})
        output.note(
            config,
            f"{first.metric} of {first.implementation} ({first.suite}): re-run in a fresh process "
            f"({len(items)} tests): {first.verdict} ({first.value:.3f}x) -> {new.verdict} ({new.value:.3f}x)",
        )
        updated.append(new)
    return updated
