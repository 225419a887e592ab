"""Inputs no other property tries: NaN, +Inf, -Inf and empty tensors.

A weight with a NaN or an Inf in it is a broken weight, and no quantizer can give it back. What an
implementation owes its caller is one of two things:

* **a clear rejection**: an exception that says the value is wrong (a ``ValueError`` with a message, such as
  :class:`harness.InvalidArgument`; an :class:`~harness.errors.ImplementationError` that wraps one counts too,
  because adapters wrap what their library raises), or
* **confined damage**: the non-finite value spoils only the scale groups that hold it, i.e. its block, its
  double-quantization group when the spec declares double quantization, or the whole tensor when every
  block shares a tensor-wide statistic (QLoRA's mean of the block scales, allowed by the contract, see
  :func:`harness.checks.scales.double_quant_bound`). Every other block comes back as if the value were finite.

Anything else fails: an exception that is not a clear rejection (IndexError, ZeroDivisionError, a torch
RuntimeError from inside the implementation's code, a ValueError without a message), or a non-finite value
that reaches a block outside its scale groups. An empty tensor (numel 0) must be rejected clearly or come
back as an empty tensor of its shape and dtype.

The outcomes are not all plain passes: :class:`InputOutcome` says which one happened, and the suite
(``suites/properties/test_nonfinite.py``) reports a rejection and a whole-tensor loss as skips with the
outcome as the reason, so "gives NaN everywhere" is never counted as a pass.

Known limit: ``int(nan)`` raises ``ValueError: cannot convert float NaN to integer``; an implementation that
trips over that deep inside its code is taken as rejecting the input. The type is all a harness can judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from harness.api import SCALE_ABSMAX, Quantizer
from harness.checks._common import (
    COMPUTE_ULPS,
    OUTPUT_ULPS,
    NotApplicable,
    PropertyViolation,
    _fail,
    _per_element,
    _ulp_bound,
    block_absmax,
    describe_element,
    run_dequantize,
    run_quantize,
)
from harness.checks.contract import check_output_contract
from harness.checks.scales import double_quant_bound
from harness.checks.values import max_half_gap
from harness.errors import ImplementationError, InvalidArgument

__all__ = [
    "CONFINED_TO_BLOCK",
    "CONFINED_TO_GROUP",
    "EMPTY_RESULT",
    "EMPTY_SHAPES",
    "NONFINITE_VALUES",
    "REJECTED",
    "WHOLE_TENSOR",
    "Attempt",
    "InputOutcome",
    "NonFiniteCase",
    "attempt_roundtrip",
    "check_empty_input",
    "check_nonfinite_input",
    "is_clear_rejection",
    "nonfinite_case",
    "try_empty_input",
    "try_nonfinite_input",
]

NONFINITE_VALUES: dict[str, float] = {"nan": math.nan, "posinf": math.inf, "neginf": -math.inf}
"""The non-finite values tried, by the name that appears in test ids."""

EMPTY_SHAPES: tuple[tuple[int, ...], ...] = ((0,), (0, 64))
"""Empty inputs tried: a 1-D one, and a weight with no rows (64 input features)."""

REJECTED = "rejected"
"""The implementation raised a clear error (a ValueError with a message)."""
CONFINED_TO_BLOCK = "confined to its block"
"""Every block but the one holding the value came back as for the finite tensor."""
CONFINED_TO_GROUP = "confined to its double-quantization group"
"""Blocks of the value's double-quantization group were hit too; the other groups came back finite and within
the round-trip bound."""
WHOLE_TENSOR = "whole tensor lost"
"""Every element outside the value's double-quantization group came back non-finite: the statistics are
tensor-wide (QLoRA's mean of the scales). Allowed for double quantization only, and not a plain pass."""
EMPTY_RESULT = "empty result"
"""An empty input came back as an empty tensor of its shape and dtype."""

_PASSING = (CONFINED_TO_BLOCK, CONFINED_TO_GROUP, EMPTY_RESULT)
_GAUSSIAN_SEED = 20261203
_TARGET_BLOCK = 3  # without double quantization: 3 blocks before the value, 4 after it
_BLOCKS = 8
_GROUPS = 3  # with double quantization: the value in the middle group, one whole group on either side


@dataclass(frozen=True)
class InputOutcome:
    """What an implementation did with a non-finite or empty input (one of the kinds above) and the details."""

    kind: str
    detail: str

    @property
    def passed(self) -> bool:
        """True for the outcomes that count as a plain pass (damage confined to the declared scale groups,
        an empty result); False for a rejection or a whole-tensor loss, which suites report distinctly."""
        return self.kind in _PASSING


@dataclass(frozen=True)
class NonFiniteCase:
    """A Gaussian tensor with one non-finite ``value`` at ``flat_index``: :meth:`build` gives it,
    :meth:`clean` gives the same tensor with the Gaussian (finite) value still there."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    flat_index: int
    value: float
    seed: int = _GAUSSIAN_SEED

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def clean(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        values = torch.randn(self.numel, generator=generator, dtype=torch.float64)
        return values.to(self.dtype).reshape(self.shape)

    def build(self) -> torch.Tensor:
        x = self.clean()
        x.view(-1)[self.flat_index] = self.value
        return x


def nonfinite_case(quantizer: Quantizer, dtype: torch.dtype, kind: str) -> NonFiniteCase:
    """The case for one of :data:`NONFINITE_VALUES`, sized so that the value has unaffected scale groups on
    both sides: 8 blocks with the value in block 3, or, under double quantization, 3 groups with the value in
    the middle one. Raises NotApplicable when no such shape fits the capabilities."""
    if kind not in NONFINITE_VALUES:
        raise InvalidArgument(f"kind={kind!r}, expected one of {tuple(NONFINITE_VALUES)}")
    spec, capabilities = quantizer.spec, quantizer.capabilities
    block_size = spec.block_size
    group = spec.double_quant.block_size if spec.double_quant is not None else 1
    blocks, target = (_GROUPS * group, group + 1) if group > 1 else (_BLOCKS, _TARGET_BLOCK)
    multiple = capabilities.numel_multiple_of
    numel = -(-blocks * block_size // multiple) * multiple
    shapes = ([(numel // block_size, block_size)] if numel % block_size == 0 else []) + [(numel,)]
    reasons = []
    for shape in shapes:
        reason = capabilities.unsupported_reason(shape, dtype)
        if reason is None:
            index = target * block_size + block_size // 3
            return NonFiniteCase(kind, shape, dtype, index, NONFINITE_VALUES[kind])
        reasons.append(reason)
    raise NotApplicable(f"{quantizer.name}: no shape for the non-finite input fits its capabilities: {reasons}")


@dataclass(frozen=True)
class Attempt:
    """What quantize -> dequantize did with one input: the outputs, or the exception and the call that raised."""

    q: object = None
    xhat: object = None
    error: Exception | None = None
    call: str = ""


def attempt_roundtrip(quantizer: Quantizer, x: torch.Tensor) -> Attempt:
    """Run quantize then dequantize on ``x``, keeping an exception instead of raising it (the checks judge it)."""
    try:
        q = quantizer.quantize(x)
    except Exception as exc:
        return Attempt(error=exc, call="quantize")
    try:
        xhat = quantizer.dequantize(q)
    except Exception as exc:
        return Attempt(q=q, error=exc, call="dequantize")
    return Attempt(q=q, xhat=xhat)


def is_clear_rejection(error: BaseException) -> bool:
    """A ValueError (InvalidArgument is one) with a message, possibly wrapped in ImplementationErrors by an
    adapter. Python's own word for "right type, wrong value"; anything else says nothing about the input."""
    while isinstance(error, ImplementationError):
        error = error.original
    return isinstance(error, ValueError) and bool(str(error).strip())


def _error_text(call: str, error: BaseException) -> str:
    return f"{call} raised {type(error).__name__}: {error}"


def _given(case: NonFiniteCase, block_size: int) -> str:
    """``nan at index=(3, 21) (flat 213, block 3) of a Gaussian input shape=(8, 64), dtype=torch.float32``."""
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(case.flat_index), case.shape))
    return (
        f"{case.value!r} at index={index} (flat {case.flat_index}, block {case.flat_index // block_size}) of a "
        f"Gaussian input shape={case.shape}, dtype={case.dtype}"
    )


