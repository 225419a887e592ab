"""Agreement between implementations of the same format, pair by pair, on fixed seeded weights.

For each pair (``quantizer_pair``, e.g. ``ref-nf4~bnb-nf4``) and case: code and level agreement, where the
levels differ and whether the formats explain it (a decision midpoint, the other table's midpoint, a
double-quantized scale), how far the dequantized outputs are apart against the bound the formats allow, and
packed-byte agreement (see :mod:`harness.checks.agreement`). Every measurement is recorded (kind "exact": fixed
data, fixed seeds); anything the formats do not explain fails. Each implementation's matmul is checked
against its own dequantize + ``F.linear``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from harness import QuantizedTensor, Quantizer
from harness import checks as p
from harness.checks.agreement import MIDPOINT_ULPS, PairAgreement, check_comparable, compare_pair, matmul_tolerance
from harness.errors import ImplementationError
from harness.pytest_plugin import pair_id

# How the summary shows this suite (harness.results.records.SuiteSummary): its many metrics per pair are kept in
# files; the terminal lists these, plus any that moved, and draws level and code agreement as a pair matrix.
pytestmark = pytest.mark.fourbit_summary(
    headline=("level_agreement", "code_agreement", "disagreements_off_midpoint", "max_abs_diff", "mean_abs_diff"),
    pair_matrix=("level_agreement", "code_agreement"),
)


@dataclass(frozen=True)
class Case:
    """A seeded standard-normal weight of one shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    seed: int

    def build(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.shape, generator=generator, dtype=torch.float32).to(self.dtype)


CASES = (
    Case("gauss-4096x4096", (4096, 4096), torch.float32, 0),
    # an odd element count: a partial last block and a half-used last packed byte
    Case("gauss-333x77", (333, 77), torch.float32, 1),
    Case("gauss-512x1024-bf16", (512, 1024), torch.bfloat16, 2),
    Case("gauss-512x1024-fp16", (512, 1024), torch.float16, 3),
)

MATMUL_WEIGHT = (256, 1024)  # out_features x in_features: reduction length 1024
MATMUL_BATCHES = (1, 16)

_Run = tuple[Quantizer, QuantizedTensor, torch.Tensor]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[tuple[int, int, str], _Run]]:
    """Quantize/dequantize results per (implementation, block size, case): every implementation is in several
    pairs, and the 4096x4096 case costs seconds per call. Freed when the module's tests are done."""
    cache: dict[tuple[int, int, str], _Run] = {}
    yield cache
    cache.clear()


@pytest.fixture(scope="module")
def inputs() -> Iterator[dict[str, torch.Tensor]]:
    cache: dict[str, torch.Tensor] = {}
    yield cache
    cache.clear()


def _aligned(first: Quantizer, second: Quantizer) -> tuple[Quantizer, Quantizer]:
    """The pair at one block size: as they are, or both moved (``with_block_size``) to one of their defaults
    that both support; otherwise a skip naming both block sizes."""
    if first.spec.block_size == second.spec.block_size:
        return first, second
    for target in (first.spec.block_size, second.spec.block_size):
        moved = [_at_block_size(q, target) for q in (first, second)]
        if moved[0] is not None and moved[1] is not None:
            return moved[0], moved[1]
    pytest.skip(
        f"block sizes differ ({first.name}: {first.spec.block_size}, {second.name}: {second.spec.block_size}) and "
        "neither can take the other's"
    )


def _at_block_size(quantizer: Quantizer, block_size: int) -> Quantizer | None:
    if quantizer.spec.block_size == block_size:
        return quantizer
    if block_size not in quantizer.capabilities.supported_block_sizes(quantizer.spec):
        return None
    with_block_size = getattr(quantizer, "with_block_size", None)
    return with_block_size(block_size) if callable(with_block_size) else None


def _run(quantizer: Quantizer, original: Quantizer, case: Case, x: torch.Tensor, runs: dict[Any, _Run]) -> _Run:
    key = (id(original), quantizer.spec.block_size, case.name)
    cached = runs.get(key)
    if cached is not None and cached[0] is original:
        return cached
    working = x.clone()  # the shared input must survive an implementation that writes into its argument
    q = p.run_quantize(quantizer, working)
    p.check_output_contract(quantizer, x, q)
    p.check_input_unchanged(quantizer, x, working)
    runs[key] = (original, q, p.run_dequantize(quantizer, q))  # the entry keeps ``original`` alive: its id stays
    return runs[key]


