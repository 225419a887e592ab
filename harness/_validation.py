"""Checks on user input, raising the harness's own errors instead of asserts or deep tracebacks."""

from __future__ import annotations

import torch

from harness.api import is_power_of_two
from harness.errors import InvalidArgument

__all__ = ["check_block_size", "check_weight"]

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


def check_block_size(block_size: object, *, name: str = "block_size") -> int:
    """Return ``block_size`` if it is a positive power of two; raise InvalidArgument otherwise."""
    if not is_power_of_two(block_size):
        raise InvalidArgument(f"{name}={block_size!r}, expected a positive power of two such as 64")
    return block_size
