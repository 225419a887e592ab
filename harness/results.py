"""Result records: one measured metric of one implementation on one case. Plain data; rendering lives in report.py."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.errors import BaselineFormatError, InvalidArgument

__all__ = [
    "DIRECTIONS",
    "KINDS",
    "RESULTS_SCHEMA_VERSION",
    "VERDICTS",
    "Result",
    "load_results",
    "save_results",
    "write_json_atomically",
]

RESULTS_SCHEMA_VERSION = 2
"""Version of the ``--json`` result file layout this harness writes. 2 added the kind ``aggregate``; a version-1
file is a valid version-2 file, so both are read (a harness that reads only 1 refuses a 2 by its version)."""
OLDEST_READABLE_RESULTS_SCHEMA = 1

KINDS = ("exact", "timing", "sampled", "info", "aggregate")
"""exact: deterministic; timing: noisy, compared as interleaved ratios; sampled: accuracy over items;
info: shown and stored, never gated (absolute GB/s, which drifts with the machine); aggregate: a verdict over
one implementation's timing results of a run (harness.aggregate), formed at the end of the run, never stored
in a baseline."""
DIRECTIONS = ("higher", "lower")
VERDICTS = ("ok", "improved", "regressed", "new", "missing", "inconclusive")
"""``inconclusive``: a timing that would have regressed while other jobs held the CPU (see
harness.baselines.CONTENDED_CPU_SHARE): not a pass, not a failure (fails only under --strict)."""

Kind = Literal["exact", "timing", "sampled", "info", "aggregate"]
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
    tolerance: float | None = None
    """exact: relative tolerance; timing: minimum effect (relative); sampled: absolute drop allowed. None: defaults."""
    data_hash: str | None = None
    """sampled: hash of the items scored, so a paired comparison only pairs the same items."""
    baseline: float | None = None
    verdict: str | None = None
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

        def number(value: float | None) -> float | str | None:
            return value if value is None or math.isfinite(value) else repr(value)  # "inf", "-inf", "nan"

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

        def number(value: Any) -> float:
            return math.nan if value is None else float(value)

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
            ci_low=None if record.get("ci_low") is None else float(record["ci_low"]),
            ci_high=None if record.get("ci_high") is None else float(record["ci_high"]),
            tolerance=None if record.get("tolerance") is None else float(record["tolerance"]),
            data_hash=record.get("data_hash"),
            baseline=None if record.get("baseline") is None else float(record["baseline"]),
            verdict=record.get("verdict"),
            statistic=str(record.get("statistic") or ""),
            extra=dict(record.get("extra") or {}),
        )


def _file_mode(path: Path) -> int:
    """The existing file's permissions, or the default for a new file under the process umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_json_atomically(path: str | Path, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as sorted, indented JSON via a temp file in the same folder and ``os.replace``:
    a reader sees the old file or the new one, never half of one, even if the writer is killed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, _file_mode(path))  # mkstemp creates 0600; a results file is as readable as any other
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_results(path: str | Path, results: Sequence[Result], environment: Mapping[str, Any]) -> Path:
    """The ``--json`` file: ``{"schema_version", "environment", "results": [...]}``."""
    document = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "environment": dict(environment),
        "results": [r.as_json() for r in results],
    }
    return write_json_atomically(path, document)


def load_results(path: str | Path) -> tuple[dict[str, Any], list[Result]]:
    """Read a ``--json`` file back: (environment, results); a problem is a BaselineFormatError naming the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineFormatError(f"results {str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineFormatError(f"results {str(path)!r}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BaselineFormatError(
            f"results {str(path)!r}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise BaselineFormatError(f"results {str(path)!r}: expected an object with a 'results' list")
    version = document.get("schema_version")
    number = version if isinstance(version, int) and not isinstance(version, bool) else None
    if number is None or not OLDEST_READABLE_RESULTS_SCHEMA <= number <= RESULTS_SCHEMA_VERSION:
        newer = number is not None and number > RESULTS_SCHEMA_VERSION
        raise BaselineFormatError(
            f"results {str(path)!r}: schema_version={version!r}, expected {OLDEST_READABLE_RESULTS_SCHEMA} to "
            f"{RESULTS_SCHEMA_VERSION}{' (written by a newer fourbit-harness: upgrade it)' if newer else ''}"
        )
    results = []
    for index, record in enumerate(document["results"]):
        try:
            results.append(Result.from_json(record))
        except (KeyError, TypeError, ValueError, InvalidArgument) as exc:
            raise BaselineFormatError(f"results {str(path)!r}: results[{index}] is malformed ({exc!r})") from None
    environment = document.get("environment")
    return (environment if isinstance(environment, dict) else {}), results
