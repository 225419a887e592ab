"""Kernel throughput that holds on a noisy machine: quantize, dequantize and matmul of every implementation.

Each case times its kernel against two references in the same interleaved rounds
(:func:`harness.timing.clock.time_interleaved`, random order within a round): a copy of the bytes the kernel must
move, and the dense layer the weight serves (``F.linear`` in the same dtype and shape; batch 16 for quantize
and dequantize, the case's batch for matmul). Absolute times on the project's machines drift between runs
(DESIGN.md); per-round ratios cancel what the kernel and its reference share. Gated (kind ``timing``, lower
is better, samples = the rounds' ratios):

* ``kernel_over_copy``: kernel time / copy time;
* ``over_dense``: kernel time / dense layer time. Both are gated because neither reference tracks every kernel:
  a compute-bound kernel drifts with the dense layer more than with the copy, a memory-bound one the other way;

and shown, never gated (kind ``info``): ``gbps``, ``copy_gbps``, ``fraction_of_copy``.

On CPU the rounds run on one torch thread (``--fourbit-kernel-threads``), are timed on the process's CPU
clock, and outputs reuse freed memory (harness.timing.clock explains all three with what was measured).

Bytes a kernel must move (the copy moves as many: half read, half written), see :func:`bytes_moved`:

* quantize: reads the input (numel x its element size), writes the storage (``QuantizedTensor.nbytes``);
* dequantize: reads the storage, writes the output (numel x the dtype's element size);
* matmul: reads the storage and x (batch x in_features), writes y (batch x out_features).

The decoded ``codes``/``scales`` a QuantizedTensor reports for the suites are not counted: only what the
implementation keeps. The contract has no ``out=``, so every op allocates its output
(``extra["allocates_output"]``); where the C allocator could not be told to keep freed memory
(``extra["output_pages"] == "system"``), outputs of 32 MiB or more are page-fault bound
(``extra["page_fault_bound"]``).

Default run: 4096x4096 (a 7B-class projection; quantize: 1024x4096, see DEFAULT_QUANTIZE_SHAPES) and
256x1024, float32, batch 1 (gemv) and 16, 1.5 s of rounds per case (about two minutes for the 14 built-in
implementations here). ``--fourbit-full-kernels`` adds 4096x11008, 11008x4096 and bfloat16, and times each
case longer. CUDA cases run on ``cuda`` when a GPU is present (CUDA events, L2 flush) and skip without one.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from harness.api import QuantizedTensor, Quantizer
from harness.checks.properties import run_quantize
from harness.errors import ImplementationError
from harness.quantizers.identity import IdentityQuantizer
from harness.results.stats import median_ci
from harness.timing.clock import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_MIN_ROUNDS,
    TimingRun,
    copy_reference,
    keep_freed_memory,
    time_interleaved,
    torch_threads,
)

OPS = ("quantize", "dequantize", "matmul")
SMALL_SHAPE = (256, 1024)
DEFAULT_SHAPES = ((4096, 4096), SMALL_SHAPE)
FULL_SHAPES = (*DEFAULT_SHAPES, (4096, 11008), (11008, 4096))
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
"""Outputs this large are page-fault bound on CPU when not preallocated (DESIGN.md)."""
WARMUP_SECONDS = 0.05
MAX_WARMUP_ROUNDS = 50
"""Untimed rounds before the timed ones: enough to fill WARMUP_SECONDS (one for a 4096x4096 op, which was also
called once to estimate its cost; up to 50 for a sub-millisecond one). The first rounds of a cheap op run
slower (the process's heap grows to its working set, caches and branch predictors fill): timed, they made the
small shape's per-round ratios drift by 2x within a run."""
MAX_ROUNDS = 400
"""Cheap cases stop at the CI target, the time cap, or this many rounds."""

pytestmark = pytest.mark.fourbit_aggregate("over_dense")
"""Each implementation is also judged by the median change of over_dense over all its cases (harness.results.aggregate):
what catches a 1.2x slowdown, which single cases' spread hides. over_dense, not kernel_over_copy: against a
baseline written in another session, the copy ratios of an unchanged tree had moved by 5-14% (median over an
implementation's cases, per implementation) and the dense ones by 1-5% (20 runs of scripts/kernel_gate_check.py;
the README has its table). The copy reference follows the memory system, which other tenants of the host
share; single-threaded 4-bit kernels here are bound by compute, as the dense layer is."""


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
host), so the error of a run's median, not drift between runs, was most of the run-to-run spread
(scripts/kernel_spread.py: at 1.0 s a case, 3-9% for the median case): the gate can only catch a 1.2x slowdown
when that spread is a few percent. Cheap cases end sooner, at the CI target or at MAX_ROUNDS. With
SMALL_SHAPE_SECONDS and DEFAULT_QUANTIZE_SHAPES the default suite for the 14 built-in implementations takes
about two minutes here (the README has the measured time)."""
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_case" not in metafunc.fixturenames:
        return
    op = metafunc.function.__name__.removeprefix("test_")
    cases = kernel_cases(op, full=bool(metafunc.config.getoption("fourbit_full_kernels")))
    metafunc.parametrize("kernel_case", cases, ids=[case.test_id for case in cases])


def _budget(config: pytest.Config, case: KernelCase) -> TimingBudget:
    if config.getoption("fourbit_full_kernels"):
        return FULL_BUDGET
    budget = DEFAULT_BUDGETS[case.op]
    if case.shape == SMALL_SHAPE:
        return TimingBudget(min(budget.case_seconds, SMALL_SHAPE_SECONDS), budget.min_rounds_floor)
    return budget


# ---------------------------------------------------------------------------------------------- bytes


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
        "cpu_share": None if run.cpu_share is None else round(run.cpu_share, 3),
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
    record: Any, case: str, measure: Callable[[], dict[str, TimingRun]], extra: dict[str, dict[str, Any]]
) -> dict[str, TimingRun]:
    """Measure once and record one ``timing`` metric per reference.

    If any of them regressed (or was inconclusive: other jobs held the CPU), every reference is re-timed once
    and the second measurement is recorded (one kernel run serves all references, so they stay
    paired). A slower kernel makes every ratio worse; a ratio that regressed while another of the same rounds
    did not says that its reference moved, so it is recorded as uncorroborated (verdict inconclusive)."""
    fields = {"unit": "x", "kind": "timing", "direction": "lower"}
    runs = measure()
    previews = _previews(record, case, fields, runs)
    retimed: dict[str, Any] = {}
    if any(_worth_retiming(p) for p in previews.values()):  # an uncorroborated ratio has regressed: re-timed too
        first = {GATED_REFERENCES[name]: {"value": p.value, "statistic": p.statistic} for name, p in previews.items()}
        retimed = {"retimed": True, "first": first}
        runs = measure()
        previews = _previews(record, case, fields, runs)
    uncorroborated = _uncorroborated(previews)
    for name, run in runs.items():
        metric = GATED_REFERENCES[name]
        corroboration = {"uncorroborated": uncorroborated[name]} if name in uncorroborated else {}
        record(
            metric,
            case=case,
            **fields,
            **timing_fields(run),
            extra={**extra[name], **run_extra(run), **retimed, **corroboration},
        )
    return runs


def _previews(record: Any, case: str, fields: dict[str, Any], runs: dict[str, TimingRun]) -> dict[str, Any]:
    return {
        name: record.preview(
            GATED_REFERENCES[name], case=case, **fields, **timing_fields(run), extra={"cpu_share": run.cpu_share}
        )
        for name, run in runs.items()
    }


def _uncorroborated(previews: dict[str, Any]) -> dict[str, str]:
    """Reference name -> why, for each ratio that regressed while another ratio of the same rounds did not."""
    regressed = {name for name, p in previews.items() if p.verdict == "regressed"}
    if not regressed or len(regressed) == len(previews):
        return {}
    others = ", ".join(
        f"{GATED_REFERENCES[name]} {p.verdict} ({p.value / p.baseline - 1:+.1%})"
        if p.baseline
        else f"{GATED_REFERENCES[name]} {p.verdict}"
        for name, p in previews.items()
        if name not in regressed
    )
    return {name: f"the same rounds against the other reference did not regress: {others}" for name in regressed}


def _worth_retiming(preview: Any) -> bool:
    """Every regression, and every inconclusive verdict (other jobs held the CPU), is timed once more: a burst of
    load or a slow spell of one process passes, a slower kernel does not; the second measurement is recorded.
    (In 20 runs of an unchanged tree, one process ran torchao-int4's quantize 2.5x slower for a whole case.)"""
    return preview.verdict in ("regressed", "inconclusive")


def record_bandwidth(record: Any, case: str, run: TimingRun, extra: dict[str, Any]) -> None:
    """GB/s of the kernel and of the same-run copy, and their quotient: shown, never gated."""
    info = {"kind": "info", "direction": "higher", "extra": {**extra, **run_extra(run)}}
    record("gbps", run.kernel_gbps, case=case, unit="GB/s", **info)
    record("copy_gbps", run.copy_gbps, case=case, unit="GB/s", **info)
    record("fraction_of_copy", run.fraction_of_copy, case=case, unit="", **info)


# ---------------------------------------------------------------------------------------------- setup


def _skip_unsupported(quantizer: Quantizer, case: KernelCase) -> None:
    """Cases outside what the machine or the implementation supports are skips with the reason."""
    if case.device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here (CUDA cases run only with a GPU)")
    if isinstance(quantizer, IdentityQuantizer):
        if case.op != "matmul":
            pytest.skip(
                f"{quantizer.name}: a full-precision stand-in; its quantize/dequantize are dtype casts, not 4-bit "
                "kernels (its matmul is timed: the dense baseline the 4-bit matmuls compete with)"
            )
        if case.shape == SMALL_SHAPE:
            pytest.skip(f"{quantizer.name}: a full-precision stand-in, timed on the realistic shapes only")
    reason = quantizer.capabilities.unsupported_reason(case.shape, case.dtype, case.device)
    if reason:
        pytest.skip(f"{quantizer.name}: {reason}")
    if case.op == "matmul" and not (quantizer.capabilities.has_matmul and callable(getattr(quantizer, "matmul", None))):
        pytest.skip(f"{quantizer.name}: no matmul (capabilities.has_matmul=False)")


@functools.lru_cache(maxsize=4)
def _cached_weight(shape: tuple[int, int], dtype: torch.dtype, device: str) -> torch.Tensor:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    return weight.to(device=device, dtype=dtype)


def _weight(case: KernelCase) -> torch.Tensor:
    """The case's weight (seeded), one tensor per shape, dtype and device, shared by the cases that only read it
    (the dense reference, quantization through _quantized, which quantizes a clone)."""
    return _cached_weight(case.shape, case.dtype, case.device)


def _fresh_weight(case: KernelCase) -> torch.Tensor:
    """A copy of the case's weight for an op that takes it as input (quantize), so an implementation that writes
    into its input cannot change what the next implementation gets."""
    return _weight(case).clone()


def _activations(case: KernelCase) -> torch.Tensor:
    x = torch.randn((case.batch, case.shape[1]), generator=torch.Generator().manual_seed(SEED + 1))
    return x.to(device=case.device, dtype=case.dtype)


def _quantized(quantizer: Quantizer, weight: torch.Tensor, case: KernelCase, cache: dict[Any, Any]) -> QuantizedTensor:
    """The quantized weight of the case, quantized once per implementation, shape, dtype and device in this module
    (dequantize and both matmul batches share it: quantize is the slowest op, timed in its own test)."""
    key = (quantizer.name, case.shape, case.dtype, case.device)
    if key not in cache:
        cache[key] = run_quantize(quantizer, weight.clone())  # a clone: the shared weight stays untouched
    q: QuantizedTensor = cache[key]
    _require_storage(quantizer, q)
    return q


def _require_storage(quantizer: Quantizer, q: QuantizedTensor) -> None:
    if not q.nbytes:
        pytest.skip(f"{quantizer.name}: QuantizedTensor.storage is empty, so the bytes its kernels move are unknown")


def _check_output(quantizer: Quantizer, case: KernelCase, out: object, expected: tuple[int, ...]) -> None:
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != expected:
        raise AssertionError(f"{quantizer.name}: {case.op} on {case.label} returned shape {shape}, expected {expected}")


def _case_extra(case: KernelCase, q: QuantizedTensor, output_pages: str = "system") -> dict[str, Any]:
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
        "load_average_1m": _load_average(),
    }


