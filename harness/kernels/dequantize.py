"""4-bit dequantize on Triton: packed bytes + float32 absmax + a 16-entry codebook -> a dense tensor.

Reads bitsandbytes' layout (see :mod:`harness.kernels._triton_source`); each value is
``codebook[code] * absmax`` rounded once to float32, then once (to nearest even) to ``dtype``: the
same two roundings as the harness reference, so results match it bit for bit. Any block size that
is a power of two from 2 to 4096 is accepted; the element count need not be a multiple of it (the
last block is partial) nor even (the last byte is half used).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from harness.errors import InvalidArgument
from harness.kernels._build import kernels_for
from harness.kernels._checks import check_codebook, check_kernel_block_size, check_packed_and_absmax, check_same_device

__all__ = ["DEQUANTIZE_DTYPES", "dequantize_4bit"]

DEQUANTIZE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dequantize_4bit(
    packed: torch.Tensor,
    absmax: torch.Tensor,
    codebook: torch.Tensor,
    shape: Sequence[int],
    *,
    block_size: int = 64,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The dense weight of ``shape`` in ``dtype``, decoded by the Triton kernel on ``packed``'s device.

    ``packed``: uint8, ``ceil(numel / 2)`` bytes (any shape; read flat). ``absmax``: float32, one per
    block of the flattened weight. ``codebook``: float32, 16 values indexed by code. CPU tensors run on
    the Triton interpreter (slow), CUDA tensors on the compiled kernel.
    """
    try:
        size = torch.Size(shape)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"shape={shape!r}, expected a sequence of non-negative ints") from exc
    numel = math.prod(size)
    if numel == 0:
        raise InvalidArgument(f"shape={tuple(size)} is empty, expected at least one element")
    if dtype not in DEQUANTIZE_DTYPES:
        raise InvalidArgument(f"dtype={dtype}, expected one of {DEQUANTIZE_DTYPES}")
    block_size = check_kernel_block_size(block_size)
    flat_packed, flat_absmax = check_packed_and_absmax(packed, absmax, numel, block_size)
    table = check_codebook(codebook).reshape(-1).contiguous()
    device = check_same_device(packed=packed, absmax=absmax, codebook=codebook)
    kernels = kernels_for(device)
    out = torch.empty(numel, dtype=dtype, device=device)
    n_bytes = flat_packed.numel()

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (-(-n_bytes // meta["BYTES_PER_PROGRAM"]),)

    kernels.dequantize_kernel[grid](flat_packed, flat_absmax, table, out, numel, n_bytes, BLOCK_SIZE=block_size)
    return out.reshape(size)
