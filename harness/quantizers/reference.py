"""The oracle: plain-torch absmax blockwise 4-bit quantizers (ref-nf4, ref-fp4, ref-af4, ref-int4).

Codes are the nearest levels under the tie rule documented in
:mod:`harness.quantizers.blockwise`; storage is bitsandbytes' layout (high
nibble first, float32 absmax per block) or, with double quantization, 8-bit
scale codes, a float32 scale per 256 blocks and the float32 mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness._validation import check_block_size, check_weight
from harness.api import PACKING_HIGH_FIRST, SCALE_ABSMAX, Capabilities, DoubleQuant, FormatSpec, QuantizedTensor
from harness.errors import InvalidArgument
from harness.formats import codebook as format_codebook
from harness.formats.packing import unpack_nibbles
from harness.quantizers.blockwise import (
    DoubleQuantizedScales,
    decode_blocks,
    dequantize_scales,
    nearest_table,
    quantize_absmax_blocks,
    quantize_scales,
)

__all__ = ["REFERENCE_BLOCK_SIZES", "REFERENCE_FORMATS", "ReferenceQuantizer", "reference_quantizers"]

REFERENCE_FORMATS = ("nf4", "fp4", "af4", "int4")
REFERENCE_BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ReferenceQuantizer:
    """Absmax blockwise quantizer for one of :data:`REFERENCE_FORMATS`."""

    def __init__(
        self,
        format: str = "nf4",
        block_size: int = 64,
        double_quant: DoubleQuant | None = None,
        name: str | None = None,
    ) -> None:
        if format not in REFERENCE_FORMATS:
            raise InvalidArgument(f"format={format!r}, expected one of {REFERENCE_FORMATS}")
        check_block_size(block_size)
        levels = format_codebook(format, block_size)
        self.name = name or f"ref-{format}" + ("-dq" if double_quant else "")
        self.spec = FormatSpec(
            format=format,
            codebook=tuple(levels.tolist()),
            block_size=block_size,
            scale=SCALE_ABSMAX,
            double_quant=double_quant,
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )
        self.capabilities = Capabilities(block_sizes=REFERENCE_BLOCK_SIZES, has_matmul=True)
        self._levels = levels
        self._table = nearest_table(levels)
        high, low = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        self._level_pairs = torch.stack([levels[high.reshape(-1)], levels[low.reshape(-1)]], dim=1).contiguous()

    def __repr__(self) -> str:
        return f"ReferenceQuantizer({self.spec.format!r}, block_size={self.spec.block_size}, name={self.name!r})"

    def with_block_size(self, block_size: int) -> ReferenceQuantizer:
        """The same quantizer at another block size (AF4 re-derives its levels for it)."""
        return ReferenceQuantizer(self.spec.format, block_size, self.spec.double_quant, name=self.name)

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        check_weight(x)
        block_size = self.spec.block_size
        flat = x.detach().reshape(-1).to(torch.float32)
        codes, packed, scales = quantize_absmax_blocks(flat, block_size, self._table)
        storage: dict[str, torch.Tensor] = {"packed": packed}
        dq = self.spec.double_quant
        if dq is None:
            storage["absmax"] = scales
            reported_scales = scales
        else:
            nested = quantize_scales(scales, dq)
            storage.update(absmax_codes=nested.codes, absmax_outer=nested.outer_scales, absmax_mean=nested.offset)
            reported_scales = dequantize_scales(nested, dq)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=reported_scales,
            offsets=None,
            shape=x.shape,
            dtype=x.dtype,
            storage=storage,
        )

    def _stored_scales(self, q: QuantizedTensor) -> torch.Tensor:
        dq = self.spec.double_quant
        if dq is None:
            return q.storage["absmax"]
        nested = DoubleQuantizedScales(
            codes=q.storage["absmax_codes"], outer_scales=q.storage["absmax_outer"], offset=q.storage["absmax_mean"]
        )
        return dequantize_scales(nested, dq)

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        """Decode from ``q.storage`` alone (packed bytes and stored scales)."""
        try:
            packed = q.storage["packed"]
            scales = self._stored_scales(q)
        except KeyError as missing:
            raise InvalidArgument(
                f"{self.name}: QuantizedTensor.storage lacks {missing}, expected the entries quantize() wrote"
            ) from None
        values = decode_blocks(self._level_pairs, packed, scales, q.numel, self.spec.block_size)
        return values.reshape(q.shape).to(q.dtype)

    def unpack_codes(self, q: QuantizedTensor) -> torch.Tensor:
        """Codes recovered from the packed storage, in the input's shape."""
        return unpack_nibbles(q.storage["packed"], q.numel, PACKING_HIGH_FIRST).reshape(q.shape)

    def matmul(self, x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
        """x @ W.T with W dequantized to x's dtype (the plain reference for fused kernels)."""
        return F.linear(x, self.dequantize(q).to(x.dtype))


def reference_quantizers() -> list[ReferenceQuantizer]:
    """The built-in reference implementations, at block 64."""
    return [ReferenceQuantizer(fmt) for fmt in REFERENCE_FORMATS] + [
        ReferenceQuantizer("nf4", double_quant=DoubleQuant(bits=8, block_size=256))
    ]
