"""The scale derivation: what an absmax format's scales must be (exactly, or within the double-quantization
bound), and codes that do not move when the input is scaled by a power of two."""

from __future__ import annotations

import torch

from harness.api import SCALE_ABSMAX, FormatSpec, QuantizedTensor, Quantizer
from harness.checks._common import (
    NotApplicable,
    _block_ids,
    _codes,
    _fail,
    _levels_of,
    _per_element,
    _reported_scales,
    block_absmax,
    describe_element,
)

__all__ = [
    "check_scale_invariance",
    "check_scales",
    "double_quant_bound",
]


def double_quant_bound(spec: FormatSpec, true_scales: torch.Tensor) -> torch.Tensor:
    """Largest |stored scale - true scale| per block that double quantization may cause (0 without it).

    With ``bits``-bit codes over blocks of scales, the error is at most half a
    code step of the block's range; 2**-(bits-1) of the largest of |s| and
    |s - mean(s)| in the block covers symmetric linear codes (1/(2**bits - 2)),
    bitsandbytes' dynamic 8-bit map (about 0.0070), and offsets that are the
    global mean, a per-block mean, or none.
    """
    if spec.double_quant is None:
        return torch.zeros_like(true_scales)
    dq = spec.double_quant
    mean = true_scales.mean()
    reach = torch.maximum(true_scales.abs(), (true_scales - mean).abs())
    outer = -(-reach.numel() // dq.block_size)
    per_outer = torch.zeros(outer, dtype=torch.float64).scatter_reduce(
        0, _block_ids(reach.numel(), dq.block_size), reach, reduce="amax", include_self=True
    )
    bound = per_outer[_block_ids(reach.numel(), dq.block_size)] * 2.0 ** -(dq.bits - 1)
    return bound * (1 + 1e-5) + 1e-30


def _true_scales(quantizer: Quantizer, x: torch.Tensor) -> torch.Tensor | None:
    return block_absmax(x, quantizer.spec.block_size) if quantizer.spec.scale == SCALE_ABSMAX else None


def check_scales(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """Scales follow the spec's scale kind: absmax == max |x| of the block (exactly, or within the
    double-quantization bound)."""
    prop = "scales follow the scale kind"
    spec = quantizer.spec
    if spec.scale != SCALE_ABSMAX:
        raise NotApplicable(f"scale kind {spec.scale!r} is not one the harness can derive; only 'absmax' is checked")
    reported = _reported_scales(quantizer, q, prop)
    true = block_absmax(x, spec.block_size)
    bound = double_quant_bound(spec, true)
    excess = (reported - true).abs() - bound
    if bool((excess > 0).any()):
        block = int(excess.argmax())
        what = (
            "exactly"
            if spec.double_quant is None
            else f"within the double-quantization bound {float(bound[block]):.3g}"
        )
        raise _fail(
            quantizer,
            prop,
            f"block {block} (elements {block * spec.block_size}..) of input shape={tuple(x.shape)}, dtype={x.dtype}: "
            f"scale {float(reported[block])!r}, expected max|x| = {float(true[block])!r} {what}",
        )


def check_scale_invariance(
    quantizer: Quantizer, x: torch.Tensor, factor: float, q: QuantizedTensor, q_scaled: QuantizedTensor
) -> None:
    """For absmax formats, multiplying the input by a power of two (exact in floating point) leaves every
    selected level unchanged."""
    prop = "codes invariant under positive scaling"
    if quantizer.spec.scale != SCALE_ABSMAX:
        raise NotApplicable(f"scale kind {quantizer.spec.scale!r}: invariance is promised only by absmax")
    codes = _codes(quantizer, q, prop)
    scaled_codes = _codes(quantizer, q_scaled, prop)
    changed = _levels_of(quantizer, codes) != _levels_of(quantizer, scaled_codes)
    if q.scales is not None and q_scaled.scales is not None:
        # a block stored with scale 0 decodes to zeros whatever its codes say (double quantization can
        # round a tiny block's scale to 0): its codes carry nothing to compare
        live = (q.scales.reshape(-1) > 0) & (q_scaled.scales.reshape(-1) > 0)
        changed &= _per_element(live, x.numel(), quantizer.spec.block_size)
    differ = changed.nonzero()
    if differ.numel():
        index = int(differ[0])
        raise _fail(
            quantizer,
            prop,
            f"scaling by {factor!r} changed {differ.numel()} codes, first at "
            f"{describe_element(x, index)}: {int(codes[index])} -> {int(scaled_codes[index])}",
        )
