"""The non-finite/empty input property (harness/checks/inputs_nonfinite.py, suites/properties/test_nonfinite.py)
against zoo quantizers with one outcome each (tests.zoo:nonfinite_quantizers) and the reference.

First the suite itself, in a pytest subprocess with per-test outcomes read back from ``--junitxml`` (as
tests/test_zoo.py does): the outcome of every (implementation, test, value) is pinned, so a property that
stopped flagging the NaN-spreading or crashing quantizer, or that started failing a correct one, fails here.
Then the checks called directly: what a violation message says, the exact comparison without double
quantization, the bound with it, which errors count as a clear rejection, and how the case is sized.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import checks as p
from harness.api import Capabilities, DoubleQuant, QuantizedTensor
from harness.errors import ImplementationError, InvalidArgument
from tests import zoo

REPO = Path(__file__).resolve().parents[1]
SUITE = "suites/properties/test_nonfinite.py"
BUILT_INS = ("ref-nf4", "ref-nf4-dq")
NAMES = [q.name for q in zoo.nonfinite_quantizers()] + list(BUILT_INS)


# ---------------------------------------------------------------------------------------------- the suite run


@dataclass(frozen=True)
class Case:
    implementation: str
    test: str  # "test_nonfinite_input" | "test_empty_input"
    dtype: str
    value: str  # "nan", "posinf", "neginf", "0", "0x64"
    outcome: str  # "passed" | "failed" | "skipped"
    message: str


def _expected(implementation: str, test: str, value: str) -> tuple[str, str]:
    """(outcome, a fragment its message must hold) for every case of the suite run."""
    rejected = ("skipped", "rejected: ")
    if implementation in BUILT_INS:
        return rejected[0], "quantize raised InvalidArgument: x"
    if test == "test_empty_input":
        return {
            "zoo-nf4-rejects-nonfinite": rejected,
            "zoo-int4-step-table": ("failed", "quantize raised IndexError: index -1 is out of bounds"),
        }.get(implementation, ("passed", ""))
    return {
        "zoo-nf4-nonfinite-block-nan": ("passed", ""),
        "zoo-nf4-dq-symmetric": ("passed", ""),
        "zoo-nf4-rejects-nonfinite": rejected,
        "zoo-dq-4bit-declared-8bit": ("skipped", "whole tensor lost: "),
        "zoo-clamp-to-tensor-range": ("failed", "the whole tensor came back non-finite")
        if value == "nan"
        else ("passed", ""),
        "zoo-int4-step-table": ("failed", "quantize raised IndexError"),
    }[implementation]


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    junit = tmp_path_factory.mktemp("nonfinite") / "junit.xml"
    command = [
        sys.executable, "-m", "pytest", SUITE, "-q", "--tb=short", "-p", "no:cacheprovider",
        "--fourbit-no-entry-points", "--quantizer", "tests.zoo:nonfinite_quantizers", "--impl", "zoo-*",
        *[arg for name in BUILT_INS for arg in ("--impl", name)], f"--junitxml={junit}",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), f"suite run exited {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
    cases = []
    for name, test, rest, outcome, message in zoo.junit_cases(junit, NAMES):
        dtype, value = rest.split("-", 1)
        cases.append(Case(name, test, dtype, value, outcome, message))
    return cases


@pytest.mark.slow  # the suite run in a subprocess (torch import, 8 implementations): about 40 s
def test_suite_covers_every_case(suite_run: list[Case]) -> None:
    """Every implementation ran both tests in all three dtypes: 3 values + 2 empty shapes each."""
    seen = {(c.implementation, c.test, c.dtype, c.value) for c in suite_run}
    for name in NAMES:
        for dtype in ("float32", "float16", "bfloat16"):
            for value in p.NONFINITE_VALUES:
                assert (name, "test_nonfinite_input", dtype, value) in seen
            for value in ("0", "0x64"):
                assert (name, "test_empty_input", dtype, value) in seen
    assert len(suite_run) == len(NAMES) * 3 * 5


@pytest.mark.slow  # the suite run in a subprocess (torch import, 8 implementations): about 40 s
def test_suite_outcomes(suite_run: list[Case]) -> None:
    """Each case has the outcome its quantizer was built for, with the message that says why."""
    wrong = []
    for case in suite_run:
        outcome, fragment = _expected(case.implementation, case.test, case.value)
        if case.outcome != outcome or fragment not in case.message:
            wrong.append(f"{case}: expected {outcome} with {fragment!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.slow  # the suite run in a subprocess (torch import, 8 implementations): about 40 s
def test_suite_failures_are_property_violations(suite_run: list[Case]) -> None:
    """A failure names the implementation and the property (a PropertyViolation, not a crash of the harness)."""
    for case in suite_run:
        if case.outcome == "failed":
            prop = "non-finite input" if case.test == "test_nonfinite_input" else "empty input"
            assert f"{case.implementation}: {prop} violated: given " in case.message, case.message


# ---------------------------------------------------------------------------------------------- messages


def _violation(function: Any, *args: object) -> str:
    with pytest.raises(p.PropertyViolation) as info:
        function(*args)
    return str(info.value)


def test_nan_spread_message() -> None:
    """The spread is reported at its first element outside the NaN's block: input, index, value, what came
    back and what the same tensor with a finite value there gives."""
    qz = zoo.ZooClampToTensorRange()
    case = p.nonfinite_case(qz, torch.float32, "nan")
    clean = case.clean()
    honest = zoo.ZooNF4Argmin()
    expected = float(honest.dequantize(honest.quantize(clean)).reshape(-1)[0])
    message = _violation(p.try_nonfinite_input, qz, case)
    for fragment in (
        "zoo-clamp-to-tensor-range: non-finite input violated: given nan at index=(3, 21) (flat 213, block 3) "
        "of a Gaussian input shape=(8, 64), dtype=torch.float32",
        "448 elements of 7 other blocks",
        f"first at input shape=(8, 64), dtype=torch.float32, index=(0, 0) (flat 0), value={float(clean[0, 0])!r}",
        f"came back nan, expected {expected!r}",
        f"with the finite {float(clean[3, 21])!r} in place of the nan",
        "the whole tensor came back non-finite, though the scales are per block",
    ):
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_inf_does_not_spread_through_the_clamp() -> None:
    """The same quantizer is fine with +-Inf (the bound becomes infinite): the check tells the two apart."""
    qz = zoo.ZooClampToTensorRange()
    for kind in ("posinf", "neginf"):
        outcome = p.try_nonfinite_input(qz, p.nonfinite_case(qz, torch.float32, kind))
        assert outcome.kind == p.CONFINED_TO_BLOCK and outcome.passed, outcome


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_crash_message(dtype: torch.dtype) -> None:
    qz = zoo.ZooInt4StepTable()
    message = _violation(p.try_nonfinite_input, qz, p.nonfinite_case(qz, dtype, "neginf"))
    assert message.startswith(
        f"zoo-int4-step-table: non-finite input violated: given -inf at index=(3, 21) (flat 213, block 3) of a "
        f"Gaussian input shape=(8, 64), dtype={dtype}, quantize raised IndexError: index "
    ), message
    assert "expected a clear error (a ValueError with a message, e.g. harness.InvalidArgument)" in message
    message = _violation(p.try_empty_input, qz, (0, 64), dtype)
    assert message.startswith(
        f"zoo-int4-step-table: empty input violated: given an empty input shape=(0, 64), dtype={dtype}, "
        "quantize raised IndexError: index -1 is out of bounds"
    ), message


def test_empty_results_must_keep_shape_and_dtype() -> None:
    lost_shape = _violation(p.try_empty_input, zoo.ZooLostShape(), (0, 64), torch.float32)
    assert "dequantize returned shape=(0,), dtype=torch.float32, expected the input's shape=(0, 64)" in lost_shape
    lost_dtype = _violation(p.try_empty_input, zoo.ZooLostDtype(), (0,), torch.bfloat16)
    assert "dtype=torch.float32, expected the input's shape=(0,), dtype=torch.bfloat16" in lost_dtype
    outcome = p.try_empty_input(zoo.ZooNF4Argmin(), (0, 64), torch.float16)
    assert outcome.kind == p.EMPTY_RESULT and outcome.passed


def test_empty_result_must_meet_the_output_contract() -> None:
    class NoQuantizedTensor(zoo.ZooNF4Argmin):
        name = "zoo-test-returns-dict"

        def quantize(self, x: torch.Tensor) -> Any:
            return {"x": x} if x.numel() == 0 else super().quantize(x)

        def dequantize(self, q: Any) -> torch.Tensor:
            return q["x"] if isinstance(q, dict) else super().dequantize(q)

    message = _violation(p.try_empty_input, NoQuantizedTensor(), (0,), torch.float32)
    assert "empty input violated: given an empty input shape=(0,), dtype=torch.float32, quantize's output: " in message
    assert "expected a harness.QuantizedTensor" in message


# ---------------------------------------------------------------------------------------------- outcomes


def test_outcomes_by_kind() -> None:
    """Confinement to the block or to the double-quantization group passes; a rejection and a whole tensor
    lost to a tensor-wide mean do not (the suite reports them as skips naming the outcome)."""
    cases = {
        zoo.ZooNF4NonFiniteBlockNaN(): (p.CONFINED_TO_BLOCK, "block 3 came back all NaN, the value itself as nan"),
        zoo.ZooNF4DoubleQuant(): (
            p.CONFINED_TO_GROUP,
            "block 257 came back all NaN, the value itself as nan; 256 blocks damaged",
        ),
        zoo.ZooNF4RejectsNonFinite(): (p.REJECTED, "quantize raised ValueError: x has nan at flat index 213"),
        zoo.ZooDoubleQuant4Bit(): (p.WHOLE_TENSOR, "also the 512 blocks outside its double-quantization group"),
    }
    for qz, (kind, fragment) in cases.items():
        outcome = p.try_nonfinite_input(qz, p.nonfinite_case(qz, torch.float32, "nan"))
        assert outcome.kind == kind and fragment in outcome.detail, outcome
        assert outcome.passed == (kind in (p.CONFINED_TO_BLOCK, p.CONFINED_TO_GROUP))


@pytest.mark.parametrize("cls", zoo.ZOO_CORRECT, ids=[cls.name for cls in zoo.ZOO_CORRECT])
def test_correct_zoo_passes(cls: type[Any]) -> None:
    """No false alarm on any correct zoo quantizer, in any dtype, for any value or empty shape (the zoo
    run of tests/test_zoo.py requires the same, through the suite)."""
    qz = cls()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for kind in p.NONFINITE_VALUES:
            outcome = p.try_nonfinite_input(qz, p.nonfinite_case(qz, dtype, kind))
            assert outcome.passed, outcome
        for shape in p.EMPTY_SHAPES:
            assert p.try_empty_input(qz, shape, dtype).passed


# ---------------------------------------------------------------------------------------------- exact vs bound


class _NudgeBlock(zoo.ZooNF4NonFiniteBlockNaN):
    """Test double: whenever its output holds a NaN, moves one element of block ``block`` by one ulp (finite,
    far inside any error bound, but not what the finite tensor gives)."""

    name = "zoo-test-nudge"
    block = 0

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        out = super().dequantize(q).clone()
        if bool(torch.isnan(out).any()):
            flat = out.view(-1)
            index = self.block * self.block_size + 5
            flat[index] = torch.nextafter(flat[index], torch.tensor(math.inf, dtype=flat.dtype))
        return out


def test_exact_comparison_catches_a_one_ulp_spread() -> None:
    """Without double quantization the other blocks must come back bit for bit: a one-ulp change in block 0
    fails, the same change inside the NaN's own block does not."""
    qz = _NudgeBlock()
    message = _violation(p.try_nonfinite_input, qz, p.nonfinite_case(qz, torch.float32, "nan"))
    assert "1 elements of 1 other blocks" in message and "index=(0, 5) (flat 5)" in message, message
    qz.block = 3
    assert p.try_nonfinite_input(qz, p.nonfinite_case(qz, torch.float32, "nan")).kind == p.CONFINED_TO_BLOCK


