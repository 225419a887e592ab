"""Inputs the other properties never give: a NaN, +Inf or -Inf in a Gaussian weight, and empty tensors.

An implementation passes by confining the damage to the scale groups that hold the value (its block; its
double-quantization group) or, for an empty tensor, by returning an empty tensor of its shape and dtype. A
clear rejection (a ValueError with a message, such as harness.InvalidArgument) and a whole tensor lost to
a tensor-wide double-quantization statistic are reported as skips whose reason starts with the outcome
("rejected: ...", "whole tensor lost: ..."): visible, and never counted as a pass. Any other exception
(IndexError, a torch RuntimeError from inside the implementation...) and damage outside the value's scale
groups fail. The checks are in harness/checks/inputs_nonfinite.py.
"""

from __future__ import annotations

import pytest
import torch

from harness import Quantizer
from harness.checks import (
    EMPTY_SHAPES,
    NONFINITE_VALUES,
    InputOutcome,
    NotApplicable,
    nonfinite_case,
    try_empty_input,
    try_nonfinite_input,
)


def _report(outcome: InputOutcome) -> None:
    """A plain pass, or a skip that names the outcome (a rejection, a whole-tensor loss)."""
    if not outcome.passed:
        pytest.skip(f"{outcome.kind}: {outcome.detail}")


@pytest.mark.parametrize("kind", list(NONFINITE_VALUES))
def test_nonfinite_input(quantizer: Quantizer, dtype: torch.dtype, kind: str) -> None:
    try:
        case = nonfinite_case(quantizer, dtype, kind)
    except NotApplicable as reason:
        pytest.skip(str(reason))
    _report(try_nonfinite_input(quantizer, case))


@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=["x".join(map(str, s)) for s in EMPTY_SHAPES])
def test_empty_input(quantizer: Quantizer, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    reason = quantizer.capabilities.unsupported_reason(shape, dtype)
    if reason is not None:
        pytest.skip(f"{quantizer.name}: {reason}")
    _report(try_empty_input(quantizer, shape, dtype))
