"""Implementation-level timing verdicts: how one implementation moved over all of its cases in one run.

A per-case timing gate must tolerate that case's run-to-run spread, which on the project's 2-core machine is
5-14% for a single run's median ratio (scripts/kernel_gate_check.py prints it): a 1.2x slowdown of one
implementation is then caught in only a few cases of a run. A slower implementation, though, is slower in
most of its cases at once, while noise moves cases up and down. So a suite can declare, with the marker
``@pytest.mark.fourbit_aggregate("METRIC")``, that each implementation is also judged by the median change of
METRIC over its cases (the per-case log ratio of the value to its baseline), with a sign test across the
cases: **regressed** needs the median change past the minimum effect *and* significantly more cases slower
than faster (one-sided binomial test at :data:`AGGREGATE_CONFIDENCE`). The sign test is what keeps a process
in which one implementation's memory layout happened to run a few of its cases slow (seen: +12..+23% on five
of eight cases, -3..+5% on the others) from failing the run; a slowdown of the implementation's code moves
every case.

**Relative to the run's other implementations.** Where at least :data:`AGGREGATE_MIN_PEERS` other
implementations of the same suite and metric were compared in the same run, each case's change is taken
relative to their median change (the median over those implementations of each one's median change) before the
rule above is applied. On the project's machine the ratio of a whole family of kernels to its same-run reference
drifts by about +-10% over tens of minutes (docs/lab/2026-11-24-kernel-gate-checks.md): a family spell then reads
as a regression of each of its implementations, and the same drift downward hides a real 1.2x slowdown. A slowdown
of one implementation's code moves that implementation and not the others, so the others are the control. What this
cannot see is a change that moves every implementation alike (the machine, torch, the harness's shared code):
it is reported as the run's shift (:func:`shared_shift`), and each case's own gate still compares with the
baseline alone. With fewer peers (a run of one implementation) the change is taken against the baseline alone,
and the statistic says so.

Aggregates are computed at the end of a run from results already compared with their baselines, carry the
kind ``aggregate`` and are never written to a baseline.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from harness.errors import InvalidArgument
from harness.results.records import Result, Verdict

__all__ = [
    "AGGREGATE_CASE",
    "AGGREGATE_CONFIDENCE",
    "AGGREGATE_MIN_CASES",
    "AGGREGATE_MIN_PEERS",
    "aggregate_metric_name",
    "aggregate_timing",
    "shared_shift",
]

AGGREGATE_CASE = "all cases"
"""The case name of an aggregate result."""
AGGREGATE_CONFIDENCE = 0.95
"""One-sided confidence of the sign test. With eight cases, 7 of 8 must move the same way (p = 0.035)."""
AGGREGATE_MIN_CASES = 5
"""Fewest compared cases an aggregate needs: with fewer, even all cases moving one way is not significant at
:data:`AGGREGATE_CONFIDENCE` (4 of 4: p = 0.0625), so no aggregate is formed."""
AGGREGATE_MIN_PEERS = 2
"""Fewest other implementations (each with an aggregate's worth of cases) whose median change an implementation's
change is taken relative to; with one, that one implementation's own spell would move the verdict."""
COMPARED_VERDICTS = ("ok", "improved", "regressed", "inconclusive")
"""Verdicts of results that were compared with a baseline value (new and missing ones were not)."""


def aggregate_metric_name(metric: str) -> str:
    return f"{metric}_median"


def _contended(result: Result) -> bool:
    return bool(result.extra.get("contended"))


def _log_change(result: Result) -> float | None:
    """log(value / baseline), sign flipped so that > 0 is worse; None when either is not a positive finite number."""
    value, baseline = result.value, result.baseline
    if baseline is None or not (0 < baseline < math.inf and 0 < value < math.inf):
        return None
    change = math.log(value / baseline)
    return change if result.direction == "lower" else -change


def aggregate_timing(
    results: Iterable[Result],
    suite: str,
    metric: str,
    *,
    min_effect: float = 0.10,
    confidence: float = AGGREGATE_CONFIDENCE,
    min_cases: int = AGGREGATE_MIN_CASES,
) -> list[Result]:
    """One ``aggregate`` result per implementation (and direction) that has at least ``min_cases`` cases of
    ``metric`` in ``suite`` compared with a baseline (timing results; a case recorded twice counts once, its last
    result), in order of first appearance. Its value is the median of value / baseline over the cases (1.18:
    18% up), its samples the per-case value / baseline; both divided by the other implementations' median change
    where there are at least :data:`AGGREGATE_MIN_PEERS` of them (``extra``: ``peers``, ``peer_change`` and the
    unadjusted ``absolute_change``).

    Cases whose rounds were contended (``extra["contended"]``: a regression other jobs may have caused) are left
    out; if any were and the others do not show a regression, the verdict is ``inconclusive``, since the cases
    left out are the ones that looked slower."""
    from scipy.stats import binomtest

    if not (0.0 < confidence < 1.0):
        raise InvalidArgument(f"confidence={confidence!r}, expected a number strictly between 0 and 1")
    if not (min_effect >= 0.0 and math.isfinite(min_effect)):
        raise InvalidArgument(f"min_effect={min_effect!r}, expected a finite number >= 0")
    groups: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        if r.suite == suite and r.metric == metric and r.kind == "timing" and r.verdict in COMPARED_VERDICTS:
            cases = groups.setdefault((r.implementation, r.direction), {})
            cases.pop(r.case, None)  # a case recorded again (a rerun) counts once, as its last result
            cases[r.case] = r
    threshold = math.log1p(min_effect)
    alpha = 1.0 - confidence
    changes_of: dict[tuple[str, str], dict[str, float]] = {}
    contended_of: dict[tuple[str, str], list[str]] = {}
    for key, by_case in groups.items():
        contended_of[key] = [case for case, r in by_case.items() if _contended(r)]
        changes = {
            case: change
            for case, r in by_case.items()
            if case not in contended_of[key] and (change := _log_change(r)) is not None
        }
        if len(changes) >= max(min_cases, 1):
            changes_of[key] = changes
    own_median = {key: statistics.median(changes.values()) for key, changes in changes_of.items()}
    aggregates = []
    for (implementation, direction), absolute in changes_of.items():
        peers = sorted(i for i, d in own_median if d == direction and i != implementation)
        shift = (
            statistics.median(own_median[(i, direction)] for i in peers) if len(peers) >= AGGREGATE_MIN_PEERS else None
        )
        changes = {case: change - (shift or 0.0) for case, change in absolute.items()}
        contended = contended_of[(implementation, direction)]
        median = statistics.median(changes.values())
        worse = sum(change > 0 for change in changes.values())
        better = sum(change < 0 for change in changes.values())
        moved = worse + better  # ties (no change at all) carry no sign
        p_worse = binomtest(worse, moved, 0.5, alternative="greater").pvalue if moved else 1.0
        p_better = binomtest(better, moved, 0.5, alternative="greater").pvalue if moved else 1.0
        verdict: Verdict
        if median > threshold and p_worse < alpha:
            verdict = "regressed"
        elif median < -threshold and p_better < alpha:
            verdict = "improved"
        else:
            verdict = "ok"
        p_value = p_worse if median >= 0 else p_better  # the p of the side the median is on
        outcome: str = "no consistent change past min effect" if verdict == "ok" else verdict
        if contended and verdict != "regressed":
            verdict = "inconclusive"
            outcome += (
                f"; but {len(contended)} case(s) left out, their rounds contended ({', '.join(contended)}): "
                "inconclusive"
            )
        sign = 1.0 if direction == "lower" else -1.0  # back from "> 0 is worse" to value / baseline
        factor = math.exp(sign * median)
        absolute_factor = math.exp(sign * statistics.median(absolute.values()))
        if shift is None:
            against = f"against the baseline alone (fewer than {AGGREGATE_MIN_PEERS} other implementations)"
        else:
            against = (
                f"relative to {len(peers)} other implementations (their median change "
                f"{math.exp(sign * shift) - 1:+.1%}; {absolute_factor - 1:+.1%} against the baseline alone)"
            )
        statistic = (
            f"median change {factor - 1:+.1%} over {len(changes)} cases, {against} (min effect {min_effect:.0%}); "
            f"{worse} worse, {better} better, sign test p={p_value:.3g} ({confidence:.0%} one-sided): {outcome}"
        )
        aggregates.append(
            Result(
                suite=suite,
                case=AGGREGATE_CASE,
                implementation=implementation,
                metric=aggregate_metric_name(metric),
                value=factor,
                unit="x baseline" if shift is None else "x baseline, relative to the other implementations",
                kind="aggregate",
                direction=direction,  # type: ignore[arg-type]  # a Result's, validated
                samples=tuple(math.exp(sign * change) for change in changes.values()),
                baseline=1.0,
                verdict=verdict,
                statistic=statistic,
                extra={
                    "aggregate_of": metric,
                    "cases": list(changes),
                    "contended_cases": contended,
                    "peers": peers if shift is not None else [],
                    "peer_change": None if shift is None else math.exp(sign * shift),
                    "absolute_change": absolute_factor,
                },
            )
        )
    return aggregates


def shared_shift(aggregates: Iterable[Result], *, min_effect: float = 0.10) -> list[str]:
    """Messages for each (suite, metric, direction) whose implementations moved together past ``min_effect``
    against their baselines (the median over implementations of each one's change, from ``absolute_change``):
    the implementation verdicts, being relative to each other, do not show such a move, so the run says it."""
    moved: dict[tuple[str, str, str], list[float]] = {}
    for a in aggregates:
        absolute = a.extra.get("absolute_change")
        if a.kind == "aggregate" and a.extra.get("peers") and isinstance(absolute, float) and absolute > 0:
            moved.setdefault((a.suite, a.metric, a.direction), []).append(math.log(absolute))
    messages = []
    for (suite, metric, direction), logs in moved.items():
        change = statistics.median(logs)
        worse = change if direction == "lower" else -change
        if abs(worse) > math.log1p(min_effect):
            messages.append(
                f"{metric} ({suite}): the {len(logs)} implementations moved together, median "
                f"{math.exp(change) - 1:+.1%} against their baselines ({'slower' if worse > 0 else 'faster'}): the "
                "machine, torch or code they share changed; implementation verdicts are relative to each other and "
                "do not show it"
            )
    return messages
