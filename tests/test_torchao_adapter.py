"""The torchao adapters report what torchao stores and compute what torchao computes.

Every expectation is taken from torchao itself (``to_nf4``, ``quantize_`` on an ``nn.Linear``, their
tensors' own ``dequantize``), so a test fails when the adapter's decoding, storage or delegation breaks.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as torch_functional

pytest.importorskip("torchao")

import torchao.quantization as torchao_quantization
from torchao.quantization.quant_primitives import _DTYPE_TO_QVALUE_BOUNDS

import harness.quantizers
from harness.api import PACKING_HIGH_FIRST, PACKING_LOW_FIRST, QuantizedTensor
from harness.checks import CANONICAL_TOLERANCE, PropertyViolation, check_codebook
from harness.errors import ImplementationError, InvalidArgument, MissingDependency
from harness.formats import codebook as canonical_codebook
from harness.formats.packing import unpack_nibbles
from harness.quantizers.reference import ReferenceQuantizer
from harness.quantizers.torchao import (
    INT4_STORAGE,
    NF4_STORAGE,
    TORCHAO_NAMES,
    TorchaoInt4Quantizer,
    TorchaoNF4Quantizer,
    torchao_quantizers,
)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
NF4_SHAPES = [(64, 256), (16384,), (4, 8192)]
INT4_SHAPES = [(8, 128), (3, 64), (192,)]
TORCH_INT4: torch.dtype = torch.int4  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def nf4() -> TorchaoNF4Quantizer:
    return TorchaoNF4Quantizer()


@pytest.fixture(scope="module")
def int4() -> TorchaoInt4Quantizer:
    return TorchaoInt4Quantizer()


def _weight(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _to_nf4(x: torch.Tensor) -> Any:
    return torchao_quantization.to_nf4(x, block_size=64, scaler_block_size=256)


def _torchao_int4_weight(x: torch.Tensor) -> Any:
    """torchao's own path: quantize_ on an nn.Linear holding x (a 1-D x as the weight of Linear(numel, 1))."""
    weight = x.reshape(1, -1) if x.dim() == 1 else x
    module = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    module.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
    config = torchao_quantization.IntxWeightOnlyConfig(
        weight_dtype=TORCH_INT4, granularity=torchao_quantization.PerGroup(64)
    )
    torchao_quantization.quantize_(module, config)
    return module.weight


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of ``t`` (so -0.0 != 0.0 and the comparison is bit for bit)."""
    return t.reshape(-1).clone(memory_format=torch.contiguous_format).view(torch.uint8)


def _decode(spec_codebook: tuple[float, ...], q: QuantizedTensor, dtype: torch.dtype) -> torch.Tensor:
    """codebook[code] * scale + offset per block of 64, exact in float64, rounded once to ``dtype``.

    The codebook is first rounded to ``dtype``: torchao builds its NF4 table in the input dtype."""
    assert q.codes is not None and q.scales is not None
    levels = torch.tensor(spec_codebook, dtype=torch.float32).to(dtype).double()
    blocks = torch.arange(q.numel) // 64
    values = levels[q.codes.reshape(-1).long()] * q.scales.double()[blocks]
    if q.offsets is not None:
        values = values + q.offsets.double()[blocks]
    return values.to(dtype).reshape(q.shape)


# ---------------------------------------------------------------------------------------------- factory


def test_factory_names_and_specs(nf4: TorchaoNF4Quantizer) -> None:
    quantizers = torchao_quantizers()
    assert tuple(q.name for q in quantizers) == TORCHAO_NAMES == ("torchao-nf4", "torchao-int4")
    defaults = inspect.signature(torchao_quantization.to_nf4).parameters
    spec = quantizers[0].spec
    assert spec.block_size == defaults["block_size"].default == 64
    assert spec.double_quant is not None
    assert (spec.double_quant.bits, spec.double_quant.block_size) == (8, defaults["scaler_block_size"].default)
    assert spec.packing == PACKING_HIGH_FIRST and spec.scale == "absmax" and spec.format == "nf4"
    assert spec.codebook == tuple(_to_nf4(_weight((16384,))).nf4.tolist())
    int4_spec = quantizers[1].spec
    low, high = _DTYPE_TO_QVALUE_BOUNDS[TORCH_INT4]
    assert int4_spec.codebook == tuple(float(v) for v in range(low, high + 1))
    assert (int4_spec.format, int4_spec.block_size, int4_spec.scale) == ("int4", 64, "absmax/7.5")
    assert int4_spec.double_quant is None and int4_spec.packing is None
    assert isinstance(quantizers[1], TorchaoInt4Quantizer)
    config = quantizers[1].config
    assert config.weight_dtype == TORCH_INT4 and config.granularity.group_size == 64
    assert config.mapping_type == torchao_quantization.MappingType.SYMMETRIC
    for q in quantizers:
        assert set(q.capabilities.dtypes) == set(DTYPES)
        assert q.capabilities.has_matmul and q.capabilities.has_module
        assert q.capabilities.max_ndim == 2


def test_missing_torchao_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module imports without torchao; asking for the adapters names both and the install hint."""
    original = sys.modules["harness.quantizers.torchao"]
    monkeypatch.setattr(harness.quantizers, "torchao", original, raising=False)  # restored afterwards
    for name in [n for n in sys.modules if n == "torchao" or n.startswith("torchao.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: `import` raises ImportError
    monkeypatch.delitem(sys.modules, "harness.quantizers.torchao")
    fresh = importlib.import_module("harness.quantizers.torchao")
    assert fresh is not original
    for factory in (fresh.torchao_quantizers, fresh.TorchaoNF4Quantizer, fresh.TorchaoInt4Quantizer):
        with pytest.raises(MissingDependency) as caught:
            factory()
        error = caught.value
        assert error.source == "torchao"
        assert error.names == ("torchao-nf4", "torchao-int4")
        assert error.reason == "torchao is not installed"
        assert error.hint == "pip install 'fourbit-harness[torchao]'"
        assert isinstance(error.__cause__, ImportError)


# ---------------------------------------------------------------------------------------------- NF4


@pytest.mark.parametrize("shape", NF4_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nf4_fields_reproduce_torchao_bit_for_bit(
    nf4: TorchaoNF4Quantizer, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    x = _weight(shape, dtype)
    q = nf4.quantize(x)
    reference = _to_nf4(x)
    # storage is torchao's own tensors, bit for bit
    inner = {"packed": "quantized_data"}
    assert set(q.storage) == set(NF4_STORAGE)
    for key in NF4_STORAGE:
        stored, theirs = q.storage[key], getattr(reference, inner.get(key, key))
        assert stored.dtype == theirs.dtype and stored.shape == theirs.shape
        assert torch.equal(_bits(stored), _bits(theirs)), key
    # decoded codes and scales reproduce torchao's dequantization exactly
    expected = reference.get_original_weight()
    assert torch.equal(_bits(_decode(nf4.spec.codebook or (), q, dtype)), _bits(expected))
    assert q.scales is not None and q.scales.dtype == torch.float32
    assert torch.equal(q.scales.to(dtype).float(), q.scales)  # exactly torchao's scales, widened
    # and dequantize is torchao's get_original_weight on the rebuilt tensor
    got = nf4.dequantize(q)
    assert got.dtype == dtype and got.shape == x.shape
    assert torch.equal(_bits(got), _bits(expected))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nf4_codebook_in_each_dtype_is_torchaos_table(nf4: TorchaoNF4Quantizer, dtype: torch.dtype) -> None:
    """torchao builds its table in the input dtype; that is the spec's table rounded once to the dtype."""
    assert torch.equal(_to_nf4(_weight((16384,), dtype)).nf4, nf4.spec.codebook_tensor().to(dtype))


def test_nf4_packing_is_high_nibble_first(nf4: TorchaoNF4Quantizer) -> None:
    x = _weight((64, 256), seed=5)
    q = nf4.quantize(x)
    assert q.codes is not None
    packed = q.storage["packed"]
    assert torch.equal(q.codes.reshape(-1), unpack_nibbles(packed, x.numel(), PACKING_HIGH_FIRST))
    swapped = unpack_nibbles(packed, x.numel(), PACKING_LOW_FIRST)
    assert not torch.equal(swapped, q.codes.reshape(-1))  # the order matters for this input ...
    wrong = QuantizedTensor(codes=swapped.reshape(x.shape), scales=q.scales, shape=x.shape, dtype=x.dtype)
    assert not torch.equal(_decode(nf4.spec.codebook or (), wrong, x.dtype), nf4.dequantize(q))  # ... and shows


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nf4_nbytes_is_what_torchao_keeps(nf4: TorchaoNF4Quantizer, dtype: torch.dtype) -> None:
    x = _weight((4, 8192), dtype)
    reference = _to_nf4(x)
    names, _ = reference.__tensor_flatten__()
    kept = sum(getattr(reference, name).numel() * getattr(reference, name).element_size() for name in names)
    q = nf4.quantize(x)
    assert q.nbytes == kept
    blocks = x.numel() // 64
    element = torch.empty((), dtype=dtype).element_size()
    assert kept == x.numel() // 2 + blocks + (blocks // 256) * element + element + 16 * element


def test_nf4_shape_rule_is_torchaos(nf4: TorchaoNF4Quantizer) -> None:
    """A shape is outside the capabilities exactly when torchao's to_nf4 rejects it."""
    shapes = [(64, 256), (16384,), (128, 128), (2, 16384), (64, 128), (3, 70), (100, 164), (8192,), (2, 64, 128)]
    for shape in shapes:
        reason = nf4.capabilities.unsupported_reason(shape, torch.float32)
        try:
            _to_nf4(torch.randn(shape))
            torchao_accepts = True
        except AssertionError:
            torchao_accepts = False
        assert (reason is None) == torchao_accepts, (shape, reason)
        if reason is not None:
            with pytest.raises(InvalidArgument, match=r"torchao-nf4: x\.shape=.* is unsupported: ") as caught:
                nf4.quantize(torch.randn(shape))
            assert reason in str(caught.value)


def test_nf4_codebook_is_the_nf4_table_rounded_to_4_decimals(nf4: TorchaoNF4Quantizer) -> None:
    canonical = canonical_codebook("nf4").double()
    table = torch.tensor(nf4.spec.codebook, dtype=torch.float64)
    assert torch.equal(table.float(), (canonical * 1e4).round().div(1e4).float())
    worst = float((table - canonical).abs().max())
    assert CANONICAL_TOLERANCE["nf4"] < worst <= 0.5e-4 + float(torch.finfo(torch.float32).eps)
    with pytest.raises(PropertyViolation, match=r"torchao-nf4: codebook violated: .*must carry the NF4 codebook"):
        check_codebook(nf4)  # the harness flags the rounded table


def test_nf4_codes_differ_from_reference_only_between_the_two_tables_midpoints(nf4: TorchaoNF4Quantizer) -> None:
    """On a seeded 4096 x 4096 normal weight, torchao's codes differ from ref-nf4's exactly where x / absmax
    (computed in float32, as torchao does) falls in different bins of the two tables (between torchao's
    midpoint and the canonical one), and then by one step."""
    x = _weight((4096, 4096), seed=0)
    reference = ReferenceQuantizer("nf4")
    ours, theirs = nf4.quantize(x).codes, reference.quantize(x).codes
    assert ours is not None and theirs is not None
    ours, theirs = ours.reshape(-1).long(), theirs.reshape(-1).long()
    differ = ours != theirs
    assert bool(differ.any())
    assert int((ours - theirs)[differ].abs().max()) == 1
    blocks = x.reshape(-1, 64)
    ratio = (blocks / blocks.abs().amax(dim=1, keepdim=True)).reshape(-1).double()
    torchao_table = torch.tensor(nf4.spec.codebook, dtype=torch.float64)
    canonical_table = torch.tensor(reference.spec.codebook, dtype=torch.float64)
    torchao_bins = torch.bucketize(ratio, (torchao_table[:-1] + torchao_table[1:]) / 2)
    canonical_bins = torch.bucketize(ratio, (canonical_table[:-1] + canonical_table[1:]) / 2)
    assert torch.equal(differ, torchao_bins != canonical_bins)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", [1, 7])
def test_nf4_matmul_is_linear_of_dequantized(nf4: TorchaoNF4Quantizer, dtype: torch.dtype, rows: int) -> None:
    w = _weight((64, 256), dtype, seed=3)
    x = _weight((rows, 256), dtype, seed=4)
    q = nf4.quantize(w)
    got = nf4.matmul(x, q)
    assert got.shape == (rows, 64) and got.dtype == dtype
    assert torch.equal(_bits(got), _bits(torch_functional.linear(x, nf4.dequantize(q))))
    torch.testing.assert_close(got.double(), x.double() @ nf4.dequantize(q).double().T, rtol=2e-2, atol=2e-2)
    with pytest.raises(InvalidArgument, match=r"expected a 2-D weight"):
        nf4.matmul(x, nf4.quantize(w.reshape(-1)))


def test_nf4_linear_module(nf4: TorchaoNF4Quantizer) -> None:
    torch.manual_seed(6)
    module = torch.nn.Linear(256, 64)
    before = module.weight.detach().clone()
    quantized = nf4.linear(module)
    assert isinstance(quantized, torch.nn.Linear) and isinstance(quantized.weight, torchao_quantization.NF4Tensor)
    assert torch.equal(module.weight.detach(), before) and not isinstance(module.weight, torchao_quantization.NF4Tensor)
    x = _weight((5, 256), seed=7)
    expected = torch_functional.linear(x, nf4.dequantize(nf4.quantize(before))) + module.bias.detach()
    assert torch.equal(quantized(x), expected)
    with pytest.raises(InvalidArgument, match=r"module is a Conv1d, expected a torch.nn.Linear"):
        nf4.linear(torch.nn.Conv1d(1, 1, 1))


def test_nf4_library_error_is_an_implementation_error(nf4: TorchaoNF4Quantizer) -> None:
    q = nf4.quantize(_weight((16384,)))
    storage = dict(q.storage)
    storage["quantized_scalers"] = storage["quantized_scalers"][:100]  # torchao's dequantize_scalers asserts
    q.storage = storage
    with pytest.raises(ImplementationError) as caught:
        nf4.dequantize(q)
    assert caught.value.implementation == "torchao-nf4"
    assert caught.value.operation.startswith("torchao.quantization.NF4Tensor.get_original_weight(")
    assert isinstance(caught.value.original, AssertionError)
    assert "Input tensor must be divisible by block size, got 100 and 256" in str(caught.value)


def test_missing_storage_entry_is_an_invalid_argument(nf4: TorchaoNF4Quantizer, int4: TorchaoInt4Quantizer) -> None:
    for quantizer, x, key in ((nf4, _weight((16384,)), "scaler_mean"), (int4, _weight((2, 64)), "zero_point")):
        q = quantizer.quantize(x)
        q.storage = {k: v for k, v in q.storage.items() if k != key}
        with pytest.raises(InvalidArgument, match=rf"QuantizedTensor.storage lacks \['{key}'\], expected the entries"):
            quantizer.dequantize(q)


# ---------------------------------------------------------------------------------------------- int4


@pytest.mark.parametrize("shape", INT4_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_int4_fields_reproduce_torchao_bit_for_bit(
    int4: TorchaoInt4Quantizer, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    x = _weight(shape, dtype, seed=1) * 3
    q = int4.quantize(x)
    reference = _torchao_int4_weight(x)
    assert set(q.storage) == set(INT4_STORAGE)
    for key in INT4_STORAGE:
        assert torch.equal(_bits(q.storage[key]), _bits(getattr(reference, key))), key
    assert q.codes is not None and q.codes.dtype == torch.uint8 and q.codes.shape == x.shape
    assert torch.equal(q.codes.reshape(-1).long() - 8, reference.qdata.reshape(-1).long())
    # symmetric mapping: the zero points torchao stores are all 0 (what exact_zero=True relies on)
    assert not bool(reference.zero_point.any())
    expected = reference.dequantize().reshape(x.shape)
    assert torch.equal(_bits(_decode(int4.spec.codebook or (), q, dtype)), _bits(expected))
    assert q.scales is not None and torch.equal(q.scales.to(dtype).float(), q.scales)
    assert torch.equal(_bits(int4.dequantize(q)), _bits(expected))


def test_int4_uses_every_level_and_scale_is_absmax_over_7_5(int4: TorchaoInt4Quantizer) -> None:
    x = _weight((256, 1024), seed=2)
    q = int4.quantize(x)
    assert q.codes is not None and q.scales is not None
    assert q.codes.unique().tolist() == list(range(16))
    absmax = x.reshape(-1, 64).abs().amax(dim=1)
    assert torch.equal(q.scales, absmax / 7.5)
    # at the block's absmax x / scale is +-7.5 up to the rounding of torchao's x * (1 / scale): +7.5 rounds
    # to 7 or 8 (clamped to 7), so a positive absmax never comes back exactly; -7.5 gives -8 or -7
    flat, codes = x.reshape(-1, 64), q.codes.reshape(-1, 64)
    assert bool((codes[flat == absmax[:, None]] == 15).all())
    assert set(codes[flat == -absmax[:, None]].tolist()) <= {0, 1}


def test_int4_nbytes_is_what_torchao_keeps(int4: TorchaoInt4Quantizer) -> None:
    x = _weight((8, 128), torch.bfloat16)
    reference = _torchao_int4_weight(x)
    tensors = [getattr(reference, name) for name in reference.tensor_data_names]
    kept = sum(t.numel() * t.element_size() for t in tensors)
    q = int4.quantize(x)
    assert q.nbytes == kept == 8 * 128 + 2 * 16 + 16  # one int8 per weight: torchao keeps int4 unpacked


def test_int4_shape_rule_is_torchaos(int4: TorchaoInt4Quantizer) -> None:
    """2-D weights are supported exactly when torchao quantizes them; 1-D go in as one row; 3-D are refused."""
    for matrix in [(8, 128), (3, 64), (8, 70), (2, 96), (1, 4096)]:
        reason = int4.capabilities.unsupported_reason(matrix, torch.float32)
        try:
            _torchao_int4_weight(torch.randn(matrix))
            torchao_accepts = True
        except AssertionError:
            torchao_accepts = False
        assert (reason is None) == torchao_accepts, (matrix, reason)
    for shape in [(8, 70), (100,), (2, 4, 64)]:
        reason = int4.capabilities.unsupported_reason(shape, torch.float32)
        assert reason is not None
        with pytest.raises(InvalidArgument, match=r"torchao-int4: x\.shape=.* is unsupported: ") as caught:
            int4.quantize(torch.randn(shape))
        assert reason in str(caught.value)
    with pytest.raises(InvalidArgument, match=r"dtype torch.float64 not in capabilities.dtypes"):
        int4.quantize(torch.randn(2, 64, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", [1, 7])
def test_int4_matmul_is_linear_of_dequantized(int4: TorchaoInt4Quantizer, dtype: torch.dtype, rows: int) -> None:
    w = _weight((96, 128), dtype, seed=3)
    x = _weight((rows, 128), dtype, seed=4)
    q = int4.quantize(w)
    got = int4.matmul(x, q)
    assert got.shape == (rows, 96) and got.dtype == dtype
    assert torch.equal(_bits(got), _bits(torch_functional.linear(x, int4.dequantize(q))))
    with pytest.raises(InvalidArgument, match=r"expected a 2-D weight"):
        int4.matmul(x, int4.quantize(w.reshape(-1)))


def test_int4_linear_module(int4: TorchaoInt4Quantizer) -> None:
    torch.manual_seed(8)
    module = torch.nn.Linear(128, 32)
    before = module.weight.detach().clone()
    quantized = int4.linear(module)
    assert isinstance(quantized.weight, torchao_quantization.IntxUnpackedToInt8Tensor)
    assert torch.equal(module.weight.detach(), before)
    x = _weight((5, 128), seed=9)
    expected = torch_functional.linear(x, int4.dequantize(int4.quantize(before)), module.bias.detach())
    assert torch.equal(quantized(x), expected)


def test_int4_library_error_is_an_implementation_error(int4: TorchaoInt4Quantizer) -> None:
    q = int4.quantize(_weight((4, 128)))
    storage = dict(q.storage)
    storage["scale"] = storage["scale"].reshape(-1)  # torchao's constructor checks the scale's shape
    q.storage = storage
    with pytest.raises(ImplementationError) as caught:
        int4.dequantize(q)
    assert caught.value.implementation == "torchao-int4"
    assert caught.value.operation.startswith("torchao.quantization.IntxUnpackedToInt8Tensor(")
    assert isinstance(caught.value.original, AssertionError)
    assert "Expected scale to have shape [4, 2]" in str(caught.value)


@pytest.mark.parametrize("name", TORCHAO_NAMES)
def test_dequantize_reads_storage(nf4: TorchaoNF4Quantizer, int4: TorchaoInt4Quantizer, name: str) -> None:
    quantizer: TorchaoNF4Quantizer | TorchaoInt4Quantizer = nf4 if name == "torchao-nf4" else int4
    x = _weight((64, 256), seed=10)
    q = quantizer.quantize(x)
    expected = quantizer.dequantize(q)
    first = next(iter(q.storage))
    altered = dict(q.storage)
    altered[first] = q.storage[first] ^ 0x11 if q.storage[first].dtype == torch.uint8 else q.storage[first] // 2
    q.storage = altered
    assert not torch.equal(quantizer.dequantize(q), expected)
