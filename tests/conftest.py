"""The harness's own tests run hypothesis with the suites' seeded profile, so CI is reproducible."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.load_profile("fourbit")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def inner_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.Pytester]:
    """pytester set up for in-process runs of the harness's plugin on a toy project: the working tree and the
    project importable, wide rich output (summary tables must not wrap what is asserted on), plugin autoload
    on, no outer CI step summary to write into; the hypothesis profile that an inner run loads is undone.
    (Modules using it declare ``pytest_plugins = ["pytester"]``.)"""
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(pytester.path))
    profile = settings.get_current_profile_name()
    yield pytester
    settings.load_profile(profile)
