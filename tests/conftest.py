"""The harness's own tests run hypothesis with the suites' seeded profile, so CI is reproducible."""

from hypothesis import settings

settings.load_profile("fourbit")
