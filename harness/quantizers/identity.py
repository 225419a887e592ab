"""Full-precision stand-ins (fp32, fp16, bf16): what the 4-bit formats are compared against."""

from __future__ import annotations

import torch

from harness._validation import check_weight
from harness.api import Capabilities, FormatSpec, QuantizedTensor

__all__ = ["IdentityQuantizer", "identity_quantizers"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class IdentityQuantizer:
    """Keeps the weight in ``storage_dtype``; no codes, no scales (suites that need them skip).

    The cast saturates at the storage dtype's largest finite value (fp16 holds at most
    65504), so every finite weight comes back finite.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.storage_dtype = _DTYPES[name]
        self.spec = FormatSpec(format=name, codebook=None, block_size=64, scale="none", exact_zero=True)
        self.capabilities = Capabilities(has_matmul=True)

    def __repr__(self) -> str:
        return f"IdentityQuantizer({self.name!r})"

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        check_weight(x)
        limit = torch.finfo(self.storage_dtype).max
        kept = x.detach()
        if limit < torch.finfo(x.dtype).max:  # clamp in float32, where the limit itself is exact
            kept = kept.float().clamp(-limit, limit)
        kept = kept.to(self.storage_dtype, copy=True)
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"weight": kept})

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        return q.storage["weight"].to(q.dtype)

    def matmul(self, x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.dequantize(q).to(x.dtype))


def identity_quantizers() -> list[IdentityQuantizer]:
    return [IdentityQuantizer(name) for name in _DTYPES]
