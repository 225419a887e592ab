"""Blockwise 4-bit quantization as pure functions: choose scales, encode, decode, double-quantize.

Split the way torchao's quant primitives are: each step takes tensors and
returns tensors, so the reference quantizer is a thin adapter and the suites
can recompute any intermediate on their own.

Tie rule of :func:`encode_nearest`: each value goes to the nearest codebook
level, measured exactly (in real arithmetic) from ``y = x / scale`` rounded
once to float32. A value exactly halfway between two levels goes to the level
of smaller magnitude, so the map commutes with negation on symmetric
codebooks. Where a codebook holds both -0 and +0 (bitsandbytes' FP4), a
negative value that rounds to zero keeps its sign (-0) and both zeros of the
input map to +0, as bitsandbytes does.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from harness.api import DoubleQuant

__all__ = [
    "DoubleQuantizedScales",
    "NearestTable",
    "absmax_per_block",
    "decode_blocks",
    "dequantize_scales",
    "encode_nearest",
    "nearest_table",
    "quantize_absmax_blocks",
    "quantize_scales",
]


def absmax_per_block(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """max |x| of each block of a flat float32 tensor (one pass via aminmax, no |x| copy)."""
    numel = flat.numel()
    full = numel - numel % block_size
    parts = []
    if full:
        low, high = torch.aminmax(flat[:full].view(-1, block_size), dim=1)
        parts.append(torch.maximum(high, low.neg()))
    if full < numel:
        parts.append(flat[full:].abs().amax().reshape(1))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _float32_below(value: float, *, strictly: bool) -> float:
    """Largest float32 <= value (or < value when ``strictly``)."""
    candidate = torch.tensor(value, dtype=torch.float32)
    exact = torch.tensor(value, dtype=torch.float64)
    if candidate.double() > exact or (strictly and candidate.double() == exact):
        candidate = torch.nextafter(candidate, torch.tensor(-math.inf, dtype=torch.float32))
    return float(candidate)


@dataclass(frozen=True)
class NearestTable:
    """Sorted levels, the code of each sorted position, and float32 decision boundaries.

    ``torch.bucketize(y, boundaries)`` counts the boundaries strictly below
    ``y``: that count is the sorted position of the nearest level under the
    module's tie rule, for every float32 ``y``.
    """

    sorted_levels: torch.Tensor
    codes_in_order: torch.Tensor
    boundaries: torch.Tensor
    identity_order: bool
    cell_code: torch.Tensor | None = None
    cell_step: torch.Tensor | None = None
    cell_boundary: torch.Tensor | None = None


_CELLS = 2048
"""Cells of width 2/_CELLS over [-1, 1] for the lookup encoder: narrower than any gap between decision
boundaries of the reference formats, so each cell holds at most one boundary."""
_CELL_SLACK = 1e-6
"""How far float32 rounding of (y + 1) * _CELLS / 2 can move y across a cell edge, with a wide margin."""


def _cell_lookup(boundaries: list[float], order: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Per cell of [-1, 1]: the code below its boundary, the step (mod 256) to the code above it, and the
    one boundary inside it (+inf if none).

    Returns None when some cell (widened by the slack) holds two boundaries: then only bucketize is exact.
    """
    codes, steps, inside = [], [], []
    for cell in range(_CELLS + 1):
        low = -1.0 + 2.0 * cell / _CELLS - _CELL_SLACK
        high = -1.0 + 2.0 * (cell + 1) / _CELLS + _CELL_SLACK
        here = [b for b in boundaries if low <= b <= high]
        if len(here) > 1:
            return None
        position = sum(1 for b in boundaries if b < low)
        codes.append(order[position])
        steps.append((order[position + 1] - order[position]) % 256 if here else 0)
        inside.append(here[0] if here else math.inf)
    return (
        torch.tensor(codes, dtype=torch.uint8),
        torch.tensor(steps, dtype=torch.uint8),
        torch.tensor(inside, dtype=torch.float32),
    )


