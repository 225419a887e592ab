"""The Triton kernels (dequantize, fused gemv) and the triton-nf4/triton-fp4 adapters.

The kernels run here on the Triton interpreter, whatever TRITON_INTERPRET said when triton was
imported: :mod:`harness.kernels._build` builds a separate interpreter copy of the kernels for CPU
tensors (``triton.jit`` decides interpreter vs compiler when it decorates, so the usual "set
TRITON_INTERPRET=1 before importing triton" would not survive a test process in which bitsandbytes
already imported triton). Two subprocess tests prove it for both orders. Shapes are chosen so the
interpreter runs few, large programs (one config: 2**17 bytes per dequantize program, 256 x 1024 gemv tiles).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from harness.api import QuantizedTensor
from harness.errors import ImplementationError, InvalidArgument, MissingDependency
from harness.kernels import GEMV_MAX_BATCH, dequantize_4bit, gemv_4bit, triton_installed
from harness.quantizers.reference import ReferenceQuantizer
from harness.quantizers.triton import NO_DEVICE_REASON, TRITON_NAMES, TritonQuantizer, triton_quantizers
from harness.registry import Registry

needs_triton = pytest.mark.skipif(
    not triton_installed(), reason="triton is not installed (pip install 'fourbit-harness[triton]')"
)

FORMATS = ("nf4", "fp4")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def _weight(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits, so that -0.0 != +0.0 and every ulp counts."""
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)


def _quantized(
    fmt: str, shape: tuple[int, ...], block_size: int = 64, dtype: torch.dtype = torch.float32, seed: int = 0
) -> tuple[ReferenceQuantizer, QuantizedTensor]:
    reference = ReferenceQuantizer(fmt, block_size)
    q = reference.quantize(_weight(shape, seed, dtype))
    return reference, q


def _gamma(terms: int) -> float:
    """Higham's gamma_n = n u / (1 - n u), u = 2**-24: the relative bound of an n-term float32 dot product."""
    nu = terms * UNIT_ROUNDOFF[torch.float32]
    return nu / (1 - nu)


# ----------------------------------------------------------------------------------------------- dequantize


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_equals_reference_bit_for_bit(fmt: str, dtype: torch.dtype) -> None:
    reference, q = _quantized(fmt, (256, 512), dtype=dtype)
    out = dequantize_4bit(
        q.storage["packed"], q.storage["absmax"], reference.spec.codebook_tensor(), q.shape, dtype=dtype
    )
    expected = reference.dequantize(q)
    assert out.shape == expected.shape and out.dtype == expected.dtype == dtype
    assert torch.equal(_bits(out), _bits(expected))


@needs_triton
@pytest.mark.parametrize(
    ("shape", "block_size"),
    [
        ((3, 70), 64),  # 210 elements: a partial last block of 18
        ((1001,), 32),  # odd: the last byte is half used
        ((1,), 64),  # one element, one byte, one partial block
        ((7, 9), 16),  # odd and partial, the smallest reference block
        ((2, 3, 100), 4096),  # one block bigger than the tensor
        ((513, 1023), 128),  # 524799 elements: three interpreter programs, the last partial, odd count
    ],
    ids=str,
)
def test_dequantize_odd_shapes_and_partial_blocks(shape: tuple[int, ...], block_size: int) -> None:
    reference, q = _quantized("nf4", shape, block_size=block_size, seed=1)
    out = dequantize_4bit(
        q.storage["packed"], q.storage["absmax"], reference.spec.codebook_tensor(), shape, block_size=block_size
    )
    assert torch.equal(_bits(out), _bits(reference.dequantize(q)))


