"""NF4, FP4 and int4 codebooks against their published tables (the tables appear here only, as oracles)."""

from __future__ import annotations

import pytest
import torch

from harness import InvalidArgument, codebook
from harness.formats.nf4 import NF4_OFFSET, nf4_codebook

# QLoRA (Dettmers et al. 2023), appendix E: the NF4 values, as float32 literals.
QLORA_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]  # fmt: skip
# bitsandbytes' FP4 table in code order, as its kernels write it (8-decimal literals).
BNB_FP4 = [
    0.0, 0.00520833, 0.66666667, 1.0, 0.33333333, 0.5, 0.16666667, 0.25,
    -0.0, -0.00520833, -0.66666667, -1.0, -0.33333333, -0.5, -0.16666667, -0.25,
]  # fmt: skip


def test_nf4_is_bit_identical_to_the_qlora_table() -> None:
    computed = codebook("nf4")
    assert computed.dtype == torch.float32
    assert torch.equal(computed, torch.tensor(QLORA_NF4, dtype=torch.float32))


def test_nf4_offset_is_the_rounded_midpoint_of_the_two_quantile_rules() -> None:
    assert NF4_OFFSET == 0.9677083
    assert abs(NF4_OFFSET - (1 - (1 / 30 + 1 / 32) / 2)) < 5e-8


def test_nf4_with_the_unrounded_offset_moves_by_a_few_ulp_only() -> None:
    exact = nf4_codebook(1 - (1 / 30 + 1 / 32) / 2)
    paper = torch.tensor(QLORA_NF4)
    assert not torch.equal(exact, paper)
    assert float((exact - paper).abs().max()) <= 4 * torch.finfo(torch.float32).eps


def test_fp4_matches_bitsandbytes_code_order_and_values() -> None:
    computed = codebook("fp4")
    assert torch.allclose(computed, torch.tensor(BNB_FP4), atol=5e-9, rtol=0)
    assert computed[3] == 1.0 and computed[11] == -1.0
    # sign in bit 3: code c and c | 8 are negatives of each other, +0 and -0 both present
    assert torch.equal(computed[8:], -computed[:8])
    assert torch.signbit(computed[8]) and not torch.signbit(computed[0])
    assert float(computed[1]) == float(torch.tensor(1 / 192, dtype=torch.float32))


def test_int4_is_k_over_7() -> None:
    computed = codebook("int4")
    assert torch.equal(computed, (torch.arange(-8, 8, dtype=torch.float64) / 7).float())
    assert computed[8] == 0 and computed[15] == 1 and computed[1] == -1


def test_codebook_returns_a_fresh_tensor() -> None:
    first = codebook("nf4")
    first[0] = 42.0
    assert codebook("nf4")[0] == -1.0


@pytest.mark.parametrize("name", ["nf4", "fp4", "af4", "int4", "lloyd-max"])
def test_every_codebook_has_16_finite_float32_levels(name: str) -> None:
    levels = codebook(name)
    assert levels.shape == (16,) and levels.dtype == torch.float32 and bool(torch.isfinite(levels).all())


@pytest.mark.parametrize("name", ["nf5", "", "NF4", None, 4])
def test_unknown_format_is_an_invalid_argument(name: object) -> None:
    with pytest.raises(InvalidArgument, match="expected one of nf4, fp4, af4, int4, lloyd-max"):
        codebook(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("block_size", [0, -64, 48, 1.5, "64", True])
def test_block_size_must_be_a_positive_power_of_two(block_size: object) -> None:
    with pytest.raises(ValueError, match="expected a positive power of two"):
        codebook("nf4", block_size)  # type: ignore[arg-type]
