"""Triton kernels for the bitsandbytes 4-bit layout: dequantize, and fused dequantize + gemv.

Importing this package does not import triton: the kernels are built on their first launch (see
:mod:`harness.kernels._build`), so ``import harness`` works on machines without triton or CUDA.
CUDA tensors run the compiled kernels; CPU tensors run them on the Triton interpreter (slow, for tests).
"""

from __future__ import annotations

from harness.kernels._build import INSTALL_HINT, interpreter_requested, triton_installed
from harness.kernels.dequantize import DEQUANTIZE_DTYPES, dequantize_4bit
from harness.kernels.gemv import GEMV_DTYPES, GEMV_MAX_BATCH, gemv_4bit

__all__ = [
    "DEQUANTIZE_DTYPES",
    "GEMV_DTYPES",
    "GEMV_MAX_BATCH",
    "INSTALL_HINT",
    "dequantize_4bit",
    "gemv_4bit",
    "interpreter_requested",
    "triton_installed",
]
