"""Error statistics on fixed Gaussian data, per block size.

``test_error_statistics`` records them (for baselines: a regression against the stored value fails it).
``test_error_vs_reference`` compares them with a reference of the same format and scale kind: the reference
quantizer for an absmax format it implements (double quantization included), else the harness's exact
nearest rounding on the grid the scale kind derives (harness.scale_kinds), for the implementation's own
codebook. A 'searched' scale kind must do no worse than the best derived rule for its codebook. Where there is
no reference (an unknown scale kind, no codebook, double quantization under a non-absmax kind) the comparison
is a skip with the reason, never a pass that compared nothing.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness import Quantizer, ReferenceQuantizer, error_stats
from harness.api import SCALE_ABSMAX, QuantizedTensor
from harness.checks import (
    NotApplicable,
    check_searched_error,
    derived_reconstruction,
    run_dequantize,
    run_quantize,
)
from harness.quantizers.reference import REFERENCE_FORMATS
from harness.scale_kinds import get_scale_kind

BLOCK_SIZES = (32, 64, 128, 256, 1024, 4096)
DATA_SHAPE = (256, 1024)
DATA_SEED = 20231

# Relative agreement with the reference: implementations of one format differ only at bin midpoints
# (a few elements in 1e4) and, under double quantization, by the 8-bit scale codes.
RELATIVE_TOLERANCE = {"mse": 0.02, "mae": 0.01}
SQNR_TOLERANCE_DB = 0.1

_RUNS: dict[tuple[int, str, int], tuple[Quantizer, QuantizedTensor, torch.Tensor]] = {}


def gaussian_weight() -> torch.Tensor:
    generator = torch.Generator().manual_seed(DATA_SEED)
    return torch.randn(DATA_SHAPE, generator=generator, dtype=torch.float32)


def _at_block_size(quantizer: Quantizer, block_size: int) -> Quantizer:
    if block_size not in quantizer.capabilities.supported_block_sizes(quantizer.spec):
        pytest.skip(f"{quantizer.name} does not support block size {block_size}")
    if quantizer.spec.block_size != block_size:
        quantizer = quantizer.with_block_size(block_size)  # type: ignore[attr-defined]
    return quantizer


def _run(quantizer: Quantizer, block_size: int) -> tuple[Quantizer, QuantizedTensor, torch.Tensor]:
    """The implementation at ``block_size`` on the Gaussian weight, quantized once for both tests."""
    key = (id(quantizer), quantizer.name, block_size)
    cached = _RUNS.get(key)
    if cached is None:
        sized = _at_block_size(quantizer, block_size)
        q = run_quantize(sized, gaussian_weight())
        _RUNS.clear()  # one implementation at a time: both tests of a case run back to back
        cached = _RUNS[key] = (sized, q, run_dequantize(sized, q))
    return cached


@pytest.mark.parametrize("block_size", BLOCK_SIZES, ids=[f"block{b}" for b in BLOCK_SIZES])
def test_error_statistics(quantizer: Quantizer, block_size: int, record) -> None:  # type: ignore[no-untyped-def]
    _, q, xhat = _run(quantizer, block_size)
    stats = error_stats(gaussian_weight(), xhat)
    case = f"gauss-block{block_size}"
    record("mse", stats.mse, case=case, direction="lower")
    record("mae", stats.mae, case=case, direction="lower")
    record("max_error", stats.max_error, case=case, direction="lower")
    record("sqnr_db", stats.sqnr_db, unit="dB", case=case, direction="higher")
    record("bits_per_parameter", q.bits_per_parameter, unit="bits", case=case, direction="lower")


def _reference(quantizer: Quantizer, x: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The reconstruction to compare with and what it is; pytest.skip (with the reason) when there is none."""
    spec = quantizer.spec
    if spec.format in REFERENCE_FORMATS and spec.scale == SCALE_ABSMAX:
        reference = ReferenceQuantizer(spec.format, spec.block_size, spec.double_quant)
        return reference.dequantize(reference.quantize(x)), f"the reference {reference.name}"
    rebuilt = derived_reconstruction(quantizer, x)
    if rebuilt is not None:
        return rebuilt, f"nearest rounding on the derived {spec.scale!r} grid"
    if spec.codebook is None:
        reason = "declares no codebook"
    elif spec.double_quant is not None:
        reason = f"uses double quantization under scale kind {spec.scale!r}, whose stored scales no rule gives"
    else:
        reason = f"has scale kind {spec.scale!r}, which the harness cannot derive"
    pytest.skip(f"{quantizer.name}: no reference for format {spec.format!r}: it {reason}; statistics recorded only")


@pytest.mark.parametrize("block_size", BLOCK_SIZES, ids=[f"block{b}" for b in BLOCK_SIZES])
def test_error_vs_reference(quantizer: Quantizer, block_size: int) -> None:
    sized, _, xhat = _run(quantizer, block_size)
    x = gaussian_weight()
    case = f"gauss-block{block_size}"
    kind = get_scale_kind(sized.spec.scale)
    if kind is not None and not kind.derivable:
        try:
            check_searched_error(sized, x, xhat)
        except NotApplicable as reason:
            pytest.skip(str(reason))
        return
    expected_out, what = _reference(sized, x)
    stats, expected = error_stats(x, xhat), error_stats(x, expected_out)
    for metric, tolerance in RELATIVE_TOLERANCE.items():
        got, want = getattr(stats, metric), getattr(expected, metric)
        assert math.isclose(got, want, rel_tol=tolerance), (
            f"{quantizer.name}: {metric} {got:.6g} on {case}, expected {what}'s {want:.6g} within {tolerance:.0%}"
        )
    assert abs(stats.sqnr_db - expected.sqnr_db) <= SQNR_TOLERANCE_DB, (
        f"{quantizer.name}: SQNR {stats.sqnr_db:.3f} dB on {case}, expected {what}'s "
        f"{expected.sqnr_db:.3f} dB within {SQNR_TOLERANCE_DB} dB"
    )
