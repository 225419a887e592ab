"""The contract every quantizer is tested through, ours and third parties' alike.

Field names here are public API: plugins are written against exactly these.
Dequantization is ``codebook[code] * scale + offset`` per block of the
flattened input (``offset`` None means 0), with the codes and scales the
implementation reports in its :class:`QuantizedTensor`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from harness._validation import check_block_size, is_power_of_two
from harness.errors import InvalidArgument

__all__ = [
    "PACKING_HIGH_FIRST",
    "PACKING_LOW_FIRST",
    "SCALE_ABSMAX",
    "SCALE_AFFINE_INT",
    "SCALE_E4M3_TENSOR",
    "SCALE_E8M0",
    "SCALE_KINDS",
    "SCALE_MINMAX",
    "SCALE_SEARCHED",
    "SCALE_SIGNED_ABSMAX",
    "Capabilities",
    "DoubleQuant",
    "FormatSpec",
    "QuantizedTensor",
    "Quantizer",
    "is_power_of_two",
]

SCALE_ABSMAX = "absmax"
"""Scale kind the harness derives itself: scale == max |x| of the block (up to double quantization)."""
SCALE_SIGNED_ABSMAX = "signed-absmax"
"""llama.cpp Q4_0: scale = the block's signed value of largest magnitude / the level of largest magnitude (-8)."""
SCALE_MINMAX = "minmax"
"""Q4_1/quanto: scale = (max - min) / (Lmax - Lmin), float offset = min - Lmin * scale."""
SCALE_AFFINE_INT = "affine-int"
"""GPTQ/AWQ: scale = (max(x, 0) - min(x, 0)) / (Lmax - Lmin) and an integer zero point; offset = -zero * scale."""
SCALE_E8M0 = "e8m0"
"""MXFP4: a power-of-two scale 2**(floor(log2 max|x|) - emax_elem) per block (E2M1 levels: emax_elem = 2)."""
SCALE_E4M3_TENSOR = "e4m3-tensor"
"""NVFP4: an FP8 E4M3 block scale times a float32 per-tensor scale."""
SCALE_SEARCHED = "searched"
"""The implementation optimises its scale; only its aggregate error can be compared (with the derived rules')."""
SCALE_KINDS = (
    SCALE_ABSMAX,
    SCALE_SIGNED_ABSMAX,
    SCALE_MINMAX,
    SCALE_AFFINE_INT,
    SCALE_E8M0,
    SCALE_E4M3_TENSOR,
    SCALE_SEARCHED,
)
"""The built-in scale kinds (harness.scale_kinds holds their rules; register_scale_kind adds a third party's)."""

PACKING_HIGH_FIRST = "high-nibble-first"
"""Element 2i in the high nibble of byte i, element 2i+1 in the low nibble (bitsandbytes' layout)."""
PACKING_LOW_FIRST = "low-nibble-first"
"""Element 2i in the low nibble of byte i (the other common layout)."""

_PACKINGS = (PACKING_HIGH_FIRST, PACKING_LOW_FIRST)
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_scale_spelling(scale: str) -> None:
    """A near miss of a known kind ('Absmax', 'signed_absmax') would silently turn every derived check into a
    skip; any other name is a declared kind the harness cannot derive (or one registered through
    harness.scale_kinds.register_scale_kind), and is accepted."""
    from harness.scale_kinds import known_scale_kinds

    known = known_scale_kinds()
    if scale in known:
        return
    folded = scale.strip().lower().replace("_", "-").replace(" ", "-")
    for name in known:
        if folded == name:
            raise InvalidArgument(f"FormatSpec.scale={scale!r}, expected {name!r} (scale kinds are spelled exactly)")


def _require_block_size(name: str, value: object) -> int:
    return check_block_size(value, name=name)


@dataclass(frozen=True)
class DoubleQuant:
    """QLoRA-style double quantization of the per-block scales: ``bits``-bit codes in blocks of ``block_size``."""

    bits: int = 8
    block_size: int = 256

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 16:
            raise InvalidArgument(f"DoubleQuant.bits={self.bits!r}, expected an int from 1 to 16")
        _require_block_size("DoubleQuant.block_size", self.block_size)


