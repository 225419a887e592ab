"""Timing that survives a noisy machine: a kernel and same-run references, timed in interleaved rounds.

Absolute times drift on a shared machine (docs/design.md), so every case times its kernel and one or more
references (a copy of the bytes the kernel must move; for a matmul, the dense layer) in the same process,
round by round, in random order within each round; what is stored and gated is a per-round ratio
kernel/reference. GB/s is reported beside it, never gated.

Clocks. On CUDA a round is a pair of CUDA events around the call, after an L2 flush, synchronised so no
call's tail overlaps the next. On CPU a round reads two clocks around the call: the process's CPU time
(``time.process_time_ns``: every thread of the process, user and system, so page faults count) is the gated
clock, because a round that another job preempted waits without running and only wall time sees the wait;
wall time (``perf_counter``) gives the GB/s shown. A kernel that sleeps or blocks would hide that from the
CPU clock; 4-bit kernels compute.

Threads. On CPU the suites time with one torch thread by default (:func:`torch_threads`): on a 2-core machine
shared with other jobs, a 2-thread op waits for the second core whenever anything else runs, and its time
then follows the neighbours, not the kernel (docs/design.md).

Memory. An op that returns a new 64 MiB tensor on CPU gets fresh pages from the kernel on every call when
the C allocator maps large blocks anew each time (glibc does, past its mmap threshold): the call is then
mostly page faults (docs/design.md: bitsandbytes' NF4 dequantize of a 4096x4096 float32 weight took 29-35 ms
with fresh pages, 3 ms when its output reused freed memory), and which of the two a process sees varies
between runs. :func:`keep_freed_memory` makes freed memory stay in the
process, so every round's output reuses resident pages, as a caching allocator (torch's on CUDA, jemalloc,
tcmalloc) gives a serving process.

Rounds stop when the confidence interval of every median ratio is narrower than ``target_ci`` (relative),
when ``max_rounds`` is reached, or when ``max_seconds`` is spent (never before ``min_rounds``).
"""

from __future__ import annotations

import ctypes
import gc
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
    "keep_freed_memory",
    "time_interleaved",
    "torch_threads",
]

DEFAULT_MIN_ROUNDS = 10
DEFAULT_TARGET_CI = 0.02
"""Stop once the 95% CI of the median ratio is narrower than 2% of it (the issue's rule)."""
DEFAULT_MAX_SECONDS = 6.0
"""Time cap of one case (kernel + reference rounds), so the default suite stays within minutes."""
_L2_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TimingRun:
    """The rounds of one kernel against one reference: per-round seconds of each on the gated clock, their
    ratios, and the wall-clock seconds the bandwidths are computed from."""

    kernel_seconds: tuple[float, ...]
    reference_seconds: tuple[float, ...]
    bytes_moved: int
    device: str
    threads: int
    stopped_by: str  # "ci" | "rounds" | "time"
    clock: str = "wall"  # "process_cpu" | "wall" | "cuda_events": what kernel_seconds/reference_seconds count
    kernel_wall_seconds: tuple[float, ...] = ()
    """Wall-clock seconds per round (empty: the same as kernel_seconds, as with CUDA events)."""
    reference_wall_seconds: tuple[float, ...] = ()

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(k / r for k, r in zip(self.kernel_seconds, self.reference_seconds, strict=True))

    @property
    def median_ratio(self) -> float:
        return float(median(self.ratios))

    @property
    def cpu_share(self) -> float | None:
        """CPU time per wall time per thread over the rounds (kernel and reference): about 1.0 when the timing
        had its CPUs to itself, 0.6 when other jobs held them 40% of the time. None without a CPU clock.

        Waits do not count on the CPU clock, but a job that shares a core also evicts the kernel's caches
        between time slices, which does: measured here, dequantize/copy ratios rose 20-24% at load 3 on two
        cores. So a timing with a low share is not trusted to show a regression (see compare_timing)."""
        if self.clock != "process_cpu" or not self.kernel_wall_seconds:
            return None
        cpu = sum(self.kernel_seconds) + sum(self.reference_seconds)
        wall = sum(self.kernel_wall_seconds) + sum(self.reference_wall_seconds)
        return cpu / (wall * max(1, self.threads)) if wall > 0 else None

    @property
    def kernel_gbps(self) -> float:
        """Bytes the kernel must move per median wall-clock kernel time (shown, never gated)."""
        return self.bytes_moved / median(self.kernel_wall_seconds or self.kernel_seconds) / 1e9

    @property
    def copy_gbps(self) -> float:
        """The reference's bandwidth for the same bytes (the same-run copy bandwidth when it is the copy)."""
        return self.bytes_moved / median(self.reference_wall_seconds or self.reference_seconds) / 1e9

    @property
    def fraction_of_copy(self) -> float:
        """Kernel bandwidth as a fraction of the reference's: 1/median ratio (1.0 means as fast as a copy)."""
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


_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP_BYTES = 1 << 30


