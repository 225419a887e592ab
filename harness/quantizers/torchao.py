"""Thin adapters over torchao's 4-bit weight formats: ``torchao-nf4`` and ``torchao-int4``.

Everything comes from the library; the adapters only *decode* what torchao stores, so the
suites judge torchao's behaviour, bugs included.

``torchao-nf4`` wraps ``torchao.quantization.to_nf4`` (an ``NF4Tensor``, QLoRA's NF4 with double
quantization). torchao picks each code against the block's true absmax, computing in the input
dtype with its own 16-entry table (``NF4Tensor.nf4``: the NF4 levels rounded to 4 decimals, then to
the input dtype). It keeps, per tensor (:data:`NF4_STORAGE`):

* ``packed``: ``quantized_data``, uint8, two codes per byte, element 2i in the high nibble;
* ``quantized_scalers``: int8 per block of 64, ``round((absmax - mean) * quantization_factor)``;
* ``quantization_factor``: input dtype, one per 256 blocks, ``256 / (2 * max |absmax - mean|)``;
* ``scaler_mean``: input dtype, 0-d, the mean absmax;
* ``nf4``: the 16-entry table itself, input dtype (torchao keeps and serializes it per tensor).

``scales`` are those scalers undone by torchao's own ``NF4Tensor.dequantize_scalers`` (what
``get_original_weight`` multiplies by). ``dequantize`` rebuilds the ``NF4Tensor`` from ``q.storage``
through torchao's ``__tensor_unflatten__`` and calls ``get_original_weight``; ``matmul`` is
``F.linear(x, nf4_tensor)``, which torchao routes to its ``LinearNF4``.
torchao only accepts at most 2-D tensors whose numel is a multiple of 64 * 256 (it asserts
``n_blocks % scaler_block_size == 0``), so that is the capability; other shapes are skips.

``torchao-int4`` wraps ``quantize_(linear, IntxWeightOnlyConfig(weight_dtype=torch.int4,
granularity=PerGroup(64)))``: the config's defaults are symmetric mapping and the
``UNPACKED_TO_INT8`` layout, so torchao keeps (:data:`INT4_STORAGE`) ``qdata`` (int8, one byte per
weight, values -8..7), ``scale`` (input dtype, ``max |x| / 7.5`` per group) and ``zero_point``
(int8 per group, always 0 for symmetric mapping). Its dequantization is ``(qdata - zero_point) *
scale``; the contract's code is ``qdata + 8`` and the codebook is -8..7, so
``codebook[code] * scale + offset`` with ``offset = -zero_point * scale`` is the same number.
A 1-D tensor is quantized as the weight of ``nn.Linear(numel, 1)``.

What torchao does that the property suites flag (library behaviour, passed through unchanged): NF4 sends an
all-zero block to code 0 (0/0 is NaN) with a non-zero double-quantized scale; small blocks beside large ones
can decode to a negative scale; in float16 ``quantization_factor`` overflows to inf once the absmaxes of 256
blocks lie within 128/65504 of their mean, collapsing every scale to the mean; for a tensor of exactly one
scaler group ``quantization_factor`` is a 1-element view of a 256-element buffer. Both formats choose codes
in the input dtype (bfloat16/float16 arithmetic).

torchao is imported lazily: without it, constructing an adapter or calling
:func:`torchao_quantizers` raises :class:`~harness.errors.MissingDependency` with the install hint,
and the registry lists both names as unavailable.
"""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from harness._validation import check_weight
from harness.api import PACKING_HIGH_FIRST, SCALE_ABSMAX, Capabilities, DoubleQuant, FormatSpec, QuantizedTensor
from harness.errors import ImplementationError, InvalidArgument, MissingDependency
from harness.formats.packing import unpack_nibbles
from harness.registry import Deferred

__all__ = [
    "INT4_GROUP_SIZE",
    "INT4_SCALE_KIND",
    "INT4_STORAGE",
    "NF4_BLOCK_SIZE",
    "NF4_SCALER_BLOCK_SIZE",
    "NF4_STORAGE",
    "TORCHAO_NAMES",
    "TorchaoInt4Quantizer",
    "TorchaoNF4Quantizer",
    "torchao_quantizers",
]

TORCHAO_NAMES = ("torchao-nf4", "torchao-int4")
INSTALL_HINT = "pip install 'fourbit-harness[torchao]'"

NF4_BLOCK_SIZE = 64
"""``to_nf4``'s default ``block_size`` (elements per absmax), passed explicitly."""
NF4_SCALER_BLOCK_SIZE = 256
"""``to_nf4``'s default ``scaler_block_size``: absmaxes per int8-quantized group (double quantization)."""
NF4_STORAGE = ("packed", "quantized_scalers", "quantization_factor", "scaler_mean", "nf4")
_NF4_INNER_NAMES = {"packed": "quantized_data"}
"""Storage key -> NF4Tensor attribute, where they differ (the contract calls packed nibbles 'packed')."""

