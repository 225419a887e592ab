"""Comparison rules for the three metric kinds (exact, timing, sampled) and the intervals the suites report.

Each rule answers "did this metric move, and in which direction?" with a :class:`Comparison` whose
``statistic`` line says what was compared and why the verdict follows, so a failing test explains itself.
The rules are pure functions of numbers; reading and writing baselines lives in ``baselines.py``.

Why the timing rule looks the way it does: on the project's machines the rounds of one run share the
machine's state (docs/design.md: a rank test on per-round samples called 56 of 60 A/A pairs
significant), so per-round samples cannot tell a regression from a different afternoon. The rule
therefore tests the run's median ratio against the spread *between runs*, and asks for a minimum
effect size as well, so a significant but tiny change never fails a build.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats as scipy_stats

from harness.errors import InvalidArgument
from harness.results.records import Direction, Verdict

__all__ = [
    "DEFAULT_ROUNDS",
    "RUN_SPREAD_PRIOR",
    "RUN_SPREAD_PRIOR_RUNS",
    "Comparison",
    "Samples",
    "bootstrap_ci",
    "compare_exact",
    "compare_sampled",
    "compare_timing",
    "fold_runs",
    "median_ci",
]

Samples = Sequence[float] | NDArray[np.floating] | NDArray[np.integer]
"""Per-round or per-item values: a list, a tuple or a 1-d numpy array."""

DEFAULT_ROUNDS = 50
"""Interleaved kernel/reference rounds per timing run. In tests/test_stats.py's drift model a 5-run baseline
then catches a 20% slowdown in 98% of trials (30 rounds: 95%, at the edge of the target) with no false
alarm in 1000 A/A trials; more rounds shrink only the run's own median error, not the run-to-run term."""

RUN_SPREAD_PRIOR = 0.05
"""Prior run-to-run spread (standard deviation of log per-run median ratios). Conservative: about twice
the 2.6% drift measured for a tiny op's raw time (docs/design.md), whereas interleaved ratios cancel most drift."""

RUN_SPREAD_PRIOR_RUNS = 4
"""Weight of :data:`RUN_SPREAD_PRIOR`, in runs: the spread is the pooled variance of the prior and the
observed runs, with ``RUN_SPREAD_PRIOR_RUNS + k - 1`` degrees of freedom; at 5 runs prior and data weigh
the same. A one-run baseline is judged by the prior alone (it still catches a 1.5x slowdown), and there
is no jump where a hard switch from prior to estimate at 3 runs would need t with 2 dof (7 errors)."""

_MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)
"""Asymptotic SE(median) / SE(mean) for normal data; used for the run's own median and the baseline's."""

_MAD_TO_SIGMA = 1.0 / float(scipy_stats.norm.ppf(0.75))
"""Median absolute deviation -> standard deviation for normal data (what scipy's MAD(scale="normal") uses;
computed here directly because that wrapper costs milliseconds per call and the suites call it per case)."""


