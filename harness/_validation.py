"""Every check of an argument a user hands the harness, in one place, raising the harness's own errors (one line:
what was wrong, what was expected) instead of asserts or deep tracebacks."""

from __future__ import annotations

from typing import TypeGuard

import torch

from harness.errors import InvalidArgument

__all__ = ["check_block_size", "check_weight", "is_power_of_two"]

SUPPORTED_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_weight(x: object, *, name: str = "x") -> torch.Tensor:
    """Return ``x`` if it is a non-empty, finite floating-point tensor; raise InvalidArgument otherwise."""
    if not isinstance(x, torch.Tensor):
        raise InvalidArgument(f"{name} is a {type(x).__name__}, expected a torch.Tensor")
    if x.dtype not in SUPPORTED_FLOAT_DTYPES:
        raise InvalidArgument(
            f"{name}.dtype={x.dtype}, expected a floating dtype (float32, float16, bfloat16 or float64)"
        )
    if x.numel() == 0:
        raise InvalidArgument(f"{name}.shape={tuple(x.shape)} is empty, expected at least one element")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).reshape(-1).nonzero()[0])
        value = float(x.reshape(-1)[bad])
        raise InvalidArgument(
            f"{name} has a non-finite value {value!r} at flat index {bad}, expected finite values only"
        )
    return x


def is_power_of_two(value: object) -> TypeGuard[int]:
    """True for positive ints that are a power of two (bools are not ints here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 and value & (value - 1) == 0


def check_block_size(
    block_size: object, *, name: str = "block_size", minimum: int = 1, maximum: int | None = None
) -> int:
    """Return ``block_size`` if it is a power of two from ``minimum`` to ``maximum`` (no upper bound when None);
    raise InvalidArgument otherwise. Kernels that pack two codes a byte need ``minimum=2``."""
    if not is_power_of_two(block_size) or block_size < minimum or (maximum is not None and block_size > maximum):
        if maximum is not None:
            expected = f"a positive power of two from {minimum} to 2**{maximum.bit_length() - 1}"
        elif minimum > 1:
            expected = f"a power of two >= {minimum}"
        else:
            expected = "a positive power of two"
        raise InvalidArgument(f"{name}={block_size!r}, expected {expected} such as 64")
    return block_size
