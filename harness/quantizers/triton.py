"""triton-nf4 and triton-fp4: the reference encoder, decoded by the harness's own Triton kernels.

``quantize`` is :class:`~harness.quantizers.reference.ReferenceQuantizer` (storage ``packed``: uint8,
high nibble first; ``absmax``: float32 per block; bitsandbytes' layout), so any difference the suites
find is in the kernels. ``dequantize`` is :func:`harness.kernels.dequantize_4bit`; ``matmul`` is the
fused :func:`harness.kernels.gemv_4bit` when x has 1 to 16 rows and ``in_features`` is a multiple of
the block size, and otherwise the Triton dequantize (into x's dtype) followed by ``F.linear`` -- the
split bitsandbytes' own ``matmul_4bit`` makes. Both paths see the same weights bit for bit.

Devices: ``cuda`` when a GPU is there; ``cpu`` only when TRITON_INTERPRET=1 is set, because on CPU
the kernels run on the Triton interpreter (correct, but orders of magnitude slower). Quantizing is the
reference on CPU; the storage then moves to the input's device. Importing this module imports
neither triton nor the kernels' source: that happens at the first dequantize or matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from harness._validation import check_block_size, check_weight
from harness.api import Capabilities, QuantizedTensor
from harness.errors import FourbitError, ImplementationError, InvalidArgument, MissingDependency
from harness.kernels import (
    DEQUANTIZE_DTYPES,
    GEMV_MAX_BATCH,
    INSTALL_HINT,
    dequantize_4bit,
    gemv_4bit,
    interpreter_requested,
    triton_installed,
)
from harness.quantizers.reference import REFERENCE_BLOCK_SIZES, ReferenceQuantizer

__all__ = [
    "TRITON_BLOCK_SIZES",
    "TRITON_FORMATS",
    "TRITON_NAMES",
    "TritonQuantizer",
    "triton_devices",
    "triton_quantizers",
]

TRITON_FORMATS = ("nf4", "fp4")
TRITON_NAMES = tuple(f"triton-{fmt}" for fmt in TRITON_FORMATS)
TRITON_BLOCK_SIZES = REFERENCE_BLOCK_SIZES
"""Every block size the reference encoder takes (16 to 4096); the kernels take any power of two >= 2."""
NO_DEVICE_REASON = "needs a CUDA GPU, or TRITON_INTERPRET=1 on CPU (slow)"


def triton_devices() -> tuple[str, ...]:
    """Devices the kernels can serve here: ``cuda`` with a GPU, ``cpu`` when TRITON_INTERPRET=1 opts in."""
    devices: list[str] = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if interpreter_requested():
        devices.append("cpu")
    return tuple(devices)


class TritonQuantizer:
    """Reference absmax encoding of ``nf4``/``fp4``; Triton dequantize and fused gemv."""

    def __init__(
        self,
        format: str = "nf4",
        block_size: int = 64,
        name: str | None = None,
        devices: tuple[str, ...] | None = None,
    ) -> None:
        if format not in TRITON_FORMATS:
            raise InvalidArgument(f"format={format!r}, expected one of {TRITON_FORMATS}")
        check_block_size(block_size)
        self.name = name or f"triton-{format}"
        self._reference = ReferenceQuantizer(format, block_size, name=self.name)
        self.spec = self._reference.spec
        self._devices = triton_devices() if devices is None else tuple(devices)
        self.capabilities = Capabilities(
            devices=self._devices,
            dtypes=DEQUANTIZE_DTYPES,
            block_sizes=TRITON_BLOCK_SIZES,
            has_matmul=True,
            compute_dtype=torch.float32,
        )
        self._codebook_cpu = self.spec.codebook_tensor()
        self._codebooks: dict[torch.device, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"TritonQuantizer({self.spec.format!r}, block_size={self.spec.block_size}, name={self.name!r})"

    def with_block_size(self, block_size: int) -> TritonQuantizer:
        """The same quantizer at another block size (one of :data:`TRITON_BLOCK_SIZES`)."""
        return TritonQuantizer(self.spec.format, block_size, name=self.name, devices=self._devices)

    # ------------------------------------------------------------------------------------------ helpers

    def _codebook(self, device: torch.device) -> torch.Tensor:
        table = self._codebooks.get(device)
        if table is None:
            table = self._codebooks[device] = self._codebook_cpu.to(device)
        return table

    def _storage(self, q: QuantizedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return q.storage["packed"], q.storage["absmax"]
        except KeyError as missing:
            raise InvalidArgument(
                f"{self.name}: QuantizedTensor.storage lacks {missing}, expected the entries quantize() wrote "
                "(packed, absmax)"
            ) from None

    def _run(self, operation: str, kernel: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        """Call a kernel; harness errors pass through, anything else (Triton's own) becomes ImplementationError."""
        try:
            return kernel(*args, **kwargs)
        except FourbitError:
            raise
        except Exception as exc:
            raise ImplementationError(self.name, operation, exc) from exc

    # ------------------------------------------------------------------------------------------ contract

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        check_weight(x)
        if x.dtype not in DEQUANTIZE_DTYPES:
            raise InvalidArgument(f"x.dtype={x.dtype}, expected one of {DEQUANTIZE_DTYPES} (the kernels' outputs)")
        q = self._reference.quantize(x.detach().cpu())
        if x.device.type == "cpu":
            return q
        device = x.device
        return QuantizedTensor(
            codes=None if q.codes is None else q.codes.to(device),
            scales=None if q.scales is None else q.scales.to(device),
            offsets=None,
            shape=q.shape,
            dtype=q.dtype,
            storage={key: value.to(device) for key, value in q.storage.items()},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        """The Triton dequantize kernel on ``q.storage`` (packed bytes, absmax), in ``q.dtype``."""
        packed, absmax = self._storage(q)
        return self._run(
            f"dequantize_4bit(shape={tuple(q.shape)}, dtype={q.dtype})",
            dequantize_4bit,
            packed,
            absmax,
            self._codebook(packed.device),
            q.shape,
            block_size=self.spec.block_size,
            dtype=q.dtype,
        )

    def matmul(self, x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
        """``x @ W.T`` for W of shape [out_features, in_features]; x of shape [..., in_features].

        Fused gemv for 1..16 rows of x and ``in_features % block_size == 0``; otherwise Triton dequantize
        to x's dtype, then ``F.linear``.
        """
        if len(q.shape) != 2:
            raise InvalidArgument(f"q.shape={tuple(q.shape)}, expected a 2-D weight [out_features, in_features]")
        out_features, in_features = q.shape
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != in_features:
            found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidArgument(f"x.shape={found}, expected [..., {in_features}] (in_features of the weight)")
        packed, absmax = self._storage(q)
        rows = math.prod(x.shape[:-1])
        flat_x = x.reshape(rows, in_features)
        block_size = self.spec.block_size
        codebook = self._codebook(packed.device)
        if 1 <= rows <= GEMV_MAX_BATCH and in_features % block_size == 0:
            out = self._run(
                f"gemv_4bit(x shape={tuple(flat_x.shape)}, W shape={tuple(q.shape)})",
                gemv_4bit,
                flat_x,
                packed,
                absmax,
                codebook,
                out_features,
                block_size=block_size,
            )
        else:
            weight = self._run(
                f"dequantize_4bit(shape={tuple(q.shape)}, dtype={x.dtype})",
                dequantize_4bit,
                packed,
                absmax,
                codebook,
                q.shape,
                block_size=block_size,
                dtype=x.dtype,
            )
            out = F.linear(flat_x, weight)
        return out.reshape(*x.shape[:-1], out_features)


def triton_quantizers() -> list[TritonQuantizer]:
    """triton-nf4 and triton-fp4 at block 64, or MissingDependency (no triton; no GPU and no TRITON_INTERPRET=1)."""
    if not triton_installed():
        raise MissingDependency(
            source="triton", names=TRITON_NAMES, reason="triton is not installed", hint=INSTALL_HINT
        )
    devices = triton_devices()
    if not devices:
        raise MissingDependency(source="triton", names=TRITON_NAMES, reason=NO_DEVICE_REASON)
    return [TritonQuantizer(fmt, devices=devices) for fmt in TRITON_FORMATS]
