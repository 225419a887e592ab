"""Two 4-bit codes per byte, in either nibble order; pure functions shared by quantizers and suites."""

from __future__ import annotations

import torch

from harness.api import PACKING_HIGH_FIRST, PACKING_LOW_FIRST
from harness.errors import InvalidArgument

__all__ = ["pack_nibbles", "packed_size", "unpack_nibbles"]


def packed_size(numel: int) -> int:
    """Bytes needed for ``numel`` codes (an odd count leaves the last byte half used)."""
    return (numel + 1) // 2


def _check_order(order: str) -> None:
    if order not in (PACKING_HIGH_FIRST, PACKING_LOW_FIRST):
        raise InvalidArgument(f"order={order!r}, expected {PACKING_HIGH_FIRST!r} or {PACKING_LOW_FIRST!r}")


def pack_nibbles(codes: torch.Tensor, order: str = PACKING_HIGH_FIRST) -> torch.Tensor:
    """Pack uint8 codes 0..15 (any shape, flattened) into bytes; an odd tail is padded with code 0."""
    _check_order(order)
    if codes.dtype != torch.uint8:
        raise InvalidArgument(f"codes.dtype={codes.dtype}, expected torch.uint8")
    flat = codes.reshape(-1)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    first, second = flat[0::2], flat[1::2]
    if order == PACKING_HIGH_FIRST:
        return (first << 4) | second
    return (second << 4) | first


def unpack_nibbles(packed: torch.Tensor, numel: int, order: str = PACKING_HIGH_FIRST) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: the first ``numel`` codes as a flat uint8 tensor."""
    _check_order(order)
    if packed.dtype != torch.uint8:
        raise InvalidArgument(f"packed.dtype={packed.dtype}, expected torch.uint8")
    flat = packed.reshape(-1)
    if flat.numel() != packed_size(numel):
        raise InvalidArgument(f"packed has {flat.numel()} bytes, expected {packed_size(numel)} for {numel} codes")
    high, low = flat >> 4, flat & 0x0F
    first, second = (high, low) if order == PACKING_HIGH_FIRST else (low, high)
    return torch.stack([first, second], dim=1).reshape(-1)[:numel]
