"""AbnormalFloat4 (AF4; Yoshida 2023, arXiv 2306.06965): levels fitted to absmax-normalised Gaussian blocks.

The model
---------
A block holds ``B`` independent N(0, 1) values and is divided by its largest
magnitude ``M``. One element of the block then sits exactly at +1 or -1; the
other ``B - 1`` (call any of them ``Y``) are spread over (-1, 1) with a law
that depends on ``B``: the larger the block, the larger ``M`` tends to be and
the more the normalised values crowd towards zero. ``M`` has density
``2 B phi(m) (2 Phi(m) - 1)^(B - 1)``, and once ``M = m`` is known every other
element is a standard normal conditioned on ``|X| < m``. Averaging the
conditional CDF ``(Phi(y m) - Phi(-m)) / (2 Phi(m) - 1)`` over ``M`` gives

    F_B(y) = integral over m > 0 of 2 B phi(m) (2 Phi(m) - 1)^(B - 2) (Phi(y m) - Phi(-m)) dm,   |y| <= 1,

which :func:`normalized_value_cdf` evaluates (float64, composite Gauss-Legendre
over ``m`` with 96 panels of 16 nodes; the density and the partial first moment
used for the L1 error come from the same nodes in closed form).

The code
--------
AF4 keeps -1, 0 and +1 as levels (codes 0, 7 and 15) and chooses the other 13
(six negative, seven positive, the same shape as NF4) to make the mean absolute
reconstruction error of ``Y`` small. Absolute error is minimised, for a fixed
partition, by putting each level at the median of the probability mass of its
cell, so an optimal code is a fixed point of a "median Lloyd" map: cells
bounded by midpoints between neighbours, each free level moved to its cell's
median. We solve that fixed point with Newton's method on the conditions
``2 F(level) = F(lower edge) + F(upper edge)`` (the Jacobian is tridiagonal and
analytic), starting from equal-mass quantiles, and check that the result is a
median fixed point to 1e-12.

Which cells? Two constructions, and what the published tables are
-----------------------------------------------------------------
* ``cells="nearest"``: true nearest-level cells. The zero level owns
  ``[l6 / 2, l8 / 2]`` and the levels next to it stop at those midpoints. This
  is the exact L1 optimum of the stated problem: :func:`l1_optimal_codebook`.
* ``cells="split-at-zero"``: each half is fitted on its own with 0 acting only
  as the edge between the halves, so the cells of codes 6 and 8 reach all the
  way to 0, as if the zero level were not there; zero is inserted afterwards.
  This is what the author's generator does, and it is what the published
  numbers are: :func:`af4_codebook` builds it.

Measured against the published tables (bitsandbytes' block-64 table; a
third-party copy for 32, 128, 512, 4096), max |difference| over the 16 levels:
:func:`af4_codebook` in float64 is within 4.4e-9 (block 64) and 5.0e-9 (all
sizes), i.e. it reproduces the 8-decimal tables; the float32 result is within
3.4e-8. :func:`l1_optimal_codebook` differs from them by 0.0454, 0.0426,
0.0401, 0.0359, 0.0312 (blocks 32, 64, 128, 512, 4096), at the level next to
zero. Hence the shipped block-64 table does NOT satisfy the paper's own
L1-optimality (median) condition: with nearest-level cells its residuals
(level minus cell median) are +0.01247 at code 6 (-0.04935) and -0.01077 at
code 8 (+0.04273), and below 3e-9 for the other eleven free codes (whose cells
are the same under both constructions); under split-at-zero cells all 13 are
below 3.1e-9. Its expected L1 error per non-max value is 0.0297643, against
0.0287950 for the true optimum: 3.37% higher (3.36% to 3.39% for the other
block sizes). Print these numbers with::

    .venv/bin/python -m tests.test_formats_af4
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from numpy.polynomial.legendre import leggauss
from scipy.special import erf, erfc, ndtr

from harness._validation import check_block_size
from harness.errors import InvalidArgument

__all__ = [
    "AF4_FREE_CODES",
    "MAX_BLOCK_SIZE",
    "af4_codebook",
    "cell_medians",
    "expected_l1_error",
    "l1_optimal_codebook",
    "l1_optimality_residuals",
    "normalized_value_cdf",
    "normalized_value_pdf",
]

Cells = Literal["nearest", "split-at-zero"]

AF4_FREE_CODES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14)
"""Codes whose levels are optimised; codes 0, 7 and 15 hold -1, 0 and +1."""

MAX_BLOCK_SIZE = 2**30
"""Largest block size accepted (the quadrature is checked up to here)."""

_PANELS = 96
_ORDER = 16
_TOL = 1e-12
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_FREE = np.array(AF4_FREE_CODES)

_LevelsLike = torch.Tensor | Sequence[float]

# The numerics run in numpy (single-threaded): torch's intra-op thread pool makes these many small
# array operations slow by orders of magnitude when other processes compete for the CPU.


def _check_block_size(block_size: object) -> int:
    return check_block_size(block_size, minimum=2, maximum=MAX_BLOCK_SIZE)


@lru_cache(maxsize=64)
def _quadrature(block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes m and weights w (float64) with sum w g(m) ~ integral of 2 B phi(m) (2 Phi(m) - 1)^(B - 2) g(m) dm."""
    # Beyond m_max the weight is below 1e-17 of its peak contribution (2 B phi(m) < e^-40).
    m_max = math.sqrt(2.0 * (math.log(block_size) + 40.0))
    x, w = leggauss(_ORDER)
    edges = np.linspace(0.0, m_max, _PANELS + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    m = (lo + (hi - lo) * (x + 1.0) / 2.0).reshape(-1)
    dm = ((hi - lo) / 2.0 * w).reshape(-1)
    # log(2 Phi(m) - 1) without cancellation at either end.
    z = m * _SQRT_HALF
    log_base = np.where(m < 1.0, np.log(erf(z)), np.log1p(-erfc(z)))
    log_w = math.log(2.0 * block_size * _INV_SQRT_2PI) - m * m / 2.0 + (block_size - 2) * log_base
    weights = dm * np.exp(log_w)
    m.setflags(write=False)
    weights.setflags(write=False)
    return m, weights


def _as_array(values: _LevelsLike | float) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(torch.float64).numpy().copy()
    return np.array(values, dtype=np.float64)


def _cdf(y: np.ndarray, block_size: int) -> np.ndarray:
    m, w = _quadrature(block_size)
    y = np.clip(y, -1.0, 1.0)
    return ((ndtr(y[..., None] * m) - ndtr(-m)) * w).sum(-1)


def _pdf(y: np.ndarray, block_size: int) -> np.ndarray:
    m, w = _quadrature(block_size)
    ym = y[..., None] * m
    density = (m * np.exp(-ym * ym / 2.0) * _INV_SQRT_2PI * w).sum(-1)
    return np.where(np.abs(y) <= 1.0, density, 0.0)


def _partial_mean(y: np.ndarray, block_size: int) -> np.ndarray:
    """E[Y; Y <= y]: integral of t dF(t) over [-1, y]."""
    m, w = _quadrature(block_size)
    y = np.clip(y, -1.0, 1.0)[..., None]
    # Given M = m: (phi(m) - phi(y m)) / m, written with expm1 so small m keeps its precision.
    inner = np.exp(-((y * m) ** 2) / 2.0) * _INV_SQRT_2PI * np.expm1(-(1.0 - y * y) * m * m / 2.0) / m
    return (inner * w).sum(-1)


def normalized_value_cdf(y: torch.Tensor | float, block_size: int = 64) -> torch.Tensor:
    """CDF F_B(y) of one non-max element of an absmax-normalised N(0, 1) block of ``block_size`` (float64).

    0 at y <= -1, 1 at y >= 1, 1/2 at 0; the max element itself (the atoms at +-1) is left out.
    """
    return torch.from_numpy(np.asarray(_cdf(_as_array(y), _check_block_size(block_size))))


def normalized_value_pdf(y: torch.Tensor | float, block_size: int = 64) -> torch.Tensor:
    """Density of :func:`normalized_value_cdf` (float64; 0 outside [-1, 1])."""
    return torch.from_numpy(np.asarray(_pdf(_as_array(y), _check_block_size(block_size))))


def _check_levels(levels: _LevelsLike) -> np.ndarray:
    lv = _as_array(levels)
    if lv.shape != (16,) or not np.isfinite(lv).all():
        raise InvalidArgument(f"levels of shape {lv.shape}, expected 16 finite values")
    if not (lv[1:] > lv[:-1]).all():
        raise InvalidArgument("levels are not strictly ascending, expected codes in ascending order")
    if lv[0] != -1.0 or lv[7] != 0.0 or lv[15] != 1.0:
        raise InvalidArgument(f"levels[0], levels[7], levels[15] = {lv[0]}, {lv[7]}, {lv[15]}, expected -1, 0, 1")
    return lv


def _cell_edges(levels: np.ndarray, cells: Cells) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper cell edges of the 13 free levels of a checked 16-level code."""
    mid = (levels[1:] + levels[:-1]) / 2.0  # mid[i] lies between codes i and i + 1
    lower, upper = mid[_FREE - 1], mid[_FREE]
    if cells == "split-at-zero":
        upper[5] = 0.0  # code 6
        lower[6] = 0.0  # code 8
    elif cells != "nearest":
        raise InvalidArgument(f"cells={cells!r}, expected 'nearest' or 'split-at-zero'")
    return lower, upper


def _median(lower: np.ndarray, upper: np.ndarray, block_size: int) -> np.ndarray:
    """Median of F_B restricted to each interval [lower, upper] (safeguarded Newton, vectorised)."""
    target = (_cdf(lower, block_size) + _cdf(upper, block_size)) / 2.0
    lo, hi = lower.copy(), upper.copy()
    y = (lo + hi) / 2.0
    for _ in range(100):
        g = _cdf(y, block_size) - target
        lo = np.where(g < 0, y, lo)
        hi = np.where(g > 0, y, hi)
        newton = y - g / _pdf(y, block_size)
        y_next = np.where((newton > lo) & (newton < hi), newton, (lo + hi) / 2.0)
        y_next = np.where(g == 0, y, y_next)
        if (np.abs(y_next - y) <= 1e-16).all():
            return y_next
        y = y_next
    return y


def cell_medians(levels: _LevelsLike, block_size: int = 64, cells: Cells = "nearest") -> torch.Tensor:
    """Median of F_B over the cell of each free level (codes 1..6, 8..14), float64, shape (13,)."""
    lower, upper = _cell_edges(_check_levels(levels), cells)
    return torch.from_numpy(_median(lower, upper, _check_block_size(block_size)))


def l1_optimality_residuals(levels: _LevelsLike, block_size: int = 64, cells: Cells = "nearest") -> torch.Tensor:
    """Level minus the median of its cell for codes 1..6, 8..14 (float64, shape (13,)).

    All zero exactly when the code is a stationary point of the expected L1 error with -1, 0, 1 held fixed
    (``cells="nearest"``); ``cells="split-at-zero"`` checks the published construction's condition instead.
    """
    lv = _check_levels(levels)
    lower, upper = _cell_edges(lv, cells)
    return torch.from_numpy(lv[_FREE] - _median(lower, upper, _check_block_size(block_size)))


def expected_l1_error(levels: _LevelsLike, block_size: int = 64, include_max: bool = False) -> float:
    """E|Y - q(Y)| for nearest-level rounding q of a non-max normalised value Y (levels in any order).

    With ``include_max`` the average is over all B elements of the block: the max element sits at +-1
    (probability 1/2 each) and contributes its own rounding error with weight 1/B.
    """
    bs = _check_block_size(block_size)
    lv = _as_array(levels).reshape(-1)
    if lv.size < 1 or not np.isfinite(lv).all():
        raise InvalidArgument(f"levels of shape {lv.shape}, expected at least one finite value")
    lv = np.sort(lv)
    mid = (lv[1:] + lv[:-1]) / 2.0
    lower = np.clip(np.concatenate([[-1.0], mid]), -1.0, 1.0)
    upper = np.clip(np.concatenate([mid, [1.0]]), -1.0, 1.0)
    at = np.clip(lv, lower, upper)
    f_lo, f_at, f_hi = (_cdf(t, bs) for t in (lower, at, upper))
    h_lo, h_at, h_hi = (_partial_mean(t, bs) for t in (lower, at, upper))
    # A level outside [-1, 1] serves its (clamped, one-sided) cell from a distance: both pieces stay right.
    below = lv * (f_at - f_lo) - (h_at - h_lo)
    above = (h_hi - h_at) - lv * (f_hi - f_at)
    total = float((below + above).sum())
    if include_max:
        end_error = float(np.abs(np.array([-1.0, 1.0])[:, None] - lv[None, :]).min(axis=1).mean())
        total = (total * (bs - 1) + end_error) / bs
    return total


def _solve_half(
    block_size: int, n: int, lower: float, upper: float, lower_is_level: bool, upper_is_level: bool
) -> np.ndarray:
    """Free levels strictly inside (lower, upper) that are medians of their cells (float64, ascending).

    A bound that is a level contributes the midpoint to the adjacent cell; a bound that is only an edge
    closes the adjacent cell itself.
    """
    # d(edge)/d(level) for the outer edges: 1/2 when the bound is a level (midpoint), 0 when it is a fixed edge.
    slope_lo = np.full(n, 0.5)
    slope_lo[0] = 0.5 if lower_is_level else 0.0
    slope_hi = np.full(n, 0.5)
    slope_hi[-1] = 0.5 if upper_is_level else 0.0

    def edges(x: np.ndarray) -> np.ndarray:
        first = (lower + x[0]) / 2.0 if lower_is_level else lower
        last = (x[-1] + upper) / 2.0 if upper_is_level else upper
        return np.concatenate([[first], (x[1:] + x[:-1]) / 2.0, [last]])

    def conditions(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = edges(x)
        points = np.concatenate([x, c])
        f_all, d_all = _cdf(points, block_size), _pdf(points, block_size)
        fx, fc, dx, dc = f_all[:n], f_all[n:], d_all[:n], d_all[n:]
        g = 2.0 * fx - fc[:-1] - fc[1:]
        jac = np.diag(2.0 * dx - dc[:-1] * slope_lo - dc[1:] * slope_hi)
        if n > 1:
            jac += np.diag(-0.5 * dc[1:-1], 1) + np.diag(-0.5 * dc[1:-1], -1)
        return g, jac

    def feasible(x: np.ndarray) -> bool:
        return bool(x[0] > lower and x[-1] < upper and (x[1:] > x[:-1]).all())

    # Start: quantiles that split the half's mass into n equal parts (NF4's recipe, on F_B instead of Phi).
    f_lo, f_hi = _cdf(np.array([lower, upper]), block_size)
    x = _invert_cdf(f_lo + (f_hi - f_lo) * (np.arange(n) + 0.5) / n, lower, upper, block_size)
    for _ in range(200):
        g, jac = conditions(x)
        size = np.abs(g).max()
        step = np.linalg.solve(jac, -g)
        t, cand = 1.0, None
        while t > 1e-6:
            trial = x + t * step
            if feasible(trial) and np.abs(conditions(trial)[0]).max() < size:
                cand = trial
                break
            t /= 2.0
        if cand is None:  # no Newton progress (at the rounding floor, or far off): one median-Lloyd step
            c = edges(x)
            cand = _median(c[:-1], c[1:], block_size)
        done = np.abs(cand - x).max() < 1e-15
        x = cand
        if done:
            break
    c = edges(x)
    residual = float(np.abs(x - _median(c[:-1], c[1:], block_size)).max())
    if residual > _TOL:
        raise RuntimeError(f"AF4 median iteration did not converge for block_size={block_size}: {residual:.3g}")
    return x


def _invert_cdf(probs: np.ndarray, lower: float, upper: float, block_size: int) -> np.ndarray:
    """y in (lower, upper) with F_B(y) = p, vectorised bisection (only a starting point, so 60 halvings do)."""
    lo = np.full_like(probs, lower)
    hi = np.full_like(probs, upper)
    for _ in range(60):
        mid = (lo + hi) / 2.0
        below = _cdf(mid, block_size) < probs
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return (lo + hi) / 2.0


@lru_cache(maxsize=64)
def _codebook(block_size: int, cells: Cells) -> torch.Tensor:
    zero_is_level = cells == "nearest"
    negative = _solve_half(block_size, 6, -1.0, 0.0, True, zero_is_level)
    positive = _solve_half(block_size, 7, 0.0, 1.0, zero_is_level, True)
    return torch.from_numpy(np.concatenate([[-1.0], negative, [0.0], positive, [1.0]]))


def af4_codebook(block_size: int = 64) -> torch.Tensor:
    """AF4 levels for ``block_size`` in code order, float32, as published (split-at-zero construction).

    Ascending; codes 0, 7, 15 are exactly -1, 0, 1. Block 64 matches bitsandbytes' table to 1.8e-8 (float64: 4.4e-9).
    """
    return _codebook(_check_block_size(block_size), "split-at-zero").float()


def l1_optimal_codebook(block_size: int = 64) -> torch.Tensor:
    """The exact minimiser of E|Y - q(Y)| with -1, 0, 1 fixed (nearest-level cells), float32, code order."""
    return _codebook(_check_block_size(block_size), "nearest").float()
