"""harness.timing.clock: interleaved rounds against several references, the CPU clock, the stop rule, threads."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

from harness.errors import InvalidArgument
from harness.timing.clock import TimingRun, copy_reference, time_interleaved, torch_threads


def _busy(seconds: float) -> None:
    """Spin until this process has used ``seconds`` of CPU: the same CPU time however busy the machine is."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_one_kernel_round_serves_every_reference() -> None:
    calls = {"kernel": 0, "fast": 0, "slow": 0}

    def counted(name: str, seconds: float):  # type: ignore[no-untyped-def]
        def call() -> None:
            calls[name] += 1
            _busy(seconds)

        return call

    runs = time_interleaved(
        counted("kernel", 0.004),
        {"fast": counted("fast", 0.001), "slow": counted("slow", 0.008)},
        bytes_moved=1000,
        min_rounds=12,
        max_rounds=12,
        warmup=1,
        target_ci=1e-9,
        max_seconds=60,
    )
    assert set(runs) == {"fast", "slow"}
    assert calls == {"kernel": 13, "fast": 13, "slow": 13}  # 1 warm-up + 12 rounds each
    fast, slow = runs["fast"], runs["slow"]
    assert fast.kernel_seconds == slow.kernel_seconds and len(fast.ratios) == 12
    assert fast.clock == "process_cpu" and fast.stopped_by == "rounds"
    # 4 ms of CPU against 1 ms and 8 ms: ratios near 4 and 0.5 (spins overshoot by a clock read or two)
    assert 3.5 < fast.median_ratio < 4.5 and 0.45 < slow.median_ratio < 0.55
    assert len(fast.kernel_wall_seconds) == 12 and fast.kernel_gbps > 0
    assert fast.cpu_share is not None and 0 < fast.cpu_share <= 1.05  # one thread: at most its wall time


def test_the_gated_cpu_clock_does_not_count_a_wait() -> None:
    """A round that waits (preempted by another job, or sleeping) costs wall time but no CPU time."""
    runs = time_interleaved(
        lambda: time.sleep(0.01), {"busy": lambda: _busy(0.002)}, bytes_moved=1000, min_rounds=5, max_rounds=5,
        warmup=0,
    )  # fmt: skip
    run = runs["busy"]
    assert min(run.kernel_wall_seconds) >= 0.01
    assert max(run.kernel_seconds) < 0.002  # the sleep took no CPU (a few microseconds to enter and leave it)
    assert run.median_ratio < 1.0  # so the gated ratio is kernel CPU / reference CPU
    assert run.cpu_share is not None and run.cpu_share < 0.5  # mostly waiting: 10 ms asleep per 2 ms busy


def test_rounds_stop_at_the_time_cap_after_min_rounds() -> None:
    start = time.perf_counter()
    run = time_interleaved(
        lambda: _busy(0.002), {"copy": lambda: _busy(0.002)}, bytes_moved=10, min_rounds=5, max_rounds=10_000,
        target_ci=1e-9, max_seconds=0.1, warmup=0,
    )["copy"]  # fmt: skip
    assert run.stopped_by == "time" and len(run.ratios) >= 5
    assert time.perf_counter() - start < 5


def test_rounds_stop_once_the_ci_is_narrow() -> None:
    run = time_interleaved(
        lambda: _busy(0.001), {"copy": lambda: _busy(0.001)}, bytes_moved=10, min_rounds=10, max_rounds=10_000,
        target_ci=10.0, max_seconds=60, warmup=0,
    )["copy"]  # fmt: skip
    assert run.stopped_by == "ci" and len(run.ratios) == 10


def test_timing_run_bandwidths_use_wall_time() -> None:
    run = TimingRun(
        (1.0, 1.0, 1.0), (0.5, 0.5, 0.5), bytes_moved=2_000_000_000, device="cpu", threads=1, stopped_by="rounds",
        clock="process_cpu", kernel_wall_seconds=(2.0, 2.0, 2.0), reference_wall_seconds=(1.0, 1.0, 1.0),
    )  # fmt: skip
    assert run.kernel_gbps == 1.0 and run.copy_gbps == 2.0  # from the wall-clock medians
    assert run.median_ratio == 2.0 and run.fraction_of_copy == 0.5  # from the gated clock