def _load_average() -> float | None:
    """The machine's 1-minute load average when the case started: other processes' load is what makes the
    rounds of a multi-threaded op wait for a CPU (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _calling(quantizer: Quantizer, operation: str, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` with an exception turned into an ImplementationError naming the implementation."""

    def checked() -> object:
        try:
            return call()
        except Exception as exc:
            raise ImplementationError(quantizer.name, operation, exc) from exc

    return checked


def _warmed_timer(
    quantizer: Quantizer, case: KernelCase, budget: TimingBudget, kernel: Callable[[], object]
) -> CaseTimer:
    """A timer whose first kernel call (warm-up and cost estimate) ran, and returned an output of the right shape."""
    timer = CaseTimer(kernel, case, budget)
    rows, cols = case.shape
    out = timer.warm_up(_calling(quantizer, f"{case.op} on {case.label}", kernel))
    _check_output(quantizer, case, out, (rows, cols) if case.op == "dequantize" else (case.batch, rows))
    return timer


def _dense_layer(case: KernelCase, weight: torch.Tensor) -> tuple[Callable[[], object], str]:
    """The dense layer this weight serves, ``F.linear`` in the case's dtype: at the case's batch for a matmul,
    at batch 16 for quantize and dequantize (what the dense model would do with the weight instead)."""
    batch = case.batch or 16
    x = torch.randn((batch, case.shape[1]), generator=torch.Generator().manual_seed(SEED + 1))
    x = x.to(device=case.device, dtype=case.dtype)
    return (lambda: F.linear(x, weight)), f"dense F.linear, batch {batch}, same dtype, shape and device"


