"""Fidelity of each 4-bit implementation's model to the float32 model on a fixed text (llama.cpp's KLD method).

Per implementation: the model's Linear layers (all but the output head and embeddings) are replaced through
the implementation (its own 4-bit module when it has one), then one forward pass over the text's chunks is
compared token by token with the float32 reference (see :mod:`harness.evals.fidelity`). Recorded:

* ``kld_mean`` (sampled: per-block means of 64 tokens are the samples, CI by bootstrap over blocks),
  ``top1_agreement`` (sampled, the same blocks);
* ``kld_p99``, ``ppl``, ``ppl_ratio`` (exact: fixed text and model, deterministic
  on one machine; ``ppl_ratio`` carries the block-bootstrap CI of the mean per-token log-likelihood ratio);
* ``model_bytes`` (exact): parameters, buffers and quantized storage, tied weights counted once.

The median and maximum KLD, the number of scored tokens and their lag-1 autocorrelation go into the
``extra`` of ``kld_mean``. The case is the model's name (the text is fixed; its hash is the data hash).

An implementation that cannot take some layer by its declared capabilities (torchao-nf4 needs numel % 16384,
which SmolLM2's attention projections do not meet) is skipped with the reason.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from harness.errors import FourbitError
from harness.evals.fidelity import block_samples, compare_to_reference
from harness.evals.models import model_bytes

KLD_TOLERANCE = 0.05
"""A kld_mean increase is a regression when its paired CI lies beyond 5% of the baseline value."""
TOP1_TOLERANCE = 0.01
EXACT_REL_TOL = 1e-3
"""Deterministic on a machine; 1e-3 absorbs float reordering across library builds."""


@pytest.mark.fourbit_property("fidelity")
def test_fidelity(
    quantizer: Any,
    skip_full_precision: None,
    accuracy_model: Any,
    fidelity_reference: Any,
    quantize_copy: Any,
    record: Any,
) -> None:
    model, summary = quantize_copy(accuracy_model.model, quantizer)
    try:
        fidelity = compare_to_reference(model, fidelity_reference)
    except FourbitError as exc:
        pytest.fail(str(exc), pytrace=False)
    case = accuracy_model.name
    sampled = {"case": case, "kind": "sampled", "data_hash": fidelity_reference.data_hash}
    exact = {"case": case, "kind": "exact", "tolerance": EXACT_REL_TOL}
    note = {
        "tokens": fidelity.n_tokens,
        "block_tokens": fidelity.block_tokens,
        "lag1_autocorrelation": round(fidelity.autocorrelation(1), 4),
        "layers_quantized": len(summary.quantized),
        "module": summary.module_kind,
        "kld_median": fidelity.kld_median,
        "kld_max": fidelity.kld_max,
    }
    record(
        "kld_mean",
        fidelity.kld_mean,
        unit="nats",
        direction="lower",
        samples=block_samples(fidelity, fidelity.kld),
        ci_low=fidelity.kld_ci[0],
        ci_high=fidelity.kld_ci[1],
        tolerance=KLD_TOLERANCE * fidelity.kld_mean,
        extra=note,
        **sampled,
    )
    record(
        "top1_agreement",
        fidelity.top1_agreement,
        direction="higher",
        samples=block_samples(fidelity, fidelity.top1),
        ci_low=fidelity.top1_ci[0],
        ci_high=fidelity.top1_ci[1],
        tolerance=TOP1_TOLERANCE,
        **sampled,
    )
    record("kld_p99", fidelity.kld_p99, unit="nats", direction="lower", **exact)
    record("ppl", fidelity.ppl, direction="lower", extra={"fp32_ppl": fidelity.reference_ppl}, **exact)
    low, high = fidelity.ppl_ratio_ci
    record("ppl_ratio", fidelity.ppl_ratio, direction="lower", ci_low=low, ci_high=high, **exact)
    record("model_bytes", model_bytes(model), unit="B", direction="lower", case=case, kind="exact")

    assert math.isfinite(fidelity.kld_mean) and fidelity.kld_mean >= -1e-6, f"kld_mean={fidelity.kld_mean!r}"
    assert 0.0 <= fidelity.top1_agreement <= 1.0
