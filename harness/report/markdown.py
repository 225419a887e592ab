"""The Markdown summary of a run (``--fourbit-md``, a GitHub step summary), rendered from the same summary model
as the terminal (:mod:`harness.report.model`). A file keeps everything: every metric of every suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from harness.report.model import RunSummary, format_value, verdict_matrix
from harness.results.records import VERDICTS

__all__ = ["render_markdown"]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(cell) for cell in row) + " |" for row in rows]
    return lines


def render_markdown(summary: RunSummary) -> str:
    """A GitHub step summary: regressions first, then per suite the verdicts and metrics tables, then the
    implementation verdicts."""
    lines = ["## fourbit summary", ""]
    counts = summary.verdict_counts()
    if counts:
        lines += ["Baseline: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts), ""]
    regressed = summary.regressed
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
                    format_value(r.baseline),
                    format_value(r.value),
                    r.statistic,
                )
                for r in regressed
            ),
        )
        lines.append("")
    for section in summary.sections():
        lines += [f"### {section.name or 'results'}", ""]
        if section.outcomes:
            implementations, props, verdicts = verdict_matrix(section.outcomes)
            lines += _md_table(
                ("implementation", *props),
                ((impl, *(verdicts.get((impl, p), "-") for p in props)) for impl in implementations),
            )
            lines.append("")
        if section.results:
            lines += _md_table(
                ("implementation", "case", "metric", "value", "unit", "baseline", "verdict"),
                (
                    (
                        r.implementation,
                        r.case,
                        r.metric,
                        format_value(r.value),
                        r.unit,
                        format_value(r.baseline),
                        r.verdict or "-",
                    )
                    for r in section.results
                ),
            )
            lines.append("")
    aggregates = summary.aggregates
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