def _record(record: Any, result: PairAgreement, case: str, format_name: str) -> None:
    extra = {"format": format_name}
    higher = [("code_agreement", result.code_agreement), ("level_agreement", result.level_agreement)]
    if result.packed_agreement is not None:
        higher.append(("packed_agreement", result.packed_agreement))
    lower = [
        ("level_disagreements", result.level_disagreements, ""),
        ("disagreements_off_midpoint", result.off_midpoint, ""),
        ("disagreements_explained_by_codebook", result.explained_by_codebook, ""),
        ("disagreements_explained_by_scale", result.explained_by_scale, ""),
        ("max_midpoint_distance", result.max_midpoint_distance_ulps, "ulp"),
        ("max_abs_diff", result.max_abs_diff, ""),
        ("mean_abs_diff", result.mean_abs_diff, ""),
        ("scale_max_rel_diff", result.scale_max_rel_diff, ""),
        ("codebook_max_diff", result.codebook_max_diff, ""),
    ]
    for metric, value in higher:
        record(metric, value, case=case, kind="exact", direction="higher", extra=extra)
    for metric, value, unit in lower:
        record(metric, value, unit=unit, case=case, kind="exact", direction="lower", extra=extra)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_pair_agreement(
    quantizer_pair: tuple[Quantizer, Quantizer],
    case: Case,
    record: Any,
    runs: dict[Any, _Run],
    inputs: dict[str, torch.Tensor],
) -> None:
    """Codes differ only where the formats explain it; outputs and packed bytes follow the codes."""
    originals = quantizer_pair
    first, second = _aligned(*originals)
    try:
        check_comparable(first, second)
    except p.NotApplicable as reason:
        pytest.skip(str(reason))
    for quantizer in (first, second):
        reason = quantizer.capabilities.unsupported_reason(case.shape, case.dtype)
        if reason:
            pytest.skip(f"{quantizer.name}: {reason}")
    x = inputs.get(case.name)
    if x is None:
        x = inputs[case.name] = case.build()
    _, q_first, xhat_first = _run(first, originals[0], case, x, runs)
    _, q_second, xhat_second = _run(second, originals[1], case, x, runs)
    try:
        result = compare_pair(x, first, q_first, xhat_first, second, q_second, xhat_second)
    except p.NotApplicable as reason:
        pytest.skip(str(reason))
    _record(record, result, case.name, first.spec.format)
    violations = result.violations()
    if violations:
        raise p.PropertyViolation(
            pair_id(first.name, second.name),
            f"agreement within {MIDPOINT_ULPS} ulp of midpoints and the format bounds",
            f"[case {case.name!r}, block size {first.spec.block_size}] " + "; ".join(violations),
        )


def _float32_weight(quantizer: Quantizer, q: QuantizedTensor) -> torch.Tensor | None:
    """codebook[code] * scale (+ offset) in float32: the weights a kernel may use before rounding them to x's
    dtype; None for a black box."""
    if quantizer.spec.codebook is None or q.codes is None or q.scales is None:
        return None
    block_size = quantizer.spec.block_size
    levels = quantizer.spec.codebook_tensor()[q.codes.reshape(-1).long()]
    weight = levels * q.scales.repeat_interleave(block_size)[: levels.numel()]
    if q.offsets is not None:
        weight = weight + q.offsets.repeat_interleave(block_size)[: levels.numel()]
    return weight.reshape(q.shape)


def test_matmul_matches_dequantize(quantizer: Quantizer, dtype: torch.dtype) -> None:
    """``matmul(x, q)`` equals ``F.linear(x, dequantize(q))`` for a single row and a batch of 16, within what two
    float32-accumulating reductions of length 1024 may differ (:func:`harness.checks.agreement.matmul_tolerance`).

    A kernel may multiply the weights as ``dequantize`` returns them (rounded to x's dtype) or unrounded,
    ``codebook[code] * scale`` in float32; the closer of the two references counts."""
    if not quantizer.capabilities.has_matmul:
        pytest.skip(f"{quantizer.name}: capabilities.has_matmul is False")
    matmul = getattr(quantizer, "matmul", None)
    if not callable(matmul):
        raise p.PropertyViolation(quantizer.name, "matmul", "capabilities.has_matmul=True but it has no matmul()")
    reason = quantizer.capabilities.unsupported_reason(MATMUL_WEIGHT, dtype)
    if reason:
        pytest.skip(f"{quantizer.name}: {reason}")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(MATMUL_WEIGHT, generator=generator).to(dtype)
    q = p.run_quantize(quantizer, weight)
    dequantized = p.run_dequantize(quantizer, q).to(dtype)
    unrounded = _float32_weight(quantizer, q)
    prop = "matmul == dequantize + F.linear"
    for batch in MATMUL_BATCHES:
        x = torch.randn(batch, MATMUL_WEIGHT[1], generator=generator).to(dtype)
        expected = F.linear(x, dequantized)
        try:
            actual = matmul(x, q)
        except Exception as exc:
            raise ImplementationError(
                quantizer.name, f"matmul(x {tuple(x.shape)} {dtype}, W {MATMUL_WEIGHT})", exc
            ) from exc
        if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape or actual.dtype != dtype:
            got = f"{tuple(actual.shape)} {actual.dtype}" if isinstance(actual, torch.Tensor) else type(actual).__name__
            raise p.PropertyViolation(quantizer.name, prop, f"returned {got}, expected {tuple(expected.shape)} {dtype}")
        tolerance = matmul_tolerance(x, dequantized, expected, actual)
        excess = (actual.double() - expected.double()).abs() - tolerance
        if unrounded is not None:
            exact = x.double() @ unrounded.double().T
            other = (actual.double() - exact).abs() - matmul_tolerance(x, unrounded, exact, actual)
            excess = torch.minimum(excess, other)
        if bool((excess > 0).any()):
            row, column = (int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
            raise p.PropertyViolation(
                quantizer.name,
                prop,
                f"{int((excess > 0).sum())} of {excess.numel()} outputs differ beyond the tolerance ({dtype}, batch "
                f"{batch}), worst [{row}, {column}]: matmul {float(actual[row, column])!r}, F.linear "
                f"{float(expected[row, column])!r}, tolerance {float(tolerance[row, column]):.6g}",
            )
