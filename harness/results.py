"""Result records: one measured metric of one implementation on one case. Plain data; rendering lives in report.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from harness.errors import InvalidArgument

__all__ = ["DIRECTIONS", "KINDS", "Result"]

KINDS = ("exact", "timing", "sampled")
DIRECTIONS = ("higher", "lower")

Kind = Literal["exact", "timing", "sampled"]
Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Result:
    """A metric value with what it takes to compare it later: its kind, its good direction, its samples."""

    suite: str
    case: str
    implementation: str
    metric: str
    value: float
    unit: str = ""
    kind: Kind = "exact"
    direction: Direction = "lower"
    samples: tuple[float, ...] = ()
    ci_low: float | None = None
    ci_high: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgument(f"Result.kind={self.kind!r}, expected one of {KINDS}")
        if self.direction not in DIRECTIONS:
            raise InvalidArgument(f"Result.direction={self.direction!r}, expected one of {DIRECTIONS}")
        if not isinstance(self.value, (int, float)):
            raise InvalidArgument(f"Result.value={self.value!r}, expected a number")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "samples", tuple(float(s) for s in self.samples))

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity of the measurement across runs."""
        return (self.suite, self.case, self.implementation, self.metric)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