def nearest_table(codebook: torch.Tensor) -> NearestTable:
    """Decision boundaries for nearest rounding onto ``codebook`` (16 float32 levels indexed by code)."""
    values = [float(v) for v in codebook.tolist()]
    # -0 sorts before +0 so that the boundary between them can carry the sign rule.
    order = sorted(range(len(values)), key=lambda code: (values[code], math.copysign(1.0, values[code])))
    boundaries = []
    for lower, upper in itertools.pairwise(order):
        midpoint = (values[lower] + values[upper]) / 2  # exact in float64 for float32 levels
        # y > boundary selects ``upper``. Positive midpoints: ties go down (toward zero);
        # midpoints <= 0: ties go up (toward zero, and +0 over -0).
        boundaries.append(_float32_below(midpoint, strictly=midpoint <= 0))
    lookup = _cell_lookup(boundaries, order)
    return NearestTable(
        sorted_levels=torch.tensor([values[c] for c in order], dtype=torch.float32),
        codes_in_order=torch.tensor(order, dtype=torch.uint8),
        boundaries=torch.tensor(boundaries, dtype=torch.float32),
        identity_order=order == list(range(len(values))),
        cell_code=None if lookup is None else lookup[0],
        cell_step=None if lookup is None else lookup[1],
        cell_boundary=None if lookup is None else lookup[2],
    )


def encode_nearest(normalized: torch.Tensor, table: NearestTable) -> torch.Tensor:
    """Codes (uint8) of the nearest levels to float32 ``normalized`` values."""
    positions = torch.bucketize(normalized, table.boundaries, out_int32=True)
    return _positions_to_codes(positions, table).to(torch.uint8)


_CHUNK_ELEMENTS = 1 << 20
"""Elements per step of the encoder: small enough that x / scale stays in cache for the bucketing pass."""


