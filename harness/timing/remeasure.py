"""The one re-measurement policy for timings: when a timing is measured again, what that can clear, and which
verdicts then fail.

A timing that crosses the gate is not believed at once, because on a shared machine most such crossings are the
machine, not the kernel (docs/design.md). It is measured again, in widening circles, each the policy's to decide:

1. in the same process, once (the kernels suite's case, all references re-timed together so they stay paired);
   a ratio that regressed while another ratio of the same rounds did not is *uncorroborated*: a reference moved,
   so the verdict is ``inconclusive``;
2. in a fresh process, up to ``fresh_process_reruns`` times (harness.timing.reruns), for a case whose timing is
   still regressed or inconclusive, and for an implementation verdict (harness.results.aggregate) that fails;
3. what is left fails the test (a case) or the run (an implementation verdict): ``regressed`` always,
   ``inconclusive`` and ``new`` only under ``--fourbit-strict``.

What a measurement knew about its own trustworthiness travels with the result as :class:`TimingEvidence`
(typed here, stored in ``Result.extra`` under fixed keys), and harness.results.compare reads it back from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.results.records import Result

__all__ = ["RemeasurePolicy", "TimingEvidence", "uncorroborated"]

_UNCORROBORATED = "uncorroborated"
_CPU_SHARE = "cpu_share"


@dataclass(frozen=True)
class TimingEvidence:
    """What a timing knew about itself: the share of their CPUs its rounds got (None where not measured: CUDA),
    and, for a ratio that regressed alone, why it is uncorroborated (None when it is not)."""

    cpu_share: float | None = None
    uncorroborated: str | None = None

    @classmethod
    def of(cls, result: Result) -> TimingEvidence:
        share = result.extra.get(_CPU_SHARE)
        reason = result.extra.get(_UNCORROBORATED)
        return cls(
            cpu_share=float(share) if isinstance(share, (int, float)) and not isinstance(share, bool) else None,
            uncorroborated=str(reason) if reason else None,
        )

    def as_extra(self) -> dict[str, Any]:
        """The keys a result's ``extra`` stores (an absent share is stored as None, as the suite always did)."""
        extra: dict[str, Any] = {_CPU_SHARE: None if self.cpu_share is None else round(self.cpu_share, 3)}
        if self.uncorroborated:
            extra[_UNCORROBORATED] = self.uncorroborated
        return extra


@dataclass(frozen=True)
class RemeasurePolicy:
    """How often a suspicious timing is measured again, and what fails once it has been."""

    in_process_retimes: int = 1
    fresh_process_reruns: int = 1
    strict: bool = False

    @staticmethod
    def worth_remeasuring(result: Result) -> bool:
        """A timing that regressed, or that would have while other jobs held the CPU (inconclusive): a burst of
        load or a slow spell of one process passes, a slower kernel does not. A ``new`` timing has nothing to be
        compared with, so measuring it again changes nothing."""
        return result.kind == "timing" and result.verdict in ("regressed", "inconclusive")

    def any_worth_remeasuring(self, results: Iterable[Result]) -> bool:
        return any(self.worth_remeasuring(r) for r in results)

    def fails(self, result: Result) -> bool:
        """Whether a recorded metric fails its test once every re-measurement is done."""
        return result.verdict == "regressed" or (self.strict and result.verdict in ("new", "inconclusive"))

    def fails_run(self, aggregate: Result) -> bool:
        """Whether an implementation verdict fails the run."""
        return aggregate.verdict == "regressed" or (self.strict and aggregate.verdict == "inconclusive")


def uncorroborated(previews: Mapping[str, Result]) -> dict[str, str]:
    """Reference name -> why, for each ratio (one per reference, measured in the same rounds) that regressed while
    another did not: a slower kernel makes every ratio worse, so a lone regression says its reference moved."""
    regressed = {name for name, p in previews.items() if p.verdict == "regressed"}
    if not regressed or len(regressed) == len(previews):
        return {}
    others = ", ".join(
        f"{p.metric} {p.verdict} ({p.value / p.baseline - 1:+.1%})" if p.baseline else f"{p.metric} {p.verdict}"
        for name, p in previews.items()
        if name not in regressed
    )
    return {name: f"the same rounds against the other reference did not regress: {others}" for name in regressed}