@dataclass(frozen=True)
class FormatSpec:
    """What a format promises; the property suites check each promise.

    ``codebook`` holds 16 floats indexed by code (None for a black box that does
    not reveal it). For ``scale="absmax"`` the codebook's largest value is 1 and
    -1 is present, so a block's largest element round-trips exactly.
    ``packing`` declares the nibble order of ``storage["packed"]`` (None: not declared).
    """

    format: str
    codebook: tuple[float, ...] | None
    block_size: int = 64
    scale: str = SCALE_ABSMAX
    double_quant: DoubleQuant | None = None
    exact_zero: bool = True
    packing: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.format, str) or not self.format:
            raise InvalidArgument(f"FormatSpec.format={self.format!r}, expected a non-empty string such as 'nf4'")
        if self.codebook is not None:
            if isinstance(self.codebook, torch.Tensor):
                values = tuple(float(v) for v in self.codebook.detach().cpu().reshape(-1).tolist())
            else:
                try:
                    values = tuple(float(v) for v in self.codebook)
                except (TypeError, ValueError) as exc:
                    raise InvalidArgument(
                        f"FormatSpec.codebook={self.codebook!r}, expected 16 floats indexed by code"
                    ) from exc
            if len(values) != 16:
                raise InvalidArgument(f"FormatSpec.codebook has {len(values)} values, expected 16 (one per 4-bit code)")
            if not all(math.isfinite(v) for v in values):
                raise InvalidArgument(f"FormatSpec.codebook={values!r}, expected finite values")
            object.__setattr__(self, "codebook", values)
        _require_block_size("FormatSpec.block_size", self.block_size)
        if not isinstance(self.scale, str) or not self.scale:
            raise InvalidArgument(f"FormatSpec.scale={self.scale!r}, expected a scale kind such as 'absmax'")
        _check_scale_spelling(self.scale)
        if self.double_quant is not None and not isinstance(self.double_quant, DoubleQuant):
            raise InvalidArgument(f"FormatSpec.double_quant={self.double_quant!r}, expected a DoubleQuant or None")
        if self.packing is not None and self.packing not in _PACKINGS:
            raise InvalidArgument(f"FormatSpec.packing={self.packing!r}, expected one of {_PACKINGS} or None")

    def codebook_tensor(self) -> torch.Tensor:
        """The codebook as a float32 tensor indexed by code."""
        if self.codebook is None:
            raise InvalidArgument(f"format {self.format!r} declares no codebook")
        return torch.tensor(self.codebook, dtype=torch.float32)

    def min_bits_per_parameter(self, *, has_offsets: bool = False) -> float:
        """The fewest bits per element any honest layout of this spec can use.

        4 bits per code, plus per block a scale of at least 16 bits (8-bit codes
        plus a shared 32-bit scale per outer block under double quantization),
        plus a 16-bit offset per block when offsets are used.
        """
        bits = 4.0
        if self.double_quant is None:
            bits += 16 / self.block_size
        else:
            bits += self.double_quant.bits / self.block_size
            bits += 32 / (self.block_size * self.double_quant.block_size)
        if has_offsets:
            bits += 16 / self.block_size
        return bits


