"""harness.checks.agreement on constructed pairs whose answer is known by construction, on the quantizer zoo; and the
suite's declaration of its summary (the matrix itself is rendered in tests/test_report.py)."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.api import DoubleQuant, QuantizedTensor, Quantizer
from harness.checks import NotApplicable, double_quant_bound
from harness.checks.agreement import (
    MIDPOINT_ULPS,
    PairAgreement,
    compare_pair,
    level_grid,
    matmul_tolerance,
    ulp,
)
from harness.checks.inputs import InputRecipe
from harness.formats.packing import pack_nibbles
from harness.quantizers.reference import ReferenceQuantizer
from harness.results.records import SuiteSummary
from tests import zoo

BLOCK = 64


# ---------------------------------------------------------------------------------------------- helpers


def _anchored(values: list[float]) -> torch.Tensor:
    """One block: +1 and -1 (so the block's absmax is exactly 1 and y = x / absmax = x), then ``values``
    (float32-rounded), zero-filled to BLOCK elements."""
    block = torch.zeros(BLOCK, dtype=torch.float32)
    block[:2] = torch.tensor([1.0, -1.0])
    block[2 : 2 + len(values)] = torch.tensor(values, dtype=torch.float64).float()
    return block


def _with_codes(
    quantizer: Quantizer, q: QuantizedTensor, codes: torch.Tensor, scales: torch.Tensor | None = None
) -> tuple[QuantizedTensor, torch.Tensor]:
    """What a second, table-based implementation would report for these codes (and scales): the codes, packed
    bytes that hold them, and codebook[code] * scale as its float32 output."""
    scales = q.scales if scales is None else scales
    assert scales is not None and quantizer.spec.codebook is not None
    levels = torch.tensor(quantizer.spec.codebook, dtype=torch.float32)
    flat = codes.reshape(-1).to(torch.uint8)
    per_element = scales.repeat_interleave(quantizer.spec.block_size)[: flat.numel()]
    xhat = (levels[flat.long()] * per_element).reshape(q.shape)
    storage = dict(q.storage, packed=pack_nibbles(flat))
    return replace(q, codes=flat.reshape(q.shape), scales=scales, storage=storage), xhat


def _compare(
    x: torch.Tensor,
    first: Quantizer,
    second: Quantizer,
    second_q: QuantizedTensor | None = None,
    second_xhat: torch.Tensor | None = None,
) -> PairAgreement:
    q1 = first.quantize(x)
    q2 = second.quantize(x) if second_q is None else second_q
    xhat2 = second.dequantize(q2) if second_xhat is None else second_xhat
    return compare_pair(x, first, q1, first.dequantize(q1), second, q2, xhat2)


def _nf4_midpoints() -> list[tuple[float, int, int]]:
    """(exact midpoint, lower code, upper code) for each adjacent pair of NF4 levels (codes are sorted)."""
    levels = ReferenceQuantizer("nf4").spec.codebook
    assert levels is not None
    return [((levels[c] + levels[c + 1]) / 2, c, c + 1) for c in range(15)]


# ---------------------------------------------------------------------------------------------- ulp and grids


def test_ulp_is_the_spacing_of_the_dtype() -> None:
    values = torch.tensor([1.0, 0.75, 0.5, -3.0, 0.0, 1e-40], dtype=torch.float64)
    expected = [2.0**-23, 2.0**-24, 2.0**-24, 2.0**-22, 2.0**-149, 2.0**-149]
    assert ulp(values, torch.float32).tolist() == expected
    assert ulp(torch.tensor([1.0, 0.3]), torch.bfloat16).tolist() == [2.0**-7, 2.0**-9]
    sample = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 10.0 ** torch.randint(-30, 30, (1000,))
    sample = sample.float()
    spacing = torch.nextafter(sample, torch.tensor(math.inf)).double() - sample.double()
    assert torch.equal(ulp(sample, torch.float32), spacing)


def test_fp4_grid_merges_signed_zeros() -> None:
    reference = ReferenceQuantizer("fp4").spec.codebook
    assert reference is not None and math.copysign(1, reference[8]) == -1  # the reference stores -0 at code 8
    grid = level_grid(reference)
    assert grid.levels.numel() == 15
    assert grid.level_of_code[0] == grid.level_of_code[8] == int((grid.levels == 0).nonzero())
    sorted_values = sorted(set(reference))
    midpoints = [(a + b) / 2 for a, b in itertools.pairwise(sorted_values)]
    assert grid.cell_high[:-1].tolist() == midpoints and grid.cell_low[1:].tolist() == midpoints
    assert grid.cell_low[0] == -math.inf and grid.cell_high[-1] == math.inf


# ---------------------------------------------------------------------------------------------- constructed pairs


def test_identical_pair_agrees_fully() -> None:
    ref = ReferenceQuantizer("nf4")
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(0))
    result = _compare(x, ref, ref)
    assert result.violations() == []
    assert (result.code_agreement, result.level_agreement, result.packed_agreement) == (1.0, 1.0, 1.0)
    assert (result.max_abs_diff, result.mean_abs_diff, result.scale_max_rel_diff, result.codebook_max_diff) == (0,) * 4


def test_codes_flipped_at_exact_midpoints_are_allowed() -> None:
    """Every NF4 midpoint (rounded to float32) with the other neighbour chosen: a different tie rule."""
    ref = ReferenceQuantizer("nf4")
    midpoints = _nf4_midpoints()
    x = _anchored([m for m, _, _ in midpoints])
    q = ref.quantize(x)
    codes = q.codes.clone()  # type: ignore[union-attr]
    for offset, (_, lower, upper) in enumerate(midpoints):
        codes[2 + offset] = upper if int(codes[2 + offset]) == lower else lower
    q2, xhat2 = _with_codes(ref, q, codes)
    result = _compare(x, ref, ref, q2, xhat2)
    assert result.violations() == []
    assert result.level_disagreements == result.at_midpoint == 15
    assert result.off_midpoint == result.explained_by_codebook == result.explained_by_scale == 0
    # float32 rounding of a midpoint moves it by at most half an ulp at its own magnitude, which is no larger
    # than an ulp at the larger level beside it (the unit)
    assert result.max_midpoint_distance_ulps <= 0.5
    levels = torch.tensor(ref.spec.codebook, dtype=torch.float64)  # type: ignore[arg-type]
    assert result.max_abs_diff == float(levels.diff().max())  # scale 1: one widest step
    assert result.packed_agreement == 1 - 8 / 32  # elements 2..16 live in bytes 1..8 of 32


def test_a_code_flipped_far_from_a_midpoint_is_flagged() -> None:
    ref = ReferenceQuantizer("nf4")
    level = ref.spec.codebook[11]  # type: ignore[index]
    x = _anchored([level])  # y is the level itself: half a gap from either midpoint
    q = ref.quantize(x)
    codes = q.codes.clone()  # type: ignore[union-attr]
    assert int(codes[2]) == 11
    codes[2] = 12
    q2, xhat2 = _with_codes(ref, q, codes)
    result = _compare(x, ref, ref, q2, xhat2)
    assert result.off_midpoint == result.level_disagreements == 1
    (message,) = result.violations()  # one step apart: the output bound still holds
    assert f"farther than {MIDPOINT_ULPS} ulp" in message and "index=(2,)" in message
    assert f"chose level {level!r}" in message


@pytest.mark.parametrize(("steps", "allowed"), [(3, True), (6, False)])
def test_distance_from_the_midpoint_is_counted_in_ulps(steps: int, allowed: bool) -> None:
    """Levels 0.4407 and 0.5626 (midpoint 0.5017): y and the larger level share the binade [0.5, 1), so one
    float32 step of y is one ulp of the unit; y above the midpoint but given the lower level is as many ulps
    off as it lies above the midpoint."""
    ref = ReferenceQuantizer("nf4")
    midpoint, lower, upper = _nf4_midpoints()[12]
    y = torch.tensor(midpoint, dtype=torch.float32)
    for _ in range(steps):
        y = torch.nextafter(y, torch.tensor(math.inf))
    x = _anchored([float(y)])
    q = ref.quantize(x)
    codes = q.codes.clone()  # type: ignore[union-attr]
    assert int(codes[2]) == upper
    codes[2] = lower
    q2, xhat2 = _with_codes(ref, q, codes)
    result = _compare(x, ref, ref, q2, xhat2)
    assert result.max_midpoint_distance_ulps == (float(y) - midpoint) / 2.0**-24
    assert (result.violations() == []) is allowed
    assert result.off_midpoint == (0 if allowed else 1)


def test_fp4_signed_zero_codes_agree_in_level_not_in_code() -> None:
    ref = ReferenceQuantizer("fp4")
    x = _anchored([1e-4, -1e-4, 0.0, 2e-3, -2e-3, 0.3])  # |y| < 0.0026: all round to a zero
    q = ref.quantize(x)
    codes = q.codes.clone()  # type: ignore[union-attr]
    zeros = (codes == 0) | (codes == 8)
    swapped = torch.where(codes == 0, 8, torch.where(codes == 8, 0, codes)).to(torch.uint8)
    q2, xhat2 = _with_codes(ref, q, swapped)
    result = _compare(x, ref, ref, q2, xhat2)
    assert result.violations() == []
    assert result.level_agreement == 1.0
    assert result.code_disagreements == int(zeros.sum()) == BLOCK - 3  # all but +1, -1 and 0.3
    assert result.code_agreement == 3 / BLOCK
    assert result.max_abs_diff == 0
    assert result.packed_agreement is not None and result.packed_agreement < 1 and result.packed_mismatches == 0


def test_a_double_quantized_scale_explains_a_disagreement() -> None:
    """The second side's stored scale is (1 + 2**-8) * absmax, inside the 8-bit bound; its code for an element
    2**-9 above a midpoint (relative) is nearest under that scale but not under the true one."""
    ref = ReferenceQuantizer("nf4")
    dq = ReferenceQuantizer("nf4", double_quant=DoubleQuant(bits=8, block_size=256), name="dq-side")
    midpoint, lower, upper = _nf4_midpoints()[13]
    x = _anchored([midpoint * (1 + 2**-9)])
    q = ref.quantize(x)
    stored = q.scales * (1 + 2**-8)  # type: ignore[operator]
    assert bool((stored - 1).abs() <= double_quant_bound(dq.spec, torch.ones(1, dtype=torch.float64)))
    codes = q.codes.clone()  # type: ignore[union-attr]
    assert int(codes[2]) == upper
    codes[2] = lower
    q2, xhat2 = _with_codes(dq, q, codes, scales=stored.float())
    result = _compare(x, ref, dq, q2, xhat2)
    assert result.violations() == []
    assert result.explained_by_scale == result.level_disagreements == 1
    assert result.scale_max_rel_diff == float(stored.double() - 1)

    # the same stored scale without double quantization on either side is a failure
    plain = ReferenceQuantizer("nf4", name="no-dq-side")
    result = _compare(x, ref, plain, *_with_codes(plain, q, codes, scales=stored.float()))
    assert any("block scales differ" in m for m in result.violations())
    assert result.off_midpoint == 1  # and the code is then only explained by a scale it may not have


def test_a_rounded_table_explains_disagreements_between_its_midpoints() -> None:
    """A table rounded to 4 decimals (torchao's NF4) moves each midpoint; between the two midpoints the two
    implementations disagree, as they should."""
    ref = ReferenceQuantizer("nf4")
    rounded = ReferenceQuantizer("nf4", name="nf4-4-decimals")
    table = tuple(round(v, 4) for v in ref.spec.codebook)  # type: ignore[union-attr]
    rounded.spec = replace(rounded.spec, codebook=table)
    exact_midpoint, lower, upper = _nf4_midpoints()[14]  # 0.72296 / 1.0 -> 0.7230 / 1.0
    rounded_midpoint = (table[lower] + table[upper]) / 2
    assert exact_midpoint < rounded_midpoint
    x = _anchored([(exact_midpoint + rounded_midpoint) / 2])
    q = ref.quantize(x)
    codes = q.codes.clone()  # type: ignore[union-attr]
    assert int(codes[2]) == upper
    codes[2] = lower  # nearest in the rounded table
    q2, xhat2 = _with_codes(rounded, q, codes)
    result = _compare(x, ref, rounded, q2, xhat2)
    assert result.violations() == []
    assert result.explained_by_codebook == result.level_disagreements == 1
    assert result.codebook_max_diff == max(abs(a - b) for a, b in zip(table, ref.spec.codebook, strict=True))  # type: ignore[arg-type]


def test_outputs_beyond_the_format_bound_are_flagged() -> None:
    ref = ReferenceQuantizer("nf4")
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(1))
    q = ref.quantize(x)
    xhat = ref.dequantize(q)
    nudged = xhat.clone()
    nudged[1, 7] = torch.nextafter(nudged[1, 7], torch.tensor(math.inf))  # one ulp: a rounding, allowed
    assert _compare(x, ref, ref, q, nudged).violations() == []
    nudged[2, 9] += 1e-3 * float(q.scales[(256 * 2 + 9) // BLOCK])  # type: ignore[index]
    result = _compare(x, ref, ref, q, nudged)
    (message,) = result.violations()
    assert result.diffs_beyond_bound == 1 and "index=(2, 9)" in message


def test_packed_bytes_must_follow_the_codes() -> None:
    ref = ReferenceQuantizer("nf4")
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(2))  # 21 elements: a padding nibble
    q = ref.quantize(x)
    packed = q.storage["packed"].clone()
    packed[-1] ^= 0x0F  # only the padding nibble: not a difference
    result = _compare(x, ref, ref, replace(q, storage=dict(q.storage, packed=packed)), ref.dequantize(q))
    assert result.violations() == [] and result.packed_agreement == 1.0
    packed[3] ^= 0x01  # codes of byte 3 agree, its bytes do not
    result = _compare(x, ref, ref, replace(q, storage=dict(q.storage, packed=packed)), ref.dequantize(q))
    (message,) = result.violations()
    assert result.packed_mismatches == 1 and "first byte 3" in message


def test_black_boxes_and_mismatched_block_sizes_are_not_applicable() -> None:
    ref = ReferenceQuantizer("nf4")
    x = torch.randn(2, 128, generator=torch.Generator().manual_seed(3))
    q = ref.quantize(x)
    with pytest.raises(NotApplicable, match="black box"):
        compare_pair(x, ref, q, ref.dequantize(q), ref, replace(q, codes=None), ref.dequantize(q))
    other = ref.with_block_size(128)
    with pytest.raises(NotApplicable, match="block sizes differ"):
        _compare(x, ref, other)


# ---------------------------------------------------------------------------------------------- the zoo


def _zoo_input(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact midpoints and values a few ulp beside them (anchored blocks), then Gaussian blocks, one of them
    with its largest element last, and an odd partial last block."""
    x = InputRecipe((BLOCK * 40 + 37,), seed=5, midpoints=True).build(dtype, ReferenceQuantizer("nf4").spec)
    x[BLOCK * 39 - 1] = 8.0
    return x


CORRECT = [
    (zoo.ZooNF4Argmin, ReferenceQuantizer("nf4"), torch.float32),
    (zoo.ZooNF4DoubleQuant, ReferenceQuantizer("nf4"), torch.float32),
    (zoo.ZooNF4DoubleQuant, ReferenceQuantizer("nf4", double_quant=DoubleQuant()), torch.float32),
    (zoo.ZooFP4Sorted, ReferenceQuantizer("fp4"), torch.float32),
    (zoo.ZooAF4Block128, ReferenceQuantizer("af4", 128), torch.float32),
    (zoo.ZooNF4BF16Declared, ReferenceQuantizer("nf4"), torch.bfloat16),
]


@pytest.mark.parametrize(("cls", "ref", "dtype"), CORRECT, ids=[f"{c.name}~{r.name}" for c, r, _ in CORRECT])
def test_correct_zoo_quantizers_agree_with_the_reference(cls: type, ref: Quantizer, dtype: torch.dtype) -> None:
    x = _zoo_input(dtype)
    result = _compare(x, ref, cls())
    assert result.violations() == []
    assert result.level_agreement > 0.95


BROKEN = [
    (zoo.ZooWrongMidpoint, "nf4", "farther than"),
    (zoo.ZooFloorRounding, "nf4", "farther than"),
    (zoo.ZooBF16ComputeUndeclared, "nf4", "farther than"),
    (zoo.ZooCodesDisagree, "fp4", "farther than"),
    (zoo.ZooClippedScales, "nf4", "block scales differ"),
    (zoo.ZooOffByOneBlocks, "nf4", "block scales differ"),
    (zoo.ZooPartialBlockPrevScale, "nf4", "block scales differ"),
    (zoo.ZooSwappedNibblesPack, "nf4", "packed bytes"),
    (zoo.ZooSwappedNibblesUnpack, "nf4", "|x_hat1 - x_hat2|"),
]


@pytest.mark.parametrize(("cls", "fmt", "expected"), BROKEN, ids=[c.name for c, _, _ in BROKEN])
def test_broken_zoo_quantizers_disagree_with_the_reference(cls: type, fmt: str, expected: str) -> None:
    x = _zoo_input(torch.bfloat16 if cls is zoo.ZooBF16ComputeUndeclared else torch.float32)
    result = _compare(x, ReferenceQuantizer(fmt), cls())
    assert any(expected in message for message in result.violations()), result.violations()


def test_double_quantization_coarser_than_declared_is_flagged() -> None:
    ref = ReferenceQuantizer("nf4", double_quant=DoubleQuant())
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(4)) * torch.rand(64, 1) * 4
    result = _compare(x, ref, zoo.ZooDoubleQuant4Bit())
    assert any("block scales differ" in message for message in result.violations())


def test_a_table_that_is_not_the_format_is_not_paired() -> None:
    with pytest.raises(NotApplicable, match="not the same level"):
        _compare(_zoo_input(), ReferenceQuantizer("nf4"), zoo.ZooFakeNF4Uniform())


# ---------------------------------------------------------------------------------------------- matmul tolerance


def test_matmul_tolerance_covers_float32_rounding_of_any_order() -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(16, 1024, generator=generator)
    weight = torch.randn(64, 1024, generator=generator)
    exact = (x.double() @ weight.double().T).float()  # a "kernel" without accumulation error
    forward = F.linear(x, weight)
    backward = F.linear(x.flip(-1), weight.flip(-1))  # the same sums in reverse order
    for one, other in ((exact, forward), (forward, backward)):
        assert bool(((one.double() - other.double()).abs() <= matmul_tolerance(x, weight, one, other)).all())


def test_matmul_tolerance_rejects_bfloat16_accumulation() -> None:
    """Summing 1024 bfloat16 products in bfloat16 (what the tolerance's float32 assumption rules out) drifts by
    far more than float32 accumulation plus one output rounding."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(1, 1024, generator=generator).bfloat16()
    weight = torch.randn(8, 1024, generator=generator).bfloat16()
    expected = F.linear(x, weight)
    running = torch.zeros(8, dtype=torch.bfloat16)
    for k in range(1024):
        running = running + x[0, k] * weight[:, k]
    tolerance = matmul_tolerance(x, weight, expected, running[None, :])
    assert bool(((running[None, :].double() - expected.double()).abs() > tolerance).any())


# ---------------------------------------------------------------------------------------------- the suite's summary

SUITE_FILE = Path(__file__).resolve().parents[1] / "suites" / "agreement" / "test_agreement.py"


def test_the_suite_declares_its_headline_and_pair_matrix() -> None:
    """The summary knows no suite by name: the agreement suite itself asks for its pair matrix and headline."""
    spec = importlib.util.spec_from_file_location("fourbit_agreement_suite", SUITE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    marks = module.pytestmark if isinstance(module.pytestmark, list) else [module.pytestmark]
    (mark,) = [m for m in marks if m.name == "fourbit_summary"]
    assert not mark.args
    assert SuiteSummary(**mark.kwargs) == SuiteSummary(
        headline=("level_agreement", "code_agreement", "disagreements_off_midpoint", "max_abs_diff", "mean_abs_diff"),
        pair_matrix=("level_agreement", "code_agreement"),
    )
