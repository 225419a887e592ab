"""A codebook's levels as a grid of decision cells, and distances measured in ulps of a dtype: the ruler that
agreement between two implementations (:mod:`harness.checks.agreement`) is measured with."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.checks.values import max_half_gap

__all__ = ["LevelGrid", "coarser", "distance_to_cell_ulps", "level_grid", "normalized", "ulp"]


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The exact spacing of ``dtype`` at each |value| (float64): ``2**floor(log2|v|) * eps`` in the normal
    range, the smallest subnormal below it. Used as the unit of "how far from a midpoint"."""
    info = torch.finfo(dtype)
    magnitude = values.detach().double().abs()
    _, exponent = torch.frexp(magnitude)  # magnitude = mantissa * 2**exponent, mantissa in [0.5, 1)
    spacing = torch.ldexp(torch.full_like(magnitude, info.eps), exponent - 1)
    return torch.where(magnitude < info.smallest_normal, info.smallest_normal * info.eps, spacing)


@dataclass(frozen=True)
class LevelGrid:
    """A codebook seen as decision cells.

    ``levels``: its distinct values, sorted (+0 and -0 are one level, since they decode alike).
    ``level_of_code``: the index into ``levels`` of each of the 16 codes.
    ``cell_low``/``cell_high``: each level's cell, bounded by the midpoints to its neighbours (+-inf at the
    ends): nearest rounding picks a level exactly when y lies in its cell.
    ``edge_magnitude_low``/``_high``: the larger |level| beside each cell edge; the decision there compares
    numbers of that size, so one ulp at that magnitude is the unit of distance from the edge.
    """

    levels: torch.Tensor
    level_of_code: torch.Tensor
    cell_low: torch.Tensor
    cell_high: torch.Tensor
    edge_magnitude_low: torch.Tensor
    edge_magnitude_high: torch.Tensor

    @property
    def largest_magnitude(self) -> float:
        return float(self.levels.abs().max())

    def half_gap(self) -> float:
        """The farthest any y in [-1, 1] lies from its nearest level: the rounding error bound per unit scale."""
        return max_half_gap(self.levels, -1.0, 1.0)


def level_grid(codebook: Sequence[float]) -> LevelGrid:
    """Decision cells of a codebook (16 values indexed by code)."""
    values = [float(v) + 0.0 for v in codebook]  # + 0.0 turns -0.0 into +0.0: one zero level
    distinct = sorted(set(values))
    # float64 midpoints: exact for float32 levels
    midpoints = [(low + high) / 2 for low, high in itertools.pairwise(distinct)]
    magnitudes = [max(abs(low), abs(high)) for low, high in itertools.pairwise(distinct)]
    return LevelGrid(
        levels=_float64(distinct),
        level_of_code=torch.tensor([distinct.index(v) for v in values], dtype=torch.int64),
        cell_low=_float64([-math.inf, *midpoints]),
        cell_high=_float64([*midpoints, math.inf]),
        edge_magnitude_low=_float64([1.0, *magnitudes]),  # the outer edges are never crossed: any unit will do
        edge_magnitude_high=_float64([*magnitudes, 1.0]),
    )


def _float64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def distance_to_cell_ulps(
    y: torch.Tensor, chosen_level: torch.Tensor, grid: LevelGrid, compute_dtype: torch.dtype
) -> torch.Tensor:
    """How far each y lies outside the decision cell of its chosen level, in ulps of ``compute_dtype`` at the
    crossed edge (0 inside the cell, +inf for an infinite y outside it). A correct nearest-rounding choice is
    at most :data:`MIDPOINT_ULPS` away."""
    low, high = grid.cell_low[chosen_level], grid.cell_high[chosen_level]
    below = (low - y) / ulp(grid.edge_magnitude_low[chosen_level], compute_dtype)
    above = (y - high) / ulp(grid.edge_magnitude_high[chosen_level], compute_dtype)
    zero = torch.zeros_like(y)
    return torch.where(y < low, below, torch.where(y > high, above, zero))


def coarser(first: torch.dtype, second: torch.dtype) -> torch.dtype:
    return first if torch.finfo(first).eps >= torch.finfo(second).eps else second


def normalized(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale in float64 (exact to float64 rounding); 0 / 0 -> 0 (an all-zero block), x / 0 -> +-inf."""
    return torch.nan_to_num(x / scale, nan=0.0, posinf=math.inf, neginf=-math.inf)