def _same(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise "exactly the same value": equal with the same sign (so -0 != +0), or both NaN."""
    return ((a == b) & (torch.signbit(a) == torch.signbit(b))) | (torch.isnan(a) & torch.isnan(b))


def _roundtrip_bound(quantizer: Quantizer, x: torch.Tensor, q: object, out: torch.Tensor) -> torch.Tensor | None:
    """The round-trip bound of :func:`harness.checks.check_roundtrip_bound` per element of ``x`` (the finite
    tensor): half the widest level gap x the block's scale, plus the double-quantization bound, plus rounding.
    None when the implementation declares no codebook, or reports no scales for a scale kind the harness
    cannot derive."""
    spec = quantizer.spec
    if spec.codebook is None:
        return None
    levels = torch.tensor(spec.codebook, dtype=torch.float64)
    numel, block_size = x.numel(), spec.block_size
    flat = x.reshape(-1).double()
    if spec.scale == SCALE_ABSMAX:
        true = block_absmax(x, block_size)
        bound = max_half_gap(levels, -1.0, 1.0) * _per_element(true, numel, block_size) + float(
            levels.abs().max()
        ) * _per_element(double_quant_bound(spec, true), numel, block_size)
    else:
        scales = getattr(q, "scales", None)
        if not isinstance(scales, torch.Tensor) or scales.numel() != -(-numel // block_size):
            return None
        half_gap = max_half_gap(levels, float(levels.min()), float(levels.max()))
        bound = half_gap * _per_element(scales.reshape(-1).double().abs(), numel, block_size)  # signed scales (Q4_0)
    eps = torch.finfo(quantizer.capabilities.compute_dtype_for(x.dtype)).eps
    return bound * (1 + COMPUTE_ULPS * eps) + OUTPUT_ULPS * (_ulp_bound(out, x.dtype) + _ulp_bound(flat, torch.float32))


def _block_report(out: torch.Tensor, block: int, block_size: int, flat_index: int) -> str:
    """What came back in the value's own block (for the outcome's detail: NaN, or silently finite?)."""
    values = out[block * block_size : (block + 1) * block_size]
    bad = int((~torch.isfinite(values)).sum())
    if bad == values.numel():
        state = "all NaN" if bool(torch.isnan(values).all()) else "all non-finite"
    else:
        state = f"{bad} of {values.numel()} non-finite" if bad else "finite"
    return f"block {block} came back {state}, the value itself as {float(out[flat_index])!r}"


def _judge_error(quantizer: Quantizer, prop: str, given: str, attempt: Attempt) -> InputOutcome:
    assert attempt.error is not None  # callers check; an internal invariant, not user input
    text = _error_text(attempt.call, attempt.error)
    if is_clear_rejection(attempt.error):
        return InputOutcome(REJECTED, f"{quantizer.name} rejected {given}: {text}")
    raise _fail(
        quantizer,
        prop,
        f"given {given}, {text}; expected a clear error (a ValueError with a message, e.g. "
        "harness.InvalidArgument) or a result",
    )


@dataclass(frozen=True)
class _Layout:
    """The case's blocks: which block each element is in, and which blocks hold a non-finite input."""

    block_ids: torch.Tensor
    held: torch.Tensor  # per element: its block holds a non-finite input

    @classmethod
    def of(cls, x_bad: torch.Tensor, block_size: int) -> _Layout:
        block_ids = torch.arange(x_bad.numel()) // block_size
        blocks = torch.zeros(-(-x_bad.numel() // block_size), dtype=torch.bool)
        blocks[block_ids[~torch.isfinite(x_bad.reshape(-1))]] = True
        return cls(block_ids, blocks[block_ids])

    def blocks_in(self, mask: torch.Tensor) -> int:
        return int(torch.unique(self.block_ids[mask]).numel())


def _per_block_scales(
    quantizer: Quantizer, case: NonFiniteCase, given: str, out: torch.Tensor, clean_xhat: torch.Tensor
) -> InputOutcome:
    """No double quantization: every block without a non-finite input comes back exactly as for the finite
    tensor."""
    block_size = quantizer.spec.block_size
    x_bad = case.build()
    layout = _Layout.of(x_bad, block_size)
    expected = clean_xhat.detach().reshape(-1).double()
    bad = ~_same(out, expected) & ~layout.held
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        whole = bool((~torch.isfinite(out)).all())
        finite = float(case.clean().reshape(-1)[case.flat_index])
        raise _fail(
            quantizer,
            "non-finite input",
            f"given {given}: {int(bad.sum())} elements of {layout.blocks_in(bad)} other blocks (each holds only "
            f"finite values and has its own scale) changed, first at {describe_element(x_bad, index)}: came back "
            f"{float(out[index])!r}, expected {float(expected[index])!r} as for the same tensor with the finite "
            f"{finite!r} in place of the {case.value!r}"
            + ("; the whole tensor came back non-finite, though the scales are per block" if whole else ""),
        )
    report = _block_report(out, case.flat_index // block_size, block_size, case.flat_index)
    return InputOutcome(CONFINED_TO_BLOCK, f"{quantizer.name} given {given}: {report}")


def _double_quantized_scales(
    quantizer: Quantizer, case: NonFiniteCase, given: str, out: torch.Tensor, q: object
) -> InputOutcome:
    """Double quantization: the blocks of every other group come back finite and within the round-trip bound
    of the finite tensor, or (a tensor-wide statistic) the whole tensor comes back non-finite."""
    spec = quantizer.spec
    assert spec.double_quant is not None  # callers check; an internal invariant, not user input
    block_size, group_blocks = spec.block_size, spec.double_quant.block_size
    x_bad, x_clean = case.build(), case.clean()
    layout = _Layout.of(x_bad, block_size)
    group_ids = layout.block_ids // group_blocks
    groups = torch.zeros(int(group_ids[-1]) + 1, dtype=torch.bool)
    groups[group_ids[~torch.isfinite(x_bad.reshape(-1))]] = True
    outside = ~groups[group_ids]
    bound = _roundtrip_bound(quantizer, x_clean, q, out)
    damaged = ~torch.isfinite(out)
    if bound is not None:
        damaged |= ~((out - x_clean.reshape(-1).double()).abs() <= bound)  # a NaN bound counts as damage
    bad = damaged & outside
    if bool(bad.any()) and bool((~torch.isfinite(out[outside])).all()):
        return InputOutcome(
            WHOLE_TENSOR,
            f"{quantizer.name} given {given}: every block came back non-finite, also the "
            f"{layout.blocks_in(outside)} blocks outside its double-quantization group of {group_blocks} blocks "
            "(a tensor-wide statistic, such as the mean of the scales, took the value)",
        )
    if bool(bad.any()):
        index = int(bad.nonzero()[0])
        expected = "a finite value" if bound is None else f"within the round-trip bound {float(bound[index]):.6g}"
        raise _fail(
            quantizer,
            "non-finite input",
            f"given {given} (double-quantization group {int(group_ids[case.flat_index])} of {group_blocks} "
            f"blocks): {int(bad.sum())} elements of {layout.blocks_in(bad)} blocks in other groups came back "
            f"wrong, first at {describe_element(x_bad, index)} (group {int(group_ids[index])}): came back "
            f"{float(out[index])!r}, expected {expected} of that input",
        )
    kind = CONFINED_TO_GROUP if bool((damaged & ~layout.held).any()) else CONFINED_TO_BLOCK
    report = _block_report(out, case.flat_index // block_size, block_size, case.flat_index)
    return InputOutcome(kind, f"{quantizer.name} given {given}: {report}; {layout.blocks_in(damaged)} blocks damaged")


def check_nonfinite_input(
    quantizer: Quantizer, case: NonFiniteCase, attempt: Attempt, clean_xhat: torch.Tensor | None
) -> InputOutcome:
    """Judge what the implementation did with ``case.build()`` (``attempt``), against what it gives for
    ``case.clean()`` (``clean_xhat``; needed only when the attempt returned an output).

    Without double quantization every block that holds no non-finite value must come back **exactly** (bit
    for bit, NaN aside) as for the finite tensor. That is the stronger check, and sound: the block's scale
    is its own, computed from the same values, and the contract allows no other input to it. With double
    quantization the blocks of the other groups need only come back **finite and within the usual round-trip
    bound** of the finite tensor: QLoRA's tensor-wide mean of the scales (which the contract allows) moves
    when one block's scale is replaced, so a correct implementation may change them by a scale-code step.
    Under double quantization the whole tensor may also come back non-finite (the mean was NaN): a
    :data:`WHOLE_TENSOR` outcome, not a pass. Raises PropertyViolation otherwise.
    """
    prop = "non-finite input"
    given = _given(case, quantizer.spec.block_size)
    if attempt.error is not None:
        return _judge_error(quantizer, prop, given, attempt)
    xhat = attempt.xhat
    if not isinstance(xhat, torch.Tensor) or xhat.numel() != case.numel:
        what = f"shape {tuple(xhat.shape)}" if isinstance(xhat, torch.Tensor) else f"a {type(xhat).__name__}"
        raise _fail(quantizer, prop, f"given {given}, dequantize returned {what}, expected shape {case.shape}")
    if clean_xhat is None:
        raise InvalidArgument("clean_xhat=None, expected the output for case.clean() (the attempt returned one)")
    out = xhat.detach().reshape(-1).double()
    if quantizer.spec.double_quant is None:
        return _per_block_scales(quantizer, case, given, out, clean_xhat)
    return _double_quantized_scales(quantizer, case, given, out, attempt.q)


def try_nonfinite_input(quantizer: Quantizer, case: NonFiniteCase) -> InputOutcome:
    """Run the case (and, when the implementation accepts it, the finite tensor) and judge it with
    :func:`check_nonfinite_input`. The finite tensor is a supported input: a failure there raises
    ImplementationError like any other."""
    attempt = attempt_roundtrip(quantizer, case.build())
    clean_xhat = None
    if attempt.error is None:
        clean_xhat = run_dequantize(quantizer, run_quantize(quantizer, case.clean()))
    return check_nonfinite_input(quantizer, case, attempt, clean_xhat)


def check_empty_input(quantizer: Quantizer, x: torch.Tensor, attempt: Attempt) -> InputOutcome:
    """An empty input is rejected clearly, or comes back as an empty tensor of its shape and dtype from a
    QuantizedTensor that meets the output contract. Raises PropertyViolation otherwise."""
    prop = "empty input"
    given = f"an empty input shape={tuple(x.shape)}, dtype={x.dtype}"
    if attempt.error is not None:
        return _judge_error(quantizer, prop, given, attempt)
    try:
        check_output_contract(quantizer, x, attempt.q)
    except PropertyViolation as violation:
        raise _fail(quantizer, prop, f"given {given}, quantize's output: {violation.detail}") from None
    xhat = attempt.xhat
    if not isinstance(xhat, torch.Tensor):
        raise _fail(quantizer, prop, f"given {given}, dequantize returned a {type(xhat).__name__}, expected a tensor")
    if tuple(xhat.shape) != tuple(x.shape) or xhat.dtype != x.dtype:
        raise _fail(
            quantizer,
            prop,
            f"given {given}, dequantize returned shape={tuple(xhat.shape)}, dtype={xhat.dtype}, expected the "
            f"input's shape={tuple(x.shape)}, dtype={x.dtype}",
        )
    return InputOutcome(EMPTY_RESULT, f"{quantizer.name} given {given}: returned an empty tensor of that shape")


def try_empty_input(quantizer: Quantizer, shape: tuple[int, ...], dtype: torch.dtype) -> InputOutcome:
    """Run an empty tensor of ``shape`` and ``dtype`` through the implementation and judge it."""
    x = torch.empty(shape, dtype=dtype)
    return check_empty_input(quantizer, x, attempt_roundtrip(quantizer, x))
