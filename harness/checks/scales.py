"""The scale derivation: what a derivable scale kind's scales (and offsets) must be, exactly or within the
rule's float32 slack and the double-quantization bound, and codes that do not move when the input is scaled
by a power of two (every derivable kind promises that; see harness.scale_kinds)."""

from __future__ import annotations

import math

import torch

from harness.api import FormatSpec, QuantizedTensor, Quantizer
from harness.checks._common import (
    NotApplicable,
    _block_ids,
    _check_finite_scales,
    _codes,
    _fail,
    _levels_of,
    _per_element,
    _reported_scales,
    _scale_kind,
    _underivable,
    derived_scales,
    describe_element,
)
from harness.scale_kinds import derivable_kinds_for, nearest_reconstruction

__all__ = [
    "SEARCHED_MSE_TOLERANCE",
    "best_derived_mse",
    "check_scale_invariance",
    "check_scales",
    "check_searched_error",
    "derived_reconstruction",
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
    """The derived scales of ``x`` (None when the spec's scale kind has no rule the harness knows)."""
    derived = derived_scales(quantizer, x)
    return None if derived is None else derived.scales


def check_scales(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """Scales (and offsets) follow the spec's scale kind: the rule of harness.scale_kinds applied to the block
    (absmax: max |x|, exactly), within the rule's float32 slack, or within the double-quantization bound."""
    prop = "scales follow the scale kind"
    spec = quantizer.spec
    derived = derived_scales(quantizer, x)
    if derived is None:
        raise _underivable(quantizer, "the scales check")
    reported = _reported_scales(quantizer, q, prop)
    _check_finite_scales(quantizer, prop, x, q, derived)
    kind = _scale_kind(quantizer)
    assert kind is not None  # derived_scales found it
    scale_tolerance, offset_tolerance = derived.tolerances()
    bound = double_quant_bound(spec, derived.scales.abs()) + scale_tolerance
    free = torch.zeros_like(derived.scales, dtype=torch.bool) if derived.free is None else derived.free
    reported_offsets = None if q.offsets is None else q.offsets.reshape(-1).double()
    if kind.has_offsets and reported_offsets is None and derived.offsets is not None:
        nonzero = (derived.offsets != 0) & ~free
        if bool(nonzero.any()):
            block = int(nonzero.nonzero()[0])
            raise _fail(
                quantizer,
                prop,
                f"scale kind {kind.name!r} has an offset per block but QuantizedTensor.offsets is None; block "
                f"{block} of input shape={tuple(x.shape)}, dtype={x.dtype} needs offset "
                f"{float(derived.offsets[block])!r}",
            )
    excess = torch.full_like(derived.scales, math.inf)
    offset_excess = torch.full_like(derived.scales, math.inf)
    for scales, offsets in derived.candidates():
        scale_miss = (reported - scales).abs() - bound
        if offsets is not None and reported_offsets is not None:
            offset_bound = offset_tolerance + double_quant_bound(spec, derived.scales.abs()) * float(
                _offset_reach(quantizer)
            )
            offset_miss = (reported_offsets - offsets).abs() - offset_bound
        else:
            offset_miss = torch.full_like(scales, -math.inf)
        better = torch.maximum(scale_miss, offset_miss) < torch.maximum(excess, offset_excess)
        excess = torch.where(better, scale_miss, excess)
        offset_excess = torch.where(better, offset_miss, offset_excess)
    worst = torch.where(free, -math.inf, torch.maximum(excess, offset_excess))
    if not bool((worst > 0).any()):
        return
    block = int(worst.argmax())
    if spec.double_quant is not None:
        what = f"within the double-quantization bound {float(bound[block]):.3g}"
    elif float(scale_tolerance[block]) == 0:
        what = "exactly"
    else:
        what = f"within {float(bound[block]):.3g} (float32 rounding of the rule)"
    where = f"block {block} (elements {block * spec.block_size}..) of input shape={tuple(x.shape)}, dtype={x.dtype}"
    if float(excess[block]) > 0:
        raise _fail(
            quantizer,
            prop,
            f"{where}: scale {float(reported[block])!r}, expected {kind.formula} = "
            f"{float(derived.scales[block])!r} {what}",
        )
    assert reported_offsets is not None and derived.offsets is not None
    raise _fail(
        quantizer,
        prop,
        f"{where}: offset {float(reported_offsets[block])!r}, expected {float(derived.offsets[block])!r} under "
        f"scale kind {kind.name!r} (scale {float(reported[block])!r})",
    )


def _offset_reach(quantizer: Quantizer) -> float:
    """How far an offset moves per unit of scale error (|zero point| <= max |level| for affine-int)."""
    codebook = quantizer.spec.codebook
    return max(abs(v) for v in codebook) if codebook else 1.0


def check_scale_invariance(
    quantizer: Quantizer, x: torch.Tensor, factor: float, q: QuantizedTensor, q_scaled: QuantizedTensor
) -> None:
    """For a kind that promises it (every derivable kind: power-of-two factors are exact in floating point
    and scale the derived scale exactly), multiplying the input by a power of two leaves every selected level
    unchanged."""
    prop = "codes invariant under positive scaling"
    kind = _scale_kind(quantizer)
    if kind is None or kind.invariance is None:
        raise NotApplicable(
            f"scale kind {quantizer.spec.scale!r}: invariance under scaling is promised only by the derivable "
            "kinds of harness.scale_kinds"
        )
    codes = _codes(quantizer, q, prop)
    scaled_codes = _codes(quantizer, q_scaled, prop)
    changed = _levels_of(quantizer, codes) != _levels_of(quantizer, scaled_codes)
    if q.scales is not None and q_scaled.scales is not None:
        # a block stored with scale 0 decodes to zeros (or its offset) whatever its codes say (double
        # quantization can round a tiny block's scale to 0): its codes carry nothing to compare. Signed kinds
        # store negative scales, so "live" is "non-zero", not "positive".
        live = (q.scales.reshape(-1) != 0) & (q_scaled.scales.reshape(-1) != 0)
        changed &= _per_element(live, x.numel(), quantizer.spec.block_size)
    differ = changed.nonzero()
    if differ.numel():
        index = int(differ[0])
        raise _fail(
            quantizer,
            prop,
            f"scaling by {factor!r} changed {differ.numel()} codes, first at "
            f"{describe_element(x, index)}: {int(codes[index])} -> {int(scaled_codes[index])} (scale kind "
            f"{kind.name!r} is invariant under {kind.invariance})",
        )


SEARCHED_MSE_TOLERANCE = 0.01
"""How much worse (relative MSE) a 'searched' scale may do than the best derived rule for its codebook: a
search that starts from that rule and keeps the best candidate is never worse; 1% leaves room for searches
on a coarse grid of candidates."""


def derived_reconstruction(quantizer: Quantizer, x: torch.Tensor) -> torch.Tensor | None:
    """Exact nearest rounding of ``x`` on the grid the spec's scale kind derives (float64, x's shape): the
    harness's own reference for a derivable kind without double quantization, for any codebook. None when there
    is no such reference (no codebook, no rule, or double quantization, whose stored scales the rule does not
    give)."""
    spec = quantizer.spec
    if spec.codebook is None or spec.double_quant is not None:
        return None
    derived = derived_scales(quantizer, x)
    if derived is None:
        return None
    levels = torch.tensor(spec.codebook, dtype=torch.float64)
    flat = x.detach().reshape(-1).double()
    return nearest_reconstruction(flat, spec.block_size, levels, derived.scales, derived.offsets).reshape(x.shape)


def best_derived_mse(quantizer: Quantizer, x: torch.Tensor) -> tuple[float, str] | None:
    """The lowest MSE any derivable kind reaches on ``x`` with this codebook (and the same use of offsets),
    and that kind's name: what a 'searched' scale must not do worse than. None without a codebook or a kind
    that fits it."""
    spec = quantizer.spec
    if spec.codebook is None:
        return None
    levels = torch.tensor(spec.codebook, dtype=torch.float64)
    flat = x.detach().reshape(-1).double()
    best: tuple[float, str] | None = None
    for has_offsets in (False, True) if _searches_offsets(quantizer) else (False,):
        for kind in derivable_kinds_for(levels, has_offsets=has_offsets):
            derived = kind.derive_for(flat, spec.block_size, levels)
            rebuilt = nearest_reconstruction(flat, spec.block_size, levels, derived.scales, derived.offsets)
            mse = float((rebuilt - flat).square().mean())
            if best is None or mse < best[0]:
                best = (mse, kind.name)
    return best


def _searches_offsets(quantizer: Quantizer) -> bool:
    """Whether the searched format may use offsets: it is compared with the rules with offsets too only then.
    Decided by the codebook: one without negative levels cannot represent a Gaussian block without an offset."""
    codebook = quantizer.spec.codebook
    return codebook is not None and min(codebook) >= 0


def check_searched_error(quantizer: Quantizer, x: torch.Tensor, xhat: torch.Tensor) -> None:
    """A 'searched' scale kind optimises its scale: its MSE on ``x`` must be no worse than the best derived
    rule's for its codebook, within :data:`SEARCHED_MSE_TOLERANCE`."""
    prop = "searched scale no worse than the derived rules"
    kind = _scale_kind(quantizer)
    if kind is None or kind.derivable:
        raise NotApplicable(f"scale kind {quantizer.spec.scale!r} is not 'searched'")
    best = best_derived_mse(quantizer, x)
    if best is None:
        raise NotApplicable(f"{quantizer.name}: no derived rule fits its codebook; the search has nothing to beat")
    mse = float((xhat.reshape(-1).double() - x.reshape(-1).double()).square().mean())
    limit = best[0] * (1 + SEARCHED_MSE_TOLERANCE)
    if not mse <= limit:
        raise _fail(
            quantizer,
            prop,
            f"MSE {mse:.6g} on input shape={tuple(x.shape)}, dtype={x.dtype} exceeds {best[0]:.6g}, the MSE of "
            f"the derived rule {best[1]!r} for this codebook, by more than {SEARCHED_MSE_TOLERANCE:.0%}",
        )
