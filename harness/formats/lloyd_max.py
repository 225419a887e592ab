"""Lloyd-Max: the scalar quantizer of N(0, 1) with the smallest mean squared error for a given number of levels.

A nearest-level quantizer is MSE-optimal only if two conditions hold together:
every decision boundary is the midpoint of the two levels it separates, and
every level is the mean of the normal distribution restricted to its cell.
Lloyd's iteration alternates the two. For a standard normal both steps have
closed forms: the mass of a cell [a, b] is Phi(b) - Phi(a) and its first
moment is phi(a) - phi(b), so the centroid is their ratio. The fixed point is
unique for log-concave densities such as the normal.

Plain Lloyd iteration converges linearly and slowly here, so after a few
Lloyd steps from the Panter-Dite start (levels spaced with density phi^(1/3),
i.e. sqrt(3) times normal quantiles) we solve ``level - centroid(cell) = 0``
for all levels at once with Newton's method (the Jacobian is tridiagonal and
analytic, since each cell depends only on its two neighbours) and check that the result is a Lloyd fixed
point to 1e-12 (to 1e-12 * (levels / 16)^2 above 16 levels, where centroids of
narrow cells lose digits; at most 256 levels are accepted). Everything is
float64; the codebook is returned as float32 in units of the standard
deviation (not normalised to [-1, 1]).

For 16 levels the result has outermost levels +-2.73259 and an MSE
(:func:`gaussian_mse`) of 0.00950101, confirmed to 1e-17 with 40-digit mpmath
quadrature; Max's 1960 table prints 0.009497, 0.04% lower (old rounding), which
is why the tests compare with it at 0.1%.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
from scipy.linalg import solve_banded

from harness.errors import InvalidArgument

__all__ = ["MAX_LEVELS", "gaussian_mse", "lloyd_max_boundaries", "lloyd_max_codebook"]

MAX_LEVELS = 256
"""Largest number of levels accepted (8 bits; beyond that float64 centroids of narrow cells get too noisy)."""

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TOL = 1e-12


def _check_levels_count(levels: object) -> int:
    if not isinstance(levels, int) or isinstance(levels, bool) or not 2 <= levels <= MAX_LEVELS:
        raise InvalidArgument(f"levels={levels!r}, expected an int from 2 to {MAX_LEVELS} such as 16")
    return levels


def _phi(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-x * x / 2.0) * _INV_SQRT_2PI  # exp(-inf) = 0 at infinite edges


def _mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Phi(hi) - Phi(lo), taken from the nearer tail so upper-tail cells keep their relative precision."""
    upper = lo > 0
    return torch.where(
        upper, torch.special.ndtr(-lo) - torch.special.ndtr(-hi), torch.special.ndtr(hi) - torch.special.ndtr(lo)
    )


def _edges(x: torch.Tensor) -> torch.Tensor:
    """Cell edges of sorted levels: -inf, the midpoints, +inf."""
    inf = torch.full((1,), math.inf, dtype=torch.float64)
    return torch.cat([-inf, (x[1:] + x[:-1]) / 2.0, inf])


def _centroids(x: torch.Tensor) -> torch.Tensor:
    """Conditional means of N(0, 1) over the nearest-level cells of sorted levels x."""
    c = _edges(x)
    mass = _mass(c[:-1], c[1:])
    # Far-tail cells can have a mass that underflows; their centroid is then the level itself.
    first_moment = _phi(c[:-1]) - _phi(c[1:])
    return torch.where(mass > 0, first_moment / mass.clamp_min(1e-300), x)


