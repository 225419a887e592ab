"""Agreement between two implementations of one format on the same input: codes, levels, outputs, bytes.

Two correct implementations of a format may still choose different codes, but only for reasons the formats
and the arithmetic explain, and :func:`compare_pair` measures each:

* +0 and -0 codes (bitsandbytes' FP4) decode to the same value: *level* agreement counts them as equal,
  raw *code* agreement does not. Levels are compared by their rank among the codebook's distinct values,
  so codebooks that differ only by rounding (torchao's NF4 table has 4 decimals) still line up.
* Where the levels differ, ``y = x / scale`` must lie within a few ulp of the compute dtype
  (``COMPUTE_ULPS``, the nearest-code tolerance) of a decision midpoint between them. Each
  side's level is judged against its *own* codebook's midpoints (so values between the two tables'
  midpoints are allowed) and against ``x / absmax`` (``x / the derived scale`` for the other offset-free
  kinds of harness.scale_kinds: signed-absmax, e8m0, e4m3-tensor) or, under double quantization,
  ``x / its own stored scale`` (so 8-bit scales may move the decision). Disagreements explained only by the
  table or only by the stored scale are counted as such: measured facts, not failures.
* Stored scales may differ by at most the two sides' double-quantization bounds (zero without it).
* ``|x_hat1 - x_hat2|`` is bounded per element by the formats: where levels agree, the table difference
  times the scale plus the largest level times the allowed scale difference; where they differ, each side
  is off from ``x`` by at most half the widest gap of its grid times its scale, plus the same scale term.
* Packed bytes (same declared nibble order) are equal exactly where both codes of the byte are.

Everything here is a pure function of tensors (the suite runs the quantizers and records what
:class:`PairAgreement` measured); the summary draws the recorded rates as a pair matrix
(:mod:`harness.report.matrix`, declared by the suite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.api import PACKING_HIGH_FIRST, SCALE_ABSMAX, QuantizedTensor, Quantizer
from harness.checks._common import COMPUTE_ULPS, OUTPUT_ULPS, NotApplicable, derived_scales, describe_element
from harness.checks.levels import LevelGrid, coarser, distance_to_cell_ulps, level_grid, normalized, ulp
from harness.checks.scales import double_quant_bound
from harness.formats.packing import packed_size
from harness.quantizers.blockwise import absmax_per_block
from harness.scale_kinds import block_view, get_scale_kind, max_rounding_error

__all__ = [
    "MIDPOINT_ULPS",
    "LevelGrid",
    "PairAgreement",
    "check_comparable",
    "compare_pair",
    "distance_to_cell_ulps",
    "level_grid",
    "matmul_tolerance",
    "ulp",
]

MIDPOINT_ULPS = COMPUTE_ULPS
"""How far (in compute-dtype ulps) from a decision midpoint two implementations may still disagree: the same
allowance the nearest-code property gives one implementation (rounding of x / scale, of the midpoint, and of
distance comparisons)."""

_CHUNK_ELEMENTS = 1 << 20
"""Elements per pass of the element-wise comparison: keeps the float64 temporaries in cache-sized pieces."""


# ---------------------------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class PairAgreement:
    """What :func:`compare_pair` measured for one pair on one input; ``violations()`` says what failed.

    Counts are elements unless named otherwise. ``level_disagreements`` split into ``at_midpoint`` (within
    :data:`MIDPOINT_ULPS` of a midpoint of the first side's table, under x / absmax), ``explained_by_codebook``
    (only within the allowance of each side's own table), ``explained_by_scale`` (only under a side's own
    stored scale), ``in_dead_blocks`` (a stored scale of 0 decodes the block to zeros whatever its codes)
    and ``off_midpoint`` (none of these: a failure).
    """

    first: str
    second: str
    numel: int
    code_agreement: float
    level_agreement: float
    code_disagreements: int
    level_disagreements: int
    at_midpoint: int
    explained_by_codebook: int
    explained_by_scale: int
    in_dead_blocks: int
    off_midpoint: int
    max_midpoint_distance_ulps: float
    codebook_max_diff: float
    scale_max_rel_diff: float
    scales_beyond_bound: int
    max_abs_diff: float
    mean_abs_diff: float
    diffs_beyond_bound: int
    packed_agreement: float | None
    packed_mismatches: int
    details: tuple[str, ...] = ()

    def violations(self) -> list[str]:
        """One message per broken expectation (empty when the pair agrees as the formats allow)."""
        return list(self.details)


@dataclass(frozen=True)
class _Side:
    name: str
    grid: LevelGrid
    codes: torch.Tensor  # flat uint8
    scales: torch.Tensor  # float64 per block, as reported (signed for signed-absmax)
    scale_bound: torch.Tensor  # float64 per block: the allowed |scale - derived scale|
    double_quantized: bool  # codes may then be chosen against the stored scale
    xhat: torch.Tensor  # flat, in the implementation's output dtype
    compute_dtype: torch.dtype
    packing: str | None
    packed: torch.Tensor | None


def _side(
    quantizer: Quantizer, q: QuantizedTensor, xhat: torch.Tensor, true_scales: torch.Tensor, input_dtype: torch.dtype
) -> _Side:
    spec = quantizer.spec
    assert spec.codebook is not None  # check_comparable ran first
    if q.codes is None or q.scales is None:
        raise NotApplicable(f"{quantizer.name} reports no codes or scales (black box); agreement needs both")
    if q.offsets is not None:
        raise NotApplicable(
            f"{quantizer.name} reports offsets: agreement covers offset-free scale kinds (absmax, signed-absmax, "
            "e8m0, e4m3-tensor)"
        )
    packed = q.storage.get("packed")
    return _Side(
        name=quantizer.name,
        grid=level_grid(spec.codebook),
        codes=q.codes.reshape(-1),
        scales=q.scales.reshape(-1).double(),
        scale_bound=double_quant_bound(spec, true_scales.abs()),
        double_quantized=spec.double_quant is not None,
        xhat=xhat.reshape(-1),
        compute_dtype=quantizer.capabilities.compute_dtype_for(input_dtype),
        packing=spec.packing,
        packed=packed if isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8 else None,
    )


def _codebook_difference(first: str, first_grid: LevelGrid, second: str, second_grid: LevelGrid) -> float:
    """max |difference| between the two grids' sorted levels; NotApplicable when they are not one grid."""
    a, b = first_grid.levels, second_grid.levels
    if a.numel() != b.numel():
        raise NotApplicable(
            f"{first} has {a.numel()} distinct levels, {second} {b.numel()}: not the same grid, so "
            "levels cannot be paired (the codebook property judges each table)"
        )
    difference = float((a - b).abs().max())
    narrowest = float(torch.cat([a.diff(), b.diff()]).min())
    if difference >= narrowest / 2:
        raise NotApplicable(
            f"the tables of {first} and {second} differ by {difference:.6g}, at least half their "
            f"narrowest gap ({narrowest:.6g}): levels of equal rank are not the same level"
        )
    return difference


def _output_differences(
    first: torch.Tensor, second: torch.Tensor, block_size: int, excluded: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    """Per block, the largest |first - second| over elements not in ``excluded`` (sorted flat indices); and the
    max and the sum of |first - second| over all elements. Differences are taken in float64 (exact for float32
    and 16-bit outputs of similar size), a cache-sized chunk of whole blocks at a time into reused buffers."""
    numel = first.numel()
    block_max = torch.zeros(-(-numel // block_size), dtype=torch.float64)
    chunk = max(_CHUNK_ELEMENTS // block_size, 1) * block_size
    buffer = torch.empty(min(chunk, numel), dtype=torch.float64)
    other = torch.empty(min(chunk, numel), dtype=torch.float64)
    diff_max, diff_sum = 0.0, 0.0
    for start in range(0, numel, chunk):
        stop = min(start + chunk, numel)
        diff = buffer[: stop - start].copy_(first[start:stop])
        diff.sub_(other[: stop - start].copy_(second[start:stop])).abs_()
        diff_max = max(diff_max, float(diff.max()))
        diff_sum += float(diff.sum())
        low, high = (int(i) for i in torch.searchsorted(excluded, torch.tensor([start, stop])))
        if high > low:
            diff.index_fill_(0, excluded[low:high] - start, 0.0)
        full = (stop - start) - (stop - start) % block_size
        first_block = start // block_size
        if full:
            block_max[first_block : first_block + full // block_size] = diff[:full].view(-1, block_size).amax(dim=1)
        if full < stop - start:
            block_max[-1] = diff[full:].amax()
    return block_max, diff_max, diff_sum


def check_comparable(first: Quantizer, second: Quantizer) -> None:
    """Raise NotApplicable unless the two specs allow the comparison: one scale kind the harness derives and
    that has no offsets (absmax, signed-absmax, e8m0, e4m3-tensor), a declared codebook each, one block size,
    and tables that are one grid (same number of distinct levels, apart by less than half the narrowest gap).
    Cheap: the suite calls it before quantizing anything."""
    for quantizer in (first, second):
        if quantizer.spec.codebook is None:
            raise NotApplicable(f"{quantizer.name} declares no codebook; agreement of levels needs one")
        kind = get_scale_kind(quantizer.spec.scale)
        if kind is None or not kind.derivable or kind.has_offsets:
            raise NotApplicable(
                f"{quantizer.name} has scale kind {quantizer.spec.scale!r}: agreement is judged on y = x / the "
                "derived scale, which the harness derives for absmax, signed-absmax, e8m0 and e4m3-tensor only"
            )
    if first.spec.scale != second.spec.scale:
        raise NotApplicable(
            f"scale kinds differ ({first.name}: {first.spec.scale!r}, {second.name}: {second.spec.scale!r})"
        )
    if first.spec.block_size != second.spec.block_size:
        raise NotApplicable(
            f"block sizes differ ({first.name}: {first.spec.block_size}, {second.name}: {second.spec.block_size})"
        )
    assert first.spec.codebook is not None and second.spec.codebook is not None  # checked above, for mypy
    _codebook_difference(first.name, level_grid(first.spec.codebook), second.name, level_grid(second.spec.codebook))


def compare_pair(
    x: torch.Tensor,
    first: Quantizer,
    q_first: QuantizedTensor,
    xhat_first: torch.Tensor,
    second: Quantizer,
    q_second: QuantizedTensor,
    xhat_second: torch.Tensor,
) -> PairAgreement:
    """Compare two implementations' quantizations of the same ``x`` (same block size): see the module docstring.

    Raises NotApplicable (the suite skips with its reason) for black boxes, non-absmax scale kinds, offsets,
    different block sizes, or tables that are not the same grid.
    """
    check_comparable(first, second)
    block_size = first.spec.block_size
    flat = x.detach().reshape(-1)
    numel = flat.numel()
    rule_tolerance: torch.Tensor | None = None
    if first.spec.scale == SCALE_ABSMAX:
        true_scales = absmax_per_block(flat.float(), block_size).double()  # exact: float32 holds every 16-bit value
    else:
        derived = derived_scales(first, x)
        if derived is None:
            raise NotApplicable(f"{first.name}: its codebook does not fit scale kind {first.spec.scale!r}")
        true_scales, rule_tolerance = derived.scales, derived.tolerances()[0]
    a = _side(first, q_first, xhat_first, true_scales, x.dtype)
    b = _side(second, q_second, xhat_second, true_scales, x.dtype)
    codebook_diff = _codebook_difference(a.name, a.grid, b.name, b.grid)
    allowed_scale_diff = a.scale_bound + b.scale_bound
    if rule_tolerance is not None:  # float32 arithmetic of the rule (the E4M3 scale times the tensor scale)
        allowed_scale_diff = allowed_scale_diff + 2 * rule_tolerance
    details: list[str] = []

    # Scales: within the two double-quantization bounds of each other (equal without double quantization).
    scale_diff = (a.scales - b.scales).abs()
    live_true = true_scales != 0
    scale_max_rel_diff = float((scale_diff[live_true] / true_scales[live_true].abs()).max()) if live_true.any() else 0.0
    scale_excess = scale_diff - allowed_scale_diff
    scales_beyond = int((scale_excess > 0).sum())
    if scales_beyond:
        block = int(scale_excess.argmax())
        details.append(
            f"{scales_beyond} block scales differ by more than the double-quantization bounds allow, worst block "
            f"{block} (elements {block * block_size}..): {a.name} {float(a.scales[block])!r}, {b.name} "
            f"{float(b.scales[block])!r}, max|x| {float(true_scales[block])!r}, allowed difference "
            f"{float(allowed_scale_diff[block]):.6g}"
        )

    # Codes and levels: with one code -> level map, levels can differ only where codes do.
    code_mismatch = a.codes != b.codes
    code_differ = code_mismatch.nonzero().squeeze(1)
    if torch.equal(a.grid.level_of_code, b.grid.level_of_code):
        suspects = code_differ
    else:  # tables that order their levels differently: an equal code may be a different level
        codes = a.codes.long()
        suspects = (code_mismatch | (a.grid.level_of_code[codes] != b.grid.level_of_code[codes])).nonzero().squeeze(1)
    level_a = a.grid.level_of_code[a.codes[suspects].long()]
    level_b = b.grid.level_of_code[b.codes[suspects].long()]
    level_differ = level_a != level_b
    where, chosen_a, chosen_b = suspects[level_differ], level_a[level_differ], level_b[level_differ]
    blocks = where // block_size

    # Outputs: per-block bounds where levels agree, per-element ones where they differ.
    eps = torch.finfo(coarser(a.compute_dtype, b.compute_dtype)).eps
    half_gap = max(a.grid.half_gap(), b.grid.half_gap())
    largest_level = max(a.grid.largest_magnitude, b.grid.largest_magnitude)
    # |x_hat| <= largest level * scale, rounded to float32 and to its own dtype: eps * that bounds each rounding
    scales_a, scales_b, magnitudes = a.scales.abs(), b.scales.abs(), true_scales.abs()
    rounding = OUTPUT_ULPS * largest_level * (
        scales_a * (torch.finfo(a.xhat.dtype).eps + torch.finfo(torch.float32).eps)
        + scales_b * (torch.finfo(b.xhat.dtype).eps + torch.finfo(torch.float32).eps)
    ) + 2 * (torch.finfo(a.xhat.dtype).smallest_normal + torch.finfo(b.xhat.dtype).smallest_normal)
    agree_bound = codebook_diff * torch.maximum(scales_a, scales_b) + largest_level * allowed_scale_diff + rounding
    # a level chosen within MIDPOINT_ULPS of a midpoint may be that much more than half a gap away from x; for a
    # kind whose grid saturates (Q4_0's +8, MXFP4's values up to 8 x scale) the farthest is the block's own
    # largest rounding error on its derived grid
    if first.spec.scale == SCALE_ABSMAX:
        err_a = err_b = torch.full_like(true_scales, half_gap)
    else:
        err_a, err_b = (_rounding_error(side.grid, flat, true_scales, block_size) for side in (a, b))
    differ_bound = (
        (err_a + MIDPOINT_ULPS * eps * largest_level) * torch.maximum(magnitudes, scales_a)
        + (err_b + MIDPOINT_ULPS * eps * largest_level) * torch.maximum(magnitudes, scales_b)
        + largest_level * allowed_scale_diff
        + rounding
    )
    block_max, diff_max, diff_sum = _output_differences(a.xhat, b.xhat, block_size, where)
    beyond_blocks = (block_max > agree_bound).nonzero().squeeze(1)
    differ_diff = (a.xhat[where].double() - b.xhat[where].double()).abs()
    differ_excess = differ_diff - differ_bound[blocks]
    candidates = [(differ_excess, where)]
    if beyond_blocks.numel():  # only when failing: element by element inside the offending blocks
        inside = (beyond_blocks[:, None] * block_size + torch.arange(block_size)).reshape(-1)
        inside = inside[inside < numel]
        inside = inside[~torch.isin(inside, where)]
        inside_excess = (a.xhat[inside].double() - b.xhat[inside].double()).abs() - agree_bound[inside // block_size]
        candidates.append((inside_excess, inside))
    excess = torch.cat([c[0] for c in candidates])
    positions = torch.cat([c[1] for c in candidates])
    diffs_beyond = int((excess > 0).sum())
    if diffs_beyond:
        i = int(positions[int(excess.argmax())])
        details.append(
            f"{diffs_beyond} elements have |x_hat1 - x_hat2| beyond what the formats allow, worst "
            f"{describe_element(x, i)}: {a.name} -> {float(a.xhat[i])!r} (code {int(a.codes[i])}), {b.name} -> "
            f"{float(b.xhat[i])!r} (code {int(b.codes[i])}), excess {float(excess.max()):.6g}"
        )

    # Where the levels differ: distance of y from each side's decision cell, under the candidate scales.
    values = flat[where].double()
    y_true = normalized(values, true_scales[blocks])
    y_a, y_b = normalized(values, a.scales[blocks]), normalized(values, b.scales[blocks])
    a_true = distance_to_cell_ulps(y_true, chosen_a, a.grid, a.compute_dtype)
    b_true = distance_to_cell_ulps(y_true, chosen_b, b.grid, b.compute_dtype)
    # a stored scale is a candidate only under double quantization (otherwise it must be the absmax itself)
    a_stored = distance_to_cell_ulps(y_a, chosen_a, a.grid, a.compute_dtype) if a.double_quantized else a_true
    b_stored = distance_to_cell_ulps(y_b, chosen_b, b.grid, b.compute_dtype) if b.double_quantized else b_true
    # one common table (the first side's) and x / absmax: a plain disagreement at a midpoint
    common = torch.maximum(a_true, distance_to_cell_ulps(y_true, chosen_b, a.grid, b.compute_dtype))
    # each side's own table, x / absmax
    own_tables = torch.maximum(a_true, b_true)
    # each side's own table, x / absmax or x / its own stored scale
    explained = torch.maximum(torch.minimum(a_true, a_stored), torch.minimum(b_true, b_stored))
    dead = ((a.scales == 0) | (b.scales == 0))[blocks]
    within = MIDPOINT_ULPS
    at_midpoint = ~dead & (common <= within)
    by_codebook = ~dead & ~at_midpoint & (own_tables <= within)
    by_scale = ~dead & ~at_midpoint & ~by_codebook & (explained <= within)
    off = ~dead & (explained > within)
    live_distances = explained[~dead]
    if bool(off.any()):
        worst = int(torch.where(off, explained, torch.full_like(explained, -math.inf)).argmax())
        i = int(where[worst])
        details.append(
            f"{int(off.sum())} level disagreements lie farther than {within} ulp from any decision midpoint, "
            f"worst {describe_element(x, i)}: x / max|x| = {float(y_true[worst])!r}, {a.name} chose level "
            f"{float(a.grid.levels[chosen_a[worst]])!r} (code {int(a.codes[i])}, stored scale "
            f"{float(a.scales[blocks[worst]])!r}), {b.name} chose {float(b.grid.levels[chosen_b[worst]])!r} "
            f"(code {int(b.codes[i])}, stored scale {float(b.scales[blocks[worst]])!r}); "
            f"{float(explained[worst]):.4g} ulp from the nearest allowed decision"
        )

    packed_agreement, packed_mismatches = _compare_packed(a, b, numel, code_differ, details)
    return PairAgreement(
        first=a.name,
        second=b.name,
        numel=numel,
        code_agreement=1 - code_differ.numel() / numel,
        level_agreement=1 - where.numel() / numel,
        code_disagreements=code_differ.numel(),
        level_disagreements=where.numel(),
        at_midpoint=int(at_midpoint.sum()),
        explained_by_codebook=int(by_codebook.sum()),
        explained_by_scale=int(by_scale.sum()),
        in_dead_blocks=int(dead.sum()),
        off_midpoint=int(off.sum()),
        max_midpoint_distance_ulps=float(live_distances.max()) if live_distances.numel() else 0.0,
        codebook_max_diff=codebook_diff,
        scale_max_rel_diff=scale_max_rel_diff,
        scales_beyond_bound=scales_beyond,
        max_abs_diff=diff_max,
        mean_abs_diff=diff_sum / numel,
        diffs_beyond_bound=diffs_beyond,
        packed_agreement=packed_agreement,
        packed_mismatches=packed_mismatches,
        details=tuple(details),
    )


def _rounding_error(grid: LevelGrid, flat: torch.Tensor, scales: torch.Tensor, block_size: int) -> torch.Tensor:
    """Per block, the farthest a nearest level of ``grid`` lies from any y = x / scale in the block's range."""
    per_scale = scales.repeat_interleave(block_size)[: flat.numel()]
    y = normalized(flat.double(), per_scale)
    low = block_view(y, block_size, math.inf).amin(dim=1)
    high = block_view(y, block_size, -math.inf).amax(dim=1)
    error = max_rounding_error(grid.levels, low.clamp(min=-1e300), high.clamp(max=1e300))
    return torch.where(scales == 0, torch.zeros_like(error), error)


def _compare_packed(
    a: _Side, b: _Side, numel: int, code_differ: torch.Tensor, details: list[str]
) -> tuple[float | None, int]:
    """Fraction of equal packed bytes (None when the two do not both store ``packed`` in one declared order),
    and how many bytes break "equal bytes exactly where both of their codes are equal".

    With an odd element count the last byte's second nibble is padding: only its first nibble is compared.
    """
    if a.packing is None or a.packing != b.packing or a.packed is None or b.packed is None:
        return None, 0
    size = packed_size(numel)
    if a.packed.numel() != size or b.packed.numel() != size:
        return None, 0  # a malformed packed tensor is the packing property's failure, not a pair's
    bytes_a, bytes_b = a.packed.reshape(-1), b.packed.reshape(-1)
    codes_equal = torch.ones(size, dtype=torch.bool)
    codes_equal[code_differ // 2] = False
    bytes_equal = bytes_a == bytes_b
    if numel % 2:
        significant = 0xF0 if a.packing == PACKING_HIGH_FIRST else 0x0F
        bytes_equal[-1] = bool((bytes_a[-1] & significant) == (bytes_b[-1] & significant))
    mismatched = (bytes_equal != codes_equal).nonzero().squeeze(1)
    if mismatched.numel():
        i = int(mismatched[0])
        details.append(
            f"{mismatched.numel()} packed bytes break 'equal bytes exactly where codes are equal', first byte {i}: "
            f"{a.name} 0x{int(bytes_a[i]):02x}, {b.name} 0x{int(bytes_b[i]):02x}, codes "
            f"{a.codes[2 * i : 2 * i + 2].tolist()} vs {b.codes[2 * i : 2 * i + 2].tolist()}"
        )
    return float(bytes_equal.double().mean()), int(mismatched.numel())


# ---------------------------------------------------------------------------------------------- matmul


def matmul_tolerance(
    x: torch.Tensor, weight: torch.Tensor, expected: torch.Tensor, actual: torch.Tensor
) -> torch.Tensor:
    """Largest |actual - expected| per output element of ``x @ weight.T`` that two correct kernels may show,
    given that both multiply x by the same weights.

    Each sums K = ``x.shape[-1]`` products. In any order, with unit roundoff u, the computed sum is within
    gamma_K * sum_k |x_k w_k| of the exact one, gamma_K = K u / (1 - K u) (Higham, Accuracy and Stability of
    Numerical Algorithms, 3.1; product roundings included); either side may err, so twice that. The
    accumulator is taken to be float32 (float64 for float64 inputs): what PyTorch and bitsandbytes use for
    16-bit inputs. A kernel that accumulates in bfloat16 exceeds this, as it should: its error grows with K at
    bfloat16's precision. Each side then rounds its sum to x's dtype once, off by at most
    u_out |result| / (1 - u_out).
    """
    dtype = x.dtype
    accumulate = torch.float64 if dtype == torch.float64 else torch.float32
    reduction = x.shape[-1]
    unit = torch.finfo(accumulate).eps / 2
    gamma = reduction * unit / (1 - reduction * unit)
    unit_out = torch.finfo(dtype).eps / 2
    magnitude = x.double().abs() @ weight.double().abs().T
    outputs = expected.double().abs() + actual.double().abs()
    smallest_subnormal = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    return magnitude * 2 * gamma + outputs * unit_out / (1 - unit_out) + 2 * smallest_subnormal
