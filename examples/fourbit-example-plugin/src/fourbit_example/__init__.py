"""An example third-party plugin for fourbit-harness: NF4 written from scratch against the public contract.

Only the public API of ``harness`` is used (FormatSpec, Capabilities, QuantizedTensor, codebook); the
quantizer is registered through the ``fourbit.quantizers`` entry point in pyproject.toml, and can also be
tested without installing: ``pytest --quantizer fourbit_example:quantizers --impl 'example-*'``.
"""

from __future__ import annotations

import torch

from harness import PACKING_HIGH_FIRST, SCALE_ABSMAX, Capabilities, FormatSpec, QuantizedTensor, codebook

__all__ = ["BLOCK_SIZES", "ExampleNF4Argmin", "quantizers"]

BLOCK_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_CHUNK_BLOCKS = 4096  # blocks per argmin step: bounds the (blocks, block_size, 16) distance tensor


class ExampleNF4Argmin:
    """Blockwise absmax NF4: scale = max |x| per block of the flattened input, code = argmin |x / scale - level|.

    Storage is what bitsandbytes keeps: two codes per byte (element 2i in the high nibble) and one float32
    absmax per block. Codes are chosen in float32; ties at exact midpoints go to the lower code.
    """

    def __init__(self, block_size: int = 64, name: str = "example-nf4-argmin") -> None:
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size={block_size!r}, expected one of {BLOCK_SIZES}")
        self.name = name
        self._levels = codebook("nf4").to(torch.float32)
        self.spec = FormatSpec(
            format="nf4",
            codebook=tuple(self._levels.tolist()),
            block_size=block_size,
            scale=SCALE_ABSMAX,
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )
        # CPU; float32, float16 and bfloat16 inputs; any shape; the block sizes with_block_size accepts.
        self.capabilities = Capabilities(block_sizes=BLOCK_SIZES, compute_dtype=torch.float32)

    def __repr__(self) -> str:
        return f"ExampleNF4Argmin(block_size={self.spec.block_size}, name={self.name!r})"

    def with_block_size(self, block_size: int) -> ExampleNF4Argmin:
        """Optional: the same quantizer at another of ``capabilities.block_sizes``."""
        return ExampleNF4Argmin(block_size, self.name)

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
        if x.numel() == 0 or not bool(torch.isfinite(x).all()):
            raise ValueError(f"x must be non-empty and finite, got shape={tuple(x.shape)}")
        block_size = self.spec.block_size
        flat = x.detach().reshape(-1).to(torch.float32)
        numel = flat.numel()
        padded = torch.cat([flat, flat.new_zeros(-numel % block_size)]).view(-1, block_size)  # a copy: x is untouched
        absmax = padded.abs().amax(dim=1)
        safe = torch.where(absmax == 0, torch.ones_like(absmax), absmax)  # all-zero blocks encode 0, not NaN
        codes = torch.empty(padded.shape, dtype=torch.uint8)
        for start in range(0, padded.shape[0], _CHUNK_BLOCKS):
            rows = slice(start, start + _CHUNK_BLOCKS)
            normalized = padded[rows] / safe[rows, None]
            codes[rows] = (normalized[..., None] - self._levels).abs().argmin(dim=-1).to(torch.uint8)
        codes = codes.reshape(-1)[:numel]
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=absmax,
            offsets=None,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": _pack_high_first(codes), "absmax": absmax},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        """Decode from ``q.storage`` alone, so ``nbytes`` is what this quantizer really keeps."""
        packed, absmax = q.storage["packed"], q.storage["absmax"]
        numel, block_size = q.numel, self.spec.block_size
        codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)[:numel].long()
        values = self._levels[codes]
        values = torch.cat([values, values.new_zeros(-numel % block_size)]).view(-1, block_size)
        return (values * absmax[:, None]).reshape(-1)[:numel].reshape(q.shape).to(q.dtype)


def _pack_high_first(codes: torch.Tensor) -> torch.Tensor:
    """Two codes per byte, element 2i in the high nibble; an odd tail is padded with code 0."""
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    return (codes[0::2] << 4) | codes[1::2]


def quantizers() -> list[ExampleNF4Argmin]:
    """The entry point's target: a zero-argument factory returning the implementations to register."""
    return [ExampleNF4Argmin()]
