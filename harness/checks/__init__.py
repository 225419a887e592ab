"""The checks the suites run against any implementation, written once, as plain functions.

The property checks, by concern (each ``check_*`` raises :class:`PropertyViolation` or :class:`NotApplicable`):

* ``contract.py``: what an implementation's output must look like (QuantizedTensor fields, codebook,
  shape/dtype/finiteness, untouched input, determinism, packing, storage size and use);
* ``values.py``: what the values must satisfy (exact zero, zero blocks, decode consistency, nearest code,
  monotonicity, the round-trip bound, idempotence);
* ``scales.py``: the scale derivation (absmax scales, the double-quantization bound, scale invariance);
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
from harness.checks.scales import check_scale_invariance, check_scales, double_quant_bound
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
    "OUTPUT_ULPS",
    "NotApplicable",
    "PropertyViolation",
    "block_absmax",
    "check_codebook",
    "check_decode_consistency",
    "check_deterministic",
    "check_exact_zero",
    "check_finite_shape_dtype",
    "check_idempotent",
    "check_input_unchanged",
    "check_monotone",
    "check_nearest",
    "check_output_contract",
    "check_packing",
    "check_roundtrip_bound",
    "check_scale_invariance",
    "check_scales",
    "check_storage_size",
    "check_storage_used",
    "check_zero_blocks",
    "describe_element",
    "double_quant_bound",
    "max_half_gap",
    "run_dequantize",
    "run_quantize",
]
