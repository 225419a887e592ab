"""Codebooks as math: each one computed in code and tested against its published values.

``codebook(name, block_size=64)`` returns 16 float32 values indexed by code.
Only AF4 depends on the block size (its levels are optimised for the
distribution of absmax-normalised values, which changes with the block size).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from harness._validation import check_block_size
from harness.errors import InvalidArgument
from harness.formats.af4 import af4_codebook
from harness.formats.fp4 import fp4_codebook
from harness.formats.int4 import int4_codebook
from harness.formats.lloyd_max import lloyd_max_codebook
from harness.formats.nf4 import nf4_codebook

__all__ = ["FORMAT_NAMES", "codebook"]

_BUILDERS: dict[str, Callable[[int], torch.Tensor]] = {
    "nf4": lambda block_size: nf4_codebook(),
    "fp4": lambda block_size: fp4_codebook(),
    "af4": af4_codebook,
    "int4": lambda block_size: int4_codebook(),
    "lloyd-max": lambda block_size: lloyd_max_codebook(),
}

FORMAT_NAMES: tuple[str, ...] = tuple(_BUILDERS)


@lru_cache(maxsize=64)
def _cached(name: str, block_size: int) -> torch.Tensor:
    return _BUILDERS[name](block_size)


def codebook(name: str, block_size: int = 64) -> torch.Tensor:
    """The 16 levels of format ``name`` in code order, float32 (a fresh tensor each call)."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise InvalidArgument(f"format={name!r}, expected one of {', '.join(FORMAT_NAMES)}")
    return _cached(name, check_block_size(block_size)).clone()
