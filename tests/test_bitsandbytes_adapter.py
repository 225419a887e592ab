"""The bitsandbytes adapters report what bnb stores and compute what bnb computes.

The tests that need bitsandbytes skip without it; the missing-dependency tests run either way.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as torch_functional

from harness.checks import block_absmax, double_quant_bound, run_quantize
from harness.errors import ImplementationError, InvalidArgument, MissingDependency, PluginError
from harness.formats.packing import unpack_nibbles
from harness.registry import Registry

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None
if HAS_BNB:
    import bitsandbytes
    import bitsandbytes.functional as bnb_functional

    from harness.quantizers.bitsandbytes import BitsandbytesQuantizer, bitsandbytes_quantizers

requires_bnb = pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
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


@requires_bnb
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


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
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


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dequantize_equals_bnb_bit_for_bit(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    quantizer = _quantizer(name)
    x = _weight(shape, dtype, seed=1)
    packed, state = _bnb(quantizer, x)
    expected = bnb_functional.dequantize_4bit(packed, state)
    got = quantizer.dequantize(quantizer.quantize(x))
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
def test_dequantize_reads_storage(name: str) -> None:
    quantizer = _quantizer(name)
    x = _weight((16, 64))
    q = quantizer.quantize(x)
    altered = dict(q.storage)
    altered["packed"] = q.storage["packed"] ^ 0x11
    q.storage = altered
    assert not torch.equal(quantizer.dequantize(q), bnb_functional.dequantize_4bit(*_bnb(quantizer, x)))


@requires_bnb
def test_nested_table_is_bnbs() -> None:
    quantizer = _quantizer("bnb-nf4-dq")
    q = quantizer.quantize(_weight((32, 64)))
    assert torch.equal(quantizer._nested_code(bnb_functional), q.state.state2.code)


@requires_bnb
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


# ------------------------------------------------------------------------------------------ error bounds
#
# A product computed in floating point differs from the exact one by at most
# gamma_k(u) * sum_i |x_i| |w_i| for k accumulated terms at unit roundoff u (Higham, "Accuracy and Stability
# of Numerical Algorithms", 3.1), plus u_out * |y| when the fp32 sum is rounded to a 16-bit output. torch's
# CPU matmul accumulates float16/bfloat16 in float32, so u = float32's for every dtype and u_out = the dtype's.
# Two such computations of the same product (bnb's and F.linear on the same dequantized weight) differ by at
# most twice that. The bound is per output element, on |x| @ |W|.T + |bias|, not a blanket rtol.


def unit_roundoff(dtype: torch.dtype) -> float:
    """Half the distance from 1 to the next float of ``dtype``: the largest relative rounding error."""
    return torch.finfo(dtype).eps / 2


def gamma(terms: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of a sum of ``terms`` products."""
    return terms * u / (1 - terms * u)


