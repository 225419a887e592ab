"""What the property checks share: the failure types, running an implementation, per-block helpers, tolerances.

Each ``check_*`` (in :mod:`~harness.checks.contract`, :mod:`~harness.checks.values` and
:mod:`~harness.checks.scales`) raises :class:`PropertyViolation` (an AssertionError, so pytest
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

import math

import torch

from harness.api import QuantizedTensor, Quantizer
from harness.errors import ImplementationError
from harness.scale_kinds import DerivedScales, ScaleKind, get_scale_kind, known_scale_kinds

__all__ = [
    "COMPUTE_ULPS",
    "OUTPUT_ULPS",
    "NotApplicable",
    "PropertyViolation",
    "block_absmax",
    "derived_scales",
    "describe_element",
    "run_dequantize",
    "run_quantize",
]


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


def _levels_of(quantizer: Quantizer, codes: torch.Tensor) -> torch.Tensor:
    """The level each code stands for (so +0 and -0 codes compare equal); raw codes without a codebook."""
    if quantizer.spec.codebook is None:
        return codes.reshape(-1).double()
    return torch.tensor(quantizer.spec.codebook, dtype=torch.float64)[codes.reshape(-1).long()]


def _scale_kind(quantizer: Quantizer) -> ScaleKind | None:
    """The registered kind the spec names, or None (a declared kind the harness cannot derive)."""
    return get_scale_kind(quantizer.spec.scale)


def _underivable(quantizer: Quantizer, needs: str) -> NotApplicable:
    """The skip for a check that needs a derivation the spec's scale kind does not have."""
    kind = _scale_kind(quantizer)
    scale = quantizer.spec.scale
    if kind is not None:  # registered but without a per-block rule: 'searched'
        return NotApplicable(
            f"scale kind {scale!r} has no per-block rule the harness can derive ({kind.rule}); {needs} needs one"
        )
    return NotApplicable(
        f"scale kind {scale!r} is not one the harness can derive (known: {', '.join(known_scale_kinds())}; a "
        f"plugin may register its rule with harness.scale_kinds.register_scale_kind); {needs} needs one"
    )


def derived_scales(quantizer: Quantizer, x: torch.Tensor) -> DerivedScales | None:
    """The scales (and offsets) the spec's scale kind derives from ``x``, or None when the kind has no rule the
    harness knows, or the rule needs a codebook the implementation does not declare."""
    kind = _scale_kind(quantizer)
    if kind is None or not kind.derivable:
        return None
    spec = quantizer.spec
    if spec.codebook is None:
        if kind.name != "absmax":
            return None
        levels = torch.tensor([-1.0, 1.0], dtype=torch.float64)  # absmax reads no level
    else:
        levels = torch.tensor(spec.codebook, dtype=torch.float64)
    if kind.codebook_problem is not None and kind.codebook_problem(levels) is not None:
        return None  # the codebook check reports it; nothing sound can be derived from this codebook
    return kind.derive_for(x, spec.block_size, levels)


def _check_finite_scales(
    quantizer: Quantizer, prop: str, x: torch.Tensor, q: QuantizedTensor, derived: DerivedScales | None = None
) -> None:
    """One clear failure for a non-finite reported scale or offset of a finite block, instead of messages
    full of NaN later on (``expected code 8 -> nan``). Names the likely cause: a derived scale beyond
    float16's range means a float16-stored scale overflowed."""
    block_size = quantizer.spec.block_size
    finite_input = block_absmax(torch.nan_to_num(x.detach(), nan=math.inf), block_size) < math.inf
    for field_name in ("scales", "offsets"):
        values = getattr(q, field_name)
        if values is None:
            continue
        flat = values.reshape(-1).double()
        bad = ~torch.isfinite(flat) & finite_input[: flat.numel()]
        if not bool(bad.any()):
            continue
        block = int(bad.nonzero()[0])
        what = "scale" if field_name == "scales" else "offset"
        cause = ""
        if derived is None:  # derived only now, for the message: the common (finite) case pays nothing
            derived = derived_scales(quantizer, x)
        if derived is not None:
            expected = derived.scales if field_name == "scales" else derived.offsets
            if expected is not None:
                magnitude = abs(float(expected[block]))
                if magnitude > torch.finfo(torch.float16).max:
                    cause = f" (fp16 overflow: the derived {what} {magnitude:.6g} exceeds float16's 65504)"
                else:
                    cause = f" (the derived {what} is {float(expected[block]):.6g})"
        raise _fail(
            quantizer,
            prop,
            f"{what} of block {block} is {float(flat[block])!r}{cause} for finite input shape={tuple(x.shape)}, "
            f"dtype={x.dtype} (max|x| of the block = {float(block_absmax(x, block_size)[block])!r}; "
            f"{int(bad.sum())} non-finite {field_name})",
        )
