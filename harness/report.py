"""Rendering of a run: the verdict matrix (implementations x properties), recorded metrics, plugin errors.

Everything here turns plain records into rich renderables; tests render into
``Console(file=io.StringIO(), width=100)`` and compare text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.results import Result

__all__ = ["Outcome", "render_load_errors", "render_metrics", "render_run", "render_verdicts", "verdict_matrix"]

_MAX_IMPLEMENTATION_COLUMNS = 8
_STYLE = {"pass": "green", "FAIL": "bold red", "skip": "yellow", "-": "dim"}


@dataclass(frozen=True)
class Outcome:
    """One test's result for one implementation and one property."""

    implementation: str
    prop: str
    outcome: str  # "passed" | "failed" | "skipped"


def verdict_matrix(outcomes: Iterable[Outcome]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """Fold outcomes into one verdict per (implementation, property): FAIL if any case failed,
    pass if any passed and none failed, skip if every case was skipped."""
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
        verdicts[key] = "FAIL" if "failed" in kinds else "pass" if "passed" in kinds else "skip"
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
            table.add_row(prop.replace("_", " "), *(Text(cell, style=_STYLE[cell]) for cell in cells))
        return table
    table.add_column("implementation", style="bold", no_wrap=True)
    for prop in props:
        table.add_column(prop.replace("_", " "), justify="center")
    for impl in implementations:
        cells = [verdicts.get((impl, prop), "-") for prop in props]
        table.add_row(impl, *(Text(cell, style=_STYLE[cell]) for cell in cells))
    return table


def _format_value(value: float) -> str:
    return f"{value:.4g}"


def render_metrics(results: Sequence[Result], title: str = "fourbit: recorded metrics") -> Table:
    """One row per (implementation, case), one column per metric."""
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
        table.add_column(f"{metric} ({unit})" if unit else metric, justify="right")
    for (impl, case), by_metric in rows.items():
        table.add_row(impl, case, *(_format_value(by_metric[m].value) if m in by_metric else "-" for m in metrics))
    return table


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
    """The end-of-run summary: plugin errors first, then verdicts, then metrics."""
    parts: list[RenderableType] = []
    if load_errors:
        parts.append(render_load_errors(load_errors))
    if outcomes:
        parts.append(render_verdicts(outcomes))
    if results:
        parts.append(render_metrics(results))
    return Group(*parts)