def magnitude(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """|x| @ |w|.T (+ |bias|) in float64: the scale every rounding error of x @ w.T + bias is relative to."""
    out = x.double().abs() @ w.double().abs().T
    return out if bias is None else out + bias.double().abs()


def matmul_bound(terms: int, dtype: torch.dtype) -> float:
    """Relative bound (times :func:`magnitude`) on |a - b| for two dtype matmuls of the same operands."""
    return 2 * (gamma(terms, unit_roundoff(torch.float32)) + unit_roundoff(dtype))


def fused_bf16_bound(terms: int, dtype: torch.dtype) -> float:
    """Relative bound on |bnb's AVX512-BF16 eval kernel - F.linear in dtype| for the same quantized weight.

    That kernel rounds x, the absmax and the decoded weight to bfloat16 (3 roundings of each product's
    factors), accumulates the exact bf16 x bf16 products in float32, rounds the sum to bfloat16, and adds the
    bias in ``dtype``; F.linear in dtype is within gamma(terms + 1, u32) + u_dtype of the exact value.
    """
    u_bf16, u_32, u_out = unit_roundoff(torch.bfloat16), unit_roundoff(torch.float32), unit_roundoff(dtype)
    fused = (1 + u_bf16) ** 4 * (1 + gamma(terms, u_32)) * (1 + u_out) - 1
    return fused + gamma(terms + 1, u_32) + u_out


def assert_within(got: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    """Every |got - expected| <= bound (float64), or an error naming the worst element and the bound."""
    error = (got.double() - expected.double()).abs()
    excess = error - bound
    worst = int(excess.reshape(-1).argmax())
    assert bool((excess <= 0).all()), (
        f"{what}: |got - expected| = {float(error.reshape(-1)[worst]):.6g} at flat index {worst}, "
        f"bound {float(bound.reshape(-1)[worst]):.6g} (got {float(got.reshape(-1)[worst])!r}, "
        f"expected {float(expected.reshape(-1)[worst])!r})"
    )


@requires_bnb
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bounds_catch_one_code_one_level_off(dtype: torch.dtype) -> None:
    """The matmul bound is tight enough to fail a product whose weight has a single code one level off.

    (The fused bfloat16 kernel's bound is not: a bfloat16 product cannot resolve one level of one weight.)"""
    quantizer = _quantizer("bnb-nf4")
    w = _weight((OUT_FEATURES, IN_FEATURES), dtype, seed=3)
    q = quantizer.quantize(w)
    w_hat = quantizer.dequantize(q)
    x = _weight((4, IN_FEATURES), dtype, seed=4)
    expected = torch_functional.linear(x, w_hat)
    column = int(x[0].abs().argmax())
    assert q.codes is not None and q.scales is not None
    code = int(q.codes[0, column])
    off_by_one = code + 1 if code < 15 else code - 1
    wrong = w_hat.clone()
    table = quantizer.spec.codebook_tensor()
    wrong[0, column] = (table[off_by_one] * q.scales[column // quantizer.spec.block_size]).to(dtype)
    got = torch_functional.linear(x, wrong)
    with pytest.raises(AssertionError, match=r"one code off: .* at flat index 0,"):
        assert_within(got, expected, matmul_bound(IN_FEATURES, dtype) * magnitude(x, w_hat), "one code off")


# ------------------------------------------------------------------------------------------ matmul

IN_FEATURES, OUT_FEATURES = 128, 96


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_equals_linear_of_dequantized(name: str, dtype: torch.dtype) -> None:
    """Batch 1 (a single row) to 16 rows, and a 3-D batch: bnb's matmul_4bit against F.linear on the
    adapter's own dequantized weight, within the dtype's rounding bound."""
    quantizer = _quantizer(name)
    w = _weight((OUT_FEATURES, IN_FEATURES), dtype, seed=3)
    q = quantizer.quantize(w)
    w_hat = quantizer.dequantize(q)
    packed, state = _bnb(quantizer, w)
    bound = matmul_bound(IN_FEATURES, dtype)
    for shape in [(rows, IN_FEATURES) for rows in range(1, 17)] + [(2, 3, IN_FEATURES)]:
        x = _weight(shape, dtype, seed=4 + shape[0])
        got = quantizer.matmul(x, q)
        expected = torch_functional.linear(x, w_hat)
        assert got.dtype == dtype and got.shape == (*shape[:-1], OUT_FEATURES)
        assert_within(got, expected, bound * magnitude(x, w_hat), f"{name} {dtype} x{tuple(shape)}")
        # through the library: bnb's own matmul_4bit on bnb's own tensors, bit for bit
        assert torch.equal(got, bitsandbytes.matmul_4bit(x, packed, state))


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
def test_matmul_single_row_equals_its_row_in_a_batch(name: str) -> None:
    """A 1-row product (bnb's gemv case) agrees with the same row of a 16-row product."""
    quantizer = _quantizer(name)
    q = quantizer.quantize(_weight((OUT_FEATURES, IN_FEATURES), seed=5))
    x = _weight((16, IN_FEATURES), seed=6)
    batch = quantizer.matmul(x, q)
    w_hat = quantizer.dequantize(q)
    for row in range(16):
        single = quantizer.matmul(x[row : row + 1], q)
        bound = matmul_bound(IN_FEATURES, torch.float32) * magnitude(x[row : row + 1], w_hat)
        assert_within(single, batch[row : row + 1], bound, f"{name} row {row}")


@requires_bnb
def test_matmul_rejects_mismatched_shapes() -> None:
    quantizer = _quantizer("bnb-nf4")
    q = quantizer.quantize(_weight((OUT_FEATURES, IN_FEATURES)))
    # x's width equal to out_features: bnb would silently compute x @ W (its deprecated [K, N] layout)
    with pytest.raises(InvalidArgument, match=r"bnb-nf4: x.shape=\(4, 96\), expected \[\.\.\., 128\]"):
        quantizer.matmul(_weight((4, OUT_FEATURES)), q)
    with pytest.raises(InvalidArgument, match=r"expected a 2-D weight"):
        quantizer.matmul(_weight((4, 64)), quantizer.quantize(_weight((2, 4, 64))))
    with pytest.raises(InvalidArgument, match=r"x is a list"):
        quantizer.matmul([1.0], q)  # type: ignore[arg-type]


@requires_bnb
def test_matmul_keeps_bnbs_message() -> None:
    quantizer = _quantizer("bnb-nf4")
    q = quantizer.quantize(_weight((OUT_FEATURES, IN_FEATURES)))
    altered = dict(q.storage)
    altered["packed"] = q.storage["packed"][:10]  # truncated bytes: bnb cannot reshape them to the weight
    q.storage = altered
    with pytest.raises(ImplementationError) as caught:
        quantizer.matmul(_weight((2, IN_FEATURES)), q)
    assert caught.value.implementation == "bnb-nf4"
    assert "bitsandbytes.matmul_4bit" in str(caught.value)
    assert str(caught.value.original) in str(caught.value)


# ------------------------------------------------------------------------------------------ linear


def _linear(dtype: torch.dtype, bias: bool = True, seed: int = 7) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(IN_FEATURES, OUT_FEATURES, bias=bias, dtype=dtype)


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_is_a_bnb_linear4bit_storing_the_adapters_bytes(name: str, dtype: torch.dtype, bias: bool) -> None:
    quantizer = _quantizer(name)
    module = _linear(dtype, bias)
    weight_before = module.weight.detach().clone()
    layer = quantizer.linear(module)
    assert isinstance(layer, bitsandbytes.nn.Linear4bit)
    weight = layer.weight
    assert isinstance(weight, bitsandbytes.nn.Params4bit) and weight.bnb_quantized
    assert weight.device.type == "cpu"
    assert (weight.quant_type, weight.blocksize) == (quantizer.spec.format, quantizer.spec.block_size)
    assert weight.compress_statistics == (quantizer.spec.double_quant is not None)
    assert layer.compute_dtype == dtype
    assert (layer.in_features, layer.out_features) == (IN_FEATURES, OUT_FEATURES)
    # the bytes it keeps are the adapter's quantize of the same weight, bit for bit
    q = quantizer.quantize(module.weight.detach())
    state = weight.quant_state
    assert torch.equal(weight.data, q.storage["packed"])
    assert state.blocksize == quantizer.spec.block_size and state.dtype == dtype
    if state.nested:
        assert torch.equal(state.absmax, q.storage["absmax_codes"])
        assert torch.equal(state.state2.absmax, q.storage["absmax_outer"])
        assert torch.equal(state.offset, q.storage["absmax_mean"])
    else:
        assert torch.equal(state.absmax, q.storage["absmax"])
    if bias:
        assert layer.bias is not None and module.bias is not None
        assert torch.equal(layer.bias, module.bias) and layer.bias.data_ptr() != module.bias.data_ptr()
    else:
        assert layer.bias is None
    assert torch.equal(module.weight, weight_before)  # the source module is left alone
    assert quantizer.capabilities.has_module


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_forward_equals_linear_of_dequantized(name: str, dtype: torch.dtype) -> None:
    """Training mode runs bnb's dequantize + linear in ``dtype``. Eval mode (input without grad) on a CPU with
    AVX512-BF16 repacks the weight for bnb's fused kernel, for good (training mode then uses it too), and
    that kernel computes in bfloat16 whatever the dtype, so its bound is bfloat16's (:func:`fused_bf16_bound`)."""
    quantizer = _quantizer(name)
    module = _linear(dtype)
    assert module.bias is not None
    bias = module.bias.detach()
    w_hat = quantizer.dequantize(quantizer.quantize(module.weight.detach()))
    layer = quantizer.linear(module)
    fused = bnb_functional.has_avx512bf16()
    inputs = [_weight((rows, IN_FEATURES), dtype, seed=8 + rows) for rows in (1, 5, 16)]
    for mode, bound in (
        ("train", matmul_bound(IN_FEATURES + 1, dtype)),
        ("eval", fused_bf16_bound(IN_FEATURES, dtype) if fused else matmul_bound(IN_FEATURES + 1, dtype)),
    ):
        layer.train(mode == "train")
        for x in inputs:
            with torch.no_grad():
                got = layer(x)
            expected = torch_functional.linear(x, w_hat, bias)
            assert got.dtype == dtype and got.shape == (x.shape[0], OUT_FEATURES)
            what = f"{name} {mode} x{tuple(x.shape)} (fused bf16 kernel on this CPU: {fused})"
            assert_within(got, expected, bound * magnitude(x, w_hat, bias), what)


@requires_bnb
def test_linear_rejects_bad_modules() -> None:
    quantizer = _quantizer("bnb-nf4")
    with pytest.raises(InvalidArgument, match=r"module is a Conv1d, expected a torch.nn.Linear"):
        quantizer.linear(torch.nn.Conv1d(2, 2, 1))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"module.weight.dtype=torch.float64, expected one of"):
        quantizer.linear(_linear(torch.float64))
    nan_module = _linear(torch.float32)
    with torch.no_grad():
        nan_module.weight[3, 5] = math.nan
    with pytest.raises(InvalidArgument, match=r"module.weight has a non-finite value nan"):
        quantizer.linear(nan_module)
    layer = quantizer.linear(_linear(torch.float32))
    with pytest.raises(InvalidArgument, match=r"bnb-nf4: x.shape=\(2, 96\), expected \[\.\.\., 128\]"):
        layer(_weight((2, OUT_FEATURES)))


@requires_bnb
@pytest.mark.parametrize("name", NAMES)
def test_linear_unsupported_block_size_keeps_bnbs_message(name: str) -> None:
    quantizer = _quantizer(name).with_block_size(16)
    with pytest.raises(ImplementationError) as caught:
        quantizer.linear(_linear(torch.float32))
    assert caught.value.implementation == name
    assert str(caught.value).startswith(f"{name}: bitsandbytes.nn.Linear4bit(")
    assert "invalid blocksize 16" in str(caught.value)
    assert isinstance(caught.value.original, ValueError) and str(caught.value.original) == "invalid blocksize 16"


@requires_bnb
def test_linear_forward_error_keeps_bnbs_message() -> None:
    layer = _quantizer("bnb-fp4").linear(_linear(torch.float32))
    weight = layer.weight
    assert isinstance(weight, bitsandbytes.nn.Params4bit)
    weight.quant_state.shape = torch.Size([OUT_FEATURES * IN_FEATURES])  # bnb wants a 2-D state
    with pytest.raises(ImplementationError) as caught, torch.no_grad():
        layer.train()(_weight((2, IN_FEATURES)))
    assert caught.value.implementation == "bnb-fp4"
    assert "bitsandbytes.nn.Linear4bit.forward(x shape=(2, 128), training=True)" in str(caught.value)
    assert "matmul_4bit: quant_state.shape must be 2D" in str(caught.value)
    assert str(caught.value.original) in str(caught.value)


@requires_bnb
@pytest.mark.skipif(
    not HAS_BNB or not bnb_functional.has_avx512bf16(), reason="bnb's fused CPU kernel needs AVX512-BF16"
)
def test_linear_eval_kernel_limit_is_an_implementation_error() -> None:
    """bnb 0.50.2's AVX512-BF16 eval path repacks the weight in groups of 32 output rows and asserts on others."""
    module = torch.nn.Linear(IN_FEATURES, 20)
    layer = _quantizer("bnb-nf4").linear(module)
    with pytest.raises(ImplementationError, match=r"AssertionError: N must be divisible by block_n"), torch.no_grad():
        layer.eval()(_weight((1, IN_FEATURES)))


@requires_bnb
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


@requires_bnb
def test_supported_block_sizes_work() -> None:
    quantizer = _quantizer("bnb-nf4")
    x = _weight((8, 4096))
    for block_size in quantizer.capabilities.supported_block_sizes(quantizer.spec):
        q = quantizer.with_block_size(block_size).quantize(x)
        assert q.scales is not None and q.scales.numel() == x.numel() // block_size


# ------------------------------------------------------------------------------------------ without bitsandbytes


def _forget_adapter_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next import of the adapter module a fresh one; the original comes back after the test."""
    monkeypatch.delitem(sys.modules, "harness.quantizers.bitsandbytes", raising=False)
    package = importlib.import_module("harness.quantizers")
    monkeypatch.setattr(package, "bitsandbytes", getattr(package, "bitsandbytes", None), raising=False)


def test_without_bitsandbytes_the_module_imports_and_the_factory_raises_missing_dependency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes ``import bitsandbytes`` fail
    _forget_adapter_module(monkeypatch)
    module = importlib.import_module("harness.quantizers.bitsandbytes")  # a fresh import, without bnb
    with pytest.raises(MissingDependency) as caught:
        module.bitsandbytes_quantizers()
    error = caught.value
    assert error.source == "bitsandbytes"
    assert error.names == ("bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq")
    assert error.reason == "bitsandbytes is not installed"
    assert error.hint == "pip install 'fourbit-harness[bnb]'"
    assert isinstance(error.__cause__, ModuleNotFoundError)
    # the registry lists them as unavailable with the hint, not as a load error
    registry = Registry()
    registry.add_object(module.bitsandbytes_quantizers, "bitsandbytes")
    assert registry.errors == []
    assert sorted(registry.unavailable) == sorted(error.names)
    assert all("pip install 'fourbit-harness[bnb]'" in reason for reason in registry.unavailable.values())
    with pytest.raises(MissingDependency):
        module.BitsandbytesQuantizer("nf4")


def test_a_broken_bitsandbytes_install_is_a_plugin_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed but not importable (here: a module without its ``functional`` submodule) is not 'missing'."""
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    monkeypatch.delitem(sys.modules, "bitsandbytes.functional", raising=False)
    _forget_adapter_module(monkeypatch)
    module = importlib.import_module("harness.quantizers.bitsandbytes")
    with pytest.raises(PluginError) as caught:
        module.bitsandbytes_quantizers()
    assert not isinstance(caught.value, MissingDependency)
    assert "bitsandbytes is installed but importing it failed: ModuleNotFoundError" in str(caught.value)
