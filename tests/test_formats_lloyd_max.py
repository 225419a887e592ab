"""Lloyd-Max codebook (harness.formats.lloyd_max): the MSE-optimal quantizer of N(0, 1).

Oracles: Max (1960) tabulates 0.009497 for 16 levels; the exact optimum is
0.0095010080 (checked with 40-digit mpmath), 0.042% above Max's rounding, so
the comparison with the table is at 0.1%. The optimality conditions
(centroids, midpoints) are checked with scipy's truncated normal and with
finite differences of an independently written distortion.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm, truncnorm

from harness.errors import InvalidArgument
from harness.formats.lloyd_max import gaussian_mse, lloyd_max_boundaries, lloyd_max_codebook

# Max (1960), table I: mean squared error of the optimum quantizer for a unit normal.
MAX_1960_MSE = {2: 0.3634, 4: 0.1175, 8: 0.03454, 16: 0.009497}


def test_sixteen_level_mse_matches_max_1960() -> None:
    mse = gaussian_mse(lloyd_max_codebook(16))
    assert mse == pytest.approx(0.009497, rel=1e-3)
    assert mse == pytest.approx(0.0095010080, abs=2e-9)  # exact optimum; float32 levels cost ~1e-15


@pytest.mark.parametrize("levels", sorted(MAX_1960_MSE))
def test_mse_matches_max_table(levels: int) -> None:
    assert gaussian_mse(lloyd_max_codebook(levels)) == pytest.approx(MAX_1960_MSE[levels], rel=1e-3)


def test_known_small_cases_exactly() -> None:
    two = lloyd_max_codebook(2).double()
    assert two.tolist() == pytest.approx([-math.sqrt(2 / math.pi), math.sqrt(2 / math.pi)], abs=1e-7)
    assert gaussian_mse(two) == pytest.approx(1 - 2 / math.pi, abs=1e-7)
    assert lloyd_max_codebook(3).tolist() == pytest.approx([-1.224006, 0.0, 1.224006], abs=1e-6)
    assert lloyd_max_codebook(16)[-1].item() == pytest.approx(2.733, abs=1e-3)  # Max's outermost level


@pytest.mark.parametrize("levels", [2, 3, 4, 7, 8, 15, 16, 32, 64, 256])
def test_shape_order_and_symmetry(levels: int) -> None:
    x = lloyd_max_codebook(levels)
    assert x.dtype == torch.float32 and x.shape == (levels,)
    assert bool((x[1:] > x[:-1]).all())
    assert torch.equal(x, -x.flip(0))
    if levels % 2:
        assert x[levels // 2].item() == 0.0


@pytest.mark.parametrize("levels", [2, 5, 8, 16, 64])
def test_levels_are_centroids_of_their_cells(levels: int) -> None:
    x = lloyd_max_codebook(levels).double()
    edges = [-math.inf, *((x[1:] + x[:-1]) / 2).tolist(), math.inf]
    centroids = [truncnorm.mean(a, b) for a, b in itertools.pairwise(edges)]
    assert x.tolist() == pytest.approx(centroids, abs=1e-6)  # float32 levels; float64 ones meet it to 1e-12


@pytest.mark.parametrize("levels", [4, 16])
def test_boundaries_are_midpoints(levels: int) -> None:
    x = lloyd_max_codebook(levels).double()
    b = lloyd_max_boundaries(levels)
    assert b.shape == (levels - 1,)
    assert (b - (x[1:] + x[:-1]) / 2).abs().max().item() < 1e-7

    # Independently: with the levels fixed, the distortion of an arbitrary partition is stationary at the midpoints.
    def distortion(bounds: list[float]) -> float:
        # Cell k contributes P(cell) * E[(Y - x_k)^2 | cell] = P * (Var + (mean - x_k)^2) of the truncated normal.
        edges = [-math.inf, *bounds, math.inf]
        total = 0.0
        for c, lo, hi in zip(x.tolist(), edges[:-1], edges[1:], strict=True):
            mean, var = truncnorm.stats(lo, hi, moments="mv")
            total += (norm.cdf(hi) - norm.cdf(lo)) * (float(var) + (float(mean) - c) ** 2)
        return total

    h = 1e-3
    base = b.tolist()
    at_midpoints = distortion(base)
    for i in range(levels - 1):
        for sign in (-1, 1):
            moved = list(base)
            moved[i] += sign * h
            assert distortion(moved) > at_midpoints


def test_sixteen_levels_are_a_local_minimum_of_mse() -> None:
    x = lloyd_max_codebook(16).double()
    best = gaussian_mse(x)
    h = 1e-4
    for i in range(16):
        up, down = x.clone(), x.clone()
        up[i] += h
        down[i] -= h
        assert gaussian_mse(up) > best and gaussian_mse(down) > best
        assert abs(gaussian_mse(up) - gaussian_mse(down)) / (2 * h) < 1e-6  # gradient vanishes


def test_more_levels_never_hurt() -> None:
    mses = [gaussian_mse(lloyd_max_codebook(n)) for n in range(2, 33)]
    assert all(b < a for a, b in itertools.pairwise(mses))


@pytest.mark.parametrize(
    "levels",
    [[0.0], [-1.0, 1.0], [-2.0, -0.5, 0.3, 1.7], [3.0, -3.0, 0.0], [0.5, 0.5, 2.0]],
)
def test_gaussian_mse_against_numerical_integration(levels: list[float]) -> None:
    def nearest_error(y: float) -> float:
        return min((y - c) ** 2 for c in levels) * norm.pdf(y)

    breaks = sorted({(a + b) / 2 for a in levels for b in levels if a != b})
    edges = [-math.inf, *breaks, math.inf]
    expected = sum(quad(nearest_error, lo, hi)[0] for lo, hi in itertools.pairwise(edges))
    assert gaussian_mse(levels) == pytest.approx(expected, abs=1e-10)


def test_gaussian_mse_is_order_independent_and_accepts_tensors() -> None:
    x = lloyd_max_codebook(16)
    assert gaussian_mse(x.flip(0)) == pytest.approx(gaussian_mse(x), abs=1e-15)
    assert gaussian_mse([0.0]) == pytest.approx(1.0, abs=1e-15)


def test_returns_a_fresh_tensor() -> None:
    x = lloyd_max_codebook(16)
    x.zero_()
    assert lloyd_max_codebook(16)[-1].item() == pytest.approx(2.7326, abs=1e-4)


@pytest.mark.parametrize("bad", [1, 0, -4, 2.0, 16.0, True, "16", None, 257])
def test_bad_level_counts_raise_invalid_argument(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="levels="):
        lloyd_max_codebook(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lloyd_max_boundaries(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[], [0.0, math.nan], [math.inf]])
def test_gaussian_mse_rejects_bad_levels(bad: list[float]) -> None:
    with pytest.raises(InvalidArgument):
        gaussian_mse(bad)
