"""Timing that survives a noisy machine: a kernel and a same-size copy, timed in interleaved rounds.

Absolute times of memory-bound kernels drift 15-40% on the project's machines, in bursts lasting
minutes, and the copy slows in step with the kernel (DESIGN.md). So every case times its kernel and a
reference, a copy into a preallocated tensor of the bytes the kernel must move, in the same process,
round by round, in random order within each round; the quantity that is stored and gated is the
per-round ratio kernel/reference. GB/s is reported beside it, never gated.

On CPU a round is one call between two ``perf_counter`` reads after warm-up; on CUDA it is a pair of
CUDA events around the call, with the L2 cache flushed before it and a synchronisation after, so no
call's tail overlaps the next. Rounds stop when the confidence interval of the median ratio is narrower
than ``target_ci`` (relative), when ``max_rounds`` is reached, or when ``max_seconds`` is spent.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

import torch

from harness.errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MIN_ROUNDS",
    "DEFAULT_TARGET_CI",
    "TimingRun",
    "copy_reference",
    "time_interleaved",
]

DEFAULT_MIN_ROUNDS = 10
DEFAULT_TARGET_CI = 0.02
"""Stop once the 95% CI of the median ratio is narrower than 2% of it (the issue's rule)."""
DEFAULT_MAX_SECONDS = 6.0
"""Time cap of one case (kernel + reference rounds), so the default suite stays within minutes."""
_L2_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TimingRun:
    """The rounds of one case: per-round seconds of the kernel and of the reference copy, and their ratios."""

    kernel_seconds: tuple[float, ...]
    reference_seconds: tuple[float, ...]
    bytes_moved: int
    device: str
    threads: int
    stopped_by: str  # "ci" | "rounds" | "time"

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(k / r for k, r in zip(self.kernel_seconds, self.reference_seconds, strict=True))

    @property
    def median_ratio(self) -> float:
        return float(median(self.ratios))

    @property
    def kernel_gbps(self) -> float:
        """Bytes the kernel must move per median kernel time (shown, never gated)."""
        return self.bytes_moved / median(self.kernel_seconds) / 1e9

    @property
    def copy_gbps(self) -> float:
        """The same-run copy bandwidth (the reference moves the same bytes)."""
        return self.bytes_moved / median(self.reference_seconds) / 1e9

    @property
    def fraction_of_copy(self) -> float:
        """Kernel bandwidth as a fraction of the copy's: 1/median ratio (1.0 means as fast as a copy)."""
        return 1.0 / self.median_ratio


def copy_reference(bytes_moved: int, device: str | torch.device = "cpu") -> Callable[[], object]:
    """A copy that moves ``bytes_moved`` bytes in total (half read, half written) between preallocated
    buffers: the cheapest honest thing a kernel that moves those bytes could do."""
    if not isinstance(bytes_moved, int) or bytes_moved < 2:
        raise InvalidArgument(f"bytes_moved={bytes_moved!r}, expected an int >= 2")
    half = bytes_moved // 2
    source = torch.ones(half, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


def _cpu_round(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


class _CudaTimer:
    """CUDA events around the call, after an L2 flush; synchronised so rounds never overlap."""

    def __init__(self, device: torch.device) -> None:
        self.flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device)

    def __call__(self, call: Callable[[], object]) -> float:
        self.flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3


def _ci_width(ratios: list[float]) -> float:
    from harness.stats import median_ci

    low, high = median_ci(ratios, confidence=0.95)
    return (high - low) / median(ratios) if math.isfinite(low) and math.isfinite(high) else math.inf


def time_interleaved(
    kernel: Callable[[], object],
    reference: Callable[[], object],
    *,
    bytes_moved: int,
    device: str | torch.device = "cpu",
    max_rounds: int | None = None,
    min_rounds: int = DEFAULT_MIN_ROUNDS,
    warmup: int = 2,
    target_ci: float = DEFAULT_TARGET_CI,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    seed: int = 0,
) -> TimingRun:
    """Time ``kernel`` and ``reference`` in interleaved rounds (random order within each round)."""
    from harness.stats import DEFAULT_ROUNDS

    max_rounds = DEFAULT_ROUNDS if max_rounds is None else max_rounds
    if not (isinstance(max_rounds, int) and isinstance(min_rounds, int) and 1 <= min_rounds <= max_rounds):
        raise InvalidArgument(f"min_rounds={min_rounds!r}, max_rounds={max_rounds!r}, expected 1 <= min <= max")
    if not target_ci > 0 or not max_seconds > 0:
        raise InvalidArgument(f"target_ci={target_ci!r}, max_seconds={max_seconds!r}, expected positive numbers")
    device = torch.device(device)
    timer: Callable[[Callable[[], object]], float] = _CudaTimer(device) if device.type == "cuda" else _cpu_round
    for _ in range(warmup):
        kernel()
        reference()
    if device.type == "cuda":
        torch.cuda.synchronize()
    order = random.Random(seed)
    kernel_times: list[float] = []
    reference_times: list[float] = []
    started = time.perf_counter()
    stopped_by = "rounds"
    while len(kernel_times) < max_rounds:
        pair = [("kernel", kernel), ("reference", reference)]
        order.shuffle(pair)
        for role, call in pair:
            (kernel_times if role == "kernel" else reference_times).append(timer(call))
        if len(kernel_times) >= min_rounds:
            ratios = [k / r for k, r in zip(kernel_times, reference_times, strict=True)]
            if _ci_width(ratios) < target_ci:
                stopped_by = "ci"
                break
            if time.perf_counter() - started > max_seconds:
                stopped_by = "time"
                break
    return TimingRun(
        kernel_seconds=tuple(kernel_times),
        reference_seconds=tuple(reference_times),
        bytes_moved=bytes_moved,
        device=str(device),
        threads=torch.get_num_threads(),
        stopped_by=stopped_by,
    )
