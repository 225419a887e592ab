"""The pytest plugin (entry point ``pytest11: fourbit``): options, the registry, parametrization, summary.

Thin on purpose: state lives in ``config.stash``, heavy libraries are imported
only when a run needs them, and test ids name the implementation
(``test_exact_zero[ref-nf4-bfloat16]``). Tests opt in by asking for the
``quantizer`` argument (and ``dtype``); everything else is left alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.plugins import Registry
    from harness.report import Outcome
    from harness.results import Result

__all__ = ["FourbitHookspecs"]

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
    item_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)


_STATE = pytest.StashKey[_RunState]()


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


def _register_hypothesis_profiles() -> None:
    """Register the suites' profiles early: hypothesis loads ``--hypothesis-profile`` in its own configure.

    Nothing is loaded globally (other projects' hypothesis tests keep their settings): the suites apply
    ``fourbit`` themselves unless the user chose a profile (see :func:`harness.trials.for_each_input`)."""
    from hypothesis import HealthCheck, settings

    for profile, examples in HYPOTHESIS_PROFILES.items():
        seeded = {"derandomize": True, "database": None} if profile == "fourbit" else {}
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


def _registry(config: pytest.Config) -> Registry:
    state = config.stash[_STATE]
    if state.registry is None:
        from harness.plugins import load_registry

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
    try:
        _registry(config).select(config.getoption("impl"))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _parametrized_by_user(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``quantizer`` over the selected implementations, and ``dtype`` (only in tests that take a
    ``quantizer``) over float32/float16/bfloat16; arguments the test parametrizes itself are left alone."""
    if "quantizer" not in metafunc.fixturenames or _parametrized_by_user(metafunc, "quantizer"):
        return
    config = metafunc.config
    selected = _registry(config).select(config.getoption("impl"))
    metafunc.parametrize("quantizer", [impl.quantizer for impl in selected], ids=[impl.name for impl in selected])
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
        callspec = getattr(item, "callspec", None)
        quantizer = None if callspec is None else callspec.params.get("quantizer")
        if callspec is None or quantizer is None or not isinstance(getattr(quantizer, "name", None), str):
            continue  # not one of ours (a test may parametrize ``quantizer`` itself)
        state.item_keys[item.nodeid] = (quantizer.name, _property_name(item))
        dtype = callspec.params.get("dtype")
        if dtype is not None and dtype not in quantizer.capabilities.dtypes:
            reason = f"dtype {dtype} not in capabilities.dtypes={quantizer.capabilities.dtypes!r}"
            item.add_marker(pytest.mark.skip(reason=f"{quantizer.name}: {reason}"))


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
        from harness.plugins import LoadError

        where = getattr(plugin, "__file__", None) or manager.get_name(plugin) or repr(plugin)
        state.registry.errors.append(
            LoadError(
                f"pytest_fourbit_quantizers in {where}",
                "registered after the registry was built (a conftest.py below the collected folders); "
                "move it to the rootdir conftest.py or the folder passed on the command line, or use -p",
            )
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from harness.report import Outcome

        state = self.config.stash[_STATE]
        key = state.item_keys.get(report.nodeid)
        if key is None or not (report.when == "call" or report.outcome != "passed"):
            return
        previous = state.outcomes.get(report.nodeid)
        if previous is not None and previous.outcome == "failed":
            return  # a teardown after a failed call must not turn it into a pass
        state.outcomes[report.nodeid] = Outcome(key[0], key[1], report.outcome)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.config.stash[_STATE]
        if state.registry is not None and state.registry.errors and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        state = self.config.stash[_STATE]
        errors = [] if state.registry is None else [(e.source, e.error) for e in state.registry.errors]
        if not (state.outcomes or state.results or errors):
            return
        from rich.console import Console

        from harness.report import render_run

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
        terminalreporter.section("fourbit summary", sep="=")
        terminalreporter.write(buffer.getvalue())


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Any:
    """Record a metric of the current test's implementation: ``record(metric, value, unit=..., kind=...,
    direction=..., case=...)``. Results appear in the run summary (and, later, in result files and baselines)."""
    from harness.results import Result

    state = request.config.stash[_STATE]
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    implementation = getattr(params.get("quantizer"), "name", None)
    implementation = implementation if isinstance(implementation, str) else "-"
    suite = request.node.path.parent.name

    def _record(metric: str, value: float, *, case: str | None = None, **fields: Any) -> Result:
        result = Result(
            suite=suite,
            case=case or request.node.name,
            implementation=implementation,
            metric=metric,
            value=value,
            **fields,
        )
        state.results.append(result)
        return result

    return _record
