"""How a result is judged against a stored value: the rule of its kind (harness.results.stats), the hardware a
timing was measured on, what a run did not produce, and two saved runs side by side: their metrics, and their
tests' outcomes per property (:func:`compare_outcomes`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from harness.results.baselines import Baseline, BaselineEntry, baseline_key, entry_from_result
from harness.results.records import Result, TestOutcome, fold_outcomes

__all__ = [
    "CONTENDED_CPU_SHARE",
    "DEFAULT_EXACT_REL_TOL",
    "DEFAULT_MIN_EFFECT",
    "OUTCOME_CHANGES",
    "OutcomeChange",
    "OutcomeChangeKind",
    "apply_verdict",
    "compare_outcomes",
    "compare_result",
    "compare_runs",
    "missing_entries",
    "not_gated",
    "shared_keys",
]

DEFAULT_EXACT_REL_TOL = 1e-6
"""Exact metrics are computed from fixed seeds; this only absorbs last-bit differences between BLAS builds."""
DEFAULT_MIN_EFFECT = 0.10
"""Timing: a ratio must move by more than this (and significantly) to count (docs/design.md, a 10% minimum
effect)."""
CONTENDED_CPU_SHARE = 0.85
"""Timing: a run whose rounds got less than this share of their CPUs (harness.timing.remeasure.TimingEvidence,
from harness.timing.clock.TimingRun.cpu_share) cannot show a regression: one that crosses the gate is
``inconclusive``. Single-threaded timings on a lightly shared machine get nearly all of their CPU, so the
threshold sits below that (docs/design.md, "Re-time, contention and corroboration")."""


def compare_result(result: Result, entry: BaselineEntry | None) -> Result:
    """``result`` with ``baseline``, ``verdict`` and ``statistic`` filled in by the rule of its kind."""
    from harness.results import stats

    if result.kind == "aggregate":
        return result  # judged when it was formed, over this run's compared results (harness.results.aggregate)
    if result.kind == "info":
        return replace(
            result,
            baseline=None if entry is None else entry.value,
            verdict=None,
            statistic="shown, never gated",
        )
    if entry is None:
        return replace(result, verdict="new", statistic="no baseline for this metric")
    if entry.kind != result.kind or entry.direction != result.direction:
        return replace(
            result,
            baseline=entry.value,
            verdict="new",
            statistic=f"baseline is {entry.kind}/{entry.direction}, this run {result.kind}/{result.direction}: "
            "not compared (update the baseline)",
        )
    direction = result.direction
    if result.kind == "exact":
        tolerance = result.tolerance if result.tolerance is not None else entry.tolerance
        comparison = stats.compare_exact(
            result.value,
            entry.value,
            direction=direction,
            rel_tol=DEFAULT_EXACT_REL_TOL if tolerance is None else tolerance,
        )
    elif result.kind == "timing":
        if not result.samples:
            return replace(result, baseline=entry.value, verdict="new", statistic="no per-round samples to compare")
        min_effect = result.tolerance if result.tolerance is not None else DEFAULT_MIN_EFFECT
        comparison = stats.compare_timing(
            result.samples, entry.value, entry.runs or (entry.value,), direction=direction, min_effect=min_effect
        )
        inconclusive = _inconclusive(result) if comparison.verdict == "regressed" else None
        if inconclusive is not None:
            reason, flags = inconclusive
            return replace(
                result,
                baseline=entry.value,
                verdict="inconclusive",
                statistic=f"{comparison.statistic}; but {reason}",
                extra={**result.extra, **flags},
            )
        if comparison.ambiguous:
            extra = {**result.extra, "ambiguous": True}
            return replace(
                result, baseline=entry.value, verdict=comparison.verdict, statistic=comparison.statistic, extra=extra
            )
    else:
        if result.data_hash != entry.data_hash or len(result.samples) != len(entry.samples) or not result.samples:
            return replace(
                result,
                baseline=entry.value,
                verdict="new",
                statistic=f"items differ from the baseline's (data hash {entry.data_hash} vs {result.data_hash}, "
                f"{len(entry.samples)} vs {len(result.samples)} items): not compared",
            )
        tolerance = result.tolerance if result.tolerance is not None else (entry.tolerance or 0.0)
        comparison = stats.compare_sampled(result.samples, entry.samples, direction=direction, tolerance=tolerance)
    return replace(result, baseline=entry.value, verdict=comparison.verdict, statistic=comparison.statistic)


def _inconclusive(result: Result) -> tuple[str, dict[str, Any]] | None:
    """Why a timing regression cannot be trusted, and the flags to add to its extra, from the evidence the
    measurement carries (harness.timing.remeasure.TimingEvidence): its ratio moved against one reference only,
    or its rounds got too little of their CPU."""
    from harness.timing.remeasure import TimingEvidence

    evidence = TimingEvidence.of(result)
    if evidence.uncorroborated:
        return f"{evidence.uncorroborated}: a reference moved, not (only) the kernel: inconclusive", {}
    share = evidence.cpu_share
    if share is not None and share < CONTENDED_CPU_SHARE:
        reason = (
            f"the rounds got {share:.0%} of their CPU (other jobs held the rest; under {CONTENDED_CPU_SHARE:.0%} a "
            "slowdown cannot be told from contention): inconclusive, re-run on a quieter machine"
        )
        return reason, {"contended": True}
    return None


def apply_verdict(result: Result, baseline: Baseline | None, machine: str | None = None) -> Result:
    """Compare with ``baseline`` when there is one (no baseline file at all: every metric is new).

    ``machine`` is this run's :func:`harness.results.environment.timing_machine`: a timing whose baseline was written on
    other hardware is not compared (verdict new, with both machines named), since the same environment key
    (``cpu-x86_64``) covers CPUs whose kernel/copy ratios differ."""
    entry = None if baseline is None else baseline.get(result)
    if result.kind == "timing" and entry is not None and machine is not None and baseline is not None:
        from harness.results.environment import timing_machine

        stored = timing_machine(baseline.environment) if baseline.environment else None
        if stored is not None and stored != machine:
            return replace(
                result,
                baseline=entry.value,
                verdict="new",
                statistic=f"{TIMED_ELSEWHERE}{stored}, this run on {machine}: not compared (write a baseline on "
                "this machine: fourbit baseline update)",
            )
    return compare_result(result, entry)


TIMED_ELSEWHERE = "baseline timed on "
"""How the statistic of a timing not compared because its baseline came from other hardware begins."""


def not_gated(results: Iterable[Result]) -> list[str]:
    """One line per reason why recorded metrics were not compared with a baseline (verdict ``new``) or could not
    be judged (``inconclusive``): a run that gated little must say so, not only count "new"."""
    groups: dict[tuple[str, str], int] = {}
    for result in results:
        if result.verdict == "new":
            if result.baseline is None:
                reason = "no baseline entry"
            elif result.kind == "timing" and result.statistic.startswith(TIMED_ELSEWHERE):
                reason = result.statistic
            else:
                reason = "the baseline entry is not comparable (the metrics table says why)"
        elif result.verdict == "inconclusive":
            reason = "inconclusive (the CPU was shared: re-run on a quieter machine)"
        else:
            continue
        key = (result.kind, reason)
        groups[key] = groups.get(key, 0) + 1
    return [
        f"not gated: {count} {kind} metric{'s' if count != 1 else ''}: {reason}"
        for (kind, reason), count in sorted(groups.items(), key=lambda item: (-item[1], item[0]))
    ]


def missing_entries(baseline: Baseline, results: Iterable[Result], scope: Iterable[tuple[str, ...]]) -> list[Result]:
    """Baseline entries inside ``scope`` that this run did not produce.

    ``scope`` holds (suite, implementation) pairs for a full run, or (suite, implementation, case) triples
    when the run was narrowed (``-k``, ``--deselect``): then only the cases that ran can miss a metric."""
    produced = {baseline_key(*r.key) for r in results}
    covered = set(scope)
    missing = []
    for key, entry in sorted(baseline.entries.items()):
        if key in produced:
            continue
        if (entry.suite, entry.implementation) not in covered and (
            entry.suite,
            entry.implementation,
            entry.case,
        ) not in covered:
            continue
        missing.append(
            Result(
                suite=entry.suite,
                case=entry.case,
                implementation=entry.implementation,
                metric=entry.metric,
                value=math.nan,
                unit=entry.unit,
                kind=entry.kind,  # type: ignore[arg-type]  # validated when loaded
                direction=entry.direction,  # type: ignore[arg-type]
                baseline=entry.value,
                verdict="missing",
                statistic="in the baseline, not produced by this run",
            )
        )
    return missing


def compare_runs(old: Iterable[Result], new: Iterable[Result]) -> list[Result]:
    """Every metric of ``new`` judged against ``old`` by the rule of its kind, then the implementation verdicts
    (harness.results.aggregate) that ``new`` carried, formed again from these comparisons, then ``old``'s metrics that
    ``new`` lacks as missing. Results already marked missing in a file are not metrics and are skipped, and so
    are the files' own aggregates (verdicts over one run against its baseline, not measurements)."""
    from harness.results.aggregate import aggregate_timing

    new = list(new)
    old_entries = {
        baseline_key(*r.key): entry_from_result(r) for r in old if r.verdict != "missing" and r.kind != "aggregate"
    }
    new_results = [r for r in new if r.verdict != "missing" and r.kind != "aggregate"]
    compared = [compare_result(r, old_entries.get(baseline_key(*r.key))) for r in new_results]
    declared = sorted({(r.suite, str(r.extra.get("aggregate_of"))) for r in new if r.kind == "aggregate"})
    aggregates = [a for suite, metric in declared for a in aggregate_timing(compared, suite, metric)]
    baseline = Baseline("compare", entries=old_entries)
    scope = {(entry.suite, entry.implementation) for entry in old_entries.values()}
    return compared + aggregates + missing_entries(baseline, new_results, scope)


