"""Results: the records a run produces (:mod:`~harness.results.records`), the files they are stored in
(:mod:`~harness.results.files`, :mod:`~harness.results.baselines`), and how they are judged
(:mod:`~harness.results.compare`, :mod:`~harness.results.stats`, :mod:`~harness.results.aggregate`) on which
hardware (:mod:`~harness.results.environment`).

Only the light names are imported here; ``stats`` (scipy) loads when a comparison needs it.
"""

from harness.results.baselines import Baseline, BaselineEntry, load_baseline, save_baseline
from harness.results.files import SavedRun, load_results, load_run, save_results
from harness.results.records import DIRECTIONS, KINDS, VERDICTS, Direction, Kind, Result, SuiteSummary, Verdict

__all__ = [
    "DIRECTIONS",
    "KINDS",
    "VERDICTS",
    "Baseline",
    "BaselineEntry",
    "Direction",
    "Kind",
    "Result",
    "SavedRun",
    "SuiteSummary",
    "Verdict",
    "load_baseline",
    "load_results",
    "load_run",
    "save_baseline",
    "save_results",
]