@functools.lru_cache(maxsize=256)
def _t_critical(confidence: float, dof: int) -> float:
    """One-sided Student's t quantile, cached: scipy's ppf costs most of a compare_timing call otherwise."""
    return float(scipy_stats.t.ppf(confidence, df=dof))


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing one metric with its baseline.

    ``change`` is the signed relative change ``(current - baseline) / |baseline|`` (for timing, of the
    median ratio; for sampled metrics, of the item mean). It is 0.0 when the two are equal (including
    nan vs nan and inf vs the same inf), ``±inf`` when the baseline is 0 and the current value is not,
    and nan when it is undefined (a nan on one side only, or an infinite baseline).
    ``tolerance`` is the threshold that was applied, relative to ``|baseline|`` like ``change`` (for an
    exact metric whose baseline is 0 or infinite, where no relative threshold exists, its ``rel_tol``; for a
    sampled metric whose baseline mean is 0, inf).
    ``ambiguous`` is set only by :func:`compare_timing`: the change is past ``min_effect`` in the bad
    direction but not significant, or regressed by a margin under one standard error, so one re-run of
    the case would settle it.
    """

    verdict: Verdict
    change: float
    tolerance: float
    statistic: str
    ambiguous: bool = False


# ---------------------------------------------------------------------------------------------- validation


def _check_direction(direction: object) -> Direction:
    if direction not in ("higher", "lower"):
        raise InvalidArgument(f"direction={direction!r}, expected 'higher' or 'lower'")
    return direction


def _check_confidence(confidence: object) -> float:
    number = _check_number("confidence", confidence, finite=True)
    if not 0.0 < number < 1.0:
        raise InvalidArgument(f"confidence={confidence!r}, expected a number strictly between 0 and 1, such as 0.95")
    return number


def _check_number(
    name: str, value: object, *, finite: bool, minimum: float | None = None, strict: bool = False
) -> float:
    """Return ``value`` as a float if it is a real number in range; raise InvalidArgument naming it otherwise."""
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r}, expected a real number")
    number = float(value)
    if finite and not math.isfinite(number):
        raise InvalidArgument(f"{name}={value!r}, expected a finite number")
    if minimum is not None and (number <= minimum if strict else number < minimum):
        relation = ">" if strict else ">="
        raise InvalidArgument(f"{name}={value!r}, expected a number {relation} {minimum:g}")
    return number


def _check_samples(name: str, values: object, *, positive: bool = False, min_len: int = 1) -> np.ndarray:
    """Return ``values`` as a 1-d float64 array of finite (and, if asked, positive) numbers."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise InvalidArgument(f"{name} is a {type(values).__name__}, expected a sequence of numbers")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidArgument(f"{name} holds something that is not a number ({error}), expected numbers") from None
    if array.ndim != 1 or array.size < min_len:
        raise InvalidArgument(f"{name} has shape {array.shape}, expected a flat sequence of at least {min_len} numbers")
    bad = ~np.isfinite(array) | (array <= 0 if positive else False)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        expected = "finite positive numbers" if positive else "finite numbers"
        raise InvalidArgument(f"{name}[{index}]={float(array[index])!r}, expected {expected} only")
    return array


def _relative_change(current: float, baseline: float) -> float:
    """``(current - baseline) / |baseline|`` with the conventions documented on :class:`Comparison`."""
    if current == baseline or (math.isnan(current) and math.isnan(baseline)):
        return 0.0
    if baseline == 0.0:
        return math.copysign(math.inf, current - baseline)
    with np.errstate(invalid="ignore"):
        return float(np.float64(current - baseline) / abs(baseline))


def _bad_sign(direction: Direction) -> float:
    """+1 when a larger value is worse (``lower`` is better), -1 when a smaller value is worse."""
    return 1.0 if direction == "lower" else -1.0


def _pct(fraction: float) -> str:
    return f"{fraction:+.1%}" if math.isfinite(fraction) else f"{fraction}"


# ---------------------------------------------------------------------------------------------- exact


