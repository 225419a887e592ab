"""Fused 4-bit dequantize + gemv on Triton: ``y = x @ W.T`` for 1 to 16 rows of x, W never written out.

The decode-time shape of LLM inference: every packed byte is read once and decoded in registers,
so the kernel moves about half a byte per weight instead of dequantize's 0.5 + 2..4 bytes written and
read back. Requirements (checked, InvalidArgument otherwise): ``in_features`` a multiple of
``block_size`` (blocks then never straddle two rows of W, so each row's scales are one run), x of
shape ``[batch, in_features]`` with ``1 <= batch <= GEMV_MAX_BATCH``, dtype float32/float16/bfloat16.

Numerics: each weight is ``codebook[code] * absmax`` rounded to float32, then to x's dtype (the
same value :func:`~harness.kernels.dequantize.dequantize_4bit` returns in that dtype); products are
exact for fp16/bf16 operands and rounded once for fp32 (IEEE, no TF32); sums are float32 in the
kernel's own order (per K tile the dot's order, then tile after tile); the result is rounded once to
x's dtype. So it equals dequantize + ``F.linear`` up to the order of the float32 additions.
"""

from __future__ import annotations

import torch

from harness.errors import InvalidArgument
from harness.kernels._build import kernels_for
from harness.kernels._checks import check_codebook, check_kernel_block_size, check_packed_and_absmax, check_same_device

__all__ = ["GEMV_DTYPES", "GEMV_MAX_BATCH", "gemv_4bit"]

GEMV_MAX_BATCH = 16
"""Rows of x one launch handles: one 16-row tile, the smallest the tensor-core dot takes."""
GEMV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BLOCK_M = 16


def gemv_4bit(
    x: torch.Tensor,
    packed: torch.Tensor,
    absmax: torch.Tensor,
    codebook: torch.Tensor,
    out_features: int,
    *,
    block_size: int = 64,
) -> torch.Tensor:
    """``x @ W.T`` of shape ``[batch, out_features]`` in x's dtype, W ``[out_features, in_features]`` 4-bit.

    ``packed``/``absmax``/``codebook`` as for :func:`~harness.kernels.dequantize.dequantize_4bit`, for the
    row-major flattened W. CPU tensors run on the Triton interpreter (slow), CUDA tensors compiled.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        found = f"shape={tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"
        raise InvalidArgument(f"x has {found}, expected a 2-D tensor [batch, in_features]")
    if x.dtype not in GEMV_DTYPES:
        raise InvalidArgument(f"x.dtype={x.dtype}, expected one of {GEMV_DTYPES}")
    batch, in_features = x.shape
    if not 1 <= batch <= GEMV_MAX_BATCH:
        raise InvalidArgument(f"x.shape[0]={batch} (batch), expected 1 to {GEMV_MAX_BATCH}")
    if not isinstance(out_features, int) or isinstance(out_features, bool) or out_features < 1:
        raise InvalidArgument(f"out_features={out_features!r}, expected a positive int")
    block_size = check_kernel_block_size(block_size)
    if in_features % block_size:
        raise InvalidArgument(f"in_features={in_features} (x.shape[1]), expected a multiple of block_size={block_size}")
    flat_packed, flat_absmax = check_packed_and_absmax(packed, absmax, out_features * in_features, block_size)
    table = check_codebook(codebook).reshape(-1).contiguous()
    device = check_same_device(x=x, packed=packed, absmax=absmax, codebook=codebook)
    kernels = kernels_for(device)
    x = x.contiguous()
    out = torch.empty(batch, out_features, dtype=x.dtype, device=device)

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (-(-out_features // meta["BLOCK_N"]),)

    kernels.gemv_kernel[grid](
        x,
        flat_packed,
        flat_absmax,
        table,
        out,
        batch,
        out_features,
        in_features,
        in_features // 2,
        in_features // block_size,
        x.stride(0),
        out.stride(0),
        BLOCK_SIZE=block_size,
        UPCAST=x.dtype == torch.float32 or kernels.INTERPRETED,
        BLOCK_M=_BLOCK_M,
    )
    return out
