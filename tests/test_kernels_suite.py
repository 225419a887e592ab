"""The kernels suite (suites/kernels, harness.timing.kernel_cases): its byte accounting, its cases, how it records
(samples = per-round ratios; one re-time of an ambiguous regression), and, through pytester with toy quantizers,
that an unsupported case skips with the reason and a crashing kernel fails only its own case."""

from __future__ import annotations

import math
import statistics
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import DoubleQuant, ReferenceQuantizer
from harness.results.files import load_results
from harness.results.records import Result
from harness.timing import kernel_cases
from harness.timing.clock import TimingRun

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SUITE_FILE = REPO / "suites" / "kernels" / "test_kernels.py"


def _run(kernel: tuple[float, ...], reference: tuple[float, ...]) -> TimingRun:
    return TimingRun(kernel, reference, bytes_moved=1000, device="cpu", threads=2, stopped_by="rounds")


# ---------------------------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_bytes_moved_from_storage_and_shapes(dtype: torch.dtype) -> None:
    rows, cols = 256, 1024
    numel, element = rows * cols, torch.empty((), dtype=dtype).element_size()
    q = ReferenceQuantizer("nf4").quantize(torch.randn(rows, cols, dtype=dtype))
    storage = numel // 2 + (numel // 64) * 4  # packed nibbles + one float32 absmax per block of 64
    assert q.nbytes == storage
    case = kernel_cases.KernelCase("quantize", (rows, cols), dtype, "cpu")
    assert kernel_cases.bytes_moved(case, q) == numel * element + storage  # reads the input, writes the storage
    case = kernel_cases.KernelCase("dequantize", (rows, cols), dtype, "cpu")
    assert kernel_cases.bytes_moved(case, q) == storage + numel * element  # reads the storage, writes the weight
    for batch in (1, 16):
        case = kernel_cases.KernelCase("matmul", (rows, cols), dtype, "cpu", batch)
        x_bytes, y_bytes = batch * cols * element, batch * rows * element
        assert kernel_cases.bytes_moved(case, q) == storage + x_bytes + y_bytes


