"""Result records: one measured metric of one implementation on one case, and the names of its kinds, directions
and verdicts (defined here once). Plain data: files live in harness.results.files, rendering in harness.report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from harness.errors import InvalidArgument

__all__ = ["DIRECTIONS", "KINDS", "VERDICTS", "Direction", "Kind", "Result", "Verdict"]

Kind = Literal["exact", "timing", "sampled", "info", "aggregate"]
"""exact: deterministic; timing: noisy, compared as interleaved ratios; sampled: accuracy over items;
info: shown and stored, never gated (absolute GB/s, which drifts with the machine); aggregate: a verdict over
one implementation's timing results of a run (harness.results.aggregate), formed at the end of the run, never
stored in a baseline."""
Direction = Literal["higher", "lower"]
Verdict = Literal["ok", "improved", "regressed", "new", "missing", "inconclusive"]
"""``inconclusive``: a timing that would have regressed while other jobs held the CPU (see
harness.results.compare.CONTENDED_CPU_SHARE): not a pass, not a failure (fails only under --strict)."""

KINDS: tuple[Kind, ...] = get_args(Kind)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)


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
    tolerance: float | None = None
    """exact: relative tolerance; timing: minimum effect (relative); sampled: absolute drop allowed. None: defaults."""
    data_hash: str | None = None
    """sampled: hash of the items scored, so a paired comparison only pairs the same items."""
    baseline: float | None = None
    verdict: Verdict | None = None
    """ok | improved | regressed | new | missing, once compared with a baseline (None: not compared)."""
    statistic: str = ""
    """One line saying how the verdict was reached (the numbers and the test)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidArgument(f"Result.kind={self.kind!r}, expected one of {KINDS}")
        if self.direction not in DIRECTIONS:
            raise InvalidArgument(f"Result.direction={self.direction!r}, expected one of {DIRECTIONS}")
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise InvalidArgument(f"Result.verdict={self.verdict!r}, expected one of {VERDICTS}")
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

    def as_json(self) -> dict[str, Any]:
        """The result-file record (``--json``). JSON has no NaN or infinity: those are written as the strings
        "nan", "inf" and "-inf" (float() reads them back), so a lossless SQNR of inf stays inf."""

        from harness.results.files import encode_number as number

        return {
            "suite": self.suite,
            "case": self.case,
            "implementation": self.implementation,
            "metric": self.metric,
            "value": number(self.value),
            "unit": self.unit,
            "kind": self.kind,
            "direction": self.direction,
            "ci_low": number(self.ci_low),
            "ci_high": number(self.ci_high),
            "samples": [number(s) for s in self.samples],
            "tolerance": self.tolerance,
            "data_hash": self.data_hash,
            "baseline": number(self.baseline),
            "verdict": self.verdict,
            "statistic": self.statistic,
            "extra": {key: number(v) if isinstance(v, float) else v for key, v in self.extra.items()},
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Result:
        """Inverse of :meth:`as_json` (a null value comes back as NaN); KeyError/TypeError for a malformed record."""

        from harness.results.files import decode_number

        def number(value: Any) -> float:
            return math.nan if value is None else decode_number(value)

        return cls(
            suite=str(record["suite"]),
            case=str(record["case"]),
            implementation=str(record["implementation"]),
            metric=str(record["metric"]),
            value=number(record["value"]),
            unit=str(record.get("unit", "")),
            kind=record.get("kind", "exact"),
            direction=record.get("direction", "lower"),
            samples=tuple(number(s) for s in record.get("samples") or ()),
            ci_low=None if record.get("ci_low") is None else decode_number(record["ci_low"]),
            ci_high=None if record.get("ci_high") is None else decode_number(record["ci_high"]),
            tolerance=None if record.get("tolerance") is None else decode_number(record["tolerance"]),
            data_hash=record.get("data_hash"),
            baseline=None if record.get("baseline") is None else decode_number(record["baseline"]),
            verdict=record.get("verdict"),
            statistic=str(record.get("statistic") or ""),
            extra=dict(record.get("extra") or {}),
        )