@dataclass(frozen=True)
class Capabilities:
    """Which cases an implementation supports; anything else is a skip with the reason, never a silent pass.

    ``Capabilities()`` means: CPU, float32/float16/bfloat16, any shape, only the spec's block size.
    ``block_sizes`` lists block sizes reachable through the optional ``with_block_size`` method.
    ``numel_multiple_of``/``max_ndim``/``shape_rule`` describe shapes it rejects;
    ``shape_rule(shape)`` returns a reason string for an unsupported shape, else None.
    ``compute_dtype`` is the precision in which codes are chosen; it sets the ulp
    tolerance of the nearest-code checks. ``None`` means "in the input's dtype" (torchao
    divides a bfloat16 weight by its scale in bfloat16): use :meth:`compute_dtype_for`.
    """

    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[torch.dtype, ...] = _FLOAT_DTYPES
    block_sizes: tuple[int, ...] | None = None
    max_ndim: int | None = None
    numel_multiple_of: int = 1
    shape_rule: Callable[[torch.Size], str | None] | None = None
    has_matmul: bool = False
    has_module: bool = False
    compute_dtype: torch.dtype | None = torch.float32

    def compute_dtype_for(self, input_dtype: torch.dtype) -> torch.dtype:
        """The precision codes are chosen in for an input of ``input_dtype``."""
        return input_dtype if self.compute_dtype is None else self.compute_dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        if self.block_sizes is not None:
            sizes = tuple(self.block_sizes)
            for size in sizes:
                _require_block_size("Capabilities.block_sizes[...]", size)
            object.__setattr__(self, "block_sizes", sizes)
        for dtype in self.dtypes:
            if not isinstance(dtype, torch.dtype):
                raise InvalidArgument(f"Capabilities.dtypes contains {dtype!r}, expected torch dtypes")
        if not isinstance(self.numel_multiple_of, int) or self.numel_multiple_of < 1:
            raise InvalidArgument(f"Capabilities.numel_multiple_of={self.numel_multiple_of!r}, expected a positive int")

    def supported_block_sizes(self, spec: FormatSpec) -> tuple[int, ...]:
        """Block sizes this implementation can run: the declared list, or just the spec's."""
        return self.block_sizes if self.block_sizes is not None else (spec.block_size,)

    def unsupported_reason(
        self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: str = "cpu"
    ) -> str | None:
        """Why this case is outside the capabilities, or None when it is supported."""
        shape = torch.Size(shape)
        if device not in self.devices:
            return f"device {device!r} not in capabilities.devices={self.devices!r}"
        if dtype not in self.dtypes:
            return f"dtype {dtype} not in capabilities.dtypes={self.dtypes!r}"
        if self.max_ndim is not None and len(shape) > self.max_ndim:
            return f"{len(shape)}-D shape {tuple(shape)} exceeds capabilities.max_ndim={self.max_ndim}"
        numel = math.prod(shape)
        if numel % self.numel_multiple_of:
            return f"numel {numel} of shape {tuple(shape)} is not a multiple of {self.numel_multiple_of}"
        if self.shape_rule is not None:
            return self.shape_rule(shape)
        return None


@dataclass(kw_only=True)
class QuantizedTensor:
    """What ``quantize`` returns.

    ``codes``: uint8, one code 0..15 per element, same shape as the input.
    ``scales``: float32, one per block of the flattened input, double quantization undone.
    ``offsets``: float32 per block or None. A black box may leave codes/scales None;
    suites that need them then skip. ``storage`` is what the implementation really
    keeps (packed bytes, absmax, nested statistics): ``nbytes`` is their sum.
    ``state`` holds opaque non-tensor metadata an implementation needs (a library's
    quant-state object); tensor data belongs in ``storage``.
    """

    codes: torch.Tensor | None = None
    scales: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    shape: torch.Size
    dtype: torch.dtype
    storage: Mapping[str, torch.Tensor] = field(default_factory=dict)
    state: Any = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the implementation keeps: the sum over ``storage``."""
        return sum(t.numel() * t.element_size() for t in self.storage.values())

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.nbytes / self.numel if self.numel else float("nan")


@runtime_checkable
class Quantizer(Protocol):
    """A 4-bit weight quantizer as the harness sees it.

    Optional methods the suites use when present: ``matmul(x, q) -> x @ W.T``,
    ``linear(module) -> nn.Module`` (a real 4-bit module), and
    ``with_block_size(n) -> Quantizer`` (for block sizes in ``capabilities.block_sizes``).
    """

    name: str
    spec: FormatSpec
    capabilities: Capabilities

    def quantize(self, x: torch.Tensor) -> QuantizedTensor: ...

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor: ...
