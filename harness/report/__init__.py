"""Rendering of runs: one summary model (:mod:`~harness.report.model`) drawn in the terminal
(:mod:`~harness.report.terminal`) and as Markdown (:mod:`~harness.report.markdown`); pair matrices
(:mod:`~harness.report.matrix`). Plots (:mod:`~harness.report.plots`, matplotlib) and progress bars
(:mod:`~harness.report.progress`) are imported from their modules when needed.

Renderers know no suite by name: a suite declares how its results are shown
(:class:`~harness.results.records.SuiteSummary`) and the declaration travels in the :class:`RunSummary`.
"""

from harness.report.markdown import render_markdown
from harness.report.matrix import render_pair_matrix
from harness.report.model import Outcome, RunSummary
from harness.report.terminal import regression_message, render_comparison, render_load_errors, render_run

__all__ = [
    "Outcome",
    "RunSummary",
    "regression_message",
    "render_comparison",
    "render_load_errors",
    "render_markdown",
    "render_pair_matrix",
    "render_run",
]