@needs_triton
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # numpy, for the values -> inf
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_dequantize_rounds_to_nearest_even_like_torch(dtype: torch.dtype) -> None:
    """Crafted scales (block of 2: one per byte) hit the hard cases of the float32 -> dtype rounding:
    exact ties both ways, values just off a tie, overflow to inf, subnormals of the target and of float32."""
    generator = torch.Generator().manual_seed(2)
    random_bits = torch.randint(0, 0x7F7FFFFF, (2048,), generator=generator, dtype=torch.int64).to(torch.int32)
    mantissa_cut = 16 if dtype == torch.bfloat16 else 13
    base = torch.randint(0x30000000, 0x47000000, (512,), generator=generator, dtype=torch.int64)
    base = base & ~((1 << mantissa_cut) - 1)
    half = 1 << (mantissa_cut - 1)
    ties = torch.cat([base + half, base + half - 1, base + half + 1, base + (1 << mantissa_cut) + half]).to(torch.int32)
    specials = torch.tensor([65504.0, 65519.0, 65520.0, 3.0e38, 3.4028235e38, 6.0e-8, 3.0e-8, 2.9e-8, 1e-40, 0.0])
    magnitudes = torch.cat([random_bits.view(torch.float32), ties.view(torch.float32), specials])
    absmax = torch.cat([magnitudes, magnitudes]).contiguous()  # the codebook's negative levels give the negatives
    blocks = absmax.numel()
    codes = torch.randint(0, 16, (2 * blocks,), generator=generator, dtype=torch.uint8)
    packed = (codes[0::2] << 4) | codes[1::2]
    codebook = ReferenceQuantizer("nf4").spec.codebook_tensor()
    out = dequantize_4bit(packed, absmax, codebook, (2 * blocks,), block_size=2, dtype=dtype)
    expected = (codebook[codes.long()] * absmax.repeat_interleave(2)).to(dtype)
    assert torch.equal(_bits(out), _bits(expected))


# ----------------------------------------------------------------------------------------------- gemv


