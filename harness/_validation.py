"""Every check of an argument a user hands the harness, in one place, raising the harness's own errors (one line:
what was wrong, what was expected) instead of asserts or deep tracebacks."""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard

import torch

from harness.errors import InvalidArgument

__all__ = ["check_block_size", "check_weight", "is_power_of_two", "why_not_writable"]

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


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest of its ancestors that exists (the folder a write would have to create into)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def why_not_writable(path: str | Path, *, folder: bool = False) -> str | None:
    """Why a file (or, with ``folder``, a folder that may still have to be created) cannot be written at ``path``,
    in a few words; None when it can. Checked before a run, so that an output that cannot work is a usage error
    up front rather than a traceback after an hour of tests."""
    import os

    target = Path(path)
    if target.exists():
        if folder and not target.is_dir():
            return "is a file, expected a folder"
        if not folder and target.is_dir():
            return "is a folder, expected a file path"
        writable_dir = target if folder else target.parent
        if not os.access(writable_dir, os.W_OK | os.X_OK) or (not folder and not os.access(target, os.W_OK)):
            return "is not writable"
        return None
    existing = _nearest_existing(target.parent)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"folder {existing} is not writable"
    return None
