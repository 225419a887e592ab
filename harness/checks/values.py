"""What the values must satisfy: exact zeros and all-zero blocks, decoding that agrees with the reported
codes and scales, nearest-level codes, monotone quantization, the round-trip error bound, idempotence."""

from __future__ import annotations

import itertools
import math

import torch

from harness.api import SCALE_ABSMAX, QuantizedTensor, Quantizer
from harness.checks._common import (
    COMPUTE_ULPS,
    OUTPUT_ULPS,
    NotApplicable,
    _check_finite_scales,
    _codebook,
    _codes,
    _fail,
    _levels_of,
    _per_element,
    _reported_scales,
    _scale_kind,
    _ulp_bound,
    block_absmax,
    derived_scales,
    describe_element,
)
from harness.checks.scales import double_quant_bound
from harness.scale_kinds import DerivedScales, block_view, max_rounding_error

__all__ = [
    "check_decode_consistency",
    "check_exact_zero",
    "check_idempotent",
    "check_monotone",
    "check_nearest",
    "check_roundtrip_bound",
    "check_zero_blocks",
    "max_half_gap",
]


def check_exact_zero(quantizer: Quantizer, x: torch.Tensor, xhat: torch.Tensor) -> None:
    """When the spec promises exact zero, every input 0 comes back exactly 0, in any block."""
    if not quantizer.spec.exact_zero:
        raise NotApplicable(f"{quantizer.name} does not promise exact zero")
    zeros = (x.reshape(-1) == 0) & (xhat.reshape(-1) != 0)
    if bool(zeros.any()):
        index = int(zeros.nonzero()[0])
        raise _fail(
            quantizer,
            "exact zero",
            f"{int(zeros.sum())} zeros came back non-zero, first {describe_element(x, index)} -> "
            f"{float(xhat.reshape(-1)[index])!r}, expected 0",
        )


def check_zero_blocks(quantizer: Quantizer, x: torch.Tensor, xhat: torch.Tensor) -> None:
    """A block of zeros comes back as zeros (no NaN from a zero scale)."""
    block_size = quantizer.spec.block_size
    absmax = block_absmax(x, block_size)
    in_zero_block = _per_element(absmax == 0, x.numel(), block_size)
    bad = in_zero_block & ~(xhat.reshape(-1) == 0)
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        raise _fail(
            quantizer,
            "all-zero blocks",
            f"block {index // block_size} is all zeros but element {describe_element(x, index)} came back "
            f"{float(xhat.reshape(-1)[index])!r}, expected 0",
        )


def check_decode_consistency(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor, xhat: torch.Tensor) -> None:
    """dequantize agrees with the codes/scales/offsets it reported: x_hat == codebook[code] * scale + offset,
    up to one rounding to the output dtype."""
    prop = "dequantize == codebook[code] * scale + offset"
    levels = _codebook(quantizer, prop)
    codes = _codes(quantizer, q, prop)
    scales = _per_element(_reported_scales(quantizer, q, prop), x.numel(), quantizer.spec.block_size)
    _check_finite_scales(quantizer, prop, x, q)
    offsets = 0.0 if q.offsets is None else _per_element(q.offsets.double(), x.numel(), quantizer.spec.block_size)
    product = levels[codes] * scales
    expected = product + offsets
    actual = xhat.reshape(-1).double()
    # Four ulps of the output dtype and of float32 cover decoders that round codebook, scale and product
    # separately (e.g. in bfloat16); the float32 term is taken at the size of the summed terms, because
    # level * scale + offset may cancel (and a reported float32 offset is itself rounded). A wrong code or
    # scale is off by a level gap, far beyond this.
    terms = product.abs() + (offsets.abs() if isinstance(offsets, torch.Tensor) else 0.0)
    tolerance = OUTPUT_ULPS * (_ulp_bound(expected, x.dtype) + _ulp_bound(terms, torch.float32))
    bad = (actual - expected).abs() > tolerance
    if bool(bad.any()):
        index = int(((actual - expected).abs() - tolerance).argmax())
        raise _fail(
            quantizer,
            prop,
            f"{int(bad.sum())} elements disagree, worst {describe_element(x, index)}: code {int(codes[index])}, "
            f"scale {float(scales[index])!r} give {float(expected[index])!r}, dequantize gave {float(actual[index])!r}",
        )


