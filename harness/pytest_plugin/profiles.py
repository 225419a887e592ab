"""The suites' hypothesis profiles: ``fourbit`` (seeded, 20 examples a property) and ``fourbit-thorough`` (400).

Registered when pytest adds options, because hypothesis loads ``--hypothesis-profile`` in its own configure.
Nothing is loaded globally (other projects' hypothesis tests keep their settings): the suites apply ``fourbit``
themselves unless the user chose a profile (see :func:`harness.checks.trials.for_each_input`)."""

from __future__ import annotations

import pytest

__all__ = ["HYPOTHESIS_PROFILES"]

HYPOTHESIS_PROFILES = {"fourbit": 20, "fourbit-thorough": 400}


def pytest_addoption(parser: pytest.Parser) -> None:
    from hypothesis import HealthCheck, Phase, settings

    for profile, examples in HYPOTHESIS_PROFILES.items():
        # fourbit: seeded, and without the explain phase (it re-runs a failing example many times to
        # annotate lines, doubling the cost of a failure; the minimal failing input is still shrunk).
        seeded = (
            {"derandomize": True, "database": None, "phases": [p for p in Phase if p is not Phase.explain]}
            if profile == "fourbit"
            else {}
        )
        settings.register_profile(
            profile,
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
            print_blob=True,
            **seeded,  # type: ignore[arg-type]
        )
