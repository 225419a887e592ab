"""Properties of quantize -> dequantize that every implementation's spec promises, one test per property.

Each test runs the explicit edge cases (partial blocks, 1-3 D, zero blocks, magnitude jumps from 1e-6 to
1e6, exact midpoints and values a few ulp beside them, +-0) and then hypothesis-drawn inputs.
"""

from __future__ import annotations

import pytest
import torch

from harness import Quantizer
from harness import checks as p
from harness.checks.inputs import InputRecipe
from harness.checks.trials import Trial, cached_trial, for_each_input


def test_output_contract(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: None)  # run_trial checks the contract of every output


def test_shape_dtype_finite(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_finite_shape_dtype(quantizer, t.x_before, t.xhat))


TINY_SHAPES = ((1,), (2,), (3,), (1, 2), (2, 1), (1, 1, 2))


def test_tiny_tensors(quantizer: Quantizer, dtype: torch.dtype) -> None:
    """Tensors of 1 to 3 elements (a bias, a gate, a 1x2 adapter) round-trip with their shape, dtype and bound."""
    ran = 0
    for index, shape in enumerate(TINY_SHAPES):
        if quantizer.capabilities.unsupported_reason(shape, dtype):
            continue
        trial = cached_trial(quantizer, InputRecipe(shape, seed=100 + index, name=f"tiny-{shape}"), dtype)
        p.check_finite_shape_dtype(quantizer, trial.x_before, trial.xhat)
        if quantizer.spec.codebook is not None:  # the bound needs a codebook; shape and dtype do not
            p.check_roundtrip_bound(quantizer, trial.x_before, trial.q, trial.xhat)
        ran += 1
    if not ran:
        pytest.skip(f"{quantizer.name}: no tiny shape fits its capabilities")


def test_input_unchanged(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_input_unchanged(quantizer, t.x_before, t.x))


def test_exact_zero(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_exact_zero(quantizer, t.x_before, t.xhat))


def test_zero_blocks(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_zero_blocks(quantizer, t.x_before, t.xhat))


def test_decode_consistency(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_decode_consistency(quantizer, t.x_before, t.q, t.xhat))


def test_nearest_code(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_nearest(quantizer, t.x_before, t.q))


def test_monotone(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_monotone(quantizer, t.x_before, t.xhat))


def test_scales(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_scales(quantizer, t.x_before, t.q))


def test_roundtrip_bound(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_roundtrip_bound(quantizer, t.x_before, t.q, t.xhat))


def test_deterministic(quantizer: Quantizer, dtype: torch.dtype) -> None:
    def body(t: Trial) -> None:
        q2 = p.run_quantize(quantizer, t.x_before.clone())
        p.check_deterministic(quantizer, t.x_before, t.q, q2, t.xhat, p.run_dequantize(quantizer, q2))

    for_each_input(quantizer, dtype, body)


def test_idempotent(quantizer: Quantizer, dtype: torch.dtype) -> None:
    def body(t: Trial) -> None:
        q_again = p.run_quantize(quantizer, t.xhat.clone())
        p.check_idempotent(quantizer, t.x_before, t.q, t.xhat, q_again, p.run_dequantize(quantizer, q_again))

    for_each_input(quantizer, dtype, body)


def test_scale_invariance(quantizer: Quantizer, dtype: torch.dtype) -> None:
    # Scaling up by a power of two is exact, subnormals included; fp16 inputs stay below 65504 / 2.
    factor = 2.0 if dtype == torch.float16 else 8.0

    def body(t: Trial) -> None:
        q_scaled = p.run_quantize(quantizer, t.x_before * factor)
        p.check_scale_invariance(quantizer, t.x_before, factor, t.q, q_scaled)

    for_each_input(quantizer, dtype, body)


def test_packing(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_packing(quantizer, t.x_before, t.q))


def test_storage_size(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_storage_size(quantizer, t.x_before, t.q))


def test_storage_used(quantizer: Quantizer, dtype: torch.dtype) -> None:
    for_each_input(quantizer, dtype, lambda t: p.check_storage_used(quantizer, t.x_before, t.q, t.xhat))
