"""Timing: the clock that times a kernel against same-run references in interleaved rounds
(:mod:`~harness.timing.clock`), the kernels suite's cases and how one is recorded
(:mod:`~harness.timing.kernel_cases`), the one re-measurement policy (:mod:`~harness.timing.remeasure`), and
fresh-process re-runs (:mod:`~harness.timing.reruns`).

Only the clock and the policy are imported here; the kernel cases load scipy and are imported where used.
"""

from harness.timing.clock import TimingRun, copy_reference, keep_freed_memory, time_interleaved, torch_threads
from harness.timing.remeasure import RemeasurePolicy, TimingEvidence

__all__ = [
    "RemeasurePolicy",
    "TimingEvidence",
    "TimingRun",
    "copy_reference",
    "keep_freed_memory",
    "time_interleaved",
    "torch_threads",
]