OutcomeChangeKind = Literal["regressed", "fixed", "changed", "new", "missing", "unchanged"]
OUTCOME_CHANGES: tuple[OutcomeChangeKind, ...] = ("regressed", "fixed", "changed", "new", "missing", "unchanged")
"""The kinds of :class:`OutcomeChange`, in the order ``fourbit compare`` lists them."""


@dataclass(frozen=True)
class OutcomeChange:
    """One property's outcomes in two runs: ``old`` and ``new`` are each run's outcomes of its tests folded into
    one (:func:`harness.results.records.fold_outcomes`; None: the run has no test of it).

    ``change``: ``regressed`` when a test of it passed in the old run and none failed there, and a test of it fails
    in the new run (fails the comparison); ``fixed`` the reverse (failed in the old run, passes and none fails in
    the new one); ``changed`` another difference of the folded outcomes (skipped -> passed, a known failure ->
    failed); ``new`` and ``missing``: in one run only; ``unchanged``. ``failures``: the new run's failing tests of
    it (node id and message), for the listing."""

    suite: str
    implementation: str
    prop: str
    old: str | None
    new: str | None
    change: OutcomeChangeKind
    failures: tuple[TestOutcome, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.implementation, self.prop)


def _by_key(outcomes: Iterable[TestOutcome]) -> dict[tuple[str, str, str], list[TestOutcome]]:
    grouped: dict[tuple[str, str, str], list[TestOutcome]] = {}
    for outcome in outcomes:
        grouped.setdefault(outcome.key, []).append(outcome)
    return grouped