def _newton_system(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd residuals r_i = x_i - centroid_i of sorted levels x, and their Jacobian as 3 bands (solve_banded)."""
    c = _edges(x)
    pc = _phi(c)
    mass = _mass(c[:-1], c[1:])
    mu = (pc[:-1] - pc[1:]) / mass
    # d mu_i / d c_i = phi(c_i) (c_i - mu_i) / P_i and d mu_i / d c_{i-1} = phi(c_{i-1}) (mu_i - c_{i-1}) / P_i
    # (zero at infinite edges); each edge moves by half the step of either level beside it.
    d_hi = torch.where(torch.isinf(c[1:]), torch.zeros_like(x), pc[1:] * (c[1:] - mu)) / mass / 2.0
    d_lo = torch.where(torch.isinf(c[:-1]), torch.zeros_like(x), pc[:-1] * (mu - c[:-1])) / mass / 2.0
    bands = torch.zeros(3, x.numel(), dtype=torch.float64)
    bands[1] = 1.0 - d_hi - d_lo
    bands[0, 1:] = -d_hi[:-1]  # d r_i / d x_{i+1}
    bands[2, :-1] = -d_lo[1:]  # d r_i / d x_{i-1}
    return x - mu, bands


def _tolerance(levels: int) -> float:
    """Centroids of narrow cells lose digits and Newton amplifies that, so the check loosens as (levels/16)^2."""
    return _TOL * max(1.0, levels / 16.0) ** 2


@lru_cache(maxsize=32)
def _solve(levels: int) -> torch.Tensor:
    probs = (torch.arange(levels, dtype=torch.float64) + 0.5) / levels
    x = math.sqrt(3.0) * torch.special.ndtri(probs)
    for _ in range(10):
        x = _centroids(x)
    best, best_x, stalled = math.inf, x, 0
    for _ in range(100):
        r, bands = _newton_system(x)
        size = float(r.abs().max())
        if size < best:
            best, best_x, stalled = size, x, 0
        else:
            stalled += 1
        if best == 0.0 or stalled >= 3:  # at the rounding floor: keep the best iterate seen
            break
        step = torch.from_numpy(solve_banded((1, 1), bands.numpy(), (-r).numpy()))
        trial = x + step
        x = trial if bool((trial[1:] > trial[:-1]).all()) else _centroids(x)  # Lloyd step if Newton overshoots
    x = (best_x - best_x.flip(0)) / 2.0  # the optimum is symmetric; remove rounding asymmetry
    residual = float((x - _centroids(x)).abs().max())
    if residual > _tolerance(levels):
        raise RuntimeError(f"Lloyd-Max iteration did not converge for levels={levels}: {residual:.3g}")
    return x


def lloyd_max_codebook(levels: int = 16) -> torch.Tensor:
    """MSE-optimal levels for N(0, 1), ascending, float32, unit-variance scale (a fresh tensor each call)."""
    return _solve(_check_levels_count(levels)).float()


def lloyd_max_boundaries(levels: int = 16) -> torch.Tensor:
    """Decision boundaries (midpoints, ``levels - 1`` of them) of :func:`lloyd_max_codebook`, float64."""
    x = _solve(_check_levels_count(levels))
    return (x[1:] + x[:-1]) / 2.0


def gaussian_mse(levels: torch.Tensor | Sequence[float]) -> float:
    """Exact E[(Y - q(Y))^2] for Y ~ N(0, 1) and q rounding to the nearest of ``levels`` (any order)."""
    x = torch.as_tensor(levels, dtype=torch.float64).detach().cpu().reshape(-1)
    if x.numel() < 1 or not bool(torch.isfinite(x).all()):
        raise InvalidArgument(f"levels of shape {tuple(x.shape)}, expected at least one finite value")
    x = x.sort().values
    c = _edges(x)
    pc = _phi(c)
    mass = _mass(c[:-1], c[1:])
    # integral of y^2 phi over [a, b] = mass + a phi(a) - b phi(b); the products vanish at infinite edges.
    c_phi = torch.where(torch.isinf(c), torch.zeros_like(c), c * pc)
    second = mass + c_phi[:-1] - c_phi[1:]
    first = pc[:-1] - pc[1:]
    return float((second - 2.0 * x * first + x * x * mass).sum())
