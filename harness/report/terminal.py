"""Rendering of a run: the verdict matrix (implementations x properties), recorded metrics, plugin errors.

Everything here turns plain records into rich renderables; tests render into
``Console(file=io.StringIO(), width=100)`` and compare text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.results.records import VERDICTS, Result

__all__ = [
    "Outcome",
    "regression_message",
    "render_comparison",
    "render_load_errors",
    "render_markdown",
    "render_metrics",
    "render_regressions",
    "render_run",
    "render_verdicts",
    "verdict_counts",
    "verdict_matrix",
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
_T = TypeVar("_T")
_SUMMARY_METRICS = {
    "agreement": ("level_agreement", "code_agreement", "disagreements_off_midpoint", "max_abs_diff", "mean_abs_diff")
}
"""Suites that record many metrics per case show these in the terminal summary (files keep everything)."""


@dataclass(frozen=True)
class Outcome:
    """One test's result for one implementation and one property."""

    implementation: str
    prop: str
    outcome: str  # "passed" | "failed" | "skipped" | "xfailed" (a known library bug)
    suite: str = ""


_FOLDED = {"failed": "FAIL", "xfailed": "known", "passed": "pass", "skipped": "skip"}
"""Precedence when one property has several outcomes (dtypes, cases): a known bug is never hidden by a pass."""


