"""Test inputs for the property suites: small recipes that build tensors, explicit edge cases, and
hypothesis strategies that draw recipes (not elements), so examples are fast, seeded and shrink well.

A recipe is a plain frozen dataclass: hypothesis prints it when a property
fails, and ``recipe.build(dtype, spec)`` rebuilds the exact tensor.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.api import Capabilities, FormatSpec

__all__ = ["InputRecipe", "edge_cases", "input_recipes", "magnitude_range"]

_DISTRIBUTIONS = ("normal", "uniform", "laplace", "sparse", "constant", "zeros")


def magnitude_range(dtype: torch.dtype) -> tuple[int, int]:
    """log10 block magnitudes a dtype can hold with room for 4-sigma tails in its normal range."""
    if dtype == torch.float16:
        return (-3, 4)
    return (-6, 6)


@dataclass(frozen=True)
class InputRecipe:
    """How to build one input tensor; ``name`` says which edge case it is (or 'generated')."""

    shape: tuple[int, ...]
    seed: int = 0
    distribution: str = "normal"
    log10_magnitudes: tuple[int, ...] = (0,)
    zero_blocks: tuple[int, ...] = ()
    midpoints: bool = False
    signed_zeros: bool = False
    name: str = field(default="generated", compare=False)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def build(self, dtype: torch.dtype, spec: FormatSpec) -> torch.Tensor:
        """The tensor this recipe describes, in ``dtype`` (blocks follow ``spec.block_size``)."""
        numel, block_size = self.numel, spec.block_size
        generator = torch.Generator().manual_seed(self.seed)
        values = _base_values(self.distribution, numel, generator)
        low, high = magnitude_range(dtype)
        block_ids = torch.arange(numel) // block_size
        blocks = int(block_ids[-1]) + 1 if numel else 0
        exponents = torch.tensor([min(max(m, low), high) for m in self.log10_magnitudes], dtype=torch.float64)
        per_block = torch.pow(10.0, exponents[torch.arange(blocks) % len(exponents)])
        values = values * per_block[block_ids]
        for block in self.zero_blocks:
            values[block_ids == block % max(blocks, 1)] = 0.0
        if self.midpoints and spec.codebook is not None:
            values = _with_midpoints(values, block_size, spec, dtype)
        finfo = torch.finfo(dtype)
        values = values.clamp(-finfo.max / 2, finfo.max / 2)
        if self.signed_zeros and numel >= 3:
            values[1::3] = 0.0
            values[2::6] = -0.0
        return values.to(dtype).reshape(self.shape)


def _base_values(distribution: str, numel: int, generator: torch.Generator) -> torch.Tensor:
    if distribution == "normal":
        return torch.randn(numel, generator=generator, dtype=torch.float64)
    if distribution == "uniform":
        return torch.rand(numel, generator=generator, dtype=torch.float64) * 2 - 1
    if distribution == "laplace":
        u = torch.rand(numel, generator=generator, dtype=torch.float64).clamp(1e-12, 1 - 1e-12) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    if distribution == "sparse":
        dense = torch.randn(numel, generator=generator, dtype=torch.float64)
        return dense * (torch.rand(numel, generator=generator, dtype=torch.float64) < 0.1)
    if distribution == "constant":
        return torch.full((numel,), 0.7, dtype=torch.float64)
    if distribution == "zeros":
        return torch.zeros(numel, dtype=torch.float64)
    raise ValueError(f"distribution={distribution!r}, expected one of {_DISTRIBUTIONS}")


def _midpoint_probes(spec: FormatSpec, dtype: torch.dtype) -> list[float]:
    """Every midpoint between adjacent levels inside [-1, 1] (rounded to ``dtype``) and the values 1 and 2
    ulp of ``dtype`` above and below it."""
    assert spec.codebook is not None  # callers check; an internal invariant, not user input
    levels = sorted(set(spec.codebook))
    probes: list[float] = []
    for a, b in itertools.pairwise(levels):
        if not -1 <= (a + b) / 2 <= 1:
            continue
        centre = torch.tensor((a + b) / 2, dtype=torch.float64).to(dtype)
        probes.append(float(centre))
        up, down = centre.clone(), centre.clone()
        for _ in range(2):
            up = torch.nextafter(up, torch.tensor(math.inf, dtype=dtype))
            down = torch.nextafter(down, torch.tensor(-math.inf, dtype=dtype))
            probes += [float(up), float(down)]
    return probes


def _with_midpoints(values: torch.Tensor, block_size: int, spec: FormatSpec, dtype: torch.dtype) -> torch.Tensor:
    """Fill blocks with the midpoint probes, each block anchored by +1 and -1 so that its absmax is exactly 1
    and x / scale is exact; blocks after the probes run out keep their values."""
    probes = _midpoint_probes(spec, dtype)
    anchors = [1.0, -1.0] if block_size >= 3 else []
    out = values.clone()
    position = 0
    for start in range(0, out.numel(), block_size):
        if position >= len(probes):
            break
        span = min(block_size, out.numel() - start)
        room = max(span - len(anchors), 0)
        filler = [*anchors, *probes[position : position + room]][:span]
        position += room
        out[start : start + len(filler)] = torch.tensor(filler, dtype=torch.float64)
        out[start + len(filler) : start + span] = 0.0
    return out


def _blocks_for_probes(block_size: int, probes: int = 80) -> int:
    """Blocks needed to hold ``probes`` midpoint probes beside the two anchors of each block."""
    return max(2, -(-probes // max(block_size - 2, 1)))


def edge_cases(block_size: int) -> list[InputRecipe]:
    """Explicit inputs every property runs on, sized relative to the block size."""
    b = block_size
    return [
        InputRecipe((3, b), distribution="zeros", name="all-zero"),
        InputRecipe((1,), seed=1, name="single-element"),
        InputRecipe((2 * b + b // 2 + 1,), seed=2, name="partial-last-block"),
        InputRecipe((3, 5, 7), seed=3, name="3d-odd-size"),
        InputRecipe((7, b + 1), seed=4, name="2d-rows-straddle-blocks"),
        InputRecipe((4 * b,), seed=5, zero_blocks=(0, 2), name="zero-blocks-between-data"),
        InputRecipe((8 * b,), seed=6, log10_magnitudes=(-6, 6, -3, 3, 0, -6, 6, 1), name="magnitude-jumps"),
        InputRecipe((2 * b,), seed=7, distribution="laplace", log10_magnitudes=(-6,), name="tiny-magnitudes"),
        InputRecipe((2 * b,), seed=8, distribution="laplace", log10_magnitudes=(6,), name="huge-magnitudes"),
        InputRecipe((_blocks_for_probes(b) * b,), seed=9, midpoints=True, name="codebook-midpoints"),
        InputRecipe((2 * b + 3,), seed=10, signed_zeros=True, name="signed-zeros"),
        InputRecipe((2 * b,), distribution="constant", name="constant-blocks"),
        InputRecipe((64, 256), seed=11, name="weight-64x256"),
    ]


def input_recipes(capabilities: Capabilities, block_size: int) -> Any:
    """A hypothesis strategy of recipes whose shapes respect ``capabilities`` (numel multiple, ndim)."""
    from hypothesis import strategies as st

    multiple = capabilities.numel_multiple_of
    max_ndim = capabilities.max_ndim or 3

    @st.composite
    def shapes(draw: st.DrawFn) -> tuple[int, ...]:
        if multiple > 1:
            rows = draw(st.integers(1, 2))
            return (rows, multiple) if max_ndim >= 2 and draw(st.booleans()) else (rows * multiple,)
        ndim = draw(st.integers(1, min(3, max_ndim)))
        limit = {1: 6 * block_size, 2: 3 * block_size, 3: 24}[ndim]
        dims = draw(st.lists(st.integers(1, limit), min_size=ndim, max_size=ndim))
        while math.prod(dims) > 12 * block_size and max(dims) > 1:
            dims[dims.index(max(dims))] //= 2
        return tuple(dims)

    return st.builds(
        InputRecipe,
        shape=shapes(),
        seed=st.integers(0, 2**31 - 1),
        distribution=st.sampled_from(_DISTRIBUTIONS[:4]),
        log10_magnitudes=st.lists(st.sampled_from((-6, -3, -1, 0, 1, 3, 6)), min_size=1, max_size=4).map(tuple),
        zero_blocks=st.lists(st.integers(0, 7), max_size=2).map(tuple),
        midpoints=st.booleans(),
        signed_zeros=st.booleans(),
    )
