"""The checks the suites run against any implementation, written once, as plain functions.

The property checks, by concern (each ``check_*`` raises :class:`PropertyViolation` or :class:`NotApplicable`):

* ``contract.py``: what an implementation's output must look like (QuantizedTensor fields, codebook,
  shape/dtype/finiteness, untouched input, determinism, packing, storage size and use);
* ``values.py``: what the values must satisfy (exact zero, zero blocks, decode consistency, nearest code,
  monotonicity, the round-trip bound, idempotence);
* ``scales.py``: the scale derivation of every kind in :mod:`harness.scale_kinds` (derived scales and offsets,
  the double-quantization bound, scale invariance, the derived reference and the 'searched' comparison);
* ``_common.py`` (private): the failure types, running an implementation, per-block helpers, tolerances.

And around them:

* ``inputs.py``: edge cases and hypothesis strategies;
* ``trials.py``: running checks over inputs;
* ``agreement.py``: pairs of implementations, measured with ``levels.py`` (a codebook's decision cells, ulps);
* ``metrics.py``: error statistics;
* ``known_failures.py``: known library bugs.

This package re-exports the property checks and their helpers (they need only torch); the other modules
are imported by name (``trials.py`` pulls in pytest, which this facade keeps out of a plain ``import harness``).
"""

from __future__ import annotations

from harness.checks._common import (
    COMPUTE_ULPS,
    OUTPUT_ULPS,
    NotApplicable,
    PropertyViolation,
    block_absmax,
    derived_scales,
    describe_element,
    run_dequantize,
    run_quantize,
)
from harness.checks.contract import (
    CANONICAL_TOLERANCE,
    check_codebook,
    check_deterministic,
    check_finite_shape_dtype,
    check_input_unchanged,
    check_output_contract,
    check_packing,
    check_storage_size,
    check_storage_used,
)
from harness.checks.inputs_nonfinite import (
    CONFINED_TO_BLOCK,
    CONFINED_TO_GROUP,
    EMPTY_RESULT,
    EMPTY_SHAPES,
    NONFINITE_VALUES,
    REJECTED,
    WHOLE_TENSOR,
    Attempt,
    InputOutcome,
    NonFiniteCase,
    attempt_roundtrip,
    check_empty_input,
    check_nonfinite_input,
    is_clear_rejection,
    nonfinite_case,
    try_empty_input,
    try_nonfinite_input,
)
from harness.checks.scales import (
    SEARCHED_MSE_TOLERANCE,
    best_derived_mse,
    check_scale_invariance,
    check_scales,
    check_searched_error,
    derived_reconstruction,
    double_quant_bound,
)
from harness.checks.values import (
    check_decode_consistency,
    check_exact_zero,
    check_idempotent,
    check_monotone,
    check_nearest,
    check_roundtrip_bound,
    check_zero_blocks,
    max_half_gap,
)

__all__ = [
    "CANONICAL_TOLERANCE",
    "COMPUTE_ULPS",
    "CONFINED_TO_BLOCK",
    "CONFINED_TO_GROUP",
    "EMPTY_RESULT",
    "EMPTY_SHAPES",
    "NONFINITE_VALUES",
    "OUTPUT_ULPS",
    "REJECTED",
    "SEARCHED_MSE_TOLERANCE",
    "WHOLE_TENSOR",
    "Attempt",
    "InputOutcome",
    "NonFiniteCase",
    "NotApplicable",
    "PropertyViolation",
    "attempt_roundtrip",
    "best_derived_mse",
    "block_absmax",
    "check_codebook",
    "check_decode_consistency",
    "check_deterministic",
    "check_empty_input",
    "check_exact_zero",
    "check_finite_shape_dtype",
    "check_idempotent",
    "check_input_unchanged",
    "check_monotone",
    "check_nearest",
    "check_nonfinite_input",
    "check_output_contract",
    "check_packing",
    "check_roundtrip_bound",
    "check_scale_invariance",
    "check_scales",
    "check_searched_error",
    "check_storage_size",
    "check_storage_used",
    "check_zero_blocks",
    "derived_reconstruction",
    "derived_scales",
    "describe_element",
    "double_quant_bound",
    "is_clear_rejection",
    "max_half_gap",
    "nonfinite_case",
    "run_dequantize",
    "run_quantize",
    "try_empty_input",
    "try_nonfinite_input",
]