def compare_exact(
    current: float,
    baseline: float,
    *,
    direction: Direction,
    rel_tol: float = 1e-9,
    abs_tol: float = 0.0,
) -> Comparison:
    """Compare a deterministic metric: any move past ``max(rel_tol * |baseline|, abs_tol)`` counts.

    Fixed seeds make these values reproducible, so the tolerance only absorbs float reordering.
    NaN means the metric broke: a nan current against a number is ``regressed``; a number against a
    nan baseline is ``improved`` (the baseline recorded a broken metric; update it); nan vs nan is ``ok``.
    Infinities compare by order (an SQNR of inf for a lossless format is legitimate).
    """
    bad_direction = _check_direction(direction)
    current = _check_number("current", current, finite=False)
    baseline = _check_number("baseline", baseline, finite=False)
    rel_tol = _check_number("rel_tol", rel_tol, finite=True, minimum=0.0)
    abs_tol = _check_number("abs_tol", abs_tol, finite=True, minimum=0.0)

    change = _relative_change(current, baseline)
    allowed = max(rel_tol * abs(baseline), abs_tol) if math.isfinite(baseline) else 0.0
    tolerance = allowed / abs(baseline) if math.isfinite(baseline) and baseline != 0.0 else rel_tol
    described = f"{current!r} vs baseline {baseline!r} ({_pct(change)}); tolerance rel {rel_tol:g}, abs {abs_tol:g}"

    if math.isnan(current) or math.isnan(baseline):
        if math.isnan(current) and math.isnan(baseline):
            return Comparison("ok", change, tolerance, f"{described}: both nan")
        if math.isnan(current):
            return Comparison("regressed", change, tolerance, f"{described}: the metric became nan")
        return Comparison(
            "improved", change, tolerance, f"{described}: the baseline is nan, the metric is a number now"
        )

    if current == baseline or abs(current - baseline) <= allowed:
        return Comparison("ok", change, tolerance, f"{described}: within tolerance")
    worse = (current - baseline) * _bad_sign(bad_direction) > 0
    if worse:
        return Comparison("regressed", change, tolerance, f"{described}: worse ({direction} is better)")
    return Comparison("improved", change, tolerance, f"{described}: better ({direction} is better)")


# ---------------------------------------------------------------------------------------------- timing


def _run_spread(log_run_ratios: np.ndarray) -> tuple[float, int]:
    """Pooled run-to-run spread of log per-run median ratios and its degrees of freedom.

    The prior counts as :data:`RUN_SPREAD_PRIOR_RUNS` runs (a scaled inverse chi-squared prior on the
    variance), so a baseline of one or two runs is judged by the documented prior and a long one by its data.
    """
    observed_dof = log_run_ratios.size - 1
    observed_ss = float(np.sum((log_run_ratios - log_run_ratios.mean()) ** 2))
    dof = RUN_SPREAD_PRIOR_RUNS + observed_dof
    return math.sqrt((RUN_SPREAD_PRIOR_RUNS * RUN_SPREAD_PRIOR**2 + observed_ss) / dof), dof


def fold_runs(run_ratios: Samples) -> tuple[float, float]:
    """Fold per-run median ratios into a baseline: (median of the run medians, run-to-run spread).

    The spread is a standard deviation of log ratios (close to a relative standard deviation for small
    values), pooled with :data:`RUN_SPREAD_PRIOR`: the same number :func:`compare_timing` tests against,
    so the stored spread is the one that gates.
    """
    ratios = _check_samples("run_ratios", run_ratios, positive=True)
    return float(np.median(ratios)), _run_spread(np.log(ratios))[0]


