"""The pair matrix: metrics recorded for pairs of implementations (implementation ``"a~b"``) drawn as an
implementation x implementation table, one per group of implementations compared with each other.

A suite asks for it by declaring ``pair_matrix`` in its :class:`~harness.results.records.SuiteSummary`; nothing
here knows which suite that is. Each cell holds one line per declared metric: the pair's worst value over the
recorded cases (the lowest where higher is better, the highest where lower is). Fractions (unitless, higher is
better, within [0, 1]) are shown as percentages floored to 5 decimals, so a single disagreement in 16 million
elements never rounds to 100%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from rich.table import Table

from harness.report.model import format_value
from harness.results.records import Result

__all__ = ["render_pair_matrix"]


def _rate_text(rate: float | None) -> str:
    """A rate as a percentage that never rounds a disagreement away (floored to 5 decimals)."""
    if rate is None:
        return "n/a"
    if rate == 1:
        return "100%"
    hundred_thousandths = math.floor(Fraction(rate) * 10**7)  # exact: no float rounding up to the next digit
    return f"{hundred_thousandths // 10**5}.{hundred_thousandths % 10**5:05d}%"


def _connected(names: list[str], pairs: list[tuple[str, str]]) -> list[list[str]]:
    """Groups of names linked by pairs, each in first-appearance order, groups in order of their first name."""
    group_of = {name: index for index, name in enumerate(names)}
    for first, second in pairs:
        keep, drop = sorted((group_of[first], group_of[second]))
        for name, group in group_of.items():
            if group == drop:
                group_of[name] = keep
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(group_of[name], []).append(name)
    return list(groups.values())


def _wording(metrics: Sequence[str]) -> tuple[str, str]:
    """What the table shows, for its title and its caption: the words the metric names share at their end, and
    the whole list. ("level_agreement", "code_agreement") -> ("agreement", "level / code agreement")."""
    words = [metric.split("_") for metric in metrics]
    shared: list[str] = []
    if len(words) > 1:
        for column in zip(*(reversed(w[1:]) for w in words), strict=False):  # each name keeps a word of its own
            if len(set(column)) > 1:
                break
            shared.insert(0, column[0])
    noun = " ".join(shared)
    stems = " / ".join(" ".join(w[: len(w) - len(shared)]) for w in words)
    listed = f"{stems} {noun}" if noun else stems
    return noun or listed, listed


def render_pair_matrix(results: Sequence[Result], metrics: Sequence[str], title: str = "fourbit") -> list[Table]:
    """One table per group of implementations compared with each other (one format): implementations as rows
    and columns, each cell the pair's worst value of each of ``metrics`` over the recorded cases, one line per
    metric; the diagonal is "-", a pair without results "n/a". Results of other metrics, and results of single
    implementations, are ignored; no pairs, no tables. A group is named by its pairs' ``extra["format"]``."""
    metrics = tuple(metrics)
    worst: dict[tuple[str, str], dict[str, float]] = {}
    cases: dict[tuple[str, str], set[str]] = {}
    formats: dict[tuple[str, str], str] = {}
    higher: dict[str, bool] = {}  # metric -> higher is better (as its first result says)
    fractions: dict[str, bool] = {}  # metric -> every value is a fraction: shown as a percentage
    order: list[str] = []
    for result in results:
        if result.metric not in metrics or result.implementation.count("~") != 1:
            continue
        first, second = result.implementation.split("~")
        pair = (first, second)
        for name in pair:
            if name not in order:
                order.append(name)
        metric, value = result.metric, result.value
        by_metric = worst.setdefault(pair, {})
        previous = by_metric.get(metric)
        pick = min if higher.setdefault(metric, result.direction == "higher") else max
        by_metric[metric] = value if previous is None else pick(previous, value)
        is_fraction = result.unit == "" and result.direction == "higher" and (math.isnan(value) or 0 <= value <= 1)
        fractions[metric] = fractions.get(metric, True) and is_fraction
        cases.setdefault(pair, set()).add(result.case)
        if isinstance(result.extra.get("format"), str):
            formats[pair] = result.extra["format"]
    noun, listed = _wording(metrics)
    directions = set(higher.values())
    worst_word = "worst" if len(directions) != 1 else ("lowest" if directions == {True} else "highest")

    def line(metric: str, value: float | None) -> str:
        if value is None:
            return "n/a"
        return _rate_text(value) if fractions[metric] and not math.isnan(value) else format_value(value)

    tables = []
    for group in _connected(order, list(worst)):
        pairs = [pair for pair in worst if pair[0] in group]
        case_names = sorted(set().union(*(cases[pair] for pair in pairs)))
        label = "/".join(sorted({formats[pair] for pair in pairs if pair in formats})) or group[0]
        scope = f"case {case_names[0]}" if len(case_names) == 1 else f"{worst_word} of {len(case_names)} cases"
        heading = f"{title}: {label} {noun}"
        caption = f"cell: {listed}, {scope}"
        table = Table(title=heading, caption=caption, min_width=max(len(heading), len(caption)) + 4)
        table.add_column("", style="bold", no_wrap=True)
        for name in group:
            table.add_column(name, justify="right", no_wrap=True)
        for row in group:
            cells = []
            for column in group:
                values = worst.get((row, column)) or worst.get((column, row))
                if row == column:
                    cells.append("-")
                elif values is None:
                    cells.append("n/a")
                else:
                    cells.append("\n".join(line(metric, values.get(metric)) for metric in metrics))
            table.add_row(row, *cells)
        tables.append(table)
    return tables
