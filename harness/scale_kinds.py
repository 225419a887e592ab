"""Scale kinds as derivations the harness knows: how a block's scale (and offset) follow from its values.

``FormatSpec.scale`` names a kind. For a kind registered here the property checks do not have to trust the
scales an implementation reports: they derive the scale from the input, compare (scales check), round to the
nearest level under it (nearest-code check, error-statistics reference) and bound the round-trip error from
it. A kind is a :class:`ScaleKind`: a pure ``derive`` function plus the promises the kind makes (exact zero,
idempotence, invariance under scaling) and what it asks of a codebook. Third parties declare their own kind
with :func:`register_scale_kind` before building a ``FormatSpec`` that names it; a name nobody registered is
still accepted, and every check that needs the derivation then skips with the reason.

Every derivation works on the flattened input in float64 (exact for float32/float16/bfloat16 inputs) and
returns per-block float64 tensors. Dequantization stays ``codebook[code] * scale + offset``: each rule is
written for an arbitrary codebook ("levels" below) and reduces to the library's formula for its codebook
(Q4_0: levels k - 8, ``d = m / -8``; Q4_1: levels 0..15, ``d = (max - min) / 15``, ``offset = min``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from harness.api import (
    SCALE_ABSMAX,
    SCALE_AFFINE_INT,
    SCALE_E4M3_TENSOR,
    SCALE_E8M0,
    SCALE_MINMAX,
    SCALE_SEARCHED,
    SCALE_SIGNED_ABSMAX,
)
from harness.errors import InvalidArgument

__all__ = [
    "AFFINE_INT",
    "E4M3_TENSOR",
    "E8M0",
    "KIND_ABSMAX",
    "KIND_MINMAX",
    "KIND_SIGNED_ABSMAX",
    "SEARCHED",
    "DerivedScales",
    "ScaleKind",
    "block_view",
    "derivable_kinds_for",
    "get_scale_kind",
    "known_scale_kinds",
    "max_rounding_error",
    "nearest_reconstruction",
    "register_scale_kind",
    "round_to_e4m3",
]

_EPS32 = torch.finfo(torch.float32).eps
E4M3_MAX = 448.0
"""Largest finite FP8 E4M3 (fn) value: NVFP4's block scales are scaled so the tensor's largest block uses it."""
E8M0_EXPONENTS = (-127, 127)
"""Exponent range of an E8M0 scale (2**-127 .. 2**127; the all-ones pattern is NaN)."""


@dataclass(frozen=True)
class DerivedScales:
    """What a kind's rule gives for one tensor, per block (float64).

    ``scales``/``offsets``: the derived scale (signed where the kind is) and offset (None: the kind has none).
    ``alternatives``: other (scales, offsets) equally valid under the rule (the other sign when two elements
    tie for the largest magnitude, the other rounding neighbour when a value sits within float32 rounding of
    a rounding boundary); each element of a check may be satisfied by any of them.
    ``scale_tolerance``/``offset_tolerance``: per-block absolute slack for the float32 arithmetic an
    implementation does on the way ((max - min) / 15 rounds twice); 0 where the rule is exact.
    ``free``: blocks whose scale the rule leaves open (an all-zero block under a rule whose zero-range scale
    is a guard value, e.g. GPTQ's [-1, 1]); the codes alone decide what such a block decodes to.
    """

    scales: torch.Tensor
    offsets: torch.Tensor | None = None
    alternatives: tuple[tuple[torch.Tensor, torch.Tensor | None], ...] = ()
    scale_tolerance: torch.Tensor | None = None
    offset_tolerance: torch.Tensor | None = None
    free: torch.Tensor | None = None

    def candidates(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The derived (scales, offsets) first, then the alternatives."""
        return [(self.scales, self.offsets), *self.alternatives]

    def tolerances(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale tolerance, offset tolerance) per block, zeros where the kind declares none."""
        zeros = torch.zeros_like(self.scales)
        return (
            zeros if self.scale_tolerance is None else self.scale_tolerance,
            zeros if self.offset_tolerance is None else self.offset_tolerance,
        )


Derivation = Callable[[torch.Tensor, int, torch.Tensor], DerivedScales]
"""``derive(flat, block_size, levels)``: flat float64 input, block size, float64 codebook indexed by code."""


@dataclass(frozen=True)
class ScaleKind:
    """A scale kind the harness can check: its rule, its promises, and what it needs of a codebook.

    ``derive`` is None for a kind without a per-block rule (``searched``): its scales cannot be compared, and
    its aggregate error is compared with the derived rules' instead (:func:`derivable_kinds_for`).
    ``formula`` is the rule as the scales check's message shows it (``max|x|``, ``m / L``...).
    ``exact_zero``: the rule can bring an input 0 back exactly (given a 0 level); a spec that promises exact
    zero under a kind that cannot keep it fails the codebook check.
    ``idempotent``: re-quantizing x_hat re-derives the same grid, so the selected levels must not move;
    ``idempotent_where_rederived`` narrows that to the blocks where x_hat re-derives the same scale and offset
    (NVFP4, whose E4M3 block scale may round differently for x_hat's block maximum; affine-int, whose zero
    point rounded half-way clips a block end, so x_hat's range shrinks).
    ``invariance``: the positive factors that leave every code unchanged ("powers of two", "positive
    factors"; None: none promised). The suite multiplies by a power of two, which every such kind allows.
    ``has_offsets``: the rule gives an offset per block (QuantizedTensor.offsets must carry it).
    ``tensor_wide``: the rule reads the whole tensor (NVFP4's per-tensor scale), not only the block.
    ``scale_bits``/``offset_bits``: the fewest bits an honest layout keeps per block scale and offset (an E8M0
    or E4M3 scale is one byte, a GPTQ zero point 4 bits): the storage-size check's lower bound.
    ``codebook_problem(levels)``: why a codebook cannot serve this kind, or None.
    """

    name: str
    rule: str
    derive: Derivation | None
    formula: str = "the rule"
    exact_zero: bool = True
    idempotent: bool = True
    idempotent_where_rederived: bool = False
    invariance: str | None = "powers of two"
    has_offsets: bool = False
    tensor_wide: bool = False
    scale_bits: int = 16
    offset_bits: int = 16
    codebook_problem: Callable[[torch.Tensor], str | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name != self.name.strip():
            raise InvalidArgument(f"ScaleKind.name={self.name!r}, expected a non-empty string without padding")
        if self.derive is not None and not callable(self.derive):
            raise InvalidArgument(f"ScaleKind.derive={self.derive!r}, expected a callable or None")

    @property
    def derivable(self) -> bool:
        return self.derive is not None

    def derive_for(self, x: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
        """The rule applied to ``x`` (any shape; blocks of its flattened values)."""
        if self.derive is None:
            raise InvalidArgument(f"scale kind {self.name!r} has no per-block rule to derive")
        return self.derive(x.detach().reshape(-1).double(), block_size, levels.double())


# ---------------------------------------------------------------------------------------------- helpers


def block_view(flat: torch.Tensor, block_size: int, fill: float = 0.0) -> torch.Tensor:
    """``flat`` as (blocks, block_size), the last block padded with ``fill``."""
    pad = (-flat.numel()) % block_size
    padded = torch.cat([flat, flat.new_full((pad,), fill)]) if pad else flat
    return padded.reshape(-1, block_size)


def _block_min_max(flat: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block min and max over the real elements (padding never counts)."""
    low = block_view(flat, block_size, math.inf).amin(dim=1)
    high = block_view(flat, block_size, -math.inf).amax(dim=1)
    return low, high


def _absmax(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    return block_view(flat.abs(), block_size).amax(dim=1)


def max_rounding_error(levels: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Per block, the largest distance from any y in [low, high] to its nearest level (the farthest a
    nearest-rounding may move a value of that range, saturation at the ends included).

    Distance to the nearest level is piecewise linear, so the maximum is at an end or at a midpoint between
    adjacent levels that lies inside the range.
    """
    values = torch.unique(levels.double())
    low, high = low.double(), high.double()

    def distance(y: torch.Tensor) -> torch.Tensor:
        return (y[:, None] - values[None, :]).abs().amin(dim=1)

    worst = torch.maximum(distance(low), distance(high))
    if values.numel() > 1:
        mids = (values[1:] + values[:-1]) / 2
        half = (values[1:] - values[:-1]) / 2
        inside = (mids[None, :] >= low[:, None]) & (mids[None, :] <= high[:, None])
        worst = torch.maximum(
            worst, torch.where(inside, half[None, :], torch.zeros_like(inside, dtype=half.dtype)).amax(dim=1)
        )
    return worst


def nearest_reconstruction(
    flat: torch.Tensor, block_size: int, levels: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None
) -> torch.Tensor:
    """What exact nearest rounding onto ``levels * scale + offset`` per block gives (float64): the harness's own
    reference for a derivable kind (a block of scale 0 decodes to its offset)."""
    flat = flat.double()
    numel = flat.numel()
    per_scale = scales.double().repeat_interleave(block_size)[:numel]
    per_offset = (
        torch.zeros_like(per_scale) if offsets is None else offsets.double().repeat_interleave(block_size)[:numel]
    )
    out = torch.empty_like(flat)
    chunk = 1 << 16
    for start in range(0, numel, chunk):
        stop = min(start + chunk, numel)
        grid = levels.double()[None, :] * per_scale[start:stop, None] + per_offset[start:stop, None]
        best = (flat[start:stop, None] - grid).abs().argmin(dim=1)
        out[start:stop] = grid.gather(1, best[:, None]).squeeze(1)
    return out


def round_to_e4m3(values: torch.Tensor) -> torch.Tensor:
    """Round to FP8 E4M3 (fn) nearest-even, saturating at +-448, as float64 (subnormals down to 2**-9)."""
    clamped = values.double().clamp(-E4M3_MAX, E4M3_MAX)
    return clamped.to(torch.float8_e4m3fn).double()


def _nudged(values: torch.Tensor, ulps: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` moved down and up by a few float32 ulps: inputs of a rounding step that an implementation
    computing in float32 may see instead of the exact value."""
    delta = values.abs() * ulps * _EPS32
    return values - delta, values + delta


# ---------------------------------------------------------------------------------------------- the rules


def _derive_absmax(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
    return DerivedScales(scales=_absmax(flat, block_size))


def _extreme_level(levels: torch.Tensor) -> float:
    """The level of largest magnitude (Q4_0's -8)."""
    return float(levels[levels.abs().argmax()])


def _signed_absmax_codebook(levels: torch.Tensor) -> str | None:
    extreme = _extreme_level(levels)
    if extreme == 0:
        return "every level is 0"
    if bool((levels == -extreme).any()):
        return f"both {extreme!r} and {-extreme!r} are levels: the sign of the scale is ambiguous"
    return None


def _derive_signed_absmax(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
    """d = m / L: m the block's signed value of largest magnitude (the first, as llama.cpp keeps it), L the
    level of largest magnitude, so m comes back exactly. A tie between +a and -a makes -d valid too."""
    extreme = _extreme_level(levels)
    blocks = block_view(flat, block_size)
    first = blocks.abs().argmax(dim=1)
    signed = blocks.gather(1, first[:, None]).squeeze(1)
    scales = signed / extreme
    amax = blocks.abs().amax(dim=1)
    tie = ((blocks == -signed[:, None]) & (amax[:, None] > 0)).any(dim=1)
    alternative = torch.where(tie, -scales, scales)
    return DerivedScales(scales=scales, alternatives=((alternative, None),), scale_tolerance=scales.abs() * _EPS32)


def _range_codebook(levels: torch.Tensor) -> str | None:
    return "all levels are equal" if float(levels.max()) == float(levels.min()) else None


def _derive_minmax(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
    """scale = (max - min) / (Lmax - Lmin), offset = min - Lmin * scale (Q4_1/quanto with levels 0..15:
    (max - min) / 15 and min). float32 arithmetic rounds max - min and the division: a few ulps of the
    block's range are allowed."""
    low, high = _block_min_max(flat, block_size)
    span = float(levels.max() - levels.min())
    scales = (high - low) / span
    offsets = low - float(levels.min()) * scales
    reach = torch.maximum(low.abs(), high.abs())
    return DerivedScales(
        scales=scales, offsets=offsets, scale_tolerance=4 * _EPS32 * reach / span, offset_tolerance=4 * _EPS32 * reach
    )


def _integer_codebook(levels: torch.Tensor) -> str | None:
    if not bool((levels == levels.round()).all()):
        return "the levels are not integers (an integer zero point needs an integer grid)"
    return _range_codebook(levels)


def _derive_affine_int(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
    """GPTQ: the range [min(x, 0), max(x, 0)], scale = range / (Lmax - Lmin), integer zero point
    z = Lmin + round(-min / scale), offset = -z * scale, so x ~ (L - z) * scale and 0 is a grid point.
    An all-zero block's scale is free (GPTQ guards it with the range [-1, 1]); a zero point exactly half-way
    may round either way."""
    low, high = _block_min_max(flat, block_size)
    low, high = low.clamp(max=0), high.clamp(min=0)
    lmin = float(levels.min())
    scales = (high - low) / float(levels.max() - lmin)
    free = scales == 0
    safe = torch.where(free, torch.ones_like(scales), scales)
    raw = -low / safe
    zero = lmin + torch.round(raw)
    near_half = ((raw - torch.floor(raw)) - 0.5).abs() <= 1e-5
    other = torch.floor(raw) + torch.ceil(raw) - torch.round(raw)  # the other neighbour of a near-tie
    alt_zero = torch.where(near_half, lmin + other, zero)
    reach = torch.maximum(low.abs(), high.abs())
    tolerance = 4 * _EPS32 * reach / float(levels.max() - lmin)
    return DerivedScales(
        scales=scales,
        offsets=-zero * scales,
        alternatives=((scales, -alt_zero * scales),),
        scale_tolerance=tolerance,
        offset_tolerance=float(levels.abs().max()) * tolerance,
        free=free,
    )


def _positive_max_codebook(levels: torch.Tensor) -> str | None:
    return "the levels have no non-zero magnitude" if float(levels.abs().max()) == 0 else None


def _derive_e8m0(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
    """MXFP4: scale = 2**(floor(log2 amax) - emax_elem), emax_elem = floor(log2 max|L|) (2 for E2M1's 6), the
    exponent clamped to E8M0's range. Exact in floating point; an implementation that takes log2 in float32
    may see an amax a few ulps below a power of two as that power (the alternative). All-zero blocks: free."""
    amax = _absmax(flat, block_size)
    emax_elem = math.floor(math.log2(float(levels.abs().max())))
    low, high = E8M0_EXPONENTS

    def scale_of(values: torch.Tensor) -> torch.Tensor:
        _, exponent = torch.frexp(values)  # values = mantissa * 2**exponent, mantissa in [0.5, 1)
        power = (exponent - 1 - emax_elem).clamp(low, high)
        return torch.ldexp(torch.ones_like(values), power)

    free = amax == 0
    scales = torch.where(free, torch.zeros_like(amax), scale_of(amax))
    _, up = _nudged(amax)
    return DerivedScales(scales=scales, alternatives=((torch.where(free, scales, scale_of(up)), None),), free=free)


def _derive_e4m3_tensor(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> DerivedScales:
    """NVFP4: a float32 per-tensor scale s_t = amax(tensor) / (max|L| * 448) and an FP8 E4M3 block scale
    s_b = e4m3(amax(block) / (max|L| * s_t)); the block's scale is s_b * s_t. The E4M3 rounding of a value
    within float32 rounding of a rounding boundary may go either way (the alternatives)."""
    top = float(levels.abs().max())
    amax = _absmax(flat, block_size)
    tensor_amax = float(amax.max()) if amax.numel() else 0.0
    if tensor_amax == 0:
        zeros = torch.zeros_like(amax)
        return DerivedScales(scales=zeros, free=torch.ones_like(amax, dtype=torch.bool))
    per_tensor = float(torch.tensor(tensor_amax / (top * E4M3_MAX), dtype=torch.float32))
    unrounded = amax / (top * per_tensor)
    down, up = _nudged(unrounded)
    scales = round_to_e4m3(unrounded) * per_tensor
    alternatives = tuple((round_to_e4m3(v) * per_tensor, None) for v in (down, up))
    return DerivedScales(scales=scales, alternatives=alternatives, scale_tolerance=4 * _EPS32 * scales.abs())


KIND_ABSMAX = ScaleKind(
    name=SCALE_ABSMAX,
    rule="scale = max |x| of the block; levels +-1 carry the block's largest element exactly",
    derive=_derive_absmax,
    formula="max|x|",
    invariance="positive factors",
    codebook_problem=lambda levels: (
        None if bool((levels == 1).any()) and bool((levels == -1).any()) else "absmax needs the levels 1 and -1"
    ),
)
KIND_SIGNED_ABSMAX = ScaleKind(
    name=SCALE_SIGNED_ABSMAX,
    rule="scale = m / L: m the block's signed value of largest magnitude, L the level of largest magnitude "
    "(llama.cpp Q4_0: levels k - 8, d = m / -8)",
    derive=_derive_signed_absmax,
    formula="m / L (m: the block's signed value of largest magnitude)",
    invariance="positive factors",
    codebook_problem=_signed_absmax_codebook,
)
KIND_MINMAX = ScaleKind(
    name=SCALE_MINMAX,
    rule="scale = (max - min) / (Lmax - Lmin), float offset = min - Lmin * scale (Q4_1/quanto: levels 0..15, "
    "x ~ k * scale + min)",
    derive=_derive_minmax,
    formula="(max - min) / (Lmax - Lmin)",
    exact_zero=False,
    invariance="positive factors",
    has_offsets=True,
    codebook_problem=_range_codebook,
)
AFFINE_INT = ScaleKind(
    name=SCALE_AFFINE_INT,
    rule="scale = (max(x, 0) - min(x, 0)) / (Lmax - Lmin), integer zero point z = Lmin + round(-min(x, 0) / "
    "scale), offset = -z * scale (GPTQ/AWQ: x ~ (k - z) * scale)",
    derive=_derive_affine_int,
    formula="(max(x,0) - min(x,0)) / (Lmax - Lmin)",
    idempotent_where_rederived=True,
    invariance="positive factors",
    offset_bits=4,
    has_offsets=True,
    codebook_problem=_integer_codebook,
)
E8M0 = ScaleKind(
    name=SCALE_E8M0,
    rule="scale = 2**(floor(log2 max|x|) - emax_elem), emax_elem = floor(log2 max|L|) (MXFP4: E2M1 levels, "
    "emax_elem = 2, blocks of 32, saturating to +-6)",
    derive=_derive_e8m0,
    formula="2**(floor(log2 max|x|) - emax_elem)",
    invariance="powers of two",
    scale_bits=8,
    codebook_problem=_positive_max_codebook,
)
E4M3_TENSOR = ScaleKind(
    name=SCALE_E4M3_TENSOR,
    rule="scale = e4m3(max|x| / (max|L| * s_t)) * s_t, s_t = max|tensor| / (max|L| * 448) in float32 "
    "(NVFP4: E2M1 levels, blocks of 16)",
    derive=_derive_e4m3_tensor,
    formula="e4m3(max|x| / (max|L| * s_t)) * s_t",
    idempotent_where_rederived=True,
    invariance="powers of two",
    tensor_wide=True,
    scale_bits=8,
    codebook_problem=_positive_max_codebook,
)
SEARCHED = ScaleKind(
    name=SCALE_SEARCHED,
    rule="the implementation optimises its scale (and offset) per block; its aggregate error over Gaussian "
    "blocks must be no worse than the best derived rule's for its codebook",
    derive=None,
    formula="an optimised scale",
    idempotent=False,
    invariance=None,
)

_REGISTRY: dict[str, ScaleKind] = {
    kind.name: kind for kind in (KIND_ABSMAX, KIND_SIGNED_ABSMAX, KIND_MINMAX, AFFINE_INT, E8M0, E4M3_TENSOR, SEARCHED)
}


def register_scale_kind(kind: ScaleKind) -> ScaleKind:
    """Make ``kind`` known to the checks under ``kind.name`` (a plugin does this at import, before building the
    FormatSpec that names it). Registering the same object again is a no-op; another kind under a taken name
    is an InvalidArgument."""
    if not isinstance(kind, ScaleKind):
        raise InvalidArgument(f"kind={kind!r}, expected a harness.scale_kinds.ScaleKind")
    existing = _REGISTRY.get(kind.name)
    if existing is not None and existing is not kind and existing != kind:
        raise InvalidArgument(f"scale kind {kind.name!r} is already registered with another rule")
    _REGISTRY[kind.name] = kind
    return kind


def get_scale_kind(name: str) -> ScaleKind | None:
    """The registered kind of that name, or None (a declared kind the harness cannot derive)."""
    return _REGISTRY.get(name)


def known_scale_kinds() -> tuple[str, ...]:
    """Names of every registered kind, built-ins first."""
    return tuple(_REGISTRY)


def derivable_kinds_for(levels: torch.Tensor, *, has_offsets: bool) -> list[ScaleKind]:
    """The derivable kinds whose rule fits this codebook and offset use: what a ``searched`` scale is measured
    against (an optimised scale must do at least as well as any rule it could have used)."""
    kinds = []
    for kind in _REGISTRY.values():
        if kind.derive is None or kind.has_offsets != has_offsets:
            continue
        if kind.codebook_problem is not None and kind.codebook_problem(levels.double()) is not None:
            continue
        kinds.append(kind)
    return kinds
