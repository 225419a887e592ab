"""The property checks the suites run against any implementation, written once, as plain functions.

Each ``check_*`` raises :class:`PropertyViolation` (an AssertionError, so pytest
reports it as a failure) naming the implementation, the property, the
offending element (shape, dtype, index, value) and expected vs actual; or
:class:`NotApplicable` when the implementation does not reveal what the check
needs (a black box without codes, an unknown scale kind), which suites turn into
a skip with that reason.

Tolerances come from the formats and the arithmetic, not from loose slack: a
code may differ from the exact nearest only when the value lies within a few
ulp of the compute dtype from a decision midpoint; reconstruction bounds add
one ulp of the output dtype.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace

import torch

from harness.api import SCALE_ABSMAX, FormatSpec, QuantizedTensor, Quantizer
from harness.errors import ImplementationError
from harness.formats.packing import packed_size, unpack_nibbles

__all__ = [
    "CANONICAL_TOLERANCE",
    "COMPUTE_ULPS",
    "OUTPUT_ULPS",
    "NotApplicable",
    "PropertyViolation",
    "block_absmax",
    "check_codebook",
    "check_decode_consistency",
    "check_deterministic",
    "check_exact_zero",
    "check_finite_shape_dtype",
    "check_idempotent",
    "check_input_unchanged",
    "check_monotone",
    "check_nearest",
    "check_output_contract",
    "check_packing",
    "check_roundtrip_bound",
    "check_scale_invariance",
    "check_scales",
    "check_storage_size",
    "check_storage_used",
    "check_zero_blocks",
    "describe_element",
    "double_quant_bound",
    "max_half_gap",
    "run_dequantize",
    "run_quantize",
]

CANONICAL_TOLERANCE = {"nf4": 1e-6, "fp4": 1e-6, "af4": 2e-4}
"""Max |difference| from the harness's computed codebook for a quantizer to call itself by that name.
NF4 and FP4 are exact constructions (1e-6 is a few float32 ulp); AF4's published tables carry 8 decimals
but match the construction only to about 1e-4."""

COMPUTE_ULPS = 4
"""How many compute-dtype ulps a decision may be off at a midpoint (division, midpoint and threshold rounding)."""


OUTPUT_ULPS = 4
"""Ulps of the output dtype (and of float32) a reconstruction may be off by: decoders may round the level,
the scale and their product separately in a 16-bit dtype."""


class PropertyViolation(AssertionError):
    """A property the spec promises does not hold."""

    def __init__(self, implementation: str, prop: str, detail: str) -> None:
        super().__init__(f"{implementation}: {prop} violated: {detail}")
        self.implementation = implementation
        self.prop = prop
        self.detail = detail


class NotApplicable(Exception):
    """The check cannot run for this implementation (the reason says why); suites skip."""


# ---------------------------------------------------------------------------------------------- helpers


def describe_element(x: torch.Tensor, flat_index: int) -> str:
    """``shape=..., dtype=..., index=(i, j) (flat k), value=v`` for one element of ``x``."""
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat_index), x.shape)) if x.dim() else ()
    value = float(x.reshape(-1)[flat_index])
    return f"input shape={tuple(x.shape)}, dtype={x.dtype}, index={index} (flat {flat_index}), value={value!r}"


def _fail(quantizer: Quantizer, prop: str, detail: str) -> PropertyViolation:
    return PropertyViolation(quantizer.name, prop, detail)


def run_quantize(quantizer: Quantizer, x: torch.Tensor) -> QuantizedTensor:
    """``quantizer.quantize(x)``; an exception becomes an ImplementationError naming the implementation."""
    try:
        return quantizer.quantize(x)
    except Exception as exc:
        raise ImplementationError(quantizer.name, f"quantize(shape={tuple(x.shape)}, dtype={x.dtype})", exc) from exc


def run_dequantize(quantizer: Quantizer, q: QuantizedTensor) -> torch.Tensor:
    """``quantizer.dequantize(q)``; an exception becomes an ImplementationError naming the implementation."""
    try:
        return quantizer.dequantize(q)
    except Exception as exc:
        raise ImplementationError(quantizer.name, f"dequantize(shape={tuple(q.shape)})", exc) from exc


def _block_ids(numel: int, block_size: int) -> torch.Tensor:
    return torch.arange(numel) // block_size


def block_absmax(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """max |x| per block of the flattened input, float64 (exact for float inputs)."""
    flat = x.detach().reshape(-1).double().abs()
    blocks = -(-flat.numel() // block_size)
    out = torch.zeros(blocks, dtype=torch.float64)
    return out.scatter_reduce(0, _block_ids(flat.numel(), block_size), flat, reduce="amax", include_self=True)


def _ulp_bound(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An upper bound on one ulp of ``dtype`` at |values| (normal and subnormal range)."""
    info = torch.finfo(dtype)
    smallest_subnormal = info.tiny * info.eps
    return values.abs() * info.eps + smallest_subnormal