def verdict_matrix(outcomes: Iterable[Outcome]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """Fold outcomes into one verdict per (implementation, property): FAIL if any case failed, known if a
    known library bug failed as expected, pass if any passed, skip if every case was skipped."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    implementations: list[str] = []
    props: list[str] = []
    for o in outcomes:
        if o.implementation not in implementations:
            implementations.append(o.implementation)
        if o.prop not in props:
            props.append(o.prop)
        seen[(o.implementation, o.prop)].add(o.outcome)
    verdicts: dict[tuple[str, str], str] = {}
    for key, kinds in seen.items():
        verdicts[key] = next(_FOLDED[k] for k in _FOLDED if k in kinds)
    return implementations, props, verdicts


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


def _format_value(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4g}"


def _cell(result: Result) -> Text:
    """The value, coloured by its verdict; a move against the baseline shows the baseline too."""
    if result.verdict == "missing":
        return Text("missing", style=_VERDICT_STYLE["missing"])
    text = _format_value(result.value)
    if result.verdict in ("regressed", "improved", "inconclusive") and result.baseline is not None:
        text += f" (was {_format_value(result.baseline)})"
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
        f"{what} {result.verdict}: baseline {_format_value(result.baseline)}, now {_format_value(result.value)}"
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
            _format_value(r.baseline),
            Text(_format_value(r.value), style="bold red"),
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


def _by_suite(items: Iterable[_T], suite_of: Callable[[_T], str]) -> dict[str, list[_T]]:
    grouped: dict[str, list[_T]] = {}
    for item in items:
        grouped.setdefault(suite_of(item), []).append(item)
    return grouped


def verdict_counts(results: Iterable[Result]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        if r.verdict is not None:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return counts


def render_comparison(compared: Sequence[Result], *, old_label: str = "old", new_label: str = "new") -> Group:
    """``fourbit compare``: each metric's old and new value side by side with its verdict, regressions first."""
    order = {"regressed": 0, "inconclusive": 1, "missing": 2, "new": 3, "improved": 4, "ok": 5}
    table = Table(title=f"fourbit compare: {old_label} -> {new_label}")
    for column in ("suite", "implementation", "case", "metric", "old", "new", "verdict"):
        table.add_column(column, justify="right" if column in ("old", "new") else "left")
    for r in sorted(compared, key=lambda r: order.get(r.verdict or "", 6)):
        verdict = r.verdict or "-"
        table.add_row(
            *(Text(field) for field in (r.suite, r.implementation, r.case, r.metric)),
            _format_value(r.baseline),
            _format_value(r.value),
            Text(verdict, style=_VERDICT_STYLE.get(verdict, "")),
        )
    counts = verdict_counts(compared)
    summary = Text(", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts) or "nothing to compare")
    return Group(table, summary)


def render_load_errors(errors: Sequence[tuple[str, str]]) -> Table:
    table = Table(title="fourbit: plugins that failed to load", title_style="bold red")
    table.add_column("source", style="bold")
    table.add_column("error", style="red")
    for source, error in errors:
        table.add_row(Text(source), Text(error))  # plain text: "[bnb]" in a hint is not rich markup
    return table


def render_run(
    outcomes: Sequence[Outcome], results: Sequence[Result], load_errors: Sequence[tuple[str, str]]
) -> RenderableType:
    """The end-of-run summary: plugin errors and regressions first, then per suite its verdicts and metrics,
    the implementation verdicts, then one line counting verdicts against the baseline."""
    parts: list[RenderableType] = []
    if load_errors:
        parts.append(render_load_errors(load_errors))
    regressions = render_regressions(results)
    if regressions is not None:
        parts.append(regressions)
    outcome_suites = _by_suite(outcomes, lambda o: o.suite)
    result_suites = _by_suite((r for r in results if r.kind != "aggregate"), lambda r: r.suite)
    for suite in [*outcome_suites, *(s for s in result_suites if s not in outcome_suites)]:
        label = f"fourbit {suite}" if suite else "fourbit"
        if suite in outcome_suites:
            title = f"{label}: verdicts" if suite else "fourbit: property verdicts"
            parts.append(render_verdicts(outcome_suites[suite], title=title))
        if suite in result_suites:
            suite_results = result_suites[suite]
            if suite == "agreement":
                from harness.checks.agreement import render_agreement_matrix

                parts.extend(render_agreement_matrix(suite_results))
            shown = _SUMMARY_METRICS.get(suite)
            if shown is not None:  # a wide suite: the headline metrics, plus any metric that moved
                suite_results = [
                    r for r in suite_results if r.metric in shown or r.verdict in ("regressed", "improved")
                ]
            title = f"{label}: metrics" if suite else "fourbit: recorded metrics"
            parts.append(render_metrics(suite_results, title=title))
    aggregates = render_aggregates(results)
    if aggregates is not None:
        parts.append(aggregates)
    counts = verdict_counts(results)
    if counts:
        line = Text("baseline: ")
        for index, verdict in enumerate(v for v in VERDICTS if v in counts):
            if index:
                line.append(", ")
            line.append(f"{counts[verdict]} {verdict}", style=_VERDICT_STYLE[verdict])
        parts.append(line)
    return Group(*parts)


# ------------------------------------------------------------------------------------------------ markdown


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(results: Sequence[Result], outcomes: Sequence[Outcome] = ()) -> str:
    """A GitHub step summary: regressions first, then per suite the verdicts and metrics tables, then the
    implementation verdicts."""
    lines = ["## fourbit summary", ""]
    counts = verdict_counts(results)
    if counts:
        lines += ["Baseline: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts), ""]
    regressed = [r for r in results if r.verdict == "regressed"]
    if regressed:
        lines += ["### Regressions", ""]
        lines += _md_table(
            ("suite", "implementation", "case", "metric", "baseline", "now", "statistic"),
            (
                (
                    r.suite,
                    r.implementation,
                    r.case,
                    r.metric,
                    _format_value(r.baseline),
                    _format_value(r.value),
                    r.statistic,
                )
                for r in regressed
            ),
        )
        lines.append("")
    outcome_suites = _by_suite(outcomes, lambda o: o.suite)
    result_suites = _by_suite((r for r in results if r.kind != "aggregate"), lambda r: r.suite)
    for suite in [*outcome_suites, *(s for s in result_suites if s not in outcome_suites)]:
        lines += [f"### {suite or 'results'}", ""]
        if suite in outcome_suites:
            implementations, props, verdicts = verdict_matrix(outcome_suites[suite])
            lines += _md_table(
                ("implementation", *props),
                ((impl, *(verdicts.get((impl, p), "-") for p in props)) for impl in implementations),
            )
            lines.append("")
        if suite in result_suites:
            lines += _md_table(
                ("implementation", "case", "metric", "value", "unit", "baseline", "verdict"),
                (
                    (
                        r.implementation,
                        r.case,
                        r.metric,
                        _format_value(r.value),
                        r.unit,
                        _format_value(r.baseline),
                        r.verdict or "-",
                    )
                    for r in result_suites[suite]
                ),
            )
            lines.append("")
    aggregates = [r for r in results if r.kind == "aggregate"]
    if aggregates:
        lines += ["### Implementation verdicts (median change over all cases)", ""]
        lines += _md_table(
            ("suite", "implementation", "metric", "median change", "verdict", "statistic"),
            (
                (r.suite, r.implementation, r.metric, f"{r.value - 1:+.1%}", r.verdict or "-", r.statistic)
                for r in aggregates
            ),
        )
        lines.append("")
    return "\n".join(lines) + "\n"
