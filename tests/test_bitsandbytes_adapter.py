"""The bitsandbytes adapters report what bnb stores and compute what bnb computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as torch_functional

pytest.importorskip("bitsandbytes")

import bitsandbytes
import bitsandbytes.functional as bnb_functional

from harness.errors import ImplementationError
from harness.packing import unpack_nibbles
from harness.properties import block_absmax, double_quant_bound, run_quantize
from harness.quantizers.bitsandbytes import BitsandbytesQuantizer, bitsandbytes_quantizers

NAMES = ("bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq")
SHAPES = [(64, 128), (3, 70), (1000,), (2, 5, 32)]


def _quantizer(name: str, block_size: int = 64) -> BitsandbytesQuantizer:
    quantizer = {q.name: q for q in bitsandbytes_quantizers()}[name]
    return quantizer if block_size == quantizer.spec.block_size else quantizer.with_block_size(block_size)


def _weight(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _bnb(quantizer: BitsandbytesQuantizer, x: torch.Tensor) -> tuple[torch.Tensor, bnb_functional.QuantState]:
    return bnb_functional.quantize_4bit(
        x,
        blocksize=quantizer.spec.block_size,
        compress_statistics=quantizer.spec.double_quant is not None,
        quant_type=quantizer.spec.format,
    )


def test_factory_names_and_specs() -> None:
    quantizers = bitsandbytes_quantizers()
    assert [q.name for q in quantizers] == ["bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq"]
    for q in quantizers:
        table = bnb_functional.get_4bit_type(q.spec.format, device="cpu")
        assert q.spec.codebook == tuple(table.tolist())
        assert q.spec.block_size == 64
        assert q.spec.packing == "high-nibble-first"
        assert q.capabilities.has_matmul
        assert (q.spec.double_quant is not None) == q.name.endswith("-dq")
        if q.spec.double_quant is not None:
            assert (q.spec.double_quant.bits, q.spec.double_quant.block_size) == (8, 256)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_decoded_fields_equal_bnb_storage(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    quantizer = _quantizer(name)
    x = _weight(shape, dtype)
    q = quantizer.quantize(x)
    packed, state = _bnb(quantizer, x)
    # packed bytes are bnb's, bit for bit, and the codes are them unpacked high nibble first
    assert torch.equal(q.storage["packed"], packed)
    assert q.codes is not None and q.scales is not None
    assert torch.equal(q.codes.reshape(-1), unpack_nibbles(packed.reshape(-1), x.numel(), "high-nibble-first"))
    if state.nested:
        assert torch.equal(q.storage["absmax_codes"], state.absmax)
        assert torch.equal(q.storage["absmax_outer"], state.state2.absmax)
        assert torch.equal(q.storage["absmax_mean"], state.offset)
        expected_scales = bnb_functional.dequantize_blockwise(state.absmax, state.state2) + state.offset
        assert set(q.storage) == {"packed", "absmax_codes", "absmax_outer", "absmax_mean"}
    else:
        assert torch.equal(q.storage["absmax"], state.absmax)
        expected_scales = state.absmax
        assert set(q.storage) == {"packed", "absmax"}
    assert torch.equal(q.scales, expected_scales.float())
    assert q.state is not None and q.state.quant_type == quantizer.spec.format


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_dequantize_equals_bnb_bit_for_bit(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    quantizer = _quantizer(name)
    x = _weight(shape, dtype, seed=1)
    packed, state = _bnb(quantizer, x)
    expected = bnb_functional.dequantize_4bit(packed, state)
    got = quantizer.dequantize(quantizer.quantize(x))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))


@pytest.mark.parametrize("name", NAMES)
def test_dequantize_reads_storage(name: str) -> None:
    quantizer = _quantizer(name)
    x = _weight((16, 64))
    q = quantizer.quantize(x)
    altered = dict(q.storage)
    altered["packed"] = q.storage["packed"] ^ 0x11
    q.storage = altered
    assert not torch.equal(quantizer.dequantize(q), bnb_functional.dequantize_4bit(*_bnb(quantizer, x)))


def test_nested_table_is_bnbs() -> None:
    quantizer = _quantizer("bnb-nf4-dq")
    q = quantizer.quantize(_weight((32, 64)))
    assert torch.equal(quantizer._nested_code(bnb_functional), q.state.state2.code)


@pytest.mark.parametrize("name", ["bnb-nf4-dq", "bnb-fp4-dq"])
@pytest.mark.parametrize("block_size", [32, 64, 256])
def test_double_quantized_scales_within_bound(name: str, block_size: int) -> None:
    quantizer = _quantizer(name, block_size)
    x = _weight((512, 256), seed=2) * torch.linspace(0.01, 10, 512)[:, None]
    q = quantizer.quantize(x)
    assert q.scales is not None
    true = block_absmax(x, block_size)
    bound = double_quant_bound(quantizer.spec, true)
    assert bool(((q.scales.double() - true).abs() <= bound).all())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rows", [1, 7])
def test_matmul_equals_linear_of_dequantized(name: str, rows: int) -> None:
    quantizer = _quantizer(name)
    w = _weight((96, 128), seed=3)
    x = _weight((rows, 128), seed=4)
    q = quantizer.quantize(w)
    got = quantizer.matmul(x, q)
    expected = torch_functional.linear(x, quantizer.dequantize(q))
    assert got.shape == expected.shape == (rows, 96)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # and it is bnb's own matmul_4bit on bnb's own tensors
    packed, state = _bnb(quantizer, w)
    assert torch.equal(got, bitsandbytes.matmul_4bit(x, packed, state))


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_block_size_is_a_harness_error_with_bnbs_message(name: str) -> None:
    quantizer = _quantizer(name).with_block_size(16)
    with pytest.raises(ImplementationError) as caught:
        quantizer.quantize(_weight((4, 64)))
    assert caught.value.implementation == name
    assert name in str(caught.value)
    assert "invalid blocksize 16" in str(caught.value)
    assert isinstance(caught.value.original, ValueError)
    # through the harness's runner too
    with pytest.raises(ImplementationError, match=r"invalid blocksize 16") as again:
        run_quantize(quantizer, _weight((4, 64)))
    assert str(again.value).startswith(f"{name}: ")


def test_supported_block_sizes_work() -> None:
    quantizer = _quantizer("bnb-nf4")
    x = _weight((8, 4096))
    for block_size in quantizer.capabilities.supported_block_sizes(quantizer.spec):
        q = quantizer.with_block_size(block_size).quantize(x)
        assert q.scales is not None and q.scales.numel() == x.numel() // block_size