def test_bytes_moved_counts_every_storage_tensor_under_double_quantization() -> None:
    quantizer = ReferenceQuantizer("nf4", double_quant=DoubleQuant(bits=8, block_size=256))
    q = quantizer.quantize(torch.randn(256, 1024))
    numel, blocks = 256 * 1024, 256 * 1024 // 64
    nested = sum(t.numel() * t.element_size() for name, t in q.storage.items() if name != "packed")
    assert nested == blocks + (blocks // 256) * 4 + 4  # 8-bit codes, float32 outer scale per 256, float32 mean
    case = kernel_cases.KernelCase("dequantize", (256, 1024), torch.float32, "cpu")
    assert kernel_cases.bytes_moved(case, q) == numel // 2 + nested + numel * 4


def test_output_bytes_and_page_fault_flag() -> None:
    q = ReferenceQuantizer("nf4").quantize(torch.randn(64, 64))
    big = kernel_cases.KernelCase("dequantize", (4096, 4096), torch.float32, "cpu")
    small = kernel_cases.KernelCase("dequantize", (256, 1024), torch.float32, "cpu")
    gemv = kernel_cases.KernelCase("matmul", (4096, 4096), torch.float32, "cpu", 1)
    assert kernel_cases.output_bytes(big, q) == 64 * 2**20
    assert kernel_cases.output_bytes(gemv, q) == 4096 * 4
    assert kernel_cases.case_extra(big, q)["page_fault_bound"] is True  # 64 MiB of fresh pages per call
    assert kernel_cases.case_extra(big, q, "reused")["page_fault_bound"] is False  # keep_freed_memory took effect
    assert kernel_cases.case_extra(small, q)["page_fault_bound"] is False
    assert kernel_cases.case_extra(big, q)["allocates_output"] is True


# ---------------------------------------------------------------------------------------------- cases


def test_default_and_full_cases() -> None:
    default = kernel_cases.kernel_cases("matmul", full=False)
    assert {c.shape for c in default} == {(4096, 4096), (256, 1024)}
    assert {c.dtype for c in default} == {torch.float32}
    assert {c.batch for c in default} == {1, 16}
    assert {c.device for c in default} == {"cpu", "cuda"}
    full = kernel_cases.kernel_cases("dequantize", full=True)
    assert {c.shape for c in full} == {(4096, 4096), (256, 1024), (4096, 11008), (11008, 4096)}
    assert {c.dtype for c in full} == {torch.float32, torch.bfloat16}
    assert {c.shape for c in kernel_cases.kernel_cases("quantize", full=False)} == {(1024, 4096), (256, 1024)}
    assert {(4096, 4096), (1024, 4096)} <= {c.shape for c in kernel_cases.kernel_cases("quantize", full=True)}
    labels = [c.label for op in kernel_cases.OPS for c in kernel_cases.kernel_cases(op, full=True)]
    assert len(labels) == len(set(labels))
    case = kernel_cases.KernelCase("matmul", (4096, 4096), torch.float32, "cpu", 16)
    assert case.label == "matmul-b16-4096x4096-float32-cpu"


def test_rounds_fit_the_case_budget() -> None:
    budget = kernel_cases.TimingBudget(case_seconds=0.5, min_rounds_floor=5)
    assert budget.min_rounds(0.001) == 10  # cheap: the timing module's usual minimum
    assert budget.min_rounds(0.07) == 7  # what half a second affords
    assert budget.min_rounds(2.0) == 5  # never fewer than the floor, however slow


# ---------------------------------------------------------------------------------------------- recording


def test_timing_fields_are_the_per_round_ratios() -> None:
    run = _run((2.0, 4.0, 3.0, 8.0, 5.0, 6.0, 9.0), (1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0))
    fields = kernel_cases.timing_fields(run)
    assert fields["samples"] == (2.0, 2.0, 3.0, 4.0, 5.0, 3.0, 3.0)
    assert fields["value"] == statistics.median(fields["samples"]) == 3.0
    assert fields["ci_low"] <= fields["value"] <= fields["ci_high"]
    few = kernel_cases.timing_fields(_run((2.0, 3.0), (1.0, 1.0)))  # too few rounds for a 95% CI: none stored
    assert few["ci_low"] is None and few["ci_high"] is None


class FakeRecorder:
    """Stands in for the ``record`` fixture: preview answers with the given verdict, calls are kept."""

    def __init__(self, verdict: str | None, ambiguous: bool) -> None:
        self.verdict, self.ambiguous = verdict, ambiguous
        self.previews: list[dict[str, Any]] = []
        self.recorded: list[dict[str, Any]] = []

    def preview(self, metric: str, value: float, **fields: Any) -> Result:
        self.previews.append({"metric": metric, "value": value, **fields})
        extra = {"ambiguous": True} if self.ambiguous else {}
        kind, direction = fields["kind"], fields["direction"]  # as the real fixture builds its Result
        return Result(
            "kernels",
            fields["case"],
            "toy",
            metric,
            value,
            kind=kind,
            direction=direction,
            verdict=self.verdict,
            extra=extra,
        )

    def __call__(self, metric: str, value: float, **fields: Any) -> None:
        self.recorded.append({"metric": metric, "value": value, **fields})


@pytest.mark.parametrize(
    ("verdict", "ambiguous", "retimed"),
    [
        ("regressed", True, True),
        ("regressed", False, True),
        ("inconclusive", False, True),
        ("ok", True, False),
        (None, False, False),
    ],
)
def test_a_regression_is_retimed_once(verdict: str | None, ambiguous: bool, retimed: bool) -> None:
    def measured(kernel: float) -> dict[str, TimingRun]:
        return {"copy": _run((kernel,) * 6, (1.0,) * 6), "dense": _run((kernel,) * 6, (0.5,) * 6)}

    runs = iter([measured(3.0), measured(2.0), measured(9.0)])
    recorder = FakeRecorder(verdict, ambiguous)
    extras = {"copy": {"op": "dequantize", "reference": "c"}, "dense": {"op": "dequantize", "reference": "d"}}
    kernel_cases.record_timings(recorder, "case-1", lambda: next(runs), extras)
    first = [(p["metric"], p["value"]) for p in recorder.previews[:2]]
    assert first == [("kernel_over_copy", 3.0), ("over_dense", 6.0)]
    assert len(recorder.previews) == (4 if retimed else 2)  # a re-time is previewed again
    by_metric = {stored["metric"]: stored for stored in recorder.recorded}
    assert set(by_metric) == {"kernel_over_copy", "over_dense"}
    copy, dense = by_metric["kernel_over_copy"], by_metric["over_dense"]
    assert copy["kind"] == "timing" and copy["direction"] == "lower" and copy["unit"] == "x"
    # the second measurement replaces the first, for both references (one kernel run serves both)
    assert copy["value"] == (2.0 if retimed else 3.0) and dense["value"] == (4.0 if retimed else 6.0)
    assert copy["samples"] == ((2.0 if retimed else 3.0),) * 6
    assert copy["extra"].get("retimed", False) is retimed and dense["extra"].get("retimed", False) is retimed
    if retimed:
        assert copy["extra"]["first"]["kernel_over_copy"]["value"] == 3.0
    assert copy["extra"]["reference"] == "c" and dense["extra"]["reference"] == "d"
    assert copy["extra"]["op"] == "dequantize" and copy["extra"]["threads"] == 2
    assert recorder.previews[0]["extra"] == {"cpu_share": None}  # the clock of _run is wall time: no share
    assert copy["extra"]["rounds"] == 6


# ---------------------------------------------------------------------------------------------- end to end

TOY_MODULE = """
import torch
from harness import Capabilities, FormatSpec, QuantizedTensor


class Toy:
    def __init__(self, name, crash=None, capabilities=None):
        self.name = name
        self.crash = crash
        self.spec = FormatSpec(format="toy", codebook=None, scale="none")
        self.capabilities = capabilities or Capabilities(has_matmul=True)

    def quantize(self, x):
        if self.crash == "quantize":
            raise RuntimeError("toy quantize exploded")
        numel = x.numel()
        packed = torch.zeros(numel // 2, dtype=torch.uint8)
        absmax = x.detach().float().reshape(-1, 64).abs().amax(dim=1)
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"packed": packed, "absmax": absmax})

    def dequantize(self, q):
        if self.crash == "dequantize":
            raise RuntimeError("toy dequantize exploded")
        return torch.zeros(q.shape, dtype=q.dtype)

    def matmul(self, x, q):
        return torch.zeros((x.shape[0], q.shape[0]), dtype=x.dtype)


def picky_rule(shape):
    return "toy-picky wants 512+ rows" if shape[0] < 512 else None


def toys():
    return [
        Toy("toy-ok"),
        Toy("toy-crash", crash="dequantize"),
        Toy("toy-picky", capabilities=Capabilities(has_matmul=True, shape_rule=picky_rule)),
        Toy("toy-nomatmul", capabilities=Capabilities()),
        Toy("toy-f32only", capabilities=Capabilities(dtypes=(torch.float32,), has_matmul=True)),
    ]
"""


@pytest.fixture
def project(inner_pytest: pytest.Pytester) -> pytest.Pytester:
    (inner_pytest.path / "toykernels.py").write_text(textwrap.dedent(TOY_MODULE))
    (inner_pytest.path / "kernels").mkdir()
    (inner_pytest.path / "kernels" / "test_kernels.py").write_text(SUITE_FILE.read_text())
    return inner_pytest


def _run_suite(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    (project.path / "baselines").mkdir(exist_ok=True)
    return project.runpytest(
        "kernels",
        "-p", "no:cacheprovider",
        "--fourbit-no-entry-points",
        "--quantizer", "toykernels:toys",
        "--baseline-dir", str(project.path / "baselines"),
        "-rfs",
        *args,
    )  # fmt: skip


def test_crash_fails_only_its_case_and_unsupported_cases_skip_with_reason(project: pytest.Pytester) -> None:
    json_path = project.path / "results.json"
    impls = ("--impl", "toy-ok", "--impl", "toy-crash", "--impl", "toy-picky", "--impl", "toy-nomatmul")
    result = _run_suite(project, *impls, "-k", "256x1024 and cpu", "--fourbit-json", str(json_path))
    out = result.stdout.str()
    # toy-ok 4 cases; toy-crash: quantize and both matmuls pass, dequantize fails; toy-nomatmul: its 2 matmuls skip
    result.assert_outcomes(passed=9, failed=1, skipped=6)
    assert "FAILED kernels/test_kernels.py::test_dequantize[256x1024-float32-cpu-toy-crash]" in out
    crash = "toy-crash: dequantize on dequantize-256x1024-float32-cpu raised RuntimeError: toy dequantize exploded"
    assert crash in out
    assert "toy-picky: toy-picky wants 512+ rows" in out
    assert "toy-nomatmul: no matmul (capabilities.has_matmul=False)" in out

    _, results = load_results(json_path)
    by_key = {(r.implementation, r.case, r.metric): r for r in results}
    timing = by_key[("toy-ok", "dequantize-256x1024-float32-cpu", "kernel_over_copy")]
    assert timing.kind == "timing" and timing.direction == "lower" and timing.verdict == "new"
    assert len(timing.samples) == timing.extra["rounds"] >= 5  # one ratio per interleaved round
    assert timing.value == pytest.approx(statistics.median(timing.samples))
    assert timing.extra["threads"] == 1 and timing.extra["clock"] == "process_cpu"  # the defaults on CPU
    assert timing.extra["bytes_moved"] == (256 * 1024 // 2 + 256 * 1024 // 64 * 4) + 256 * 1024 * 4
    assert timing.extra["allocates_output"] is True
    gbps = by_key[("toy-ok", "dequantize-256x1024-float32-cpu", "gbps")]
    assert gbps.kind == "info" and gbps.verdict is None and math.isfinite(gbps.value)
    for metric in ("kernel_over_copy", "over_dense", "gbps", "copy_gbps", "fraction_of_copy"):
        assert ("toy-crash", "matmul-b1-256x1024-float32-cpu", metric) in by_key
    dense = by_key[("toy-ok", "dequantize-256x1024-float32-cpu", "over_dense")]
    assert dense.kind == "timing" and dense.extra["reference"].startswith("dense F.linear, batch 16")
    assert dense.extra["rounds"] == timing.extra["rounds"]  # the same rounds: one kernel call serves both
    assert not any(r.implementation == "toy-crash" and r.case.startswith("dequantize") for r in results)


def test_dtype_and_device_outside_the_capabilities_skip(project: pytest.Pytester) -> None:
    result = _run_suite(
        project, "--impl", "toy-f32only", "--fourbit-full-kernels", "-k", "test_dequantize and 256x1024 and bfloat16"
    )
    result.assert_outcomes(skipped=2)  # cpu: the dtype; cuda: no GPU (or, with one, the device)
    out = result.stdout.str()
    assert "toy-f32only: dtype torch.bfloat16 not in capabilities.dtypes=(torch.float32,)" in out
    if not torch.cuda.is_available():
        assert "no CUDA device here" in out


def test_kernel_threads_option(project: pytest.Pytester) -> None:
    json_path = project.path / "results.json"
    result = _run_suite(
        project, "--impl", "toy-ok", "-k", "test_dequantize and 256x1024 and cpu", "--fourbit-kernel-threads", "2",
        "--fourbit-json", str(json_path),
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    _, results = load_results(json_path)
    assert {r.extra["threads"] for r in results if r.kind == "timing"} == {2}
    bad = _run_suite(project, "--impl", "toy-ok", "--fourbit-kernel-threads", "-1")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--fourbit-kernel-threads=-1, expected 0 (torch's default) or more" in bad.stderr.str()


class OneReferenceRecorder(FakeRecorder):
    """kernel_over_copy regresses, over_dense does not: the copy moved, not the kernel."""

    def preview(self, metric: str, value: float, **fields: Any) -> Result:
        self.previews.append({"metric": metric, "value": value, **fields})
        verdict = "regressed" if metric == "kernel_over_copy" else "ok"
        kind, direction = fields["kind"], fields["direction"]
        return Result(
            "kernels",
            fields["case"],
            "toy",
            metric,
            value,
            kind=kind,
            direction=direction,
            baseline=value / 1.3,
            verdict=verdict,
        )


def test_a_regression_against_one_reference_only_is_retimed_and_uncorroborated() -> None:
    def measured(kernel: float) -> dict[str, TimingRun]:
        return {"copy": _run((kernel,) * 6, (1.0,) * 6), "dense": _run((kernel,) * 6, (0.5,) * 6)}

    runs = iter([measured(3.0), measured(2.0)])
    recorder = OneReferenceRecorder(None, False)
    extras = {"copy": {"op": "dequantize"}, "dense": {"op": "dequantize"}}
    kernel_cases.record_timings(recorder, "case-1", lambda: next(runs), extras)
    assert len(recorder.previews) == 4  # both references previewed, then again after the re-time
    by_metric = {stored["metric"]: stored for stored in recorder.recorded}
    copy, dense = by_metric["kernel_over_copy"], by_metric["over_dense"]
    assert copy["value"] == 2.0 and copy["extra"]["retimed"] is True
    assert copy["extra"]["uncorroborated"] == (
        "the same rounds against the other reference did not regress: over_dense ok (+30.0%)"
    )
    assert "uncorroborated" not in dense["extra"]
