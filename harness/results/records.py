"""Result records: one measured metric of one implementation on one case, and the names of its kinds, directions
and verdicts (defined here once); :class:`TestOutcome`, what the run decided about one test; and
:class:`SuiteSummary`, how a suite asks the summary to show its results. Plain data: files live in
harness.results.files, rendering in harness.report."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, get_args

from harness.errors import InvalidArgument

__all__ = [
    "DIRECTIONS",
    "FAILING_OUTCOMES",
    "KINDS",
    "MESSAGE_LIMIT",
    "OUTCOMES",
    "VERDICTS",
    "Direction",
    "Kind",
    "OutcomeName",
    "Result",
    "SuiteSummary",
    "TestOutcome",
    "Verdict",
    "fold_outcomes",
]

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

OutcomeName = Literal["passed", "failed", "skipped", "xfailed", "xpassed", "error"]
"""What pytest decided about one test: ``xfailed`` is a known failure (an expected failure, e.g. a known library
bug, suites/known_failures.toml); ``xpassed`` a non-strict expected failure that passed (a strict one that passes is
``failed``, as pytest counts it); ``error`` a failure outside the test itself (its setup or teardown, or the
collection of its module)."""
OUTCOMES: tuple[OutcomeName, ...] = get_args(OutcomeName)
FAILING_OUTCOMES: frozenset[str] = frozenset(("failed", "error"))
"""The outcomes that fail a run."""
MESSAGE_LIMIT = 500
"""The longest :attr:`TestOutcome.message` kept (characters); a longer one is cut and ends in "..." instead."""


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


@dataclass(frozen=True)
class TestOutcome:
    """What the run decided about one test (:data:`OutcomeName`), with a short message: the failure's message (its
    first lines), the skip reason, the known failure's reason. ``implementation`` and ``prop`` say what the test is
    about (harness.pytest_plugin.selection; a test about no implementation has an empty ``implementation``, and its
    name as ``prop``), ``suite`` its folder and ``nodeid`` its pytest node id. The result file's ``"outcomes"``;
    the report's verdict matrix (harness.report.model.Outcome is this class) folds them per property."""

    __test__: ClassVar[bool] = False  # named Test*, yet not a pytest test class

    implementation: str
    prop: str
    outcome: OutcomeName
    suite: str = ""
    nodeid: str = ""
    message: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise InvalidArgument(f"TestOutcome.outcome={self.outcome!r}, expected one of {OUTCOMES}")
        for name in ("implementation", "prop", "suite", "nodeid", "message"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidArgument(f"TestOutcome.{name}={value!r:.80}, expected a string")
        if len(self.message) > MESSAGE_LIMIT:
            object.__setattr__(self, "message", self.message[: MESSAGE_LIMIT - 3] + "...")

    @property
    def key(self) -> tuple[str, str, str]:
        """What the outcome is about across runs: (suite, implementation, property)."""
        return (self.suite, self.implementation, self.prop)

    @property
    def failing(self) -> bool:
        """Whether this outcome fails the run (:data:`FAILING_OUTCOMES`)."""
        return self.outcome in FAILING_OUTCOMES

    def as_json(self) -> dict[str, str]:
        """The record of a result file's top-level ``"outcomes"`` list."""
        return {
            "nodeid": self.nodeid,
            "suite": self.suite,
            "implementation": self.implementation,
            "property": self.prop,
            "outcome": self.outcome,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, record: Any) -> TestOutcome:
        """Inverse of :meth:`as_json`: ``nodeid`` and ``outcome`` are required, the other fields default to "".
        InvalidArgument (one line) for a record that is not an object, lacks a field or has a malformed one."""
        if not isinstance(record, dict):
            raise InvalidArgument(f"TestOutcome record={record!r:.80}, expected an object")
        missing = [name for name in ("nodeid", "outcome") if name not in record]
        if missing:
            raise InvalidArgument(f"TestOutcome record lacks {' and '.join(missing)}")
        return cls(
            implementation=record.get("implementation", ""),
            prop=record.get("property", ""),
            outcome=record["outcome"],
            suite=record.get("suite", ""),
            nodeid=record["nodeid"],
            message=record.get("message", ""),
        )


_FOLD_ORDER = ("failed", "xfailed", "passed", "skipped")
_FOLDS_AS = {"error": "failed", "xpassed": "passed"}


def fold_outcomes(outcomes: Iterable[str]) -> str:
    """One verdict for the several outcomes of one property (its dtypes, its cases): ``failed`` if any failed or
    errored, ``xfailed`` if a known failure failed as expected (a known bug is never hidden by a pass), ``passed``
    if any passed (or xpassed), ``skipped`` if every one was skipped. InvalidArgument for no outcomes."""
    kinds = {_FOLDS_AS.get(outcome, outcome) for outcome in outcomes}
    for kind in _FOLD_ORDER:
        if kind in kinds:
            return kind
    raise InvalidArgument(f"outcomes={sorted(kinds)!r}, expected at least one of {OUTCOMES}")


def _metric_names(field_name: str, value: Any, *, allow_one: bool) -> tuple[str, ...]:
    """``value`` as a tuple of metric names; InvalidArgument (one line) for anything else. ``allow_one``: a bare
    string is one name and None is none (otherwise both are refused, so "mse" is not read as "m", "s", "e")."""
    if allow_one and value is None:
        value = ()
    if allow_one and isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(name, str) and name for name in value):
        expected = "None, a metric name or a tuple of them" if allow_one else "a tuple of metric names"
        raise InvalidArgument(f"SuiteSummary.{field_name}={value!r}, expected {expected} (non-empty strings)")
    return tuple(value)


@dataclass(frozen=True)
class SuiteSummary:
    """How the end-of-run summary shows one suite's results: declared by the suite with a module-level marker,
    ``pytestmark = pytest.mark.fourbit_summary(headline=(...), pair_matrix=...)``, and stored in result files, so
    ``fourbit report`` shows a saved run the same way. Renderers know no suite by name: they follow this.

    ``headline``: a wide suite (many metrics per case) shows only these metrics in the terminal, plus any metric
    that regressed or improved; files and the Markdown summary keep every metric. ``()``: show all.

    ``pair_matrix``: metrics recorded for pairs of implementations (implementation ``"a~b"``), drawn as an
    implementation x implementation matrix per group of connected implementations, one line per metric in each
    cell, the worst value over the cases. A single name is accepted for one metric. ``()`` (or None): no matrix.
    """

    headline: tuple[str, ...] = ()
    pair_matrix: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "headline", _metric_names("headline", self.headline, allow_one=False))
        object.__setattr__(self, "pair_matrix", _metric_names("pair_matrix", self.pair_matrix, allow_one=True))

    def shows(self, result: Result) -> bool:
        """Whether the terminal summary lists ``result`` in its suite's metrics table."""
        return not self.headline or result.metric in self.headline or result.verdict in ("regressed", "improved")

    def as_json(self) -> dict[str, Any]:
        """The entry of a result file's top-level ``"suites"`` object."""
        return {"headline": list(self.headline), "pair_matrix": list(self.pair_matrix)}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> SuiteSummary:
        """Inverse of :meth:`as_json`; absent fields take their defaults and unknown ones are ignored (a newer
        harness may declare more). InvalidArgument for a record that is not an object or a malformed field."""
        if not isinstance(record, dict):
            raise InvalidArgument(f"SuiteSummary record={record!r}, expected an object")
        return cls(headline=record.get("headline", ()), pair_matrix=record.get("pair_matrix", ()))
