"""Argument checks shared by the kernel wrappers: a bad tensor is an InvalidArgument naming what was expected,
never a Triton compile error or an out-of-bounds read deep inside a kernel."""

from __future__ import annotations

import torch

from harness._validation import check_block_size
from harness.errors import InvalidArgument

__all__ = ["check_codebook", "check_kernel_block_size", "check_packed_and_absmax", "check_same_device"]


def check_kernel_block_size(block_size: object) -> int:
    """A power of two >= 2: the two elements of a byte must share a block."""
    return check_block_size(block_size, minimum=2)


def check_packed_and_absmax(
    packed: object, absmax: object, numel: int, block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat contiguous ``(packed, absmax)`` sized for ``numel`` elements in blocks of ``block_size``."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        found = packed.dtype if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise InvalidArgument(f"packed.dtype={found}, expected torch.uint8 (two 4-bit codes per byte)")
    if not isinstance(absmax, torch.Tensor) or absmax.dtype != torch.float32:
        found = absmax.dtype if isinstance(absmax, torch.Tensor) else type(absmax).__name__
        raise InvalidArgument(f"absmax.dtype={found}, expected torch.float32 (one scale per block)")
    expected_bytes = (numel + 1) // 2
    if packed.numel() != expected_bytes:
        raise InvalidArgument(f"packed.numel()={packed.numel()}, expected {expected_bytes} bytes for {numel} codes")
    expected_blocks = -(-numel // block_size)
    if absmax.numel() != expected_blocks:
        raise InvalidArgument(
            f"absmax.numel()={absmax.numel()}, expected {expected_blocks} "
            f"(one per block of {block_size} for {numel} elements)"
        )
    return packed.reshape(-1).contiguous(), absmax.reshape(-1).contiguous()


def check_codebook(codebook: object) -> torch.Tensor:
    """16 float32 values indexed by code."""
    if not isinstance(codebook, torch.Tensor) or codebook.dtype != torch.float32 or codebook.numel() != 16:
        found = (
            f"{codebook.dtype} tensor of {codebook.numel()} values"
            if isinstance(codebook, torch.Tensor)
            else type(codebook).__name__
        )
        raise InvalidArgument(f"codebook={found}, expected a float32 tensor of 16 values indexed by code")
    return codebook


def check_same_device(**tensors: torch.Tensor) -> torch.device:
    """The one device all ``tensors`` are on."""
    devices = {name: tensor.device for name, tensor in tensors.items()}
    first = next(iter(devices.values()))
    if any(device != first for device in devices.values()):
        listed = ", ".join(f"{name}.device={str(device)!r}" for name, device in devices.items())
        raise InvalidArgument(f"{listed}, expected all on one device")
    return first
