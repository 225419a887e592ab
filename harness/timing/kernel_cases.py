"""The kernels suite's cases and how one is timed: the shapes, the bytes an op must move, the rounds' budget,
and the recording of its ratios to the references it was timed against (suites/kernels uses these).

Each case times its kernel against two references in the same interleaved rounds
(:func:`harness.timing.clock.time_interleaved`, random order within a round): a copy of the bytes the kernel
must move, and the dense layer the weight serves (``F.linear`` in the same dtype and shape; batch 16 for quantize
and dequantize, the case's batch for matmul). Absolute times drift between runs on a shared machine
(docs/design.md); per-round ratios cancel what the kernel and its reference share.

Bytes a kernel must move (the copy moves as many: half read, half written), see :func:`bytes_moved`:

* quantize: reads the input (numel x its element size), writes the storage (``QuantizedTensor.nbytes``);
* dequantize: reads the storage, writes the output (numel x the dtype's element size);
* matmul: reads the storage and x (batch x in_features), writes y (batch x out_features).

The decoded ``codes``/``scales`` a QuantizedTensor reports for the suites are not counted: only what the
implementation keeps.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from harness.api import QuantizedTensor, Quantizer
from harness.errors import ImplementationError
from harness.results.stats import median_ci
from harness.timing.clock import DEFAULT_MAX_SECONDS, DEFAULT_MIN_ROUNDS, TimingRun, copy_reference, time_interleaved
from harness.timing.remeasure import RemeasurePolicy, TimingEvidence, uncorroborated

__all__ = [
    "DEFAULT_POLICY",
    "GATED_REFERENCES",
    "OPS",
    "SEED",
    "SMALL_SHAPE",
    "CaseTimer",
    "KernelCase",
    "TimingBudget",
    "budget_for",
    "bytes_moved",
    "calling",
    "case_extra",
    "check_output",
    "dense_layer",
    "kernel_cases",
    "output_bytes",
    "record_bandwidth",
    "record_timings",
    "run_extra",
    "time_case",
    "timing_fields",
    "warmed_timer",
]

DEFAULT_POLICY = RemeasurePolicy()

OPS = ("quantize", "dequantize", "matmul")
SMALL_SHAPE = (256, 1024)
DEFAULT_SHAPES = ((4096, 4096), SMALL_SHAPE)
FULL_SHAPES: tuple[tuple[int, int], ...] = (*DEFAULT_SHAPES, (4096, 11008), (11008, 4096))
DEFAULT_QUANTIZE_SHAPES = ((1024, 4096), SMALL_SHAPE)
"""quantize is an offline op (once per model load) and the slowest here (0.2-4 s a call on 4096x4096 on a busy
2-core CPU: 70 s of the default run's budget): the default run quantizes a 1024x4096 weight (the k/v projection
of a grouped-query 8B model) instead; --fourbit-full-kernels adds every shape of FULL_SHAPES."""
DEFAULT_DTYPES = (torch.float32,)
FULL_DTYPES = (torch.float32, torch.bfloat16)
DEVICES = ("cpu", "cuda")
BATCHES = (1, 16)
SEED = 0
PAGE_FAULT_BYTES = 32 * 1024 * 1024
"""Outputs this large are page-fault bound on CPU when not preallocated (docs/design.md)."""
WARMUP_SECONDS = 0.05
MAX_WARMUP_ROUNDS = 50
"""Untimed rounds before the timed ones: enough to fill WARMUP_SECONDS (one for a 4096x4096 op, which was also
called once to estimate its cost; up to 50 for a sub-millisecond one). The first rounds of a cheap op run
slower (the process's heap grows to its working set, caches and branch predictors fill): timed, they made the
small shape's per-round ratios drift by 2x within a run."""
MAX_ROUNDS = 400
"""Cheap cases stop at the CI target, the time cap, or this many rounds."""


@dataclass(frozen=True)
class TimingBudget:
    """How long one timing may run: ``time_interleaved`` stops at the CI target, at ``max_rounds``, or once
    ``case_seconds`` are spent, but never before ``min_rounds``, which is fitted to the case (an op that takes
    a second gets ``min_rounds_floor`` rounds, a cheap one ``DEFAULT_MIN_ROUNDS``)."""

    case_seconds: float
    min_rounds_floor: int

    def min_rounds(self, round_seconds: float) -> int:
        affordable = int(self.case_seconds / round_seconds) if round_seconds > 0 else DEFAULT_MIN_ROUNDS
        return max(self.min_rounds_floor, min(DEFAULT_MIN_ROUNDS, affordable))


DEFAULT_BUDGETS = {
    "quantize": TimingBudget(case_seconds=1.5, min_rounds_floor=5),
    "dequantize": TimingBudget(case_seconds=1.5, min_rounds_floor=5),
    "matmul": TimingBudget(case_seconds=1.5, min_rounds_floor=5),
}
"""Default run: 1.5 s of rounds per case (kernel, copy and dense reference interleaved), at least 5 rounds.
Rounds of one case scatter by about 10% here even on one thread and the CPU clock (other VMs share the
host), so the error of a run's median, not drift between runs, was most of the run-to-run spread (at 1.0 s a
case, 3-9% for the median case; docs/lab/2026-11-24-kernel-gate-checks.md): the gate can only catch a 1.2x
slowdown when that spread is a few percent. Cheap cases end sooner, at the CI target or at MAX_ROUNDS. With
SMALL_SHAPE_SECONDS and DEFAULT_QUANTIZE_SHAPES the default suite for the 14 built-in implementations takes
about two minutes (docs/measured-times.md)."""
SMALL_SHAPE_SECONDS = 0.4
"""Default run, small shape: sub-millisecond ops, so 0.4 s is hundreds of rounds."""
FULL_BUDGET = TimingBudget(case_seconds=DEFAULT_MAX_SECONDS, min_rounds_floor=DEFAULT_MIN_ROUNDS)
"""--fourbit-full-kernels: the timing module's own defaults (6 s, at least 10 rounds) for every op."""


# ---------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class KernelCase:
    """One timed case: an op on a weight of ``shape`` in ``dtype`` on ``device`` (``batch`` rows of x for matmul)."""

    op: str
    shape: tuple[int, int]
    dtype: torch.dtype
    device: str
    batch: int = 0

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def label(self) -> str:
        """The case name results are stored under, e.g. ``matmul-b16-4096x4096-float32-cpu``."""
        batch = f"-b{self.batch}" if self.op == "matmul" else ""
        return f"{self.op}{batch}-{self.shape[0]}x{self.shape[1]}-{self.dtype_name}-{self.device}"

    @property
    def test_id(self) -> str:
        return self.label.removeprefix(f"{self.op}-")


def kernel_cases(op: str, *, full: bool) -> list[KernelCase]:
    """The cases of ``op`` in the default run, or with ``full`` (``--fourbit-full-kernels``) the long one."""
    if op == "quantize":
        shapes = (*DEFAULT_QUANTIZE_SHAPES[:1], *FULL_SHAPES) if full else DEFAULT_QUANTIZE_SHAPES
    else:
        shapes = FULL_SHAPES if full else DEFAULT_SHAPES
    dtypes = FULL_DTYPES if full else DEFAULT_DTYPES
    batches = BATCHES if op == "matmul" else (0,)
    return [
        KernelCase(op, shape, dtype, device, batch)
        for device in DEVICES
        for dtype in dtypes
        for shape in shapes
        for batch in batches
    ]


def budget_for(case: KernelCase, *, full: bool) -> TimingBudget:
    """How long ``case`` may be timed: the full run's budget, or the default one (shorter for the small shape)."""
    if full:
        return FULL_BUDGET
    budget = DEFAULT_BUDGETS[case.op]
    if case.shape == SMALL_SHAPE:
        return TimingBudget(min(budget.case_seconds, SMALL_SHAPE_SECONDS), budget.min_rounds_floor)
    return budget


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def output_bytes(case: KernelCase, q: QuantizedTensor) -> int:
    """Bytes of what the op returns: the storage (quantize), the weight (dequantize), y (matmul)."""
    rows, cols = case.shape
    if case.op == "quantize":
        return q.nbytes
    if case.op == "dequantize":
        return rows * cols * _element_size(case.dtype)
    return case.batch * rows * _element_size(case.dtype)


def bytes_moved(case: KernelCase, q: QuantizedTensor) -> int:
    """Bytes the op must read and write at the least (module docstring): the copy reference moves as many."""
    rows, cols = case.shape
    element = _element_size(case.dtype)
    if case.op == "quantize":
        return rows * cols * element + q.nbytes
    if case.op == "dequantize":
        return q.nbytes + rows * cols * element
    if case.op == "matmul":
        return q.nbytes + case.batch * cols * element + case.batch * rows * element
    raise ValueError(f"case.op={case.op!r}, expected one of {OPS}")


# ---------------------------------------------------------------------------------------------- timing


def timing_fields(run: TimingRun) -> dict[str, Any]:
    """What a ``timing`` metric stores: the median per-round ratio, the rounds' ratios, their 95% CI."""
    ratios = run.ratios
    low, high = median_ci(ratios)
    return {
        "value": run.median_ratio,
        "samples": ratios,
        "ci_low": low if math.isfinite(low) else None,
        "ci_high": high if math.isfinite(high) else None,
    }


def run_extra(run: TimingRun) -> dict[str, Any]:
    return {
        "rounds": len(run.kernel_seconds),
        "stopped_by": run.stopped_by,
        "threads": run.threads,
        "clock": run.clock,
        "device": run.device,
        "bytes_moved": run.bytes_moved,
        "kernel_ms": 1e3 * statistics.median(run.kernel_wall_seconds or run.kernel_seconds),
        "reference_ms": 1e3 * statistics.median(run.reference_wall_seconds or run.reference_seconds),
    }


def _timed_call(call: Callable[[], object], device: str) -> tuple[object, float]:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = call()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


class CaseTimer:
    """Times one case's kernel against references, with rounds fitted to the kernel's cost (see TimingBudget).

    The first kernel call is the warm-up and the cost estimate; it runs through ``checked`` so that an
    implementation that raises fails its own case with its name, and its output is checked before timing.
    """

    def __init__(self, kernel: Callable[[], object], case: KernelCase, budget: TimingBudget) -> None:
        self.kernel = kernel
        self.case = case
        self.budget = budget
        self.kernel_seconds = math.inf

    def warm_up(self, checked: Callable[[], object]) -> object:
        out, self.kernel_seconds = _timed_call(checked, self.case.device)
        return out

    def time_against(self, references: dict[str, Callable[[], object]], bytes_count: int) -> dict[str, TimingRun]:
        round_seconds = self.kernel_seconds
        for reference in references.values():  # each reference's warm-up, and its cost
            round_seconds += _timed_call(reference, self.case.device)[1]
        min_rounds = self.budget.min_rounds(round_seconds)
        return time_interleaved(
            self.kernel,
            references,
            bytes_moved=bytes_count,
            device=self.case.device,
            min_rounds=min_rounds,
            max_rounds=max(min_rounds, MAX_ROUNDS),
            warmup=min(MAX_WARMUP_ROUNDS, math.ceil(WARMUP_SECONDS / round_seconds)) if round_seconds > 0 else 1,
            max_seconds=self.budget.case_seconds,
        )


GATED_REFERENCES = {"copy": "kernel_over_copy", "dense": "over_dense"}
"""Reference name -> the ``timing`` metric of kernel/reference per round."""


def record_timings(
    record: Any,
    case: str,
    measure: Callable[[], dict[str, TimingRun]],
    extra: dict[str, dict[str, Any]],
    policy: RemeasurePolicy = DEFAULT_POLICY,
) -> dict[str, TimingRun]:
    """Measure once and record one ``timing`` metric per reference.

    If any of them is worth measuring again (harness.timing.remeasure: regressed, or inconclusive because other
    jobs held the CPU), every reference is re-timed (``policy.in_process_retimes``, once by default) and the last
    measurement is recorded (one kernel run serves all references, so they stay paired). A ratio that regressed
    while another of the same rounds did not is recorded as uncorroborated (verdict inconclusive)."""
    fields = {"unit": "x", "kind": "timing", "direction": "lower"}
    runs = measure()
    previews = _previews(record, case, fields, runs)
    retimed: dict[str, Any] = {}
    for _ in range(policy.in_process_retimes):
        if not policy.any_worth_remeasuring(previews.values()):
            break
        first = {GATED_REFERENCES[name]: {"value": p.value, "statistic": p.statistic} for name, p in previews.items()}
        retimed = {"retimed": True, "first": first}
        runs = measure()
        previews = _previews(record, case, fields, runs)
    lone = uncorroborated(previews)
    for name, run in runs.items():
        evidence = TimingEvidence(run.cpu_share, lone.get(name))
        record(
            GATED_REFERENCES[name],
            case=case,
            **fields,
            **timing_fields(run),
            extra={**extra[name], **run_extra(run), **retimed, **evidence.as_extra()},
        )
    return runs


def _previews(record: Any, case: str, fields: dict[str, Any], runs: dict[str, TimingRun]) -> dict[str, Any]:
    return {
        name: record.preview(
            GATED_REFERENCES[name],
            case=case,
            **fields,
            **timing_fields(run),
            extra=TimingEvidence(run.cpu_share).as_extra(),
        )
        for name, run in runs.items()
    }


def record_bandwidth(record: Any, case: str, run: TimingRun, extra: dict[str, Any]) -> None:
    """GB/s of the kernel and of the same-run copy, and their quotient: shown, never gated."""
    info = {"kind": "info", "direction": "higher", "extra": {**extra, **run_extra(run)}}
    record("gbps", run.kernel_gbps, case=case, unit="GB/s", **info)
    record("copy_gbps", run.copy_gbps, case=case, unit="GB/s", **info)
    record("fraction_of_copy", run.fraction_of_copy, case=case, unit="", **info)


def check_output(quantizer: Quantizer, case: KernelCase, out: object, expected: tuple[int, ...]) -> None:
    """An op's output must have the case's shape before it is timed."""
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != expected:
        raise AssertionError(f"{quantizer.name}: {case.op} on {case.label} returned shape {shape}, expected {expected}")


def case_extra(case: KernelCase, q: QuantizedTensor, output_pages: str = "system") -> dict[str, Any]:
    out_bytes = output_bytes(case, q)
    return {
        "op": case.op,
        "shape": list(case.shape),
        "dtype": case.dtype_name,
        "batch": case.batch,
        "storage_bytes": q.nbytes,
        "allocates_output": True,  # the contract has no out=
        "output_bytes": out_bytes,
        "output_pages": output_pages,
        "page_fault_bound": case.device == "cpu" and out_bytes >= PAGE_FAULT_BYTES and output_pages != "reused",
        "load_average_1m": load_average(),
    }


def load_average() -> float | None:
    """The machine's 1-minute load average when the case started: other processes' load is what makes the
    rounds of a multi-threaded op wait for a CPU (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def calling(quantizer: Quantizer, operation: str, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` with an exception turned into an ImplementationError naming the implementation."""

    def checked() -> object:
        try:
            return call()
        except Exception as exc:
            raise ImplementationError(quantizer.name, operation, exc) from exc

    return checked


def warmed_timer(
    quantizer: Quantizer, case: KernelCase, budget: TimingBudget, kernel: Callable[[], object]
) -> CaseTimer:
    """A timer whose first kernel call (warm-up and cost estimate) ran, and returned an output of the right shape."""
    timer = CaseTimer(kernel, case, budget)
    rows, cols = case.shape
    out = timer.warm_up(calling(quantizer, f"{case.op} on {case.label}", kernel))
    check_output(quantizer, case, out, (rows, cols) if case.op == "dequantize" else (case.batch, rows))
    return timer


def dense_layer(case: KernelCase, weight: torch.Tensor) -> tuple[Callable[[], object], str]:
    """The dense layer this weight serves, ``F.linear`` in the case's dtype: at the case's batch for a matmul,
    at batch 16 for quantize and dequantize (what the dense model would do with the weight instead)."""
    batch = case.batch or 16
    x = torch.randn((batch, case.shape[1]), generator=torch.Generator().manual_seed(SEED + 1))
    x = x.to(device=case.device, dtype=case.dtype)
    return (lambda: F.linear(x, weight)), f"dense F.linear, batch {batch}, same dtype, shape and device"


def time_case(
    record: Any, case: KernelCase, q: QuantizedTensor, timer: CaseTimer, weight: torch.Tensor, output_pages: str
) -> None:
    """Time the warmed kernel against a copy of its bytes and against the dense layer, in the same rounds;
    record kernel_over_copy and over_dense (gated) and the bandwidths (shown)."""
    count = bytes_moved(case, q)
    dense, dense_label = dense_layer(case, weight)
    references = {"copy": copy_reference(count, case.device), "dense": dense}
    extra = case_extra(case, q, output_pages)
    extras = {"copy": {**extra, "reference": "copy of the bytes moved"}, "dense": {**extra, "reference": dense_label}}
    runs = record_timings(record, case.label, lambda: timer.time_against(references, count), extras)
    record_bandwidth(record, case.label, runs["copy"], extras["copy"])
