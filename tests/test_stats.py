"""harness.results.stats: each comparison rule checked, by simulation with fixed seeds, against what it promises.

Timing model (assumptions after the measurements in docs/design.md, on the project's CPU machines):

* each run has a machine state, a lognormal factor (log-sd 0.10, 0.15 in the NOISY model) that also drifts
  within the run (AR(1), so rounds of one run are correlated, as measured);
* the state multiplies the kernel's time and the reference copy's time of a round, the copy with an exponent
  below 1 (it "slowed in step with dequantize", not exactly): the ratio keeps a small residual of the drift,
  which is the run-to-run spread the rule has to live with;
* each time has its own per-round noise, and some rounds hit a burst that makes them 2x slower: mostly both
  halves of the interleaved round, sometimes only one of them.

The measured rates are printed (``pytest tests/test_stats.py -s``) so the numbers in reports come from a run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness.errors import InvalidArgument
from harness.results.stats import (
    DEFAULT_ROUNDS,
    RUN_SPREAD_PRIOR,
    Comparison,
    bootstrap_ci,
    compare_exact,
    compare_sampled,
    compare_timing,
    fold_runs,
    median_ci,
)


@dataclass(frozen=True)
class TimingModel:
    """How the machine perturbs interleaved kernel/reference rounds (see the module docstring)."""

    run_state_sigma: float = 0.10  # log-sd of the machine-state factor per run
    reference_state_exponent: float = 0.85  # the copy feels 85% of the kernel's slowdown: ratio keeps 15% of it
    within_run_drift_sigma: float = 0.05
    within_run_drift_correlation: float = 0.9
    round_noise_sigma: float = 0.05
    burst_probability: float = 0.05
    burst_hits_both: float = 0.7


TYPICAL = TimingModel()
NOISY = TimingModel(run_state_sigma=0.15, reference_state_exponent=0.7)  # the ratio keeps 30% of a wider drift
BASELINE_RUNS = 5
TIMING_TRIALS = 1000


def simulate_runs(
    rng: np.random.Generator, n_runs: int, slowdown: float = 1.0, model: TimingModel = TYPICAL
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel and reference times of ``n_runs`` runs of ``DEFAULT_ROUNDS`` interleaved rounds, each (n_runs, rounds)."""
    rounds = DEFAULT_ROUNDS
    drift = np.empty((n_runs, rounds))
    drift[:, 0] = rng.normal(0.0, model.within_run_drift_sigma, n_runs)
    innovation_sigma = model.within_run_drift_sigma * math.sqrt(1 - model.within_run_drift_correlation**2)
    for i in range(1, rounds):
        drift[:, i] = model.within_run_drift_correlation * drift[:, i - 1] + rng.normal(0.0, innovation_sigma, n_runs)
    log_state = rng.normal(0.0, model.run_state_sigma, (n_runs, 1)) + drift
    noise = model.round_noise_sigma
    kernel = slowdown * np.exp(log_state + rng.normal(0.0, noise, log_state.shape))
    reference = 0.8 * np.exp(model.reference_state_exponent * log_state + rng.normal(0.0, noise, log_state.shape))
    burst = rng.random(log_state.shape) < model.burst_probability
    which = rng.random(log_state.shape)  # < burst_hits_both: both; then half kernel only, half reference only
    kernel_only = model.burst_hits_both + (1 - model.burst_hits_both) / 2
    kernel = np.where(burst & (which < kernel_only), 2 * kernel, kernel)
    reference = np.where(burst & ((which < model.burst_hits_both) | (which >= kernel_only)), 2 * reference, reference)
    return kernel, reference


def timing_trials(
    seed: int, slowdown: float, model: TimingModel = TYPICAL, trials: int = TIMING_TRIALS
) -> list[Comparison]:
    """Per trial: a baseline folded from BASELINE_RUNS fresh runs, then one current run with ``slowdown``."""
    rng = np.random.default_rng(seed)
    base_kernel, base_reference = simulate_runs(rng, trials * BASELINE_RUNS, model=model)
    base_ratios = (base_kernel / base_reference).reshape(trials, BASELINE_RUNS, DEFAULT_ROUNDS)
    current_kernel, current_reference = simulate_runs(rng, trials, slowdown, model=model)
    current_ratios = current_kernel / current_reference
    results = []
    for trial in range(trials):
        run_medians = np.median(base_ratios[trial], axis=1)
        baseline_ratio, _ = fold_runs(run_medians)
        results.append(compare_timing(current_ratios[trial], baseline_ratio, run_medians))
    return results