def _time_case(
    record: Any, case: KernelCase, q: QuantizedTensor, timer: CaseTimer, weight: torch.Tensor, output_pages: str
) -> None:
    """Time the warmed kernel against a copy of its bytes and against the dense layer, in the same rounds;
    record kernel_over_copy and over_dense (gated) and the bandwidths (shown)."""
    count = bytes_moved(case, q)
    dense, dense_label = _dense_layer(case, weight)
    references = {"copy": copy_reference(count, case.device), "dense": dense}
    extra = _case_extra(case, q, output_pages)
    extras = {"copy": {**extra, "reference": "copy of the bytes moved"}, "dense": {**extra, "reference": dense_label}}
    runs = record_timings(record, case.label, lambda: timer.time_against(references, count), extras)
    record_bandwidth(record, case.label, runs["copy"], extras["copy"])


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def quantized_weights() -> dict[Any, Any]:
    """Quantized weights shared by this module's dequantize and matmul cases (see _quantized)."""
    return {}


@pytest.fixture(scope="module")
def output_pages() -> str:
    """``reused``: outputs reuse freed pages (harness.timing.clock.keep_freed_memory), as with a caching allocator;
    ``system``: the C library could not be told to, so outputs of 32 MiB and more may be page-fault bound."""
    return keep_freed_memory()


