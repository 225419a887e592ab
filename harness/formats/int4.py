"""Symmetric uniform 4-bit: levels k/7 for k = -8..7 in code order.

Under absmax scaling the block's values lie in [-1, 1], so code 0 (-8/7) is
never chosen by nearest rounding: the format spends one of its 16 codes on
keeping the integer grid two's-complement shaped.
"""

from __future__ import annotations

import torch

__all__ = ["int4_codebook"]


def int4_codebook() -> torch.Tensor:
    """Levels k/7, k = -8..7 (code c holds (c - 8)/7; code 8 is exactly 0, code 15 is 1)."""
    return torch.arange(-8, 8, dtype=torch.float64).div(7).float()