def rate(comparisons: list[Comparison], verdict: str) -> float:
    return sum(c.verdict == verdict for c in comparisons) / len(comparisons)


# ---------------------------------------------------------------------------------------------- timing


@pytest.mark.parametrize(
    ("model", "seed"), [pytest.param(TYPICAL, 1, id="typical"), pytest.param(NOISY, 13, id="noisy")]
)
def test_timing_false_alarms_at_most_1_percent_on_identical_distributions(model: TimingModel, seed: int) -> None:
    """NOISY leaves enough drift in the ratio that the min-effect gate alone would false-alarm; the spread must gate."""
    comparisons = timing_trials(seed=seed, slowdown=1.0, model=model)
    false_alarms, false_improvements = rate(comparisons, "regressed"), rate(comparisons, "improved")
    ambiguous = sum(c.ambiguous for c in comparisons) / len(comparisons)
    print(
        f"\nA/A ({'noisy' if model is NOISY else 'typical'}) over {len(comparisons)} trials: "
        f"regressed {false_alarms:.1%}, "
        f"improved {false_improvements:.1%}, ambiguous {ambiguous:.1%}"
    )
    assert false_alarms <= 0.01
    assert false_improvements <= 0.01


def test_timing_detects_a_20_percent_slowdown_with_95_percent_power() -> None:
    comparisons = timing_trials(seed=2, slowdown=1.2)
    power = rate(comparisons, "regressed")
    ambiguous = sum(c.ambiguous for c in comparisons) / len(comparisons)
    noisy_power = rate(timing_trials(seed=14, slowdown=1.2, model=NOISY), "regressed")
    print(
        f"\n1.2x slowdown over {len(comparisons)} trials, {DEFAULT_ROUNDS} rounds, {BASELINE_RUNS}-run baseline: "
        f"power {power:.1%} (ambiguous {ambiguous:.1%}); NOISY model: power {noisy_power:.1%}"
    )
    assert power >= 0.95
    assert rate(comparisons, "improved") == 0


def test_timing_detects_a_1_5x_slowdown_always_and_a_1_5x_speedup_as_improved() -> None:
    slower = timing_trials(seed=3, slowdown=1.5)
    faster = timing_trials(seed=4, slowdown=1 / 1.5)
    print(
        f"\n1.5x slowdown: regressed {rate(slower, 'regressed'):.1%}; "
        f"1.5x speedup: improved {rate(faster, 'improved'):.1%}"
    )
    assert rate(slower, "regressed") == 1.0
    assert rate(faster, "improved") == 1.0
    example = slower[0]
    assert f"{example.change:+.1%}" in example.statistic
    assert "regressed" in example.statistic
    assert example.tolerance == 0.10


def test_naive_rank_test_on_per_round_samples_false_alarms_where_compare_timing_does_not() -> None:
    """docs/design.md's finding, reproduced: rounds share the machine's state, so per-round ranks see the state."""
    rng = np.random.default_rng(5)
    trials = 200
    base_kernel, base_reference = simulate_runs(rng, trials * BASELINE_RUNS)
    base_kernel = base_kernel.reshape(trials, BASELINE_RUNS, DEFAULT_ROUNDS)
    base_ratios = base_kernel / base_reference.reshape(trials, BASELINE_RUNS, DEFAULT_ROUNDS)
    current_kernel, current_reference = simulate_runs(rng, trials)
    rank_alarms = timing_alarms = 0
    for trial in range(trials):
        previous_run = base_kernel[trial, -1]  # an A/A pair: same kernel, different machine state
        rank_alarms += scipy_stats.mannwhitneyu(current_kernel[trial], previous_run).pvalue < 0.01
        run_medians = np.median(base_ratios[trial], axis=1)
        verdict = compare_timing(
            current_kernel[trial] / current_reference[trial], fold_runs(run_medians)[0], run_medians
        )
        timing_alarms += verdict.verdict != "ok"
    print(
        f"\nA/A pairs over {trials} trials: Mann-Whitney on per-round times p<0.01 in {rank_alarms / trials:.1%}, "
        f"compare_timing not ok in {timing_alarms / trials:.1%}"
    )
    assert rank_alarms / trials >= 0.5
    assert timing_alarms / trials <= 0.01


