"""CoQA F1/EM through lm-eval for the chosen implementations (default fp32, bnb-nf4, bnb-fp4; --coqa-impl).

The task is the harness's own lm-eval task (:func:`harness.evals.coqa.make_task`: lm-eval's prompt, stop
string, answer extraction and leave-one-out scoring) on the shipped 45-story set or ``--coqa-data``; every
turn is scored unless ``--coqa-last-turn``. Per-item scores are recorded as samples (the baseline pairs them
by bootstrap) with the items' hash; for a quantized implementation the paired difference from fp32 and its CI
are recorded too (``coqa_f1_vs_fp32``, shown, never gated).

The quantized model is generated from with the dense weights its 4-bit modules apply, read off the modules
themselves (:func:`harness.evals.models.densify`, checked on random probes): the same numbers, at dense speed
(bitsandbytes' CPU path dequantizes every weight on every call, seconds per generated token).
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.evals.coqa import paired_difference

F1_TOLERANCE = 0.02
EM_TOLERANCE = 0.02


@pytest.mark.fourbit_property("coqa")
def test_coqa(
    quantizer: Any,
    skip_unless_coqa_selected: None,
    accuracy_model: Any,
    coqa_items: Any,
    coqa_runs: Any,
    record: Any,
) -> None:
    result = coqa_runs.run(quantizer)
    case = f"{accuracy_model.name}/{coqa_items.case_suffix}"
    common = {"case": case, "kind": "sampled", "direction": "higher", "data_hash": result.data_hash}
    note = {"items": len(result.ids), "seconds": round(result.seconds, 1), "lm_eval": result.lm_eval_metrics}
    record(
        "coqa_f1",
        result.f1_mean,
        samples=result.f1.tolist(),
        ci_low=result.f1_ci[0],
        ci_high=result.f1_ci[1],
        tolerance=F1_TOLERANCE,
        extra=note,
        **common,
    )
    record(
        "coqa_em",
        result.em_mean,
        samples=result.em.tolist(),
        ci_low=result.em_ci[0],
        ci_high=result.em_ci[1],
        tolerance=EM_TOLERANCE,
        **common,
    )
    if result is not coqa_runs.reference():
        reference = coqa_runs.reference()
        difference, low, high = paired_difference(result.f1, reference.f1)
        record(
            "coqa_f1_vs_fp32",
            difference,
            case=case,
            kind="info",
            direction="higher",
            ci_low=low,
            ci_high=high,
            extra={"significant": bool(high < 0 or low > 0), "fp32_f1": reference.f1_mean},
        )
    assert abs(result.lm_eval_metrics.get("f1,none", result.f1_mean) - result.f1_mean) < 1e-9