def compare_timing(
    current_ratios: Samples,
    baseline_ratio: float,
    baseline_run_ratios: Samples,
    *,
    direction: Direction = "lower",
    min_effect: float = 0.10,
    confidence: float = 0.99,
) -> Comparison:
    """Compare this run's kernel/reference ratios with a baseline folded from earlier runs.

    Works in log space, where drift multiplies. Effect ``d = log(median(current)) - log(baseline_ratio)``.
    Its variance has three parts: the current run's draw of the machine state (``s**2``, ``s`` the
    run-to-run spread of the ``k`` baseline runs pooled with the prior, see :data:`RUN_SPREAD_PRIOR_RUNS`),
    the baseline's own error (``s**2 * pi / (2k)``, the median of ``k`` runs; conservative for every
    ``k``) and this run's sampling error of its median (from its rounds' MAD). ``s`` already holds that
    error for baseline runs of the same length, so counting it again is conservative: it keeps a
    burst-ridden or short run from being trusted more than the baseline runs were. The per-round error
    alone would be far too small (rounds share the machine's state), which is why ``s`` dominates.
    Since ``s`` is estimated, the critical value is Student's t with the pooled degrees of freedom.

    ``regressed`` needs both a change past ``min_effect`` in the bad direction and ``d`` significant at
    ``confidence`` (one-sided); ``improved`` is symmetric. ``ambiguous`` marks a bad-direction change
    past ``min_effect`` that is not significant, or is regressed by less than one standard error (``scale``)
    past either gate: the verdict could flip on a re-run, so the caller may re-run the case once.
    """
    bad_direction = _check_direction(direction)
    current = _check_samples("current_ratios", current_ratios, positive=True)
    baseline_ratio = _check_number("baseline_ratio", baseline_ratio, finite=True, minimum=0.0, strict=True)
    runs = _check_samples("baseline_run_ratios", baseline_run_ratios, positive=True)
    min_effect = _check_number("min_effect", min_effect, finite=True, minimum=0.0)
    confidence = _check_confidence(confidence)

    log_current = np.log(current)
    log_median = float(np.median(log_current))
    spread, dof = _run_spread(np.log(runs))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(log_current - log_median)))
    median_se = _MEDIAN_SE_FACTOR * sigma / math.sqrt(current.size)
    scale = math.sqrt(spread**2 * (1.0 + _MEDIAN_SE_FACTOR**2 / runs.size) + median_se**2)  # > 0: the prior
    critical = _t_critical(confidence, dof)

    bad_effect = (log_median - math.log(baseline_ratio)) * _bad_sign(bad_direction)  # > 0: worse
    score = bad_effect / scale
    threshold = math.log1p(min_effect)
    if abs(bad_effect) > threshold and abs(score) > critical:
        verdict: Verdict = "regressed" if bad_effect > 0 else "improved"
    else:
        verdict = "ok"
    # Past min effect, but not past both gates (min effect, significance) by one standard error or more.
    ambiguous = threshold < bad_effect <= max(threshold, critical * scale) + scale
    median_ratio = math.exp(log_median)
    change = median_ratio / baseline_ratio - 1.0
    outcome = "no significant change past min effect" if verdict == "ok" else verdict
    statistic = (
        f"median ratio {median_ratio:.4g} vs baseline {baseline_ratio:.4g} ({_pct(change)}) over {current.size} "
        f"rounds; min effect {min_effect:.0%}, run-to-run spread {spread:.1%} ({runs.size} baseline run"
        f"{'s' if runs.size > 1 else ''}), median SE {median_se:.1%}; t={score:.2f} vs {critical:.2f} "
        f"({dof} dof, {confidence:.0%} one-sided, {direction} is better): {outcome}"
        f"{' (ambiguous: re-run once)' if ambiguous else ''}"
    )
    return Comparison(verdict, change, min_effect, statistic, ambiguous)


# ---------------------------------------------------------------------------------------------- sampled


def _bootstrap_mean_ci(values: np.ndarray, *, confidence: float, n_resamples: int, seed: int) -> tuple[float, float]:
    """Two-sided BCa bootstrap interval of the mean of ``values``; percentile if BCa is undefined.

    BCa because per-item scores (F1/EM in [0, 1], many items tied at 0 or 1) give skewed means on a few
    hundred items, where the percentile interval under-covers; BCa corrects bias and skew. BCa divides by
    the jackknife's spread, so all-equal values (every resample has the same mean) return the mean itself,
    and any other nan from BCa (a resampling that happened to be degenerate) falls back to percentile.
    """
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=scipy_stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for method in ("BCa", "percentile"):
            result = scipy_stats.bootstrap(
                (values,),
                np.mean,
                vectorized=True,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                rng=np.random.default_rng(seed),
            )
            low, high = (float(bound) for bound in result.confidence_interval)
            if math.isfinite(low) and math.isfinite(high):
                break
    return low, high


def _check_resampling(n_resamples: object, seed: object) -> tuple[int, int]:
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 100:
        raise InvalidArgument(f"n_resamples={n_resamples!r}, expected an integer >= 100, such as 2000")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidArgument(f"seed={seed!r}, expected a non-negative integer")
    return int(n_resamples), int(seed)


