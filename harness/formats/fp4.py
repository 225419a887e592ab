"""bitsandbytes' FP4: a 1-2-1 (sign, exponent, mantissa) float with its own code order.

Bit 3 is the sign, so codes 0 and 8 are +0 and -0. The three low bits hold a
2-bit exponent field ``e`` and a 1-bit mantissa ``m``: for ``e`` in 1..3 the
magnitude is 2**(4 - e) * (1 + m/2) (exponent field counting down, unlike
IEEE), and ``e == 0`` is subnormal, m * 2**-4. Magnitudes 0, 1/16, 2, 3, 4, 6,
8, 12 are divided by the largest (12) in float32, which gives bitsandbytes'
table bit for bit, including its smallest non-zero level 1/192.
"""

from __future__ import annotations

import torch

__all__ = ["fp4_codebook", "fp4_magnitude"]


def fp4_magnitude(bits3: int) -> float:
    """Unnormalised magnitude of the three low bits of a bitsandbytes FP4 code."""
    exponent_field, mantissa = bits3 >> 1, bits3 & 1
    if exponent_field == 0:
        return mantissa * 2.0**-4
    return 2.0 ** (4 - exponent_field) * (1.0 + mantissa / 2.0)


def fp4_codebook() -> torch.Tensor:
    """FP4 levels in bitsandbytes' code order (sign in bit 3; both +0 and -0 present)."""
    values = [(-1.0 if code & 0b1000 else 1.0) * fp4_magnitude(code & 0b111) for code in range(16)]
    table = torch.tensor(values, dtype=torch.float32)
    return table / table.abs().max()
