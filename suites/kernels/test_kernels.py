"""Kernel throughput that holds on a noisy machine: quantize, dequantize and matmul of every implementation.

How a case is timed and what it records lives in harness.timing.kernel_cases; this file chooses the cases and
the implementations. Gated (kind ``timing``, lower is better, samples = the rounds' ratios):

* ``kernel_over_copy``: kernel time / time of a copy of the bytes the kernel must move;
* ``over_dense``: kernel time / dense layer time (``F.linear`` on the unquantized weight). Both are gated because
  neither reference tracks every kernel: a compute-bound kernel drifts with the dense layer more than with the
  copy, a memory-bound one the other way;

and shown, never gated (kind ``info``): ``gbps``, ``copy_gbps``, ``fraction_of_copy``.

On CPU the rounds run on one torch thread (``--fourbit-kernel-threads``), are timed on the process's CPU clock,
and outputs reuse freed memory (docs/design.md). The contract has no ``out=``, so every op allocates its output
(``extra["allocates_output"]``); where the C allocator could not be told to keep freed memory
(``extra["output_pages"] == "system"``), outputs of 32 MiB or more are page-fault bound
(``extra["page_fault_bound"]``).

Default run: 4096x4096 (a 7B-class projection; quantize: 1024x4096) and 256x1024, float32, batch 1 (gemv) and
16, 1.5 s of rounds per case. ``--fourbit-full-kernels`` adds 4096x11008, 11008x4096 and bfloat16, and times each
case longer. CUDA cases run on ``cuda`` when a GPU is present (CUDA events, L2 flush) and skip without one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from harness.api import QuantizedTensor, Quantizer
from harness.checks import run_quantize
from harness.quantizers.identity import IdentityQuantizer
from harness.timing.clock import keep_freed_memory, torch_threads
from harness.timing.kernel_cases import (
    SEED,
    SMALL_SHAPE,
    CaseTimer,
    KernelCase,
    TimingBudget,
    budget_for,
    kernel_cases,
    time_case,
    warmed_timer,
)

pytestmark = [pytest.mark.fourbit_aggregate("over_dense"), pytest.mark.fourbit_timing]
"""Each implementation is also judged by the median change of over_dense over all its cases (harness.results.aggregate):
what catches a 1.2x slowdown, which single cases' spread hides. over_dense, not kernel_over_copy: against a
baseline written in another session, the copy ratios of an unchanged tree had moved by 5-14% (median over an
implementation's cases, per implementation) and the dense ones by 1-5% (20 runs of scripts/kernel_gate_check.py;
docs/lab/2026-11-24-kernel-gate-checks.md has its table). The copy reference follows the memory system, which other
tenants of the host share; single-threaded 4-bit kernels here are bound by compute, as the dense layer is.
``fourbit_timing``: the suite will not share the CPU with pytest-xdist workers (harness.pytest_plugin.distributed)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel_case" not in metafunc.fixturenames:
        return
    op = metafunc.function.__name__.removeprefix("test_")
    cases = kernel_cases(op, full=bool(metafunc.config.getoption("fourbit_full_kernels")))
    metafunc.parametrize("kernel_case", cases, ids=[case.test_id for case in cases])


def _budget(config: pytest.Config, case: KernelCase) -> TimingBudget:
    return budget_for(case, full=bool(config.getoption("fourbit_full_kernels")))


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
    time_case(record, kernel_case, q, timer, weight, output_pages)


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
    timer = warmed_timer(quantizer, kernel_case, budget, lambda: quantizer.dequantize(q))
    time_case(record, kernel_case, q, timer, weight, output_pages)


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
    timer = warmed_timer(quantizer, kernel_case, budget, lambda: matmul(x, q))
    time_case(record, kernel_case, q, timer, weight, output_pages)