def _codebook(quantizer: Quantizer, needs: str) -> torch.Tensor:
    if quantizer.spec.codebook is None:
        raise NotApplicable(f"{quantizer.name} declares no codebook; {needs} needs one")
    return torch.tensor(quantizer.spec.codebook, dtype=torch.float64)


def _codes(quantizer: Quantizer, q: QuantizedTensor, needs: str) -> torch.Tensor:
    if q.codes is None:
        raise NotApplicable(f"{quantizer.name} reports no codes (black box); {needs} needs them")
    return q.codes.reshape(-1).long()


def _reported_scales(quantizer: Quantizer, q: QuantizedTensor, needs: str) -> torch.Tensor:
    if q.scales is None:
        raise NotApplicable(f"{quantizer.name} reports no scales (black box); {needs} needs them")
    return q.scales.reshape(-1).double()


def _per_element(per_block: torch.Tensor, numel: int, block_size: int) -> torch.Tensor:
    return per_block[_block_ids(numel, block_size)]


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


def _check_tensor(
    quantizer: Quantizer, prop: str, name: str, t: object, dtype: torch.dtype, numel: int | None = None
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise _fail(quantizer, prop, f"QuantizedTensor.{name} is a {type(t).__name__}, expected a torch.Tensor")
    if t.dtype != dtype:
        raise _fail(quantizer, prop, f"QuantizedTensor.{name}.dtype={t.dtype}, expected {dtype}")
    if numel is not None and t.numel() != numel:
        raise _fail(quantizer, prop, f"QuantizedTensor.{name} has {t.numel()} elements, expected {numel}")
    return t


# ---------------------------------------------------------------------------------------------- the checks


def check_output_contract(quantizer: Quantizer, x: torch.Tensor, q: object) -> None:
    """``quantize`` returned a QuantizedTensor whose fields have the documented types and sizes."""
    prop = "output contract"
    if not isinstance(q, QuantizedTensor):
        raise _fail(quantizer, prop, f"quantize returned a {type(q).__name__}, expected a harness.QuantizedTensor")
    if tuple(q.shape) != tuple(x.shape):
        raise _fail(quantizer, prop, f"QuantizedTensor.shape={tuple(q.shape)}, expected the input's {tuple(x.shape)}")
    if q.dtype != x.dtype:
        raise _fail(quantizer, prop, f"QuantizedTensor.dtype={q.dtype}, expected the input's {x.dtype}")
    blocks = -(-x.numel() // quantizer.spec.block_size)
    if q.codes is not None:
        codes = _check_tensor(quantizer, prop, "codes", q.codes, torch.uint8)
        if tuple(codes.shape) != tuple(x.shape):
            raise _fail(quantizer, prop, f"codes.shape={tuple(codes.shape)}, expected the input's {tuple(x.shape)}")
        if codes.numel() and int(codes.max()) > 15:
            index = int(codes.reshape(-1).argmax())
            raise _fail(quantizer, prop, f"code {int(codes.reshape(-1)[index])} > 15 at {describe_element(x, index)}")
    if q.scales is not None:
        _check_tensor(quantizer, prop, "scales", q.scales, torch.float32, blocks)
    if q.offsets is not None:
        _check_tensor(quantizer, prop, "offsets", q.offsets, torch.float32, blocks)
    if not isinstance(q.storage, Mapping):
        raise _fail(quantizer, prop, f"storage is a {type(q.storage).__name__}, expected a dict of tensors")
    for key, value in q.storage.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _fail(quantizer, prop, f"storage[{key!r}] is a {type(value).__name__}, expected a torch.Tensor")


def check_codebook(quantizer: Quantizer) -> None:
    """16 values, no duplicates but +-0, a monotone map once sorted; absmax formats hold +-1;
    exact-zero formats hold 0; a quantizer named after a known format carries that format's codebook."""
    from harness.formats import codebook as canonical_codebook

    spec = quantizer.spec
    prop = "codebook"
    levels = _codebook(quantizer, "the codebook check")
    values = levels.tolist()
    for i in range(16):
        for j in range(i + 1, 16):
            if values[i] == values[j] and not (
                values[i] == 0 and math.copysign(1, values[i]) != math.copysign(1, values[j])
            ):
                raise _fail(
                    quantizer,
                    prop,
                    f"codes {i} and {j} share the value {values[i]!r}; "
                    "expected 16 distinct levels (only +0/-0 may coincide)",
                )
    ordered = sorted(values)
    for lower, upper in itertools.pairwise(ordered):
        if not lower <= upper:  # also rejects NaN, which FormatSpec already excludes
            raise _fail(quantizer, prop, f"sorted levels are not monotone at {lower!r}, {upper!r}")
    if spec.scale == SCALE_ABSMAX and (1.0 not in values or -1.0 not in values):
        raise _fail(
            quantizer,
            prop,
            f"scale='absmax' but the codebook lacks {'1.0' if 1.0 not in values else '-1.0'}: a block's largest "
            f"element could not come back exactly; codebook={values}",
        )
    if spec.exact_zero and 0.0 not in values:
        raise _fail(quantizer, prop, f"exact_zero=True but 0 is not a level; codebook={values}")
    tolerance = CANONICAL_TOLERANCE.get(spec.format)
    if tolerance is not None:
        canonical = sorted(canonical_codebook(spec.format, spec.block_size).double().tolist())
        diffs = [abs(a - b) for a, b in zip(ordered, canonical, strict=True)]
        worst = max(range(16), key=diffs.__getitem__)
        if diffs[worst] > tolerance:
            raise _fail(
                quantizer,
                prop,
                f"format={spec.format!r} but sorted level {worst} is {ordered[worst]!r}, expected "
                f"{canonical[worst]!r} (|diff|={diffs[worst]:.3g} > {tolerance:g}); a quantizer that calls itself "
                f"{spec.format.upper()} must carry the {spec.format.upper()} codebook",
            )


def check_finite_shape_dtype(quantizer: Quantizer, x: torch.Tensor, xhat: object) -> None:
    """dequantize returns a tensor of the input's shape, dtype and device, finite where the input is."""
    prop = "output shape/dtype/finiteness"
    if not isinstance(xhat, torch.Tensor):
        raise _fail(quantizer, prop, f"dequantize returned a {type(xhat).__name__}, expected a torch.Tensor")
    if tuple(xhat.shape) != tuple(x.shape):
        raise _fail(quantizer, prop, f"dequantized shape {tuple(xhat.shape)}, expected the input's {tuple(x.shape)}")
    if xhat.dtype != x.dtype:
        raise _fail(quantizer, prop, f"dequantized dtype {xhat.dtype}, expected the input's {x.dtype}")
    if xhat.device != x.device:
        raise _fail(quantizer, prop, f"dequantized device {xhat.device}, expected the input's {x.device}")
    finite = torch.isfinite(xhat).reshape(-1)
    if not bool(finite.all()):
        index = int((~finite).nonzero()[0])
        raise _fail(
            quantizer,
            prop,
            f"non-finite output {float(xhat.reshape(-1)[index])!r} for finite {describe_element(x, index)}",
        )


def check_input_unchanged(quantizer: Quantizer, before: torch.Tensor, after: torch.Tensor) -> None:
    """quantize/dequantize left the caller's tensor bit for bit as it was."""
    a = before.reshape(-1).view(_int_view(before.dtype))
    b = after.reshape(-1).view(_int_view(after.dtype))
    changed = (a != b).nonzero()
    if changed.numel():
        index = int(changed[0])
        raise _fail(
            quantizer,
            "input not modified",
            f"{changed.numel()} input elements changed, first {describe_element(before, index)} now "
            f"{float(after.reshape(-1)[index])!r}",
        )


def _int_view(dtype: torch.dtype) -> torch.dtype:
    return {
        torch.float32: torch.int32,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
        torch.float64: torch.int64,
    }[dtype]


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


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bytes (NaN equals NaN, -0 differs from +0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(_as_bytes(a), _as_bytes(b))


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as raw bytes; a copy in contiguous layout first, because a library's tensor may
    be a strided view (torchao keeps a 1-element view of a larger buffer) that ``view(uint8)`` rejects."""
    return t.detach().reshape(-1).clone(memory_format=torch.contiguous_format).view(torch.uint8)


def _storage_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> str | None:
    if set(a) != set(b):
        return f"storage keys {sorted(a)} vs {sorted(b)}"
    for key in a:
        ta, tb = a[key], b[key]
        if ta.shape != tb.shape or ta.dtype != tb.dtype or not torch.equal(_as_bytes(ta), _as_bytes(tb)):
            return f"storage[{key!r}] differs"
    return None


def check_deterministic(
    quantizer: Quantizer,
    x: torch.Tensor,
    q1: QuantizedTensor,
    q2: QuantizedTensor,
    xhat1: torch.Tensor,
    xhat2: torch.Tensor,
) -> None:
    """Quantizing the same input twice gives the same codes, scales, storage and output, bit for bit."""
    prop = "determinism"
    for field_name in ("codes", "scales", "offsets"):
        a, b = getattr(q1, field_name), getattr(q2, field_name)
        if (a is None) != (b is None) or (a is not None and not _bitwise_equal(a, b)):
            raise _fail(
                quantizer,
                prop,
                f"two quantize() calls on the same input ({tuple(x.shape)}, {x.dtype}) gave different {field_name}",
            )
    difference = _storage_equal(q1.storage, q2.storage)
    if difference:
        raise _fail(quantizer, prop, f"two quantize() calls on the same input gave different storage: {difference}")
    mismatch = (xhat1.reshape(-1).view(_int_view(x.dtype)) != xhat2.reshape(-1).view(_int_view(x.dtype))).nonzero()
    if mismatch.numel():
        index = int(mismatch[0])
        raise _fail(
            quantizer,
            prop,
            f"two round trips differ at {describe_element(x, index)}: "
            f"{float(xhat1.reshape(-1)[index])!r} vs {float(xhat2.reshape(-1)[index])!r}",
        )


def _levels_of(quantizer: Quantizer, codes: torch.Tensor) -> torch.Tensor:
    """The level each code stands for (so +0 and -0 codes compare equal); raw codes without a codebook."""
    if quantizer.spec.codebook is None:
        return codes.reshape(-1).double()
    return torch.tensor(quantizer.spec.codebook, dtype=torch.float64)[codes.reshape(-1).long()]


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


def check_packing(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """storage['packed'] holds the codes two per byte in the declared nibble order."""
    prop = "packing"
    spec = quantizer.spec
    if spec.packing is None:
        raise NotApplicable(f"{quantizer.name} declares no packing order")
    codes = _codes(quantizer, q, prop)
    packed = q.storage.get("packed")
    if packed is None:
        raise _fail(
            quantizer,
            prop,
            f"packing={spec.packing!r} declared but storage has no 'packed' entry (keys: {sorted(q.storage)})",
        )
    expected_bytes = packed_size(x.numel())
    if packed.dtype != torch.uint8 or packed.numel() != expected_bytes:
        raise _fail(
            quantizer,
            prop,
            f"storage['packed'] is {packed.dtype} with {packed.numel()} elements, "
            f"expected {expected_bytes} uint8 bytes for {x.numel()} codes",
        )
    unpacked = unpack_nibbles(packed, x.numel(), spec.packing).long()
    differ = (unpacked != codes).nonzero()
    if differ.numel():
        index = int(differ[0])
        raise _fail(
            quantizer,
            prop,
            f"unpacking storage['packed'] as {spec.packing} gives code "
            f"{int(unpacked[index])} at {describe_element(x, index)}, but codes[] says "
            f"{int(codes[index])} ({differ.numel()} mismatches)",
        )


def check_storage_size(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """nbytes is the real storage (no tensor is a view of a larger hidden buffer), and bits per parameter
    is at least what the spec needs."""
    prop = "storage size"
    if not q.storage:
        raise _fail(quantizer, prop, "storage is empty: nbytes would claim the weight takes no memory")
    for key, tensor in q.storage.items():
        counted = tensor.numel() * tensor.element_size()
        real = tensor.untyped_storage().nbytes()
        if real > counted:
            raise _fail(
                quantizer,
                prop,
                f"storage[{key!r}] counts {counted} bytes but is a view of a {real}-byte "
                f"buffer, so nbytes understates the memory kept",
            )
    if quantizer.spec.codebook is None:
        return
    needed = quantizer.spec.min_bits_per_parameter(has_offsets=q.offsets is not None)
    bits = 8 * q.nbytes / x.numel()
    if bits < needed - 1e-9:
        raise _fail(
            quantizer,
            prop,
            f"storage holds {q.nbytes} bytes for {x.numel()} elements ({bits:.4f} "
            f"bits/parameter), expected at least {needed:.4f} for this spec: some data "
            f"must live outside storage",
        )


def _perturbed(t: torch.Tensor, variant: int) -> torch.Tensor:
    """Two unrelated ways of altering stored data (one alone can cancel out: FP4's code 3 -> 2 is
    1 -> 2/3, undone by a scale 1 -> 1.5)."""
    if t.dtype.is_floating_point:
        return t * 0.5 + 1.0 if variant == 0 else t * -0.75 - 2.0
    if t.dtype == torch.bool:
        return ~t
    if t.dtype == torch.uint8:
        return t ^ (0x11 if variant == 0 else 0x66)
    return t + (1 if variant == 0 else 3)


def check_storage_used(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor, xhat: torch.Tensor) -> None:
    """dequantize reads what the QuantizedTensor holds: changing all of it changes the output. An output
    that survives this comes from a hidden copy, so nbytes is not what the implementation keeps."""
    prop = "dequantize uses the stored data"
    if not bool((x != 0).any()):
        return  # an all-zero input cannot show whether the stored data is used
    for variant in (0, 1):
        fake = replace(
            q,
            codes=None if q.codes is None else _perturbed(q.codes, variant) & 0x0F,
            scales=None if q.scales is None else _perturbed(q.scales, variant),
            offsets=None if q.offsets is None else _perturbed(q.offsets, variant),
            storage={key: _perturbed(value, variant) for key, value in q.storage.items()},
        )
        try:
            fake_out = quantizer.dequantize(fake)
        except Exception:
            return  # it read the altered data and rejected it: the data is used
        if not (isinstance(fake_out, torch.Tensor) and fake_out.shape == xhat.shape and torch.equal(fake_out, xhat)):
            return  # the output moved with the data
    raise _fail(
        quantizer,
        prop,
        f"altering every stored tensor (keys {sorted(q.storage)}) and the codes/scales, in two unrelated ways, "
        f"left the output of input shape={tuple(x.shape)} unchanged: dequantize reads state outside the "
        "QuantizedTensor",
    )