def _linear_bound(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per output, the worst-case difference between two float32 evaluations of the same dot products.

    The kernel sums in its own order (per K tile the interpreter's matmul, then tile after tile; on a
    GPU the MMA's order), F.linear in the CPU BLAS's. Whatever the order, a float32 dot product of K
    terms (each product rounded once, or fused) is within gamma_K * sum_k |x_k w_k| of the exact value
    (Higham, Accuracy and Stability, eq. 3.5), so two of them differ by at most twice that.
    """
    in_features = x.shape[-1]
    return 2 * _gamma(in_features) * (x.double().abs() @ weight.double().abs().T)


@needs_triton
@pytest.mark.parametrize("batch", [1, 4, 16])
@pytest.mark.parametrize("fmt", FORMATS)
def test_gemv_matches_dequantize_then_linear_in_float32(fmt: str, batch: int) -> None:
    reference, q = _quantized(fmt, (256, 512))  # out_features 256, in_features 512: not square
    x = _weight((batch, 512), seed=3)
    y = gemv_4bit(x, q.storage["packed"], q.storage["absmax"], reference.spec.codebook_tensor(), 256)
    weight = reference.dequantize(q)
    expected = F.linear(x, weight)
    assert y.shape == (batch, 256) and y.dtype == torch.float32
    difference = (y.double() - expected.double()).abs()
    assert bool((difference <= _linear_bound(x, weight)).all()), f"max difference {float(difference.max())}"


@needs_triton
@pytest.mark.parametrize(
    ("shape", "block_size", "batch"), [((320, 192), 64, 3), ((24, 8192), 4096, 2), ((48, 96), 16, 5)]
)
def test_gemv_partial_tiles_and_block_sizes(shape: tuple[int, int], block_size: int, batch: int) -> None:
    """Tiles that overhang both W edges (320 rows of 256-row tiles, 192 columns of 1024-column tiles), a block
    larger than a K tile (4096 > 1024: one scale per tile row) and one much smaller (16: 64 scales per tile row)."""
    out_features, in_features = shape
    reference, q = _quantized("fp4", shape, block_size=block_size, seed=4)
    x = _weight((batch, in_features), seed=5)
    y = gemv_4bit(
        x,
        q.storage["packed"],
        q.storage["absmax"],
        reference.spec.codebook_tensor(),
        out_features,
        block_size=block_size,
    )
    weight = reference.dequantize(q)
    difference = (y.double() - F.linear(x, weight).double()).abs()
    assert bool((difference <= _linear_bound(x, weight)).all()), f"max difference {float(difference.max())}"


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_size", [16, 64, 4096])
def test_gemv_one_hot_rows_return_weight_columns_exactly(dtype: torch.dtype, block_size: int) -> None:
    """A one-hot row of x has one non-zero product, so any summation order gives round(c * W[:, k]) exactly:
    this pins the indexing (nibble order, row starts, scale per block, tile edges). The hot value
    c = 1 + 2**-7 (exact in every dtype) makes the product differ, after the final rounding, between W
    rounded to x's dtype first (what dequantize + F.linear does) and W kept in float32."""
    out_features, in_features = 40, 8192
    reference, q = _quantized("nf4", (out_features, in_features), block_size=block_size, seed=6)
    columns = [0, 1, 63, 64, 1023, 1024, 1025, 4095, 4096, 5000, 6143, 7000, 8190, 8191, 2, 3]
    x = torch.zeros(GEMV_MAX_BATCH, in_features, dtype=dtype)
    hot = 1 + 2.0**-7
    x[torch.arange(GEMV_MAX_BATCH), columns] = hot
    codebook = reference.spec.codebook_tensor()
    y = gemv_4bit(x, q.storage["packed"], q.storage["absmax"], codebook, out_features, block_size=block_size)
    weight = dequantize_4bit(
        q.storage["packed"], q.storage["absmax"], codebook, q.shape, block_size=block_size, dtype=dtype
    )
    assert y.dtype == dtype
    expected = (hot * weight[:, columns].T.float()).to(dtype)
    assert torch.equal(y, expected)  # == compares values: the sum may turn -0 into +0


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gemv_half_precision_is_within_one_rounding_of_exact(dtype: torch.dtype) -> None:
    """fp16/bf16 operands multiply exactly in float32; the float32 sum errs by at most gamma_K sum|x w|, and the
    final rounding to x's dtype by half an ulp: |y - exact| <= u_dtype |exact| + (1 + u_dtype) gamma_K sum|x w|."""
    reference, q = _quantized("nf4", (256, 512), seed=7)
    x = _weight((4, 512), seed=8, dtype=dtype)
    codebook = reference.spec.codebook_tensor()
    y = gemv_4bit(x, q.storage["packed"], q.storage["absmax"], codebook, 256)
    weight = dequantize_4bit(q.storage["packed"], q.storage["absmax"], codebook, q.shape, dtype=dtype)
    exact = x.double() @ weight.double().T
    magnitude = x.double().abs() @ weight.double().abs().T
    unit = UNIT_ROUNDOFF[dtype]
    bound = unit * exact.abs() + (1 + unit) * _gamma(512) * magnitude
    difference = (y.double() - exact).abs()
    assert bool((difference <= bound).all()), f"max difference {float(difference.max())}"


# ----------------------------------------------------------------------------------------------- bad input


def _good_arguments(numel: int = 128) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.zeros(numel // 2, dtype=torch.uint8), torch.ones(numel // 64), torch.ones(16)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"packed": torch.zeros(64, dtype=torch.float32)}, "packed.dtype=torch.float32, expected torch.uint8"),
        ({"packed": torch.zeros(65, dtype=torch.uint8)}, "packed.numel()=65, expected 64 bytes for 128 codes"),
        ({"absmax": torch.ones(2, dtype=torch.float16)}, "absmax.dtype=torch.float16, expected torch.float32"),
        ({"absmax": torch.ones(3)}, "absmax.numel()=3, expected 2 (one per block of 64 for 128 elements)"),
        ({"codebook": torch.ones(15)}, "codebook=torch.float32 tensor of 15 values, expected a float32 tensor of 16"),
        ({"block_size": 48}, "block_size=48, expected a power of two >= 2"),
        ({"dtype": torch.float64}, "dtype=torch.float64, expected one of"),
        ({"shape": (0, 4)}, "shape=(0, 4) is empty"),
        ({"codebook": torch.ones(16, device="meta")}, "codebook.device='meta', expected all on one device"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_dequantize_rejects_bad_input(change: dict[str, object], message: str) -> None:
    packed, absmax, codebook = _good_arguments()
    arguments: dict[str, object] = {"packed": packed, "absmax": absmax, "codebook": codebook, "shape": (2, 64)}
    arguments.update(change)
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        dequantize_4bit(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "out_features", "block_size", "message"),
    [
        (torch.ones(2, 96), 2, 64, r"in_features=96 \(x.shape\[1\]\), expected a multiple of block_size=64"),
        (torch.ones(17, 64), 2, 64, r"x.shape\[0\]=17 \(batch\), expected 1 to 16"),
        (torch.ones(2, 64, dtype=torch.float64), 2, 64, "x.dtype=torch.float64, expected one of"),
        (torch.ones(64), 2, 64, r"x has shape=\(64,\), expected a 2-D tensor"),
        (torch.ones(2, 64), 0, 64, "out_features=0, expected a positive int"),
        (torch.ones(2, 64), 3, 64, r"packed.numel\(\)=64, expected 96 bytes for 192 codes"),
    ],
    ids=["in_features", "batch", "dtype", "ndim", "out_features", "packed_size"],
)
def test_gemv_rejects_bad_input(x: torch.Tensor, out_features: int, block_size: int, message: str) -> None:
    packed, absmax, codebook = _good_arguments()
    with pytest.raises(InvalidArgument, match=message):
        gemv_4bit(x, packed, absmax, codebook, out_features, block_size=block_size)


def test_gemv_rejects_packed_of_the_wrong_dtype() -> None:
    _, absmax, codebook = _good_arguments()
    with pytest.raises(InvalidArgument, match=r"packed\.dtype=torch\.int8, expected torch\.uint8"):
        gemv_4bit(torch.ones(2, 64), torch.zeros(64, dtype=torch.int8), absmax, codebook, 2)


def test_kernels_reject_devices_triton_cannot_run() -> None:
    packed, absmax, codebook = (t.to("meta") for t in _good_arguments())
    with pytest.raises(InvalidArgument, match="device='meta', expected a 'cuda' device, or 'cpu'"):
        dequantize_4bit(packed, absmax, codebook, (128,))


# ----------------------------------------------------------------------------------------------- adapter


def test_factory_without_gpu_or_interpreter_is_a_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.quantizers.triton.triton_installed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(MissingDependency) as caught:
        triton_quantizers()
    assert caught.value.names == TRITON_NAMES == ("triton-nf4", "triton-fp4")
    assert caught.value.reason == NO_DEVICE_REASON == "needs a CUDA GPU, or TRITON_INTERPRET=1 on CPU (slow)"
    registry = Registry()
    registry.add_object(triton_quantizers, "triton")
    assert set(registry.unavailable) == set(TRITON_NAMES)  # listed as unavailable, with the reason; not an error
    assert all(NO_DEVICE_REASON in reason for reason in registry.unavailable.values())
    assert not registry.errors


def test_factory_without_triton_is_a_missing_dependency_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.quantizers.triton.triton_installed", lambda: False)
    with pytest.raises(MissingDependency) as caught:
        triton_quantizers()
    assert (caught.value.source, caught.value.names) == ("triton", TRITON_NAMES)
    assert caught.value.reason == "triton is not installed"
    assert caught.value.hint == "pip install 'fourbit-harness[triton]'"


@pytest.mark.parametrize(
    ("cuda", "interpret", "devices"), [(False, "1", ("cpu",)), (True, None, ("cuda",)), (True, "true", ("cuda", "cpu"))]
)
def test_factory_devices_follow_gpu_and_interpreter(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, interpret: str | None, devices: tuple[str, ...]
) -> None:
    monkeypatch.setattr("harness.quantizers.triton.triton_installed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if interpret is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    quantizers = triton_quantizers()
    assert [q.name for q in quantizers] == ["triton-nf4", "triton-fp4"]
    for quantizer, fmt in zip(quantizers, FORMATS, strict=True):
        reference = ReferenceQuantizer(fmt)
        assert quantizer.spec == reference.spec  # same codebook, block 64, absmax, high nibble first
        assert quantizer.capabilities.devices == devices
        assert quantizer.capabilities.has_matmul
        assert quantizer.capabilities.block_sizes == (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
        assert quantizer.capabilities.unsupported_reason((4, 64), torch.float64) is not None


@needs_triton
@pytest.mark.parametrize("fmt", FORMATS)
def test_adapter_quantizes_like_the_reference_and_decodes_with_the_kernel(fmt: str) -> None:
    quantizer = TritonQuantizer(fmt, devices=("cpu",)).with_block_size(128)
    reference = ReferenceQuantizer(fmt, 128)
    x = _weight((96, 200), seed=9, dtype=torch.bfloat16)
    q, expected = quantizer.quantize(x), reference.quantize(x)
    assert set(q.storage) == {"packed", "absmax"}
    for key in q.storage:
        assert torch.equal(q.storage[key], expected.storage[key])
    assert q.codes is not None and expected.codes is not None and torch.equal(q.codes, expected.codes)
    assert torch.equal(_bits(quantizer.dequantize(q)), _bits(reference.dequantize(expected)))


@needs_triton
def test_adapter_matmul_fuses_small_batches_and_falls_back_beyond() -> None:
    quantizer = TritonQuantizer("nf4", devices=("cpu",))
    q = quantizer.quantize(_weight((64, 128), seed=10))
    packed, absmax, codebook = q.storage["packed"], q.storage["absmax"], quantizer.spec.codebook_tensor()
    x = _weight((2, 8, 128), seed=11, dtype=torch.float16)  # 16 rows: the fused kernel
    fused = quantizer.matmul(x, q)
    assert fused.shape == (2, 8, 64) and fused.dtype == torch.float16
    assert torch.equal(fused.reshape(16, 64), gemv_4bit(x.reshape(16, 128), packed, absmax, codebook, 64))
    wide = _weight((17, 128), seed=12)  # 17 rows: dequantize (Triton) + F.linear
    weight = dequantize_4bit(packed, absmax, codebook, q.shape)
    assert torch.equal(quantizer.matmul(wide, q), F.linear(wide, weight))
    with pytest.raises(InvalidArgument, match=r"x.shape=\(2, 100\), expected \[..., 128\]"):
        quantizer.matmul(torch.ones(2, 100), q)


@needs_triton
def test_adapter_matmul_falls_back_when_in_features_is_not_a_multiple_of_the_block() -> None:
    quantizer = TritonQuantizer("fp4", devices=("cpu",))
    q = quantizer.quantize(_weight((8, 96), seed=13))
    x = _weight((3, 96), seed=14)
    weight = dequantize_4bit(q.storage["packed"], q.storage["absmax"], quantizer.spec.codebook_tensor(), q.shape)
    assert torch.equal(quantizer.matmul(x, q), F.linear(x, weight))


def test_adapter_rejects_what_it_cannot_decode() -> None:
    quantizer = TritonQuantizer("nf4", devices=("cpu",))
    with pytest.raises(InvalidArgument, match=r"x\.dtype=torch\.float64, expected one of"):
        quantizer.quantize(torch.ones(4, 64, dtype=torch.float64))
    q = quantizer.quantize(torch.ones(4, 64))
    del q.storage["absmax"]  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match=r"storage lacks 'absmax', expected the entries quantize\(\) wrote"):
        quantizer.dequantize(q)
    with pytest.raises(InvalidArgument, match=r"q.shape=\(256,\), expected a 2-D weight"):
        quantizer.matmul(torch.ones(1, 256), quantizer.quantize(torch.ones(256)))


def test_adapter_reports_triton_failures_as_implementation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("PTX assembly failed")

    monkeypatch.setattr("harness.quantizers.triton.dequantize_4bit", broken)
    quantizer = TritonQuantizer("nf4", devices=("cpu",))
    with pytest.raises(
        ImplementationError, match=r"triton-nf4: dequantize_4bit\(.*\) raised RuntimeError: PTX assembly"
    ):
        quantizer.dequantize(quantizer.quantize(torch.ones(64)))


# ----------------------------------------------------------------------------------------------- lazy build

_WITHOUT_TRITON = """
import json, sys
sys.modules["triton"] = None  # what an environment without triton looks like to an import
import harness, harness.kernels, harness.quantizers.triton as adapter
import torch
from harness.errors import MissingDependency
report = {}
try:
    adapter.triton_quantizers()
except MissingDependency as exc:
    report["factory"] = [exc.source, list(exc.names), exc.reason, exc.hint]
try:
    harness.kernels.dequantize_4bit(torch.zeros(2, dtype=torch.uint8), torch.ones(1), torch.ones(16), (4,))
except MissingDependency as exc:
    report["launch"] = exc.reason
print(json.dumps(report))
"""

_LAZY_AND_EITHER_IMPORT_ORDER = """
import json, sys
import harness, harness.quantizers.triton as adapter
import torch
from harness.quantizers.reference import ReferenceQuantizer
report = {"after_import": "triton" in sys.modules}
try:
    adapter.triton_quantizers()
    report["factory"] = "ok"
except Exception as exc:
    report["factory"] = type(exc).__name__
report["after_factory"] = "triton" in sys.modules
import triton  # now imported in the mode TRITON_INTERPRET gives this process
report["interpret_at_import"] = bool(triton.knobs.runtime.interpret)
reference = ReferenceQuantizer("fp4")
q = reference.quantize(torch.randn(64, 128, generator=torch.Generator().manual_seed(0)))
quantizer = adapter.TritonQuantizer("fp4", devices=("cpu",))
report["dequantize_equal"] = torch.equal(quantizer.dequantize(q), reference.dequantize(q))
x = torch.zeros(2, 128)
x[0, 5] = x[1, 64] = 1
report["gemv_equal"] = torch.equal(quantizer.matmul(x, q), reference.dequantize(q)[:, [5, 64]].T)
report["env_after"] = __import__("os").environ.get("TRITON_INTERPRET")
print(json.dumps(report))
"""


def _run_python(source: str, environment: dict[str, str]) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)], env=environment, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def test_harness_imports_and_reports_missing_triton_without_it() -> None:
    report = _run_python(_WITHOUT_TRITON, dict(os.environ))
    assert report["factory"] == ["triton", ["triton-nf4", "triton-fp4"], "triton is not installed",
                                 "pip install 'fourbit-harness[triton]'"]  # fmt: skip
    assert str(report["launch"]).startswith("triton cannot be imported")


@needs_triton
@pytest.mark.parametrize("interpret", ["1", None], ids=["TRITON_INTERPRET=1", "unset"])
def test_triton_is_imported_on_first_launch_and_either_import_order_works(interpret: str | None) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret is not None:
        environment["TRITON_INTERPRET"] = interpret
    report = _run_python(_LAZY_AND_EITHER_IMPORT_ORDER, environment)
    assert report["after_import"] is False and report["after_factory"] is False
    assert report["interpret_at_import"] is (interpret is not None)
    if interpret is not None or not torch.cuda.is_available():
        assert report["factory"] == ("ok" if interpret else "MissingDependency")
    assert report["dequantize_equal"] is True and report["gemv_equal"] is True
    assert report["env_after"] == interpret  # building the kernels leaves TRITON_INTERPRET as it found it
