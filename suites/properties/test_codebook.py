"""The codebook each implementation declares: 16 levels, monotone, canonical when it names a known format."""

from __future__ import annotations

import pytest

from harness import Quantizer
from harness.checks import NotApplicable, check_codebook


def test_codebook(quantizer: Quantizer) -> None:
    try:
        check_codebook(quantizer)
    except NotApplicable as reason:
        pytest.skip(str(reason))