def test_torch_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as threads:
        assert threads == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with torch_threads(0) as threads:  # 0: torch's own setting
        assert threads == before
    with pytest.raises(InvalidArgument, match=r"threads=-1, expected an int >= 0"), torch_threads(-1):
        pass


def test_time_interleaved_times_the_rounds_calls_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU clock reads each of the 3 x 6 calls of the rounds, never a warm-up call."""
    import harness.timing.clock as timing

    timed: list[int] = []
    original = timing._cpu_round

    def counting(call: Callable[[], object]) -> tuple[float, float]:
        timed.append(1)
        return original(call)

    monkeypatch.setattr(timing, "_cpu_round", counting)
    time_interleaved(
        lambda: None, {"a": lambda: None, "b": lambda: None}, bytes_moved=10, min_rounds=6, max_rounds=6, warmup=2
    )
    assert len(timed) == 18


def test_the_cuda_timer_flushes_l2_then_times_the_call_between_synchronised_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No GPU needed: torch.cuda's events and synchronize are stood in for, so what the timer does around a call
    is checked in order: the flush buffer zeroed, start event, the call, end event, synchronize, elapsed time."""
    import harness.timing.clock as timing

    log: list[object] = []

    class FakeEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            log.append(("event", enable_timing))

        def record(self) -> None:
            log.append("record")

        def elapsed_time(self, end: FakeEvent) -> float:
            log.append("elapsed")
            return 2.5  # milliseconds, as CUDA events report

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: log.append("synchronize"))
    monkeypatch.setattr(timing, "_L2_FLUSH_BYTES", 4096)
    timer = timing._CudaTimer(torch.device("cpu"))
    timer.flush.fill_(7)
    assert timer(lambda: log.append(("call", int(timer.flush.max())))) == (0.0025, 0.0025)
    assert log == [("event", True), ("event", True), "record", ("call", 0), "record", "synchronize", "elapsed"]
    assert timer.flush.numel() == 4096


def test_time_interleaved_on_cuda_uses_events_and_reports_no_wall_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.timing.clock as timing

    made: list[torch.device] = []

    class FakeCudaTimer:
        def __init__(self, device: torch.device) -> None:
            made.append(device)

        def __call__(self, call: object) -> tuple[float, float]:
            return 0.002, 0.002

    monkeypatch.setattr(timing, "_CudaTimer", FakeCudaTimer)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    runs = time_interleaved(
        lambda: None, {"copy": lambda: None}, bytes_moved=10, device="cuda", min_rounds=5, max_rounds=5, warmup=1
    )
    assert made == [torch.device("cuda")]
    run = runs["copy"]
    assert (run.clock, run.device, len(run.kernel_seconds)) == ("cuda_events", "cuda", 5)
    assert run.kernel_wall_seconds == () == run.reference_wall_seconds


@pytest.mark.parametrize(
    ("references", "match"),
    [({}, "expected a non-empty mapping"), ({"kernel": lambda: None}, "expected a non-empty mapping")],
)
def test_bad_references_are_refused(references: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument, match=match):
        time_interleaved(lambda: None, references, bytes_moved=10)


def test_copy_reference_moves_the_bytes() -> None:
    copy = copy_reference(2048)
    out = copy()
    assert isinstance(out, torch.Tensor) and out.numel() == 1024 and bool((out == 1).all())
    with pytest.raises(InvalidArgument, match=r"bytes_moved=1, expected an int >= 2"):
        copy_reference(1)


def test_keep_freed_memory_reports_what_took_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform
    import sys

    from harness.timing import clock as timing

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    expected = "reused" if glibc else "system"
    assert timing.keep_freed_memory() == expected
    monkeypatch.setattr(timing.sys, "platform", "darwin")
    assert timing.keep_freed_memory() == "system"  # no mallopt to call: outputs may be page-fault bound
