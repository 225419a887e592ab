"""Quantize + dequantize of a 4096x4096 float32 weight: the reference against bitsandbytes' CPU functions.

The reference is the oracle the other suites lean on, so it must not be the slow part: its goal is to be at
least as fast as bitsandbytes' own CPU quantize_4bit/dequantize_4bit. Timed with pytest-benchmark
(calibrated rounds after warm-up); compare the medians within one run, in one group.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from harness import ReferenceQuantizer

SHAPE = (4096, 4096)
GROUP = "quantize+dequantize 4096x4096 float32, block 64"


@pytest.fixture(scope="module")
def weight() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def _reference(fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    ref = ReferenceQuantizer(fmt)
    return lambda w: ref.dequantize(ref.quantize(w))


def _bitsandbytes(fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    functional = pytest.importorskip("bitsandbytes.functional", reason="pip install 'fourbit-harness[bnb]'")

    def roundtrip(w: torch.Tensor) -> torch.Tensor:
        packed, state = functional.quantize_4bit(w, blocksize=64, quant_type=fmt)
        return functional.dequantize_4bit(packed, state)

    return roundtrip


CASES = {
    "ref-nf4": lambda: _reference("nf4"),
    "bitsandbytes-nf4": lambda: _bitsandbytes("nf4"),
    "ref-fp4": lambda: _reference("fp4"),
    "bitsandbytes-fp4": lambda: _bitsandbytes("fp4"),
}


@pytest.mark.parametrize("implementation", list(CASES))
def test_roundtrip_throughput(benchmark, weight: torch.Tensor, implementation: str) -> None:  # type: ignore[no-untyped-def]
    roundtrip = CASES[implementation]()
    benchmark.group = GROUP
    benchmark.extra_info["threads"] = torch.get_num_threads()
    out = benchmark.pedantic(roundtrip, args=(weight,), rounds=15, warmup_rounds=2, iterations=1)
    assert out.shape == weight.shape and out.dtype == weight.dtype
    assert float((out - weight).abs().mean()) < 0.1  # a real 4-bit round trip, not a no-op
