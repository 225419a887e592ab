"""for_each_input: edge cases first, then seeded hypothesis recipes, reproducible from run to run."""

from __future__ import annotations

import itertools

import pytest
import torch

from harness import Capabilities, ReferenceQuantizer
from harness.checks import PropertyViolation
from harness.checks.inputs import InputRecipe, edge_cases
from harness.checks.trials import Trial, for_each_input


def _recipes_seen(quantizer: ReferenceQuantizer, dtype: torch.dtype) -> list[InputRecipe]:
    seen: list[InputRecipe] = []
    for_each_input(quantizer, dtype, lambda trial: seen.append(trial.recipe))
    return seen


def test_edge_cases_then_seeded_drawn_inputs() -> None:
    quantizer = ReferenceQuantizer("nf4")
    first = _recipes_seen(quantizer, torch.float32)
    edges = edge_cases(64)
    assert first[: len(edges)] == edges
    drawn = first[len(edges) :]
    assert len(drawn) >= 15 and all(r.name == "generated" for r in drawn)
    assert _recipes_seen(quantizer, torch.float32) == first  # derandomized: the same inputs every run


def test_shapes_outside_the_capabilities_are_not_run() -> None:
    quantizer = ReferenceQuantizer("nf4")
    object.__setattr__(quantizer, "capabilities", Capabilities(numel_multiple_of=128, max_ndim=2))
    seen = _recipes_seen(quantizer, torch.float32)
    assert seen and all(r.numel % 128 == 0 and len(r.shape) <= 2 for r in seen)


def test_a_violation_names_the_edge_case() -> None:
    def body(trial: Trial) -> None:
        if trial.recipe.name == "signed-zeros":
            raise PropertyViolation("ref-nf4", "demo", "something")

    with pytest.raises(PropertyViolation, match=r"\[edge case 'signed-zeros'\] something"):
        for_each_input(ReferenceQuantizer("nf4"), torch.float32, body)


def test_every_edge_case_builds_finite_inputs_in_every_dtype() -> None:
    spec = ReferenceQuantizer("nf4").spec
    for recipe in edge_cases(64):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = recipe.build(dtype, spec)
            assert x.shape == recipe.shape and x.dtype == dtype and bool(torch.isfinite(x).all()), recipe.name


def test_midpoint_edge_case_hits_exact_midpoints() -> None:
    spec = ReferenceQuantizer("nf4").spec
    recipe = next(r for r in edge_cases(64) if r.name == "codebook-midpoints")
    x = recipe.build(torch.float32, spec).double()
    levels = sorted(spec.codebook or ())
    midpoints = {(a + b) / 2 for a, b in itertools.pairwise(levels)}
    exact = [m for m in midpoints if float(torch.tensor(m, dtype=torch.float32)) == m]
    assert exact and all(bool((x == m).any()) for m in exact)
    assert float(x.abs().max()) == 1.0