INT4_GROUP_SIZE = 64
_TORCH_INT4: torch.dtype = torch.int4  # type: ignore[attr-defined]  # a real dtype, absent from torch's stubs
INT4_STORAGE = ("qdata", "scale", "zero_point")
INT4_SCALE_KIND = "absmax/7.5"
"""torchao's symmetric int4 scale: max |x| of the group / ((7 - -8) / 2). The largest positive element
maps to 7.5, rounds (half to even) to 8 and is clamped to 7, so it does not come back exactly."""
_INT4_LEVELS = tuple(float(level) for level in range(-(2**3), 2**3))
"""Two's-complement 4-bit integers -8..7, indexed by code = qdata + 8."""
_INT4_CODE_OFFSET = 2**3


def _import_torchao() -> ModuleType:
    """``torchao.quantization``, or MissingDependency naming both adapters and the install hint."""
    try:
        return importlib.import_module("torchao.quantization")
    except ImportError as exc:
        raise MissingDependency(
            source="torchao", names=TORCHAO_NAMES, reason="torchao is not installed", hint=INSTALL_HINT
        ) from exc


def _stored(name: str, q: QuantizedTensor, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The storage entries ``keys`` of ``q``; InvalidArgument naming what is missing."""
    missing = [key for key in keys if key not in q.storage]
    if missing:
        raise InvalidArgument(
            f"{name}: QuantizedTensor.storage lacks {missing}, expected the entries quantize() wrote "
            f"({', '.join(keys)})"
        )
    return {key: q.storage[key] for key in keys}


def _check_case(name: str, capabilities: Capabilities, x: torch.Tensor) -> None:
    """InvalidArgument when ``x`` is outside ``capabilities`` (the suites skip those cases before calling)."""
    reason = capabilities.unsupported_reason(x.shape, x.dtype, x.device.type)
    if reason is not None:
        raise InvalidArgument(f"{name}: x.shape={tuple(x.shape)}, x.dtype={x.dtype} is unsupported: {reason}")


def _check_linear(name: str, module: object) -> torch.nn.Linear:
    if not isinstance(module, torch.nn.Linear):
        raise InvalidArgument(f"{name}: module is a {type(module).__name__}, expected a torch.nn.Linear")
    return module


def _check_matmul_weight(name: str, q: QuantizedTensor) -> None:
    if len(q.shape) != 2:
        raise InvalidArgument(
            f"{name}: q.shape={tuple(q.shape)}, expected a 2-D weight [out_features, in_features] for matmul"
        )


def _linear_shell(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
    """An nn.Linear holding ``weight`` (and a copy of ``bias``) without initialising throw-away parameters."""
    out_features, in_features = weight.shape
    module = torch.nn.Linear(in_features, out_features, bias=bias is not None, device="meta")
    module.weight = torch.nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        module.bias = torch.nn.Parameter(bias.detach().clone(), requires_grad=False)
    return module


# ---------------------------------------------------------------------------------------------- NF4


def _nf4_capabilities(block_size: int, scaler_block_size: int) -> Capabilities:
    """torchao's NF4 shape rule: at most 2-D (``from_tensor`` asserts it) and numel a multiple of
    block * scaler block (``double_quantize_scalers`` asserts ``n_blocks % scaler_block_size == 0``)."""
    return Capabilities(
        max_ndim=2,
        numel_multiple_of=block_size * scaler_block_size,
        has_matmul=True,
        has_module=True,
        compute_dtype=None,  # torchao chooses codes in the input dtype
    )


class TorchaoNF4Quantizer:
    """``torchao.quantization.to_nf4`` (NF4 with int8 double quantization of the absmax per 256 blocks)."""

    def __init__(self, name: str = "torchao-nf4") -> None:
        self._torchao = _import_torchao()
        self.name = name
        table = self._call("to_nf4(probe)", self._to_nf4, self._table_probe()).nf4
        self.spec = FormatSpec(
            format="nf4",
            codebook=tuple(float(v) for v in table.tolist()),  # torchao's own 4-decimal table, not the canonical one
            block_size=NF4_BLOCK_SIZE,
            scale=SCALE_ABSMAX,
            double_quant=DoubleQuant(bits=8, block_size=NF4_SCALER_BLOCK_SIZE),
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )
        self.capabilities = _nf4_capabilities(NF4_BLOCK_SIZE, NF4_SCALER_BLOCK_SIZE)

    def __repr__(self) -> str:
        return f"TorchaoNF4Quantizer(name={self.name!r})"

    @staticmethod
    def _table_probe() -> torch.Tensor:
        """The smallest float32 tensor torchao accepts; only its table (built in the input dtype) is kept."""
        return torch.linspace(-1.0, 1.0, NF4_BLOCK_SIZE * NF4_SCALER_BLOCK_SIZE)

    def _call(self, operation: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:  # torchao asserts, raises RuntimeError/NotImplementedError...; keep its message
            raise ImplementationError(self.name, f"torchao.quantization.{operation}", exc) from exc

    def _to_nf4(self, x: torch.Tensor) -> Any:
        return self._torchao.to_nf4(x, block_size=NF4_BLOCK_SIZE, scaler_block_size=NF4_SCALER_BLOCK_SIZE)

    def _quantize_tensor(self, x: torch.Tensor) -> Any:
        check_weight(x)
        _check_case(self.name, self.capabilities, x)
        return self._call(
            f"to_nf4(shape={tuple(x.shape)}, dtype={x.dtype}, block_size={NF4_BLOCK_SIZE}, "
            f"scaler_block_size={NF4_SCALER_BLOCK_SIZE})",
            self._to_nf4,
            x.detach().contiguous(),
        )

    def _rebuild(self, q: QuantizedTensor) -> Any:
        """The NF4Tensor that ``q.storage`` describes, through torchao's own unflatten protocol."""
        stored = _stored(self.name, q, NF4_STORAGE)
        nf4_class = self._torchao.NF4Tensor
        subclass_args = importlib.import_module(nf4_class.__module__).SubclassTensorArgs
        shape = torch.Size(q.shape)
        strides = tuple(torch.empty(shape, device="meta").stride())
        metadata = {
            "block_size": NF4_BLOCK_SIZE,
            "n_blocks": math.prod(shape) // NF4_BLOCK_SIZE,
            "scaler_block_size": NF4_SCALER_BLOCK_SIZE,
            "tensor_meta": subclass_args(shape, strides, 0, q.dtype, stored["packed"].device, False),
        }
        inner = {_NF4_INNER_NAMES.get(key, key): tensor for key, tensor in stored.items()}
        return self._call(
            f"NF4Tensor.__tensor_unflatten__(shape={tuple(shape)}, dtype={q.dtype})",
            nf4_class.__tensor_unflatten__,
            inner,
            metadata,
            shape,
            strides,
        )

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        tensor = self._quantize_tensor(x)
        scales = self._call(
            "NF4Tensor.dequantize_scalers(quantized_scalers, quantization_factor, scaler_block_size)",
            tensor.dequantize_scalers,
            tensor.quantized_scalers,
            tensor.quantization_factor,
            tensor.scaler_block_size,
        )
        codes = unpack_nibbles(tensor.quantized_data, x.numel(), PACKING_HIGH_FIRST).reshape(x.shape)
        storage = {key: getattr(tensor, _NF4_INNER_NAMES.get(key, key)) for key in NF4_STORAGE}
        return QuantizedTensor(
            codes=codes,
            scales=scales.float().reshape(-1),  # exact: every dtype torchao computes in widens to float32
            offsets=None,
            shape=x.shape,
            dtype=x.dtype,
            storage=storage,
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        """torchao's ``NF4Tensor.get_original_weight`` on the NF4Tensor rebuilt from ``q.storage``."""
        tensor = self._rebuild(q)
        return self._call(f"NF4Tensor.get_original_weight(shape={tuple(q.shape)})", tensor.get_original_weight)

    def matmul(self, x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
        """``x @ W.T`` as ``F.linear(x, nf4_tensor)`` (torchao's LinearNF4: dequantize to x's dtype, then linear)."""
        _check_matmul_weight(self.name, q)
        tensor = self._rebuild(q)
        return self._call(
            f"LinearNF4 via F.linear(x shape={tuple(x.shape)}, W shape={tuple(q.shape)})", F.linear, x, tensor
        )

    def linear(self, module: torch.nn.Module) -> torch.nn.Linear:
        """A new nn.Linear whose weight is torchao's NF4Tensor of ``module.weight`` (bias copied);
        ``module`` is left unchanged."""
        source = _check_linear(self.name, module)
        tensor = self._quantize_tensor(source.weight)
        return _linear_shell(tensor, source.bias)


# ---------------------------------------------------------------------------------------------- int4


def _int4_shape_rule(shape: torch.Size) -> str | None:
    if len(shape) == 2 and shape[1] % INT4_GROUP_SIZE:
        return (
            f"in_features={shape[1]} of shape {tuple(shape)} is not a multiple of the group size {INT4_GROUP_SIZE} "
            "(torchao groups each row separately)"
        )
    return None


class TorchaoInt4Quantizer:
    """``quantize_(nn.Linear, IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(64)))``."""

    def __init__(self, name: str = "torchao-int4") -> None:
        self._torchao = _import_torchao()
        self.name = name
        self.config = self._torchao.IntxWeightOnlyConfig(
            weight_dtype=_TORCH_INT4, granularity=self._torchao.PerGroup(INT4_GROUP_SIZE)
        )
        self.spec = FormatSpec(
            format="int4",
            codebook=_INT4_LEVELS,
            block_size=INT4_GROUP_SIZE,
            scale=INT4_SCALE_KIND,
            double_quant=None,
            exact_zero=True,  # symmetric mapping: zero point 0, and round(0 / scale) == 0
            packing=None,  # UNPACKED_TO_INT8: one int8 per weight, nothing packed
        )
        self.capabilities = Capabilities(
            max_ndim=2,
            numel_multiple_of=INT4_GROUP_SIZE,
            shape_rule=_int4_shape_rule,
            has_matmul=True,
            has_module=True,
            compute_dtype=None,  # torchao chooses codes in the input dtype
        )

    def __repr__(self) -> str:
        return f"TorchaoInt4Quantizer(name={self.name!r}, config={self.config!r})"

    def _call(self, operation: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:  # torchao asserts, raises ValueError/RuntimeError...; keep its message
            raise ImplementationError(self.name, f"torchao.quantization.{operation}", exc) from exc

    def _quantize_module(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Linear:
        module = _linear_shell(weight, bias)
        self._call(
            f"quantize_(nn.Linear(weight shape={tuple(weight.shape)}, dtype={weight.dtype}), {self.config!r})",
            self._torchao.quantize_,
            module,
            self.config,
        )
        return module

    def _quantized_weight(self, x: torch.Tensor) -> Any:
        check_weight(x)
        _check_case(self.name, self.capabilities, x)
        weight = x.detach().contiguous()
        if weight.dim() == 1:
            weight = weight.reshape(1, -1)  # the weight of nn.Linear(numel, 1)
        return self._quantize_module(weight, None).weight

    def _rebuild(self, q: QuantizedTensor) -> Any:
        """The IntxUnpackedToInt8Tensor that ``q.storage`` describes."""
        stored = _stored(self.name, q, INT4_STORAGE)
        return self._call(
            f"IntxUnpackedToInt8Tensor(shape={tuple(stored['qdata'].shape)}, dtype={q.dtype})",
            self._torchao.IntxUnpackedToInt8Tensor,
            stored["qdata"],
            stored["scale"],
            stored["zero_point"],
            _TORCH_INT4,
            (1, INT4_GROUP_SIZE),
            q.dtype,
            None,
        )

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        tensor = self._quantized_weight(x)
        qdata, scale, zero_point = tensor.qdata, tensor.scale, tensor.zero_point
        scales = scale.float().reshape(-1)  # exact widening; groups run along rows, as the flattened blocks do
        return QuantizedTensor(
            codes=(qdata + _INT4_CODE_OFFSET).to(torch.uint8).reshape(x.shape),
            scales=scales,
            offsets=zero_point.float().reshape(-1).neg() * scales,
            shape=x.shape,
            dtype=x.dtype,
            storage={"qdata": qdata, "scale": scale, "zero_point": zero_point},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        """torchao's ``IntxUnpackedToInt8Tensor.dequantize`` on the tensor rebuilt from ``q.storage``."""
        tensor = self._rebuild(q)
        out = self._call(f"IntxUnpackedToInt8Tensor.dequantize(shape={tuple(q.shape)})", tensor.dequantize)
        return out.reshape(q.shape)

    def matmul(self, x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
        """``x @ W.T`` as ``F.linear(x, quantized_weight)`` (torchao dequantizes, then runs linear)."""
        _check_matmul_weight(self.name, q)
        tensor = self._rebuild(q)
        return self._call(
            f"F.linear(x shape={tuple(x.shape)}, IntxUnpackedToInt8Tensor shape={tuple(q.shape)})", F.linear, x, tensor
        )

    def linear(self, module: torch.nn.Module) -> torch.nn.Linear:
        """A new nn.Linear quantized by ``quantize_`` with this config (bias copied); ``module`` is unchanged."""
        source = _check_linear(self.name, module)
        weight = source.weight.detach()
        check_weight(weight, name="module.weight")
        _check_case(self.name, self.capabilities, weight)
        return self._quantize_module(weight.clone(), source.bias)


def _build_quantizers() -> list[TorchaoNF4Quantizer | TorchaoInt4Quantizer]:
    """torchao-nf4 and torchao-int4; MissingDependency (both names, install hint) without torchao."""
    _import_torchao()
    return [TorchaoNF4Quantizer(), TorchaoInt4Quantizer()]


torchao_quantizers = Deferred(names=TORCHAO_NAMES, load=_build_quantizers, requires=("torchao",), hint=INSTALL_HINT)
"""The entry point: torchao is imported only when a run selects one of its implementations; calling it builds
them (torchao-nf4, torchao-int4)."""