def check_nearest(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """Each element's code selects the nearest representable value of its block (codebook * scale + offset).

    A value within a few compute-dtype ulp of a midpoint may go either way (tie rules and rounding of
    x / scale differ between correct implementations). For absmax formats the scale is derived from the
    input; under double quantization codes nearest for either the true or the stored scale are accepted.
    """
    prop = "nearest code"
    spec = quantizer.spec
    levels = _codebook(quantizer, prop)
    codes = _codes(quantizer, q, prop)
    numel = x.numel()
    flat = x.reshape(-1).double()
    derived = derived_scales(quantizer, x)
    candidates: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    if derived is not None:
        candidates += derived.candidates()
    if q.scales is not None and (derived is None or spec.double_quant is not None):
        _check_finite_scales(quantizer, prop, x, q, derived)
        reported_offsets = None if q.offsets is None else q.offsets.reshape(-1).double()
        candidates.append((q.scales.reshape(-1).double(), reported_offsets))
    if not candidates:
        raise NotApplicable(f"{quantizer.name} reports no scales and its scale kind {spec.scale!r} is not derivable")
    if spec.double_quant is not None and derived is None:
        raise NotApplicable(
            f"scale kind {spec.scale!r} under double quantization: the scale used for rounding is unknown"
        )
    eps = torch.finfo(quantizer.capabilities.compute_dtype_for(x.dtype)).eps
    ok = torch.zeros(numel, dtype=torch.bool)
    reports = []
    for per_block, per_block_offsets in candidates:
        scales = _per_element(per_block, numel, spec.block_size)
        offsets = 0.0 if per_block_offsets is None else _per_element(per_block_offsets, numel, spec.block_size)[:, None]
        representable = levels[None, :] * scales[:, None] + offsets
        distance = (flat[:, None] - representable).abs()
        best = distance.min(dim=1).values
        chosen = distance.gather(1, codes[:, None]).squeeze(1)
        offset_abs = offsets.abs().squeeze(1) if isinstance(offsets, torch.Tensor) else 0.0
        tolerance = COMPUTE_ULPS * eps * (flat.abs() + offset_abs + scales.abs() * float(levels.abs().max()))
        excess = chosen - best - tolerance
        ok |= excess <= 0
        reports.append((excess, best, chosen, representable, scales))
    if bool(ok.all()):
        return
    excess, best, chosen, representable, scales = reports[0]  # described against the first candidate scale
    excess = torch.where(ok, torch.full_like(excess, -math.inf), excess)
    index = int(excess.argmax())
    nearest_code = int((flat[index] - representable[index]).abs().argmin())
    raise _fail(
        quantizer,
        prop,
        f"{int((~ok).sum())} elements not rounded to the nearest level, worst {describe_element(x, index)}: "
        f"block scale {float(scales[index])!r}, got code {int(codes[index])} -> "
        f"{float(representable[index, codes[index]])!r} (|err| {float(chosen[index]):.6g}), expected code "
        f"{nearest_code} -> {float(representable[index, nearest_code])!r} (|err| {float(best[index]):.6g})",
    )


def check_monotone(quantizer: Quantizer, x: torch.Tensor, xhat: torch.Tensor) -> None:
    """Within a block, a larger input never comes back smaller: sorting by x sorts x_hat."""
    block_size = quantizer.spec.block_size
    flat, out = x.reshape(-1).double(), xhat.reshape(-1).double()
    numel = flat.numel()
    pad = (-numel) % block_size
    key = torch.cat([flat, torch.full((pad,), math.inf, dtype=torch.float64)]).view(-1, block_size)
    values = torch.cat([out, torch.full((pad,), math.inf, dtype=torch.float64)]).view(-1, block_size)
    order = key.argsort(dim=1, stable=True)
    sorted_out = values.gather(1, order)
    drops = sorted_out[:, 1:] < sorted_out[:, :-1]
    if bool(drops.any()):
        block, pos = (int(i) for i in drops.nonzero()[0])
        low_index = block * block_size + int(order[block, pos])
        high_index = block * block_size + int(order[block, pos + 1])
        raise _fail(
            quantizer,
            "monotone quantization",
            f"in block {block}, {describe_element(x, low_index)} -> {float(out[low_index])!r} but the larger "
            f"{float(flat[high_index])!r} (flat {high_index}) -> {float(out[high_index])!r}",
        )


def max_half_gap(levels: torch.Tensor, low: float, high: float) -> float:
    """The largest distance from any y in [low, high] to its nearest level.

    Distance to the nearest level is piecewise linear in y, so its maximum is at a
    range end or at a midpoint between adjacent levels inside the range.
    """
    values = sorted({float(v) for v in levels.tolist()})
    points = [low, high] + [(a + b) / 2 for a, b in itertools.pairwise(values) if low <= (a + b) / 2 <= high]
    return max(min(abs(p - v) for v in values) for p in points)


def _block_ranges(
    flat: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None, block_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per block, the range [low, high] of y = (x - offset) / scale over the block's elements, and max|x - offset|
    (what a block of scale 0 loses: it decodes to its offset)."""
    numel = flat.numel()
    shift = flat - (0.0 if offsets is None else _per_element(offsets, numel, block_size))
    per_scale = _per_element(scales, numel, block_size)
    y = torch.where(per_scale == 0, torch.zeros_like(shift), shift / torch.where(per_scale == 0, 1.0, per_scale))
    low = block_view(y, block_size, math.inf).amin(dim=1)
    high = block_view(y, block_size, -math.inf).amax(dim=1)
    reach = block_view(shift.abs(), block_size).amax(dim=1)
    return low, high, reach


def _grid_error(
    levels: torch.Tensor, low: torch.Tensor, high: torch.Tensor, scales: torch.Tensor, reach: torch.Tensor
) -> torch.Tensor:
    """|scale| x the largest rounding error over [low, high]; a block of scale 0 loses max|x - offset|."""
    return torch.where(scales == 0, reach, scales.abs() * max_rounding_error(levels, low, high))


def _derived_bound(
    quantizer: Quantizer, flat: torch.Tensor, levels: torch.Tensor, derived: DerivedScales
) -> torch.Tensor:
    """Per block: the largest nearest-rounding error on the derived grid of any value in the block's range
    (saturation included), over every valid candidate of the rule, plus what the allowed scale error
    (double quantization, the rule's float32 slack) can move a level and the offset."""
    spec = quantizer.spec
    bound = torch.zeros_like(derived.scales)
    for scales, offsets in derived.candidates():
        low, high, reach = _block_ranges(flat, scales, offsets, spec.block_size)
        bound = torch.maximum(bound, _grid_error(levels, low, high, scales, reach))
    scale_tolerance, offset_tolerance = derived.tolerances()
    dq = double_quant_bound(spec, derived.scales.abs())
    top = float(levels.abs().max())
    moved = top * (dq + scale_tolerance) + offset_tolerance
    if derived.offsets is not None:
        moved = moved + top * dq  # an offset tied to the scale (-zero * scale) moves with it
    return bound + moved


def check_roundtrip_bound(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor, xhat: torch.Tensor) -> None:
    """|x - x_hat| <= the largest nearest-rounding error of the block's values on the grid levels * |scale| +
    offset, plus the double-quantization bound, plus rounding of the output dtype (and of float32 at the size of
    x and the offset, which may cancel).

    For a derivable kind the grid is the derived one (the reported scale is not trusted; saturation at the
    grid's ends is part of the rule: Q4_0's +8 and MXFP4's values up to 8 x scale). Otherwise it is the
    reported one: for 'searched' over the block's own range (clipping is what a search trades), for an
    unknown kind over the levels' range (an element beyond the grid fails)."""
    prop = "round-trip error bound"
    spec = quantizer.spec
    levels = _codebook(quantizer, prop)
    numel = x.numel()
    flat, out = x.reshape(-1).double(), xhat.reshape(-1).double()
    derived = derived_scales(quantizer, x)
    offsets: torch.Tensor | float = 0.0
    if derived is not None:
        block_bound = _derived_bound(quantizer, flat, levels, derived)
        if derived.offsets is not None:
            offsets = _per_element(derived.offsets.abs(), numel, spec.block_size)
        kind = _scale_kind(quantizer)
        assert kind is not None
        basis = f"largest rounding error of the levels over the block's range x derived scale {kind.formula}"
    else:
        reported = _reported_scales(quantizer, q, prop)
        _check_finite_scales(quantizer, prop, x, q)
        reported_offsets = None if q.offsets is None else q.offsets.reshape(-1).double()
        kind = _scale_kind(quantizer)
        if kind is not None:  # registered without a rule ('searched'): the block's own range on its grid
            low, high, reach = _block_ranges(flat, reported, reported_offsets, spec.block_size)
            block_bound = _grid_error(levels, low, high, reported, reach)
            basis = "largest rounding error over the block's range x |reported scale|"
        else:
            half_gap = max_half_gap(levels, float(levels.min()), float(levels.max()))
            block_bound = half_gap * reported.abs()
            basis = f"half gap {half_gap:.6g} x |reported scale|"
        if reported_offsets is not None:
            offsets = _per_element(reported_offsets.abs(), numel, spec.block_size)
    bound = _per_element(block_bound, numel, spec.block_size)
    eps = torch.finfo(quantizer.capabilities.compute_dtype_for(x.dtype)).eps
    finite_out = torch.where(torch.isfinite(out), out, flat)  # an inf output must not make the bound inf
    bound = bound * (1 + COMPUTE_ULPS * eps) + OUTPUT_ULPS * (
        _ulp_bound(finite_out, x.dtype) + _ulp_bound(flat.abs() + offsets, torch.float32)
    )
    error = (flat - out).abs()
    excess = error - bound
    if bool((excess > 0).any()):
        index = int(excess.argmax())
        raise _fail(
            quantizer,
            prop,
            f"{int((excess > 0).sum())} elements exceed the bound, worst {describe_element(x, index)} -> "
            f"{float(out[index])!r}: |err| {float(error[index]):.6g} > bound {float(bound[index]):.6g} ({basis})",
        )


def check_idempotent(
    quantizer: Quantizer,
    x: torch.Tensor,
    q: QuantizedTensor,
    xhat: torch.Tensor,
    q_again: QuantizedTensor,
    xhat_again: torch.Tensor,
) -> None:
    """Re-quantizing the reconstruction selects the same levels (codes for +0 and -0 count as one), or,
    for a black box without double quantization, gives the same reconstruction."""
    prop = "idempotence"
    spec = quantizer.spec
    kind = _scale_kind(quantizer)
    if kind is None or not kind.idempotent:
        raise NotApplicable(
            f"scale kind {spec.scale!r}: re-deriving the scale (and offset) from x_hat is not promised to give the "
            "same grid; idempotence is promised by the derivable kinds of harness.scale_kinds"
        )
    if spec.double_quant is not None and spec.scale != SCALE_ABSMAX:
        raise NotApplicable(
            f"scale kind {spec.scale!r} under double quantization: the stored scales move the grid x_hat lies on"
        )
    if q.codes is not None and q_again.codes is not None:
        first, again = _levels_of(quantizer, q.codes), _levels_of(quantizer, q_again.codes)
        # A block that came back all zeros (its stored scale decoded to 0) has lost its codes; only
        # its zeros can be required to survive.
        block_size = spec.block_size
        live = _per_element(block_absmax(xhat, block_size) > 0, x.numel(), block_size)
        if spec.double_quant is not None:
            # Codes may be chosen against the stored (double-quantized) scale; where that scale is far off,
            # no element of the block lands on +-1, so x_hat's absmax, and with it the grid, moves when
            # re-quantized. Blocks whose largest selected level is +-1 must keep their levels.
            reaches_one = block_absmax(first, block_size) == 1
            live &= _per_element(reaches_one, x.numel(), block_size)
        if kind.idempotent_where_rederived:
            live &= _per_element(_same_grid(quantizer, x, xhat), x.numel(), block_size)
        # two codes that decode to the same output value (levels that round together in a 16-bit output) are
        # one value: x_hat survives, which is what idempotence asks
        live &= xhat_again.reshape(-1).double() != xhat.reshape(-1).double()
        differ = ((first != again) & live).nonzero()
        if differ.numel():
            index = int(differ[0])
            raise _fail(
                quantizer,
                prop,
                f"{differ.numel()} codes change when x_hat is quantized again, first at {describe_element(x, index)}:"
                f" x_hat={float(xhat.reshape(-1)[index])!r} had code {int(q.codes.reshape(-1)[index])}, "
                f"now {int(q_again.codes.reshape(-1)[index])}",
            )
        return
    if spec.double_quant is not None:
        raise NotApplicable("no codes to compare and double quantization moves the scales")
    differ = (xhat.reshape(-1).double() != xhat_again.reshape(-1).double()).nonzero()
    if differ.numel():
        index = int(differ[0])
        raise _fail(
            quantizer,
            prop,
            f"dequantize(quantize(x_hat)) != x_hat at {describe_element(x, index)}: "
            f"{float(xhat.reshape(-1)[index])!r} -> {float(xhat_again.reshape(-1)[index])!r}",
        )


def _same_grid(quantizer: Quantizer, x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
    """Per block: x_hat re-derives one of the grids the rule allows for x. Where it does not, the grid moves
    without any fault of the implementation: NVFP4's E4M3 block scale of x_hat's block maximum may round to a
    neighbour; an integer zero point rounded half-way clips a block end, so x_hat's range, and with it the
    scale, shrinks."""
    first, again = derived_scales(quantizer, x), derived_scales(quantizer, xhat.to(x.dtype))
    if first is None or again is None:
        return torch.zeros(-(-x.numel() // quantizer.spec.block_size), dtype=torch.bool)
    same = torch.zeros_like(first.scales, dtype=torch.bool)
    for scales, offsets in first.candidates():
        close = (again.scales - scales).abs() <= 1e-6 * scales.abs()
        if offsets is not None and again.offsets is not None:
            close &= (again.offsets - offsets).abs() <= 1e-6 * (offsets.abs() + scales.abs())
        same |= close
    return same