def test_timing_min_effect_gate_ignores_a_significant_but_small_change() -> None:
    rng = np.random.default_rng(6)
    run_medians = np.exp(rng.normal(0.0, 0.005, 50))  # a long, very steady baseline: small changes are significant
    current = 1.08 * np.exp(rng.normal(0.0, 0.01, DEFAULT_ROUNDS))
    baseline_ratio, _ = fold_runs(run_medians)
    assert compare_timing(current, baseline_ratio, run_medians, min_effect=0.05).verdict == "regressed"
    small = compare_timing(current, baseline_ratio, run_medians)
    assert small.verdict == "ok"
    assert not small.ambiguous


def test_timing_significance_gate_ignores_a_large_change_within_the_run_to_run_spread() -> None:
    run_medians = np.exp(0.3 * np.array([-1.5, -0.5, 0.0, 0.5, 1.5]))  # runs that disagree by tens of percent
    current = np.full(DEFAULT_ROUNDS, 1.3)
    result = compare_timing(current, fold_runs(run_medians)[0], run_medians)
    assert result.verdict == "ok"
    assert result.ambiguous  # past min effect, not significant: the caller may re-run once
    assert result.change == pytest.approx(0.3)


def test_timing_direction_higher_mirrors_lower_on_reciprocal_ratios() -> None:
    for comparison_seed, slowdown in [(7, 1.0), (8, 1.2), (9, 1.5), (10, 1 / 1.5)]:
        rng = np.random.default_rng(comparison_seed)
        kernel, reference = simulate_runs(rng, BASELINE_RUNS + 1)
        ratios = kernel / reference
        ratios[-1] *= slowdown
        run_medians = np.median(ratios[:-1], axis=1)
        baseline_ratio, _ = fold_runs(run_medians)
        lower = compare_timing(ratios[-1], baseline_ratio, run_medians)
        higher = compare_timing(1 / ratios[-1], 1 / baseline_ratio, 1 / run_medians, direction="higher")
        assert higher.verdict == lower.verdict
        assert higher.ambiguous == lower.ambiguous
        assert 1 + higher.change == pytest.approx(1 / (1 + lower.change))


def test_timing_one_run_baseline_uses_the_prior_and_still_catches_a_1_5x_slowdown() -> None:
    rng = np.random.default_rng(11)
    kernel, reference = simulate_runs(rng, 2)
    ratios = kernel / reference
    baseline_ratio, spread = fold_runs([float(np.median(ratios[0]))])
    assert spread == RUN_SPREAD_PRIOR
    assert compare_timing(ratios[1], baseline_ratio, [baseline_ratio]).verdict == "ok"
    assert compare_timing(1.5 * ratios[1], baseline_ratio, [baseline_ratio]).verdict == "regressed"


def test_fold_runs_gives_the_median_and_approaches_the_observed_spread_as_runs_accumulate() -> None:
    rng = np.random.default_rng(12)
    true_spread = 0.03
    many = np.exp(rng.normal(0.0, true_spread, 4000))
    value, spread = fold_runs(many)
    assert value == np.median(many)
    assert spread == pytest.approx(true_spread, rel=0.05)
    few_value, few_spread = fold_runs(many[:3])
    assert few_value == np.median(many[:3])
    observed = float(np.std(np.log(many[:3]), ddof=1))  # a pooled variance lies between its two parts
    assert min(observed, RUN_SPREAD_PRIOR) <= few_spread <= max(observed, RUN_SPREAD_PRIOR)


# ---------------------------------------------------------------------------------------------- sampled

SAMPLED_ITEMS = 150
SAMPLED_TRIALS = 200
ITEM_NOISE = 0.15