def keep_freed_memory() -> str:
    """Make this process's C allocator keep freed memory for reuse instead of returning it to the system.

    On glibc (Linux) this is ``mallopt(M_MMAP_MAX, 0)`` (no block gets its own mapping, so none is unmapped on
    free) and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` (the heap is not trimmed): a later allocation of the same
    size reuses pages that are already resident. It lasts for the rest of the process and costs at most the
    peak memory staying mapped. Returns ``"reused"`` when it took effect, ``"system"`` where the C library has
    no mallopt (not Linux, musl), in which case outputs may be page-fault bound."""
    if not sys.platform.startswith("linux"):
        return "system"
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return "system"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    kept = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1
    return "reused" if kept else "system"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection inside the rounds: a collection would land on whichever call triggered it (as
    timeit does)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``threads`` torch intra-op threads (0: leave torch's setting); restores it after.
    Yields the number of threads in effect."""
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise InvalidArgument(f"threads={threads!r}, expected an int >= 0 (0: torch's default)")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads:
            torch.set_num_threads(before)


def _cpu_round(call: Callable[[], object]) -> tuple[float, float]:
    """(process CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time_ns(), time.perf_counter_ns()
    call()
    wall_end, cpu_end = time.perf_counter_ns(), time.process_time_ns()
    return (cpu_end - cpu) / 1e9, (wall_end - wall) / 1e9


class _CudaTimer:
    """CUDA events around the call, after an L2 flush; synchronised so rounds never overlap."""

    def __init__(self, device: torch.device) -> None:
        self.flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device)

    def __call__(self, call: Callable[[], object]) -> tuple[float, float]:
        self.flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        return seconds, seconds


def _ci_width(ratios: list[float]) -> float:
    from harness.results.stats import median_ci

    low, high = median_ci(ratios, confidence=0.95)
    return (high - low) / median(ratios) if math.isfinite(low) and math.isfinite(high) else math.inf


def time_interleaved(
    kernel: Callable[[], object],
    references: Mapping[str, Callable[[], object]],
    *,
    bytes_moved: int,
    device: str | torch.device = "cpu",
    max_rounds: int | None = None,
    min_rounds: int = DEFAULT_MIN_ROUNDS,
    warmup: int = 2,
    target_ci: float = DEFAULT_TARGET_CI,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    seed: int = 0,
) -> dict[str, TimingRun]:
    """Time ``kernel`` and every reference in interleaved rounds (random order within each round).

    One kernel call per round serves every reference, so a matmul timed against the copy and the dense layer
    costs three calls a round, not four. Returns one TimingRun per reference name, sharing the kernel's rounds.
    """
    from harness.results.stats import DEFAULT_ROUNDS

    if not isinstance(references, Mapping) or not references or "kernel" in references:
        raise InvalidArgument(f"references={references!r}, expected a non-empty mapping name -> callable")
    max_rounds = DEFAULT_ROUNDS if max_rounds is None else max_rounds
    if not (isinstance(max_rounds, int) and isinstance(min_rounds, int) and 1 <= min_rounds <= max_rounds):
        raise InvalidArgument(f"min_rounds={min_rounds!r}, max_rounds={max_rounds!r}, expected 1 <= min <= max")
    if not target_ci > 0 or not max_seconds > 0:
        raise InvalidArgument(f"target_ci={target_ci!r}, max_seconds={max_seconds!r}, expected positive numbers")
    device = torch.device(device)
    cuda = device.type == "cuda"
    timer: Callable[[Callable[[], object]], tuple[float, float]] = _CudaTimer(device) if cuda else _cpu_round
    calls = {"kernel": kernel, **references}
    for _ in range(warmup):
        for call in calls.values():
            call()
    if cuda:
        torch.cuda.synchronize()
    order = random.Random(seed)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    wall: dict[str, list[float]] = {name: [] for name in calls}
    with _gc_paused():
        started = time.perf_counter()
        stopped_by = "rounds"
        rounds = 0
        while rounds < max_rounds:
            names = list(calls)
            order.shuffle(names)
            for name in names:
                gated, elapsed = timer(calls[name])
                # a CPU clock ticks in whole nanoseconds at best; a zero would make an infinite ratio
                seconds[name].append(max(gated, 1e-9))
                wall[name].append(elapsed)
            rounds += 1
            if rounds >= min_rounds:
                widths = [
                    _ci_width([k / r for k, r in zip(seconds["kernel"], seconds[name], strict=True)])
                    for name in references
                ]
                if max(widths) < target_ci:
                    stopped_by = "ci"
                    break
                if time.perf_counter() - started > max_seconds:
                    stopped_by = "time"
                    break
    threads = torch.get_num_threads()
    clock = "cuda_events" if cuda else "process_cpu"
    return {
        name: TimingRun(
            kernel_seconds=tuple(seconds["kernel"]),
            reference_seconds=tuple(seconds[name]),
            bytes_moved=bytes_moved,
            device=str(device),
            threads=threads,
            stopped_by=stopped_by,
            clock=clock,
            kernel_wall_seconds=() if cuda else tuple(wall["kernel"]),
            reference_wall_seconds=() if cuda else tuple(wall[name]),
        )
        for name in references
    }
