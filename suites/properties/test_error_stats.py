"""Error statistics on fixed Gaussian data, per block size, recorded for baselines and checked against the
value the reference quantizer computes for the same format, block size and double quantization."""

from __future__ import annotations

import math

import pytest
import torch

from harness import Quantizer, ReferenceQuantizer, error_stats
from harness.checks import run_dequantize, run_quantize
from harness.quantizers.reference import REFERENCE_FORMATS

BLOCK_SIZES = (32, 64, 128, 256, 1024, 4096)
DATA_SHAPE = (256, 1024)
DATA_SEED = 20231

# Relative agreement with the reference: implementations of one format differ only at bin midpoints
# (a few elements in 1e4) and, under double quantization, by the 8-bit scale codes.
RELATIVE_TOLERANCE = {"mse": 0.02, "mae": 0.01}
SQNR_TOLERANCE_DB = 0.1


def gaussian_weight() -> torch.Tensor:
    generator = torch.Generator().manual_seed(DATA_SEED)
    return torch.randn(DATA_SHAPE, generator=generator, dtype=torch.float32)


@pytest.mark.parametrize("block_size", BLOCK_SIZES, ids=[f"block{b}" for b in BLOCK_SIZES])
def test_error_statistics(quantizer: Quantizer, block_size: int, record) -> None:  # type: ignore[no-untyped-def]
    if block_size not in quantizer.capabilities.supported_block_sizes(quantizer.spec):
        pytest.skip(f"{quantizer.name} does not support block size {block_size}")
    if quantizer.spec.block_size != block_size:
        quantizer = quantizer.with_block_size(block_size)  # type: ignore[attr-defined]
    x = gaussian_weight()
    q = run_quantize(quantizer, x)
    stats = error_stats(x, run_dequantize(quantizer, q))
    case = f"gauss-block{block_size}"
    record("mse", stats.mse, case=case, direction="lower")
    record("mae", stats.mae, case=case, direction="lower")
    record("max_error", stats.max_error, case=case, direction="lower")
    record("sqnr_db", stats.sqnr_db, unit="dB", case=case, direction="higher")
    record("bits_per_parameter", q.bits_per_parameter, unit="bits", case=case, direction="lower")
    spec = quantizer.spec
    if spec.format not in REFERENCE_FORMATS or spec.scale != "absmax":
        return  # no reference for this format: recorded only
    reference = ReferenceQuantizer(spec.format, block_size, spec.double_quant)
    expected = error_stats(x, reference.dequantize(reference.quantize(x)))
    for metric, tolerance in RELATIVE_TOLERANCE.items():
        got, want = getattr(stats, metric), getattr(expected, metric)
        assert math.isclose(got, want, rel_tol=tolerance), (
            f"{quantizer.name}: {metric} {got:.6g} on {case}, expected the reference's {want:.6g} "
            f"within {tolerance:.0%}"
        )
    assert abs(stats.sqnr_db - expected.sqnr_db) <= SQNR_TOLERANCE_DB, (
        f"{quantizer.name}: SQNR {stats.sqnr_db:.3f} dB on {case}, expected the reference's "
        f"{expected.sqnr_db:.3f} dB within {SQNR_TOLERANCE_DB} dB"
    )