class _RobustMeanDoubleQuant(zoo.ZooNF4Argmin):
    """Test double: QLoRA-style 8-bit double quantization around the mean of the FINITE block scales (a
    non-finite block keeps its NaN scale, and its group's outer scale, NaN too, falls back to 1, so only that
    block is lost). Every other block then differs from the finite tensor's by up to a scale-code step (the
    mean moved), which the round-trip bound allows. ``spoil`` adds 0.5 x the scale to one element
    of group 0 (finite, far outside the bound)."""

    name = "zoo-test-robust-mean-dq"
    double_quant = DoubleQuant(bits=8, block_size=256)
    spoil = False

    def _store_scales(self, scales: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        finite = torch.isfinite(scales)
        mean = scales[finite].mean() if bool(finite.any()) else torch.tensor(0.0)
        centred = torch.where(finite, scales - mean, torch.full_like(scales, math.nan))
        outer = zoo._pad_blocks(centred, 256).abs().amax(dim=1)
        per_scale = zoo._per_element(torch.where(outer > 0, outer, torch.ones_like(outer)), scales.numel(), 256)
        codes = torch.round(centred / per_scale * 127)
        stored = (codes / 127 * per_scale + mean).clamp(min=0)
        return {"absmax": stored, "mean": mean.reshape(1)}, stored

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        out = super().dequantize(q).clone()
        if self.spoil:
            out.view(-1)[7] += 0.5 * q.storage["absmax"][0].to(out.dtype)
        return out


def test_double_quantization_allows_a_moved_mean_within_the_bound() -> None:
    qz = _RobustMeanDoubleQuant()
    case = p.nonfinite_case(qz, torch.float32, "nan")
    bad = qz.dequantize(qz.quantize(case.build())).reshape(-1)
    clean = qz.dequantize(qz.quantize(case.clean())).reshape(-1)
    group0 = slice(0, 256 * 64)
    assert not torch.equal(bad[group0], clean[group0])  # an exact comparison would call this a spread
    outcome = p.try_nonfinite_input(qz, case)
    assert outcome.kind == p.CONFINED_TO_BLOCK and outcome.passed, outcome
    qz.spoil = True
    message = _violation(p.try_nonfinite_input, qz, case)
    assert "(double-quantization group 1 of 256 blocks)" in message, message
    assert "index=(0, 7) (flat 7)" in message and "(group 0): came back" in message, message
    assert "expected within the round-trip bound" in message, message


# ---------------------------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("error", "clear"),
    [
        (InvalidArgument("x has a non-finite value nan at flat index 3, expected finite values only"), True),
        (ValueError("input contains NaN"), True),
        (ImplementationError("lib-nf4", "quantize", ValueError("NaN in weight")), True),
        (ValueError(""), False),
        (ValueError(), False),
        (IndexError("index -9223372036854775800 is out of bounds"), False),
        (ZeroDivisionError("float division by zero"), False),
        (RuntimeError("max(): Expected reduction dim to be specified for input.numel() == 0"), False),
        (ImplementationError("lib-nf4", "quantize", RuntimeError("CUDA error: device-side assert")), False),
        (TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_clear_rejection(error: BaseException, clear: bool) -> None:
    assert p.is_clear_rejection(error) is clear


def test_unclear_error_names_the_call_and_input() -> None:
    qz = zoo.ZooNF4Argmin()
    case = p.nonfinite_case(qz, torch.float16, "posinf")
    attempt = p.Attempt(q=object(), error=RuntimeError("boom"), call="dequantize")
    message = _violation(p.check_nonfinite_input, qz, case, attempt, None)
    assert (
        "given inf at index=(3, 21) (flat 213, block 3) of a Gaussian input shape=(8, 64), dtype=torch.float16, "
        in (message)
    )
    assert "dequantize raised RuntimeError: boom; expected a clear error" in message
    wrapped = ImplementationError(qz.name, "quantize(shape=(8, 64))", ValueError("weight has inf"))
    outcome = p.check_nonfinite_input(qz, case, p.Attempt(error=wrapped, call="quantize"), None)
    assert outcome.kind == p.REJECTED and "weight has inf" in outcome.detail


def test_accepted_output_needs_the_finite_run() -> None:
    qz = zoo.ZooNF4Argmin()
    case = p.nonfinite_case(qz, torch.float32, "nan")
    attempt = p.attempt_roundtrip(qz, case.build())
    with pytest.raises(InvalidArgument, match="clean_xhat=None"):
        p.check_nonfinite_input(qz, case, attempt, None)
    wrong = replace(attempt, xhat=torch.zeros(3))
    message = _violation(p.check_nonfinite_input, qz, case, wrong, torch.zeros(8, 64))
    assert "dequantize returned shape (3,), expected shape (8, 64)" in message


# ---------------------------------------------------------------------------------------------- the case


def test_case_builds_one_nonfinite_value() -> None:
    qz = zoo.ZooNF4Argmin()
    case = p.nonfinite_case(qz, torch.bfloat16, "neginf")
    assert (case.shape, case.flat_index, case.dtype) == ((8, 64), 3 * 64 + 21, torch.bfloat16)
    bad, clean = case.build(), case.clean()
    assert bad.dtype == torch.bfloat16 and bool(torch.isfinite(clean).all())
    assert float(bad[3, 21]) == -math.inf
    differ = (bad != clean).nonzero().tolist()
    assert differ == [[3, 21]]


def test_case_sizes_follow_the_spec_and_capabilities() -> None:
    dq = p.nonfinite_case(zoo.ZooNF4DoubleQuant(), torch.float32, "nan")
    assert dq.shape == (768, 64) and dq.flat_index == 257 * 64 + 21  # 3 groups, the value in the middle one

    class Flat(zoo.ZooNF4Argmin):
        name = "zoo-test-flat"

        def __init__(self, **capabilities: Any) -> None:
            super().__init__()
            self.capabilities = Capabilities(**capabilities)

    assert p.nonfinite_case(Flat(max_ndim=1), torch.float32, "nan").shape == (512,)
    assert p.nonfinite_case(Flat(numel_multiple_of=16384), torch.float32, "nan").shape == (256, 64)
    with pytest.raises(p.NotApplicable, match="no shape for the non-finite input fits"):
        p.nonfinite_case(Flat(dtypes=(torch.float16,)), torch.float32, "nan")
    with pytest.raises(InvalidArgument, match="kind='inf'"):
        p.nonfinite_case(zoo.ZooNF4Argmin(), torch.float32, "inf")


def test_zoo_registry_entries() -> None:
    """The new zoo quantizers run in tests/test_zoo.py too: the correct one with the correct zoo, the two
    broken ones flagged by this property."""
    assert zoo.ZooNF4NonFiniteBlockNaN in zoo.ZOO_CORRECT
    assert zoo.ZOO_BROKEN["zoo-clamp-to-tensor-range"][1] == {"test_nonfinite_input"}
    assert zoo.ZOO_BROKEN["zoo-int4-step-table"][1] == {"test_nonfinite_input", "test_empty_input"}
    assert zoo.ZooNF4RejectsNonFinite not in zoo.ZOO_CORRECT  # its skips are this property's "rejected"
