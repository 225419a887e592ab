"""The one summary model of a run, which the terminal (:mod:`~harness.report.terminal`) and the Markdown step
summary (:mod:`~harness.report.markdown`) both render: test outcomes, recorded results, plugin load errors and
the suites' own declarations of how their results are shown (:class:`~harness.results.records.SuiteSummary`).
Only outcomes about an implementation enter the verdict matrices; failures are listed whatever they are about.

Renderers know no suite by name: what differs between suites is declared by the suites and arrives here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from harness.results.records import Result, SuiteSummary, TestOutcome, fold_outcomes

Outcome = TestOutcome
"""One test's outcome under its implementation and property: the result file's record
(:class:`harness.results.records.TestOutcome`), by the name the report has always used."""

__all__ = ["Outcome", "RunSummary", "SuiteSection", "format_value", "verdict_counts", "verdict_matrix"]


@dataclass(frozen=True)
class SuiteSection:
    """One suite's part of the summary: its outcomes, its results (implementation verdicts, kind ``aggregate``,
    are the run's, not a section's) and its declaration (the default one when the suite declared none)."""

    name: str
    outcomes: tuple[Outcome, ...]
    results: tuple[Result, ...]
    summary: SuiteSummary

    def shown_results(self) -> list[Result]:
        """The results the terminal lists: a suite with a headline shows those metrics and any that moved."""
        return [r for r in self.results if self.summary.shows(r)]


@dataclass(frozen=True)
class RunSummary:
    """Everything the end-of-run summary shows; ``suites`` maps a suite name to its declaration."""

    outcomes: Sequence[Outcome] = ()
    results: Sequence[Result] = ()
    load_errors: Sequence[tuple[str, str]] = ()
    suites: Mapping[str, SuiteSummary] = field(default_factory=dict)

    def sections(self) -> list[SuiteSection]:
        """One section per suite: suites with outcomes in the order they ran, then suites with results only.
        A section's outcomes are those about an implementation (the verdict matrix): other tests have none."""
        outcomes: dict[str, list[Outcome]] = {}
        for outcome in self.property_outcomes:
            outcomes.setdefault(outcome.suite, []).append(outcome)
        results: dict[str, list[Result]] = {}
        for result in self.results:
            if result.kind != "aggregate":
                results.setdefault(result.suite, []).append(result)
        names = [*outcomes, *(suite for suite in results if suite not in outcomes)]
        return [
            SuiteSection(
                name=name,
                outcomes=tuple(outcomes.get(name, ())),
                results=tuple(results.get(name, ())),
                summary=self.suites.get(name) or SuiteSummary(),
            )
            for name in names
        ]

    @property
    def property_outcomes(self) -> list[Outcome]:
        """The outcomes of tests about an implementation: what the verdict matrices show."""
        return [o for o in self.outcomes if o.implementation]

    @property
    def failures(self) -> list[Outcome]:
        """The tests that failed or errored, whatever they are about, in the order they ran."""
        return [o for o in self.outcomes if o.failing]

    @property
    def regressed(self) -> list[Result]:
        return [r for r in self.results if r.verdict == "regressed"]

    @property
    def aggregates(self) -> list[Result]:
        """Implementation verdicts (harness.results.aggregate): how one implementation's cases moved together."""
        return [r for r in self.results if r.kind == "aggregate"]

    def verdict_counts(self) -> dict[str, int]:
        return verdict_counts(self.results)


_LABELS = {"failed": "FAIL", "xfailed": "known", "passed": "pass", "skipped": "skip"}
"""The matrix's word for each folded verdict (harness.results.records.fold_outcomes)."""


def verdict_matrix(outcomes: Iterable[Outcome]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """Fold outcomes into one verdict per (implementation, property) (harness.results.records.fold_outcomes):
    FAIL if any case failed or errored, known if a known library bug failed as expected, pass if any passed,
    skip if every case was skipped."""
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    implementations: list[str] = []
    props: list[str] = []
    for o in outcomes:
        if o.implementation not in implementations:
            implementations.append(o.implementation)
        if o.prop not in props:
            props.append(o.prop)
        seen[(o.implementation, o.prop)].add(o.outcome)
    verdicts = {key: _LABELS[fold_outcomes(kinds)] for key, kinds in seen.items()}
    return implementations, props, verdicts


def verdict_counts(results: Iterable[Result]) -> dict[str, int]:
    """How many results reached each verdict against the baseline (results never compared are not counted)."""
    counts: dict[str, int] = {}
    for r in results:
        if r.verdict is not None:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
    return counts


def format_value(value: float | None) -> str:
    """A metric value as every summary writes it: 4 significant digits, "-" for none or NaN."""
    return "-" if value is None or value != value else f"{value:.4g}"
