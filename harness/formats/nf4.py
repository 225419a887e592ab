"""NormalFloat4 (QLoRA, Dettmers et al. 2023, appendix E), constructed from the normal quantile function.

Eight non-negative levels come from quantiles of N(0, 1) at probabilities
spaced evenly from ``offset`` down to 1/2, seven negative ones from a grid of
eight points over the same range, plus an exact zero; the set is sorted and
divided by its maximum. The construction reproduces the paper's table bit for
bit in float32 when done as the QLoRA code does it: ``offset`` is
1 - (1/30 + 1/32) / 2 rounded to 7 decimals (0.9677083), the probability grid
is computed in float32, the quantiles in float64, and the normalisation in
float32. With the unrounded offset, values move by up to 3 ulp.
"""

from __future__ import annotations

import torch

__all__ = ["NF4_OFFSET", "nf4_codebook"]

NF4_OFFSET = round(1.0 - 0.5 * (1.0 / 30.0 + 1.0 / 32.0), 7)
"""Upper quantile probability: halfway between 1 - 1/(2*15) and 1 - 1/(2*16), as QLoRA's code writes it."""


def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """NF4 levels in code order (ascending; code 7 is exactly 0, codes 0 and 15 are -1 and 1)."""
    positive_probs = torch.linspace(offset, 0.5, 9, dtype=torch.float32)[:-1].double()
    negative_probs = torch.linspace(offset, 0.5, 8, dtype=torch.float32)[:-1].double()
    positive = torch.special.ndtri(positive_probs)
    negative = -torch.special.ndtri(negative_probs)
    levels = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float()
    levels = levels.sort().values
    return levels / levels.max()