@pytest.fixture(autouse=True)
def timing_threads(pytestconfig: pytest.Config) -> Iterator[int]:
    """Every test here runs with ``--fourbit-kernel-threads`` torch threads (default 1; see harness.timing.clock)."""
    with torch_threads(int(pytestconfig.getoption("fourbit_kernel_threads"))) as threads:
        yield threads


def test_quantize(
    quantizer: Quantizer,
    kernel_case: KernelCase,
    record: Any,
    pytestconfig: pytest.Config,
    output_pages: str,
) -> None:
    _skip_unsupported(quantizer, kernel_case)
    weight = _fresh_weight(kernel_case)
    timer = CaseTimer(lambda: quantizer.quantize(weight), kernel_case, _budget(pytestconfig, kernel_case))
    q = timer.warm_up(lambda: run_quantize(quantizer, weight))  # ImplementationError names the implementation
    assert isinstance(q, QuantizedTensor)
    _require_storage(quantizer, q)
    _time_case(record, kernel_case, q, timer, weight, output_pages)


def test_dequantize(
    quantizer: Quantizer,
    kernel_case: KernelCase,
    record: Any,
    pytestconfig: pytest.Config,
    output_pages: str,
    quantized_weights: dict[Any, Any],
) -> None:
    _skip_unsupported(quantizer, kernel_case)
    weight = _weight(kernel_case)
    q = _quantized(quantizer, weight, kernel_case, quantized_weights)
    budget = _budget(pytestconfig, kernel_case)
    timer = _warmed_timer(quantizer, kernel_case, budget, lambda: quantizer.dequantize(q))
    _time_case(record, kernel_case, q, timer, weight, output_pages)


def test_matmul(
    quantizer: Quantizer,
    kernel_case: KernelCase,
    record: Any,
    pytestconfig: pytest.Config,
    output_pages: str,
    quantized_weights: dict[Any, Any],
) -> None:
    _skip_unsupported(quantizer, kernel_case)
    weight = _weight(kernel_case)
    q = _quantized(quantizer, weight, kernel_case, quantized_weights)
    x = _activations(kernel_case)
    matmul = quantizer.matmul  # type: ignore[attr-defined]
    budget = _budget(pytestconfig, kernel_case)
    timer = _warmed_timer(quantizer, kernel_case, budget, lambda: matmul(x, q))
    _time_case(record, kernel_case, q, timer, weight, output_pages)
