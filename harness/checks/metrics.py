"""Error statistics between a tensor and its reconstruction, computed in float64."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.errors import InvalidArgument

__all__ = ["ErrorStats", "code_agreement", "error_stats"]


@dataclass(frozen=True)
class ErrorStats:
    """MSE, MAE and max |error| (lower is better) and SQNR in dB (higher is better)."""

    mse: float
    mae: float
    max_error: float
    sqnr_db: float

    def as_dict(self) -> dict[str, float]:
        return {"mse": self.mse, "mae": self.mae, "max_error": self.max_error, "sqnr_db": self.sqnr_db}


def error_stats(original: torch.Tensor, reconstructed: torch.Tensor) -> ErrorStats:
    """Statistics of ``reconstructed - original`` over all elements (SQNR: signal power over error power)."""
    if original.shape != reconstructed.shape:
        raise InvalidArgument(
            f"reconstructed.shape={tuple(reconstructed.shape)}, expected the original's {tuple(original.shape)}"
        )
    if original.numel() == 0:
        raise InvalidArgument("original is empty, expected at least one element")
    x = original.detach().reshape(-1).double()
    err = reconstructed.detach().reshape(-1).double() - x
    noise = float(err.square().sum())
    signal = float(x.square().sum())
    sqnr = math.inf if noise == 0 else (-math.inf if signal == 0 else 10 * math.log10(signal / noise))
    return ErrorStats(
        mse=noise / x.numel(),
        mae=float(err.abs().mean()),
        max_error=float(err.abs().max()),
        sqnr_db=sqnr,
    )


def code_agreement(codes_a: torch.Tensor, codes_b: torch.Tensor) -> float:
    """Fraction of elements on which two implementations chose the same code."""
    if codes_a.shape != codes_b.shape:
        raise InvalidArgument(f"codes shapes differ: {tuple(codes_a.shape)} vs {tuple(codes_b.shape)}")
    return float((codes_a == codes_b).double().mean())