def quantize_absmax_blocks(
    flat: torch.Tensor, block_size: int, table: NearestTable
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Absmax blockwise quantization of a flat float32 tensor: (codes, high-nibble-first packed bytes, scales).

    Equal, element for element, to ``absmax_per_block`` then ``encode_nearest(x / scale)`` then
    ``pack_nibbles``; done in cache-sized chunks of whole blocks so that each chunk of the input is
    read from memory once. Blocks whose absmax is 0 are divided by 1: they encode 0, never NaN.
    """
    numel = flat.numel()
    full = numel - numel % block_size
    scales = torch.empty(-(-numel // block_size), dtype=torch.float32)
    codes = torch.empty(numel + numel % 2, dtype=torch.uint8)
    chunk = max(_CHUNK_ELEMENTS // block_size, 1) * block_size
    normalized = torch.empty(min(chunk, numel), dtype=torch.float32)
    positions = torch.empty(min(chunk, numel), dtype=torch.int32)
    scratch = torch.empty(min(chunk, numel), dtype=torch.float32)
    small = torch.empty(min(chunk, numel), dtype=torch.uint8)
    for start in range(0, full, chunk):
        stop = min(start + chunk, full)
        rows, first = (stop - start) // block_size, start // block_size
        block_view = flat[start:stop].view(rows, block_size)
        low, high = torch.aminmax(block_view, dim=1)
        chunk_scales = torch.maximum(high, low.neg(), out=scales[first : first + rows])
        divisor = torch.where(chunk_scales == 0, 1.0, chunk_scales)
        y = normalized[: stop - start]
        torch.div(block_view, divisor[:, None], out=y.view(rows, block_size))
        if table.cell_code is None or table.cell_step is None or table.cell_boundary is None:
            found = torch.bucketize(y, table.boundaries, out_int32=True, out=positions[: stop - start])
            codes[start:stop] = _positions_to_codes(found, table)
            continue
        # |y| <= 1 here (absmax scaling), so the cell index is in [0, _CELLS]; one compare picks the side
        # of the cell's boundary.
        cell = positions[: stop - start]
        cell.copy_(torch.add(y, 1.0, out=scratch[: stop - start]).mul_(_CELLS / 2))  # float -> int truncates
        out = codes[start:stop]
        torch.index_select(table.cell_code, 0, cell, out=out)
        above = torch.gt(y, torch.index_select(table.cell_boundary, 0, cell, out=scratch[: stop - start]))
        if table.identity_order:
            out.add_(above)
        else:
            out.add_(torch.index_select(table.cell_step, 0, cell, out=small[: stop - start]).mul_(above))
    if full < numel:
        tail = flat[full:]
        scales[-1] = tail.abs().amax()
        codes[full:numel] = encode_nearest(tail / (scales[-1] if scales[-1] > 0 else 1.0), table)
    if numel % 2:
        codes[numel] = 0
    packed = (codes[0::2] << 4) | codes[1::2]
    return codes[:numel], packed, scales


def _positions_to_codes(positions: torch.Tensor, table: NearestTable) -> torch.Tensor:
    return positions if table.identity_order else table.codes_in_order.index_select(0, positions)


def decode_blocks(
    level_pairs: torch.Tensor,
    packed: torch.Tensor,
    scales: torch.Tensor,
    numel: int,
    block_size: int,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flat float32 ``level[code] * scale (+ offset)`` straight from packed bytes.

    ``level_pairs`` is a (256, 2) table: the two levels each byte stands for,
    so one gather decodes both nibbles.
    """
    values = level_pairs.index_select(0, packed.reshape(-1).to(torch.int32)).reshape(-1)[:numel]
    full = numel - numel % block_size
    blocks = full // block_size
    if full:
        head = values[:full].view(blocks, block_size)
        head.mul_(scales[:blocks, None])
        if offsets is not None:
            head.add_(offsets[:blocks, None])
    if full < numel:
        values[full:].mul_(scales[-1])
        if offsets is not None:
            values[full:].add_(offsets[-1])
    return values


@dataclass(frozen=True)
class DoubleQuantizedScales:
    """Per-block scales stored as ``bits``-bit signed codes around their mean, QLoRA style."""

    codes: torch.Tensor  # int8 or int16, one per block
    outer_scales: torch.Tensor  # float32, one per ``double_quant.block_size`` blocks
    offset: torch.Tensor  # float32 scalar tensor of shape (1,): the mean of the scales


def quantize_scales(scales: torch.Tensor, double_quant: DoubleQuant) -> DoubleQuantizedScales:
    """Second-level quantization of float32 scales: subtract their mean, then symmetric linear codes
    k / (2**(bits-1) - 1) per block of ``double_quant.block_size`` scales, rounded to nearest (half to even)."""
    offset = scales.mean().reshape(1)
    centred = scales - offset
    levels = 2 ** (double_quant.bits - 1) - 1
    outer = absmax_per_block(centred, double_quant.block_size)
    per_scale_outer = outer.repeat_interleave(double_quant.block_size)[: scales.numel()]
    safe = torch.where(per_scale_outer == 0, torch.ones_like(per_scale_outer), per_scale_outer)
    code_dtype = torch.int8 if double_quant.bits <= 8 else torch.int16
    codes = torch.round(centred / safe * levels).clamp_(-levels, levels).to(code_dtype)
    return DoubleQuantizedScales(codes=codes, outer_scales=outer, offset=offset)


def dequantize_scales(dq: DoubleQuantizedScales, double_quant: DoubleQuant) -> torch.Tensor:
    """Undo :func:`quantize_scales`: code / levels * outer scale + mean, in float32, clamped at 0.

    The clamp matters for blocks far smaller than the mean scale: the mean offset
    can decode their scale slightly below zero, which would flip the sign of
    every element in the block. Clamping never moves a scale further from the
    true (non-negative) one.
    """
    levels = 2 ** (double_quant.bits - 1) - 1
    per_scale_outer = dq.outer_scales.repeat_interleave(double_quant.block_size)[: dq.codes.numel()]
    return (dq.codes.to(torch.float32) / levels * per_scale_outer + dq.offset).clamp_(min=0)
