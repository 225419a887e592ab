"""Running one implementation over the suite inputs: edge cases first, then hypothesis-drawn recipes.

A property test hands :func:`for_each_input` a body that checks one
:class:`Trial`; failures name the edge case (hypothesis prints the recipe for
drawn inputs), and a check that does not apply to the implementation turns the
whole test into a skip with the check's reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import pytest
import torch

from harness.api import QuantizedTensor, Quantizer
from harness.checks._common import NotApplicable, PropertyViolation, run_dequantize, run_quantize
from harness.checks.contract import check_output_contract
from harness.checks.inputs import InputRecipe, edge_cases, input_recipes

__all__ = [
    "InputExclusion",
    "Trial",
    "cached_trial",
    "expected_to_fail",
    "for_each_input",
    "input_exclusions",
    "run_trial",
]


@dataclass(frozen=True)
class Trial:
    """One input, its untouched copy, and the implementation's quantized and reconstructed tensors."""

    recipe: InputRecipe
    x: torch.Tensor
    x_before: torch.Tensor
    q: QuantizedTensor
    xhat: torch.Tensor


_TRIAL_CACHE: dict[tuple[int, str, torch.dtype, InputRecipe], tuple[Quantizer, Trial]] = {}
_TRIAL_CACHE_LIMIT = 8192


def cached_trial(quantizer: Quantizer, recipe: InputRecipe, dtype: torch.dtype) -> Trial:
    """:func:`run_trial`, memoised per (implementation object, dtype, recipe) for the run.

    The property tests of one implementation see the same inputs, so each input is
    quantized once; ``test_deterministic`` and friends make their own fresh calls.
    """
    key = (id(quantizer), quantizer.name, dtype, recipe)
    cached = _TRIAL_CACHE.get(key)
    if cached is not None and cached[0] is quantizer:
        return cached[1]
    if len(_TRIAL_CACHE) >= _TRIAL_CACHE_LIMIT:
        _TRIAL_CACHE.clear()
    trial = run_trial(quantizer, recipe, dtype)
    _TRIAL_CACHE[key] = (quantizer, trial)  # the entry keeps the quantizer alive, so its id stays unique
    return trial


def run_trial(quantizer: Quantizer, recipe: InputRecipe, dtype: torch.dtype) -> Trial:
    """Build the input, quantize it (checking the output contract) and dequantize it."""
    x = recipe.build(dtype, quantizer.spec)
    x_before = x.clone()
    q = run_quantize(quantizer, x)
    check_output_contract(quantizer, x_before, q)
    xhat = run_dequantize(quantizer, q)
    return Trial(recipe, x, x_before, q, xhat)


@dataclass(frozen=True)
class InputExclusion:
    """Inputs a property test leaves out for one implementation because a known library bug (shown by its own
    test) would fail every property on them, hiding everything else (see harness.checks.known_failures)."""

    max_numel: int
    reason: str

    def excludes(self, shape: tuple[int, ...]) -> bool:
        return math.prod(shape) <= self.max_numel


input_exclusions: ContextVar[tuple[InputExclusion, ...]] = ContextVar("fourbit_input_exclusions", default=())
"""Set by the pytest plugin around each test from known_failures.toml entries with ``max_numel``."""

expected_to_fail: ContextVar[bool] = ContextVar("fourbit_expected_to_fail", default=False)
"""Set by the pytest plugin around a test marked xfail for a known library bug: hypothesis then reports the
first failing input without shrinking it (shrinking an understood failure only costs time)."""


def _excluded(shape: tuple[int, ...]) -> bool:
    return any(exclusion.excludes(shape) for exclusion in input_exclusions.get())


def for_each_input(
    quantizer: Quantizer, dtype: torch.dtype, body: Callable[[Trial], None], *, generated: bool = True
) -> None:
    """Run ``body`` on every supported edge case, then on hypothesis-drawn inputs (profile ``fourbit``:
    20 seeded examples, unless another profile is loaded, e.g. ``--hypothesis-profile fourbit-thorough``
    for 400 random ones)."""
    capabilities = quantizer.capabilities
    ran = 0
    try:
        for recipe in edge_cases(quantizer.spec.block_size):
            if capabilities.unsupported_reason(recipe.shape, dtype) or _excluded(recipe.shape):
                continue
            try:
                body(cached_trial(quantizer, recipe, dtype))
            except PropertyViolation as violation:
                raise PropertyViolation(
                    violation.implementation, violation.prop, f"[edge case {recipe.name!r}] {violation.detail}"
                ) from None
            ran += 1
    except NotApplicable as reason:
        pytest.skip(str(reason))
    if generated:
        from hypothesis import given, reject, settings

        # The suites' seeded profile, unless the user picked one (--hypothesis-profile fourbit-thorough).
        profile = settings.get_current_profile_name()
        chosen = settings.get_profile("fourbit") if profile == "default" else settings.get_profile(profile)

        if expected_to_fail.get():
            from hypothesis import Phase

            chosen = settings(chosen, phases=[Phase.explicit, Phase.reuse, Phase.generate])

        @chosen
        @given(recipe=input_recipes(capabilities, quantizer.spec.block_size))
        def drawn_inputs(recipe: InputRecipe) -> None:
            if capabilities.unsupported_reason(recipe.shape, dtype) or _excluded(recipe.shape):
                reject()
            body(cached_trial(quantizer, recipe, dtype))

        drawn_inputs()
        ran += 1
    if not ran:
        pytest.skip(f"{quantizer.name}: no suite input fits its capabilities")
