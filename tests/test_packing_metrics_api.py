"""Nibble packing, error statistics and the contract's own validation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from harness import (
    PACKING_HIGH_FIRST,
    PACKING_LOW_FIRST,
    Capabilities,
    DoubleQuant,
    FormatSpec,
    InvalidArgument,
    QuantizedTensor,
    error_stats,
)
from harness.checks.metrics import code_agreement
from harness.formats.packing import pack_nibbles, packed_size, unpack_nibbles


@given(st.lists(st.integers(0, 15), min_size=1, max_size=301), st.sampled_from([PACKING_HIGH_FIRST, PACKING_LOW_FIRST]))
def test_unpack_inverts_pack(codes: list[int], order: str) -> None:
    tensor = torch.tensor(codes, dtype=torch.uint8)
    packed = pack_nibbles(tensor, order)
    assert packed.numel() == packed_size(len(codes))
    assert torch.equal(unpack_nibbles(packed, len(codes), order), tensor)


def test_nibble_orders_are_mirror_images() -> None:
    codes = torch.tensor([1, 2, 3], dtype=torch.uint8)
    assert pack_nibbles(codes, PACKING_HIGH_FIRST).tolist() == [0x12, 0x30]
    assert pack_nibbles(codes, PACKING_LOW_FIRST).tolist() == [0x21, 0x03]


def test_packing_rejects_wrong_dtypes_sizes_and_orders() -> None:
    with pytest.raises(InvalidArgument, match=r"expected torch\.uint8"):
        pack_nibbles(torch.tensor([1, 2]))
    with pytest.raises(InvalidArgument, match="expected 2 for 3 codes"):
        unpack_nibbles(torch.zeros(3, dtype=torch.uint8), 3)
    with pytest.raises(InvalidArgument, match="order='middle-out'"):
        pack_nibbles(torch.zeros(2, dtype=torch.uint8), "middle-out")


def test_error_stats_by_hand() -> None:
    x = torch.tensor([1.0, -2.0, 3.0, 0.0])
    xhat = torch.tensor([1.5, -2.0, 2.0, 0.0])
    stats = error_stats(x, xhat)
    assert stats.mse == pytest.approx((0.25 + 1.0) / 4)
    assert stats.mae == pytest.approx(1.5 / 4)
    assert stats.max_error == 1.0
    assert stats.sqnr_db == pytest.approx(10 * math.log10(14 / 1.25))
    assert error_stats(x, x).sqnr_db == math.inf


def test_error_stats_and_agreement_reject_mismatched_shapes() -> None:
    with pytest.raises(InvalidArgument, match="expected the original's"):
        error_stats(torch.zeros(4), torch.zeros(2, 2))
    with pytest.raises(InvalidArgument, match="codes shapes differ"):
        code_agreement(torch.zeros(3, dtype=torch.uint8), torch.zeros(4, dtype=torch.uint8))
    same = torch.tensor([1, 2, 3, 4], dtype=torch.uint8)
    assert code_agreement(same, torch.tensor([1, 2, 0, 4], dtype=torch.uint8)) == 0.75


def test_format_spec_normalises_and_validates() -> None:
    spec = FormatSpec("nf4", codebook=torch.linspace(-1, 1, 16))
    assert isinstance(spec.codebook, tuple) and len(spec.codebook) == 16
    for bad, message in [
        ({"codebook": (0.0,) * 15}, "has 15 values, expected 16"),
        ({"codebook": (math.nan,) * 16}, "expected finite values"),
        ({"codebook": None, "block_size": 48}, "expected a positive power of two"),
        ({"codebook": None, "packing": "sideways"}, "FormatSpec.packing='sideways'"),
        ({"codebook": None, "double_quant": 8}, "expected a DoubleQuant or None"),
        ({"codebook": None, "scale": ""}, "expected a scale kind"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            FormatSpec("x", **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="expected a non-empty string"):
        FormatSpec("", codebook=None)
    with pytest.raises(InvalidArgument, match=r"DoubleQuant\.bits=0"):
        DoubleQuant(bits=0)


def test_min_bits_per_parameter() -> None:
    assert FormatSpec("nf4", None).min_bits_per_parameter() == 4 + 16 / 64
    dq = FormatSpec("nf4", None, double_quant=DoubleQuant())
    assert dq.min_bits_per_parameter() == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert FormatSpec("x", None, block_size=32).min_bits_per_parameter(has_offsets=True) == 4 + 32 / 32


def test_capabilities_defaults_and_reasons() -> None:
    caps = Capabilities()
    assert caps.devices == ("cpu",)
    assert caps.dtypes == (torch.float32, torch.float16, torch.bfloat16)
    assert caps.supported_block_sizes(FormatSpec("nf4", None, block_size=128)) == (128,)
    assert caps.unsupported_reason((3, 5), torch.float32) is None
    assert "cuda" in str(caps.unsupported_reason((3,), torch.float32, "cuda"))
    assert "float64" in str(caps.unsupported_reason((3,), torch.float64))
    strict = Capabilities(max_ndim=2, numel_multiple_of=64, shape_rule=lambda s: "odd rows" if s[0] % 2 else None)
    assert "max_ndim=2" in str(strict.unsupported_reason((2, 2, 16), torch.float32))
    assert "not a multiple of 64" in str(strict.unsupported_reason((3, 7), torch.float32))
    assert strict.unsupported_reason((3, 64), torch.float32) == "odd rows"
    with pytest.raises(InvalidArgument):
        Capabilities(block_sizes=(64, 100))


def test_quantized_tensor_counts_storage_bytes() -> None:
    q = QuantizedTensor(
        shape=torch.Size([8, 8]),
        dtype=torch.float32,
        storage={"packed": torch.zeros(32, dtype=torch.uint8), "absmax": torch.zeros(1)},
    )
    assert q.nbytes == 36 and q.numel == 64 and q.bits_per_parameter == 36 * 8 / 64
