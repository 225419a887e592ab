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
    _codebook,
    _codes,
    _fail,
    _levels_of,
    _per_element,
    _reported_scales,
    _ulp_bound,
    block_absmax,
    describe_element,
)
from harness.checks.scales import _true_scales, double_quant_bound

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
    candidates: list[torch.Tensor] = []
    true = _true_scales(quantizer, x)
    if true is not None:
        candidates.append(true)
    if q.scales is not None and (true is None or spec.double_quant is not None):
        candidates.append(q.scales.double())
    if not candidates:
        raise NotApplicable(f"{quantizer.name} reports no scales and its scale kind {spec.scale!r} is not derivable")
    if spec.double_quant is not None and true is None:
        raise NotApplicable(
            f"scale kind {spec.scale!r} under double quantization: the scale used for rounding is unknown"
        )
    offsets = 0.0 if q.offsets is None else _per_element(q.offsets.double(), numel, spec.block_size)[:, None]
    eps = torch.finfo(quantizer.capabilities.compute_dtype_for(x.dtype)).eps
    ok = torch.zeros(numel, dtype=torch.bool)
    reports = []
    for per_block in candidates:
        scales = _per_element(per_block, numel, spec.block_size)
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


def check_roundtrip_bound(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor, xhat: torch.Tensor) -> None:
    """|x - x_hat| <= half the widest adjacent-level gap times the block's scale, plus the
    double-quantization bound, plus one rounding of the output dtype."""
    prop = "round-trip error bound"
    spec = quantizer.spec
    levels = _codebook(quantizer, prop)
    numel = x.numel()
    flat, out = x.reshape(-1).double(), xhat.reshape(-1).double()
    true = _true_scales(quantizer, x)
    if true is not None:
        half_gap = max_half_gap(levels, -1.0, 1.0)
        scale_error = double_quant_bound(spec, true)
        per_element_scale = _per_element(true, numel, spec.block_size)
        bound = half_gap * per_element_scale + float(levels.abs().max()) * _per_element(
            scale_error, numel, spec.block_size
        )
        basis = f"half gap {half_gap:.6g} x absmax"
    else:
        scales = _per_element(_reported_scales(quantizer, q, prop), numel, spec.block_size)
        half_gap = max_half_gap(levels, float(levels.min()), float(levels.max()))
        bound = half_gap * scales
        basis = f"half gap {half_gap:.6g} x reported scale"
    eps = torch.finfo(quantizer.capabilities.compute_dtype_for(x.dtype)).eps
    bound = bound * (1 + COMPUTE_ULPS * eps) + OUTPUT_ULPS * (
        _ulp_bound(out, x.dtype) + _ulp_bound(flat, torch.float32)
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
    if quantizer.spec.scale != SCALE_ABSMAX:
        raise NotApplicable(
            f"scale kind {quantizer.spec.scale!r}: re-deriving the scale (and offset) from x_hat may move the grid "
            "(an integer zero point does); idempotence is promised by absmax formats"
        )
    if q.codes is not None and q_again.codes is not None:
        first, again = _levels_of(quantizer, q.codes), _levels_of(quantizer, q_again.codes)
        # A block that came back all zeros (its stored scale decoded to 0) has lost its codes; only
        # its zeros can be required to survive.
        block_size = quantizer.spec.block_size
        live = _per_element(block_absmax(xhat, block_size) > 0, x.numel(), block_size)
        if quantizer.spec.double_quant is not None:
            # Codes may be chosen against the stored (double-quantized) scale; where that scale is far off,
            # no element of the block lands on +-1, so x_hat's absmax, and with it the grid, moves when
            # re-quantized. Blocks whose largest selected level is +-1 must keep their levels.
            reaches_one = block_absmax(first, block_size) == 1
            live &= _per_element(reaches_one, x.numel(), block_size)
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
    if quantizer.spec.double_quant is not None:
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