def _change(old: list[TestOutcome], new: list[TestOutcome]) -> OutcomeChangeKind:
    def passes(outcomes: list[TestOutcome]) -> bool:
        return any(o.outcome in ("passed", "xpassed") for o in outcomes) and not any(o.failing for o in outcomes)

    if not old:
        return "new"
    if not new:
        return "missing"
    if passes(old) and any(o.failing for o in new):
        return "regressed"
    if any(o.failing for o in old) and passes(new):
        return "fixed"
    return "unchanged" if fold_outcomes(o.outcome for o in old) == fold_outcomes(o.outcome for o in new) else "changed"


def compare_outcomes(old: Iterable[TestOutcome], new: Iterable[TestOutcome]) -> list[OutcomeChange]:
    """Per (suite, implementation, property), how the tests' outcomes of ``new`` differ from those of ``old``
    (:class:`OutcomeChange`): the new run's properties in the order they ran, then those only the old run had."""
    old_by_key, new_by_key = _by_key(old), _by_key(new)
    changes = []
    for key in [*new_by_key, *(key for key in old_by_key if key not in new_by_key)]:
        before, after = old_by_key.get(key, []), new_by_key.get(key, [])
        changes.append(
            OutcomeChange(
                *key,
                old=fold_outcomes(o.outcome for o in before) if before else None,
                new=fold_outcomes(o.outcome for o in after) if after else None,
                change=_change(before, after),
                failures=tuple(o for o in after if o.failing),
            )
        )
    return changes


def shared_keys(
    old_results: Iterable[Result],
    old_outcomes: Iterable[TestOutcome],
    new_results: Iterable[Result],
    new_outcomes: Iterable[TestOutcome],
) -> int:
    """How many metrics (result keys, as :func:`compare_runs` pairs them) and properties (outcome keys) two runs
    have in common; 0: the runs cannot be compared (different suites or implementations, or empty files)."""

    def measured(results: Iterable[Result]) -> set[str]:
        return {baseline_key(*r.key) for r in results if r.verdict != "missing" and r.kind != "aggregate"}

    results = measured(old_results) & measured(new_results)
    outcomes = {o.key for o in old_outcomes} & {o.key for o in new_outcomes}
    return len(results) + len(outcomes)
