"""Rendering of a run in the terminal: the verdict matrix (implementations x properties), recorded metrics,
regressions, implementation verdicts, pair matrices, plugin errors, a saved run's failed tests, and ``fourbit
compare``'s tables (test outcomes, metrics).

Everything here turns the summary model (:mod:`harness.report.model`) into rich renderables and knows no suite
by name: a suite's own :class:`~harness.results.records.SuiteSummary` says what it wants shown. Tests render
into ``Console(file=io.StringIO(), width=100)`` and compare text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.report.matrix import render_pair_matrix
from harness.report.model import Outcome, RunSummary, format_value, verdict_counts, verdict_matrix
from harness.results.records import OUTCOMES, VERDICTS, Result, SuiteSummary

if TYPE_CHECKING:
    from harness.results.compare import OutcomeChange

__all__ = [
    "describe_run",
    "regression_message",
    "render_aggregates",
    "render_comparison",
    "render_failures",
    "render_load_errors",
    "render_metrics",
    "render_outcome_changes",
    "render_outcome_counts",
    "render_regressions",
    "render_run",
    "render_verdicts",
]

_MAX_IMPLEMENTATION_COLUMNS = 8
_STYLE = {"pass": "green", "FAIL": "bold red", "known": "magenta", "skip": "yellow", "-": "dim"}
_VERDICT_STYLE = {
    "ok": "",
    "improved": "green",
    "regressed": "bold red",
    "new": "cyan",
    "missing": "yellow",
    "inconclusive": "magenta",
}
_OUTCOME_STYLE = {
    "passed": "green",
    "failed": "bold red",
    "error": "bold red",
    "skipped": "yellow",
    "xfailed": "magenta",
    "xpassed": "yellow",
}
_CHANGE_STYLE = {"regressed": "bold red", "fixed": "green", "changed": "yellow", "new": "cyan", "missing": "yellow"}


def render_verdicts(outcomes: Iterable[Outcome], title: str = "fourbit: property verdicts") -> Table:
    """Properties as rows and implementations as columns; with many implementations, the other way round
    (so the table stays readable in a terminal)."""
    implementations, props, verdicts = verdict_matrix(outcomes)
    table = Table(title=title)
    if len(implementations) <= _MAX_IMPLEMENTATION_COLUMNS:
        table.add_column("property", style="bold")
        for impl in implementations:
            table.add_column(impl, justify="center")
        for prop in props:
            cells = [verdicts.get((impl, prop), "-") for impl in implementations]
            table.add_row(Text(prop.replace("_", " ")), *(Text(cell, style=_STYLE[cell]) for cell in cells))
        return table
    table.add_column("implementation", style="bold", no_wrap=True)
    for prop in props:
        table.add_column(prop.replace("_", " "), justify="center")
    for impl in implementations:
        cells = [verdicts.get((impl, prop), "-") for prop in props]
        table.add_row(Text(impl), *(Text(cell, style=_STYLE[cell]) for cell in cells))
    return table


def _cell(result: Result) -> Text:
    """The value, coloured by its verdict; a move against the baseline shows the baseline too."""
    if result.verdict == "missing":
        return Text("missing", style=_VERDICT_STYLE["missing"])
    text = format_value(result.value)
    if result.verdict in ("regressed", "improved", "inconclusive") and result.baseline is not None:
        text += f" (was {format_value(result.baseline)})"
    return Text(text, style=_VERDICT_STYLE.get(result.verdict or "", ""))


def render_metrics(results: Sequence[Result], title: str = "fourbit: recorded metrics") -> Table:
    """One row per (implementation, case), one column per metric; cells coloured by verdict."""
    metrics: list[str] = []
    rows: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        if r.metric not in metrics:
            metrics.append(r.metric)
        rows.setdefault((r.implementation, r.case), {})[r.metric] = r
    table = Table(title=title)
    table.add_column("implementation", style="bold", no_wrap=True)
    table.add_column("case", no_wrap=True)
    for metric in metrics:
        unit = next((r.unit for r in results if r.metric == metric and r.unit), "")
        table.add_column(f"{metric} ({unit})" if unit else metric, justify="right", overflow="fold")
    for (impl, case), by_metric in rows.items():
        table.add_row(Text(impl), Text(case), *(_cell(by_metric[m]) if m in by_metric else Text("-") for m in metrics))
    return table


def regression_message(result: Result) -> str:
    """What a failing test says about a metric: which, the baseline, the current value, and the statistic."""
    what = f"{result.metric} of {result.implementation} on {result.case} ({result.suite})"
    if result.verdict == "new":
        return f"{what}: no baseline (--fourbit-strict): {result.statistic}"
    return (
        f"{what} {result.verdict}: baseline {format_value(result.baseline)}, now {format_value(result.value)}"
        f"{' ' + result.unit if result.unit else ''}; {result.statistic}"
    )


def render_regressions(results: Sequence[Result]) -> Table | None:
    """Regressed metrics, first thing in the summary (None when there are none)."""
    regressed = [r for r in results if r.verdict == "regressed"]
    if not regressed:
        return None
    table = Table(title="fourbit: REGRESSIONS", title_style="bold red")
    for column in ("suite", "implementation", "case", "metric", "baseline", "now", "statistic"):
        table.add_column(column, overflow="fold")
    for r in regressed:
        table.add_row(
            *(Text(field) for field in (r.suite, r.implementation, r.case, r.metric)),
            format_value(r.baseline),
            Text(format_value(r.value), style="bold red"),
            Text(r.statistic),
        )
    return table


def render_aggregates(results: Sequence[Result]) -> Table | None:
    """Implementation verdicts (harness.results.aggregate): per implementation, how its cases moved together
    (None when the run formed none)."""
    aggregates = [r for r in results if r.kind == "aggregate"]
    if not aggregates:
        return None
    table = Table(title="fourbit: implementation verdicts (median change over all cases)")
    for column in ("suite", "implementation", "metric", "median change", "verdict", "statistic"):
        table.add_column(column, justify="right" if column == "median change" else "left", overflow="fold")
    for r in aggregates:
        verdict = r.verdict or "-"
        style = _VERDICT_STYLE.get(verdict, "")
        table.add_row(
            *(Text(field) for field in (r.suite, r.implementation, r.metric)),
            Text(f"{r.value - 1:+.1%}", style=style),
            Text(verdict, style=style),
            Text(r.statistic),
        )
    return table


def render_comparison(
    compared: Sequence[Result],
    *,
    old_label: str = "old",
    new_label: str = "new",
    suites: Mapping[str, SuiteSummary] | None = None,
) -> Group:
    """``fourbit compare``: each metric's old and new value side by side with its verdict, regressions first.

    ``suites`` (the new run's declarations): a suite with a headline lists only those metrics and the ones that
    regressed or improved, as at the end of a run; the counts below the table still count every metric."""
    suites = suites or {}
    order = {"regressed": 0, "inconclusive": 1, "missing": 2, "new": 3, "improved": 4, "ok": 5}
    shown = [r for r in compared if (suites.get(r.suite) or SuiteSummary()).shows(r)]
    table = Table(title=f"fourbit compare: {old_label} -> {new_label}")
    for column in ("suite", "implementation", "case", "metric", "old", "new", "verdict"):
        table.add_column(column, justify="right" if column in ("old", "new") else "left")
    for r in sorted(shown, key=lambda r: order.get(r.verdict or "", 6)):
        verdict = r.verdict or "-"
        table.add_row(
            *(Text(field) for field in (r.suite, r.implementation, r.case, r.metric)),
            format_value(r.baseline),
            format_value(r.value),
            Text(verdict, style=_VERDICT_STYLE.get(verdict, "")),
        )
    counts = verdict_counts(compared)
    summary = Text(", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts) or "nothing to compare")
    hidden = len(compared) - len(shown)
    if hidden:
        summary.append(f" ({hidden} more not listed: outside their suite's headline, neither regressed nor improved)")
    return Group(table, summary)


def render_failures(outcomes: Iterable[Outcome]) -> Table | None:
    """The tests that failed or errored, with their node ids and messages, first thing in ``fourbit report``
    (None when there are none)."""
    failing = [o for o in outcomes if o.failing]
    if not failing:
        return None
    counts = {name: sum(o.outcome == name for o in failing) for name in ("failed", "error")}
    what = ", ".join(
        f"{count} {'errors' if name == 'error' and count > 1 else name}" for name, count in counts.items() if count
    )
    table = Table(title=f"fourbit: FAILED TESTS ({what})", title_style="bold red")
    table.add_column("test", overflow="fold", ratio=1)
    table.add_column("implementation", no_wrap=True)
    table.add_column("property", no_wrap=True)
    table.add_column("message", overflow="fold", ratio=1)
    for o in failing:
        table.add_row(Text(o.nodeid), Text(o.implementation or "-"), Text(o.prop or "-"), Text(o.message, style="red"))
    return table


def render_outcome_counts(outcomes: Iterable[Outcome]) -> Text:
    """One line counting the tests' outcomes: ``tests: 8 passed, 1 failed, 2 skipped``."""
    outcomes = list(outcomes)
    line = Text("tests: ")
    counts = [(name, sum(o.outcome == name for o in outcomes)) for name in OUTCOMES]
    shown = [(name, count) for name, count in counts if count]
    for index, (name, count) in enumerate(shown):
        if index:
            line.append(", ")
        line.append(f"{count} {name}", style=_OUTCOME_STYLE[name])
    if not shown:
        line.append("none")
    return line


def describe_run(results: Sequence[Result], outcomes: Sequence[Outcome]) -> str:
    """What a saved run holds, in a few words, for a message: ``2 results and 4 test outcomes (suite properties;
    implementations ref-nf4, zoo-x)``."""
    suites = sorted({r.suite for r in results} | {o.suite for o in outcomes})
    implementations = sorted({r.implementation for r in results} | {o.implementation for o in outcomes} - {""})

    def names(word: str, values: list[str]) -> str:
        listed = ", ".join(values[:4]) + (f" and {len(values) - 4} more" if len(values) > 4 else "")
        return f"{word}{'s' if len(values) > 1 else ''} {listed}" if values else f"no {word}"

    where = f" ({names('suite', suites)}; {names('implementation', implementations)})" if suites else ""
    counted = f"{len(results)} result{'' if len(results) == 1 else 's'} and {len(outcomes)} test outcome"
    return f"{counted}{'' if len(outcomes) == 1 else 's'}{where}"


def render_outcome_changes(
    changes: Sequence[OutcomeChange], *, old_label: str = "old", new_label: str = "new"
) -> Group | None:
    """``fourbit compare``'s first table: the properties whose tests' outcomes changed, regressions first (with the
    new run's first failing test and its message), then a line counting every kind of change; None when neither
    run holds test outcomes."""
    from harness.results.compare import OUTCOME_CHANGES

    if not changes:
        return None
    order = {change: index for index, change in enumerate(OUTCOME_CHANGES)}
    listed = sorted((c for c in changes if c.change != "unchanged"), key=lambda c: order[c.change])
    parts: list[RenderableType] = []
    if listed:
        table = Table(title=f"fourbit compare: test outcomes {old_label} -> {new_label}")
        for column in ("suite", "implementation", "property", "old", "new", "change", "failing test"):
            table.add_column(column, overflow="fold")
        for c in listed:
            first = c.failures[0] if c.failures else None
            failing = "" if first is None else f"{first.nodeid}: {first.message}"
            if len(c.failures) > 1:
                failing += f" (and {len(c.failures) - 1} more)"
            table.add_row(
                *(Text(field or "-") for field in (c.suite, c.implementation, c.prop, c.old, c.new)),
                Text(c.change, style=_CHANGE_STYLE.get(c.change, "")),
                Text(failing),
            )
        parts.append(table)
    counts = {kind: sum(c.change == kind for c in changes) for kind in OUTCOME_CHANGES}
    line = Text("test outcomes: ")
    for index, kind in enumerate(kind for kind in OUTCOME_CHANGES if counts[kind]):
        if index:
            line.append(", ")
        line.append(f"{counts[kind]} {kind}", style=_CHANGE_STYLE.get(kind, ""))
    parts.append(line)
    return Group(*parts)


def render_load_errors(errors: Sequence[tuple[str, str]]) -> Table:
    table = Table(title="fourbit: plugins that failed to load", title_style="bold red")
    table.add_column("source", style="bold")
    table.add_column("error", style="red")
    for source, error in errors:
        table.add_row(Text(source), Text(error))  # plain text: "[bnb]" in a hint is not rich markup
    return table


def render_run(summary: RunSummary) -> RenderableType:
    """The end-of-run summary: plugin errors and regressions first, then per suite its verdicts, its pair matrix
    and its metrics (only its headline metrics, plus any that moved, where it declared a headline), the
    implementation verdicts, then one line counting verdicts against the baseline."""
    parts: list[RenderableType] = []
    if summary.load_errors:
        parts.append(render_load_errors(summary.load_errors))
    regressions = render_regressions(summary.results)
    if regressions is not None:
        parts.append(regressions)
    for section in summary.sections():
        suite = section.name
        label = f"fourbit {suite}" if suite else "fourbit"
        if section.outcomes:
            title = f"{label}: verdicts" if suite else "fourbit: property verdicts"
            parts.append(render_verdicts(section.outcomes, title=title))
        if section.results:
            if section.summary.pair_matrix:
                parts.extend(render_pair_matrix(section.results, section.summary.pair_matrix))
            title = f"{label}: metrics" if suite else "fourbit: recorded metrics"
            parts.append(render_metrics(section.shown_results(), title=title))
    aggregates = render_aggregates(summary.results)
    if aggregates is not None:
        parts.append(aggregates)
    counts = summary.verdict_counts()
    if counts:
        line = Text("baseline: ")
        for index, verdict in enumerate(v for v in VERDICTS if v in counts):
            if index:
                line.append(", ")
            line.append(f"{counts[verdict]} {verdict}", style=_VERDICT_STYLE[verdict])
        parts.append(line)
    return Group(*parts)