def simulate_items(rng: np.random.Generator, drop: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(current, baseline) F1-like scores in [0, 1] of the same items: a per-item difficulty plus noise per run.

    Clipping piles many items on exactly 0 and 1, as F1/EM do, which is what makes the means skewed."""
    difficulty = rng.beta(2.0, 2.0, SAMPLED_ITEMS)
    baseline = np.clip(difficulty + rng.normal(0.0, ITEM_NOISE, SAMPLED_ITEMS), 0.0, 1.0)
    current = np.clip(difficulty - drop + rng.normal(0.0, ITEM_NOISE, SAMPLED_ITEMS), 0.0, 1.0)
    return current, baseline


def sampled_trials(seed: int, drop: float, tolerance: float, trials: int = SAMPLED_TRIALS) -> list[Comparison]:
    rng = np.random.default_rng(seed)
    return [
        compare_sampled(
            *simulate_items(rng, drop), direction="higher", tolerance=tolerance, n_resamples=1000, seed=trial
        )
        for trial in range(trials)
    ]


def test_sampled_false_alarms_at_most_5_percent_on_identical_item_distributions() -> None:
    comparisons = sampled_trials(seed=20, drop=0.0, tolerance=0.0)  # the strictest tolerance
    print(
        f"\nsampled A/A over {len(comparisons)} trials ({SAMPLED_ITEMS} items, 95%, tolerance 0): "
        f"regressed {rate(comparisons, 'regressed'):.1%}, improved {rate(comparisons, 'improved'):.1%}"
    )
    assert rate(comparisons, "regressed") <= 0.05
    assert rate(comparisons, "improved") <= 0.05


def test_sampled_detects_a_drop_clearly_beyond_the_tolerance() -> None:
    tolerance = 0.02
    comparisons = sampled_trials(seed=21, drop=0.10, tolerance=tolerance, trials=SAMPLED_TRIALS // 2)
    print(f"\nsampled drop 0.10 vs tolerance {tolerance}: regressed {rate(comparisons, 'regressed'):.1%}")
    assert rate(comparisons, "regressed") >= 0.95
    within = sampled_trials(seed=22, drop=tolerance / 2, tolerance=tolerance, trials=SAMPLED_TRIALS // 2)
    print(f"sampled drop {tolerance / 2} within tolerance {tolerance}: regressed {rate(within, 'regressed'):.1%}")
    assert rate(within, "regressed") <= 0.05


def test_sampled_verdict_follows_scipy_paired_bootstrap_interval_against_the_tolerance() -> None:
    rng = np.random.default_rng(23)
    current, baseline = simulate_items(rng, drop=0.08)
    interval = scipy_stats.bootstrap(
        (current, baseline),
        lambda c, b, axis=-1: np.mean(c - b, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=2000,
        rng=np.random.default_rng(0),
    ).confidence_interval
    smallest_drop = -interval.high  # higher is better: the drop's interval is the negated difference's
    assert smallest_drop > 0
    just_below = compare_sampled(current, baseline, direction="higher", tolerance=math.nextafter(smallest_drop, 0))
    just_above = compare_sampled(current, baseline, direction="higher", tolerance=smallest_drop * (1 + 1e-9))
    assert just_below.verdict == "regressed"
    assert just_above.verdict == "ok"
    assert just_below.change == pytest.approx((current.mean() - baseline.mean()) / baseline.mean())
    assert just_below.tolerance == pytest.approx(smallest_drop / baseline.mean())


def test_sampled_direction_lower_flags_an_increase() -> None:
    rng = np.random.default_rng(24)
    baseline_kld = rng.gamma(2.0, 0.05, 200)
    worse = baseline_kld + rng.normal(0.05, 0.01, 200)
    assert compare_sampled(worse, baseline_kld, direction="lower", tolerance=0.01).verdict == "regressed"
    assert compare_sampled(baseline_kld, worse, direction="lower", tolerance=0.01).verdict == "improved"
    assert compare_sampled(worse, baseline_kld, direction="higher", tolerance=0.01).verdict == "improved"


def test_sampled_degenerate_differences_need_no_bca() -> None:
    items = [0.0, 1.0, 1.0, 0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = compare_sampled(items, items, direction="higher", tolerance=0.0)
        shifted = compare_sampled([x - 0.1 for x in items], items, direction="higher", tolerance=0.05)
        all_equal = bootstrap_ci([0.7] * 10)
    assert (same.verdict, same.change) == ("ok", 0.0)
    assert shifted.verdict == "regressed"
    assert all_equal == (0.7, 0.7)


def test_sampled_is_reproducible_for_a_seed() -> None:
    current, baseline = simulate_items(np.random.default_rng(25))
    first = compare_sampled(current, baseline, direction="higher", tolerance=0.01, seed=3)
    assert compare_sampled(current, baseline, direction="higher", tolerance=0.01, seed=3) == first


def test_bootstrap_ci_covers_the_true_mean_at_its_confidence() -> None:
    rng = np.random.default_rng(26)
    true_mean, trials = 0.3, 200
    covered = 0
    for trial in range(trials):
        exact_match = (rng.random(100) < true_mean).astype(float)  # EM: skewed 0/1 items
        low, high = bootstrap_ci(exact_match, n_resamples=1000, seed=trial)
        covered += low <= true_mean <= high
    print(f"\nbootstrap_ci 95% coverage of an EM mean over {trials} trials: {covered / trials:.1%}")
    assert 0.91 <= covered / trials <= 0.99


# ---------------------------------------------------------------------------------------------- median CI


def test_median_ci_covers_the_true_median_without_a_noise_model() -> None:
    rng = np.random.default_rng(27)
    trials, covered = 300, 0
    for _ in range(trials):
        samples = rng.lognormal(0.0, 0.5, DEFAULT_ROUNDS)  # skewed; true median exp(0) = 1
        low, high = median_ci(samples)
        assert low <= np.median(samples) <= high
        covered += low <= 1.0 <= high
    print(
        f"\nmedian_ci 95% coverage over {trials} trials of {DEFAULT_ROUNDS} lognormal samples: {covered / trials:.1%}"
    )
    assert 0.92 <= covered / trials <= 0.995


def test_median_ci_is_unbounded_below_the_smallest_sample_count_that_reaches_the_confidence() -> None:
    confidence = 0.95
    smallest = next(n for n in range(1, 64) if 2 * 0.5**n <= 1 - confidence)  # (min, max) covers 1 - 2 / 2**n
    samples = np.arange(1.0, smallest + 1.0)
    assert median_ci(samples[:-1], confidence=confidence) == (-math.inf, math.inf)
    assert median_ci(samples, confidence=confidence) == (samples.min(), samples.max())


# ---------------------------------------------------------------------------------------------- exact


@pytest.mark.parametrize("direction", ["higher", "lower"])
@pytest.mark.parametrize("current", [1.5, 0.5])
def test_exact_direction_decides_regressed_or_improved(direction: str, current: float) -> None:
    result = compare_exact(current, 1.0, direction=direction)  # type: ignore[arg-type]
    worse = (current > 1.0) == (direction == "lower")
    assert result.verdict == ("regressed" if worse else "improved")
    assert result.change == pytest.approx(current - 1.0)


def test_exact_tolerance_edges() -> None:
    baseline, rel_tol = 2.0, 0.25  # allowed move 0.5, exact in binary
    upper, lower = baseline * (1 + rel_tol), baseline * (1 - rel_tol)
    assert compare_exact(upper, baseline, direction="lower", rel_tol=rel_tol).verdict == "ok"
    assert (
        compare_exact(math.nextafter(upper, math.inf), baseline, direction="lower", rel_tol=rel_tol).verdict
        == "regressed"
    )
    assert compare_exact(lower, baseline, direction="lower", rel_tol=rel_tol).verdict == "ok"
    assert compare_exact(math.nextafter(lower, 0), baseline, direction="lower", rel_tol=rel_tol).verdict == "improved"
    assert compare_exact(upper, baseline, direction="lower", rel_tol=rel_tol).tolerance == rel_tol
    assert compare_exact(1.0 + 1e-12, 1.0, direction="lower").verdict == "ok"
    assert compare_exact(1.0 + 1e-6, 1.0, direction="lower").verdict == "regressed"


def test_exact_absolute_tolerance_around_a_zero_baseline() -> None:
    abs_tol = 1e-6
    inside = compare_exact(abs_tol, 0.0, direction="lower", abs_tol=abs_tol)
    assert inside.verdict == "ok"
    assert inside.change == math.inf
    assert compare_exact(math.nextafter(abs_tol, 1), 0.0, direction="lower", abs_tol=abs_tol).verdict == "regressed"
    assert compare_exact(-abs_tol * 2, 0.0, direction="lower", abs_tol=abs_tol).change == -math.inf
    assert compare_exact(0.0, 0.0, direction="lower").change == 0.0
    assert compare_exact(2.5, 2.0, direction="lower", abs_tol=0.5).tolerance == 0.25  # abs dominates: 0.5 / |2|


def test_exact_nan_handling() -> None:
    both = compare_exact(math.nan, math.nan, direction="higher")
    assert (both.verdict, both.change) == ("ok", 0.0)
    broke = compare_exact(math.nan, 1.0, direction="higher")
    assert broke.verdict == "regressed"
    assert math.isnan(broke.change)
    assert "nan" in broke.statistic
    fixed = compare_exact(1.0, math.nan, direction="lower")
    assert fixed.verdict == "improved"
    assert "nan" in fixed.statistic


def test_exact_infinities_compare_by_order() -> None:
    assert compare_exact(math.inf, math.inf, direction="higher").verdict == "ok"  # lossless SQNR stays lossless
    assert compare_exact(40.0, math.inf, direction="higher").verdict == "regressed"
    gained = compare_exact(math.inf, 40.0, direction="higher")
    assert (gained.verdict, gained.change) == ("improved", math.inf)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: compare_timing([], 1.0, [1.0]), "current_ratios"),
        (lambda: compare_timing([1.0, 0.0], 1.0, [1.0]), "current_ratios[1]"),
        (lambda: compare_timing([1.0, math.inf], 1.0, [1.0]), "current_ratios[1]"),
        (lambda: compare_timing([1.0], -1.0, [1.0]), "baseline_ratio"),
        (lambda: compare_timing([1.0], 1.0, []), "baseline_run_ratios"),
        (lambda: compare_timing([1.0], 1.0, [-1.0]), "baseline_run_ratios[0]"),
        (lambda: compare_timing([1.0], 1.0, [1.0], min_effect=-0.1), "min_effect"),
        (lambda: compare_timing([1.0], 1.0, [1.0], confidence=1.0), "confidence"),
        (lambda: compare_timing([1.0], 1.0, [1.0], confidence=math.nan), "confidence"),
        (lambda: compare_timing([1.0], 1.0, [1.0], direction="up"), "direction"),  # type: ignore[arg-type]
        (lambda: compare_sampled([1.0, 2.0], [1.0, 2.0, 3.0], direction="higher", tolerance=0.0), "len(current_items)"),
        (lambda: compare_sampled([1.0, math.nan], [1.0, 2.0], direction="higher", tolerance=0.0), "current_items[1]"),
        (lambda: compare_sampled([1.0, 2.0], [1.0, 2.0], direction="higher", tolerance=-0.1), "tolerance"),
        (
            lambda: compare_sampled([1.0, 2.0], [1.0, 2.0], direction="higher", tolerance=0.0, confidence=0),
            "confidence",
        ),
        (
            lambda: compare_sampled([1.0, 2.0], [1.0, 2.0], direction="higher", tolerance=0.0, n_resamples=5),
            "n_resamples",
        ),
        (lambda: bootstrap_ci([]), "items"),
        (lambda: bootstrap_ci("0.5"), "items"),  # type: ignore[arg-type]
        (lambda: median_ci([]), "samples"),
        (lambda: median_ci([1.0, math.inf]), "samples[1]"),
        (lambda: fold_runs([]), "run_ratios"),
        (lambda: fold_runs([1.0, 0.0]), "run_ratios[1]"),
        (lambda: compare_exact("1", 1.0, direction="lower"), "current"),  # type: ignore[arg-type]
        (lambda: compare_exact(1.0, 1.0, direction="lower", rel_tol=-1e-9), "rel_tol"),
        (lambda: compare_exact(1.0, 1.0, direction="lower", abs_tol=math.nan), "abs_tol"),
    ],
)
def test_bad_input_raises_invalid_argument_naming_it(call: Callable[[], object], argument: str) -> None:
    with pytest.raises(InvalidArgument, match="expected") as raised:
        call()
    assert str(raised.value).startswith(argument)
