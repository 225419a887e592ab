"""The pytest plugin (entry point ``pytest11: fourbit``), made of small plugins, one concern each, every one with
its own option group and state in ``config.stash``:

* :mod:`~harness.pytest_plugin.selection`: the registry, ``--impl``/``--quantizer``, the parametrization of
  ``quantizer``, ``dtype`` and ``quantizer_pair``, and the hooks a conftest.py implements;
* :mod:`~harness.pytest_plugin.known_failures`: known library bugs as expected failures;
* :mod:`~harness.pytest_plugin.gate`: the ``record`` fixture, baselines and regression gating;
* :mod:`~harness.pytest_plugin.reruns`: fresh-process re-runs of failing timings;
* :mod:`~harness.pytest_plugin.output`: the end-of-run summary and the result, Markdown and plot files;
* :mod:`~harness.pytest_plugin.faults`: time limits, and a quantizer's KeyboardInterrupt or SystemExit failing only
  its own test; the run state ``fourbit run`` watches from the parent process;
* :mod:`~harness.pytest_plugin.distributed`: pytest-xdist workers send their records to the controller, which
  alone judges the run, writes and prints; timing tests refuse to share the CPU;
* :mod:`~harness.pytest_plugin.kernels`, :mod:`~harness.pytest_plugin.accuracy`: the suites' own options;
* :mod:`~harness.pytest_plugin.profiles`: the hypothesis profiles of the property suites.

Heavy libraries are imported only when a run needs them. Tests opt in by asking for the ``quantizer`` argument
(and ``dtype``), ``quantizer_pair`` or ``record``; everything else is left alone.
"""

from harness.pytest_plugin.gate import Recorder
from harness.pytest_plugin.selection import FourbitHookspecs, UnavailableQuantizer, pair_id

__all__ = ["FourbitHookspecs", "Recorder", "UnavailableQuantizer", "pair_id"]

pytest_plugins = [
    "harness.pytest_plugin.profiles",
    "harness.pytest_plugin.selection",
    "harness.pytest_plugin.known_failures",
    "harness.pytest_plugin.gate",
    "harness.pytest_plugin.reruns",
    "harness.pytest_plugin.output",
    "harness.pytest_plugin.faults",
    "harness.pytest_plugin.distributed",
    "harness.pytest_plugin.kernels",
    "harness.pytest_plugin.accuracy",
]