def bootstrap_ci(
    items: Samples, *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Two-sided BCa bootstrap confidence interval of the mean of per-item scores (F1, EM, KLD)."""
    values = _check_samples("items", items, min_len=2)
    confidence = _check_confidence(confidence)
    n_resamples, seed = _check_resampling(n_resamples, seed)
    return _bootstrap_mean_ci(values, confidence=confidence, n_resamples=n_resamples, seed=seed)


def compare_sampled(
    current_items: Samples,
    baseline_items: Samples,
    *,
    direction: Direction,
    tolerance: float,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare per-item scores of the same items (same order) by a paired bootstrap of the mean difference.

    Pairing removes the items' own difficulty from the noise, which on a few hundred items is most of it.
    The point estimate is the mean of the per-item differences (the difference of the means).
    ``regressed`` only if the whole two-sided interval of the drop lies beyond ``tolerance`` (absolute, in
    the metric's units), so each direction false-alarms at most ``(1 - confidence) / 2`` of the time on
    unchanged quality; ``improved`` is symmetric. ``Comparison.tolerance`` is ``tolerance`` relative to
    the baseline's mean, like ``change``.
    """
    bad_direction = _check_direction(direction)
    current = _check_samples("current_items", current_items, min_len=2)
    baseline = _check_samples("baseline_items", baseline_items, min_len=2)
    if current.size != baseline.size:
        raise InvalidArgument(
            f"len(current_items)={current.size} and len(baseline_items)={baseline.size}, expected the same items "
            "in the same order (same length)"
        )
    tolerance = _check_number("tolerance", tolerance, finite=True, minimum=0.0)
    confidence = _check_confidence(confidence)
    n_resamples, seed = _check_resampling(n_resamples, seed)

    current_mean, baseline_mean = float(current.mean()), float(baseline.mean())
    difference = current_mean - baseline_mean
    # Resampling items and bootstrapping the per-item differences is the paired bootstrap
    # (scipy.stats.bootstrap(paired=True) of the mean difference gives the same interval), at half the cost.
    low, high = _bootstrap_mean_ci(current - baseline, confidence=confidence, n_resamples=n_resamples, seed=seed)
    sign = _bad_sign(bad_direction)
    drop_low, drop_high = sorted((low * sign, high * sign))  # interval of the change in the bad direction
    if drop_low > tolerance:
        verdict: Verdict = "regressed"
    elif drop_high < -tolerance:
        verdict = "improved"
    else:
        verdict = "ok"
    change = _relative_change(current_mean, baseline_mean)
    relative_tolerance = _relative_change(baseline_mean + tolerance, baseline_mean) if tolerance else 0.0
    statistic = (
        f"mean {current_mean:.4g} vs baseline {baseline_mean:.4g} over {current.size} paired items: "
        f"difference {difference:+.4g} ({_pct(change)}), {confidence:.0%} paired-bootstrap CI "
        f"[{low:+.4g}, {high:+.4g}]; "
        f"tolerance {tolerance:.4g} ({relative_tolerance:.1%} of baseline), {direction} is better: {verdict}"
    )
    return Comparison(verdict, change, relative_tolerance, statistic)


# ---------------------------------------------------------------------------------------------- median CI


def median_ci(samples: Samples, *, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics (binomial ranks).

    Needs no model of the noise, which is what timing rounds lack. With too few samples for any pair of
    order statistics to reach ``confidence`` (fewer than 6 at 95%), the only honest interval is
    ``(-inf, inf)``, so a stop rule on its width simply keeps sampling.
    """
    values = _check_samples("samples", samples)
    confidence = _check_confidence(confidence)
    result = scipy_stats.quantile_test(values, q=float(np.median(values)), p=0.5)
    interval = result.confidence_interval(confidence_level=confidence)
    low, high = float(interval.low), float(interval.high)
    return (-math.inf if math.isnan(low) else low), (math.inf if math.isnan(high) else high)
