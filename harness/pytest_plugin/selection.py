"""Which implementations a run tests: the registry (entry points, ``--quantizer``, conftest hooks), ``--impl``,
and the parametrization of ``quantizer``, ``dtype`` and ``quantizer_pair``.

Test ids name the implementation (``test_exact_zero[ref-nf4-bfloat16]``) or the pair
(``test_agreement[ref-nf4~bnb-nf4-...]``); every test that takes one of them gets an :class:`ItemKey`
(implementation, property, suite) that the other plugins report under.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from harness.pytest_plugin._options import add_option

if TYPE_CHECKING:
    from harness.registry import Registry

__all__ = [
    "FourbitHookspecs",
    "ItemKey",
    "UnavailableQuantizer",
    "item_key",
    "load_errors",
    "pair_id",
    "registry",
    "remember_item_key",
]

DTYPE_NAMES = ("float32", "float16", "bfloat16")


class FourbitHookspecs:
    """Hooks a conftest.py (at the rootdir or in the folder given on the command line) or a ``-p`` plugin may
    implement."""

    @pytest.hookspec
    def pytest_fourbit_quantizers(self, config: pytest.Config) -> Any:
        """Return quantizers to test: instances, classes, zero-argument factories, or lists of them."""

    @pytest.hookspec(firstresult=True)
    def pytest_fourbit_replace_quantizer(self, config: pytest.Config, quantizer: Any) -> Any:
        """Return a stand-in for ``quantizer`` (a wrapper, a patched copy) under the same name, or None to keep it.
        Called once for every loaded implementation; the first non-None answer is used."""


class ItemKey(NamedTuple):
    """What a test is about: the implementation (or pair ``a~b``), the property, the suite (its folder)."""

    implementation: str
    prop: str
    suite: str


@dataclass(frozen=True)
class UnavailableQuantizer:
    """Stands in for an implementation whose library is not installed: its tests are collected, then skipped."""

    name: str
    reason: str


@dataclass
class _SelectionState:
    registry: Registry | None = None
    item_keys: dict[str, ItemKey] = field(default_factory=dict)


_STATE = pytest.StashKey[_SelectionState]()


def pair_id(first: str, second: str) -> str:
    """The test id and the report's implementation label of a pair of implementations."""
    return f"{first}~{second}"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(FourbitHookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-selection", "fourbit: which implementations to test")
    add_option(
        group,
        "--quantizer",
        repeat_in_reruns=True,
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="also test this quantizer (an instance, class, or zero-argument factory returning one or a list); "
        "repeatable",
    )
    add_option(
        group,
        "--impl",
        repeat_in_reruns=True,
        action="append",
        default=[],
        metavar="NAME",
        help="run only implementations whose name matches NAME (glob patterns allowed); repeatable",
    )
    add_option(
        group,
        "--fourbit-no-entry-points",
        repeat_in_reruns=True,
        action="store_true",
        default=False,
        help="ignore installed plugins of group fourbit.quantizers (built-ins still load)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _SelectionState()
    config.pluginmanager.register(_LateHookWatcher(config), "fourbit-late-hook-watcher")
    config.addinivalue_line("markers", "fourbit_property(name): the property a suite test checks (for the report)")


def registry(config: pytest.Config) -> Registry:
    """The run's registry, built on first use: entry points, ``--quantizer``, ``pytest_fourbit_quantizers``, then
    each implementation offered to ``pytest_fourbit_replace_quantizer``."""
    state = config.stash[_STATE]
    if state.registry is None:
        from harness.registry import load_registry

        hook_results: list[tuple[str, object]] = [
            ("pytest_fourbit_quantizers hook", result)
            for result in config.hook.pytest_fourbit_quantizers(config=config)
            if result is not None
        ]
        built = load_registry(
            config.getoption("quantizer"),
            hook_results,
            use_entry_points=not config.getoption("fourbit_no_entry_points"),
        )
        built.build(config.getoption("impl"))  # only the selected: an unselected library is never imported
        for name, implementation in list(built.implementations.items()):
            replacement = config.hook.pytest_fourbit_replace_quantizer(
                config=config, quantizer=implementation.quantizer
            )
            if replacement is not None:
                built.replace(name, replacement, "pytest_fourbit_replace_quantizer hook")
        state.registry = built
    return state.registry


def load_errors(config: pytest.Config) -> list[tuple[str, str]]:
    """(source, error) of every plugin that failed to load, once the registry was built (else none)."""
    built = config.stash[_STATE].registry
    return [] if built is None else [(e.source, e.error) for e in built.errors]


def item_key(config: pytest.Config, nodeid: str) -> ItemKey | None:
    """The implementation, property and suite of a collected test, or None for a test that is not about one."""
    return config.stash[_STATE].item_keys.get(nodeid)


def remember_item_key(config: pytest.Config, nodeid: str, key: ItemKey) -> None:
    """What a test collected elsewhere is about (a pytest-xdist worker's test, on the controller)."""
    config.stash[_STATE].item_keys[nodeid] = key


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the registry up front so that a bad --impl or --quantizer is a usage error, not a test error."""
    from harness.errors import UsageError

    try:
        registry(session.config).select(session.config.getoption("impl"))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


class _LateHookWatcher:
    """A conftest.py that pytest loads during collection comes after the registry was built: its
    ``pytest_fourbit_quantizers`` would be silently ignored, so it is listed as a load error instead."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_plugin_registered(self, plugin: object, manager: pytest.PytestPluginManager) -> None:
        built = self.config.stash[_STATE].registry
        if built is None or not hasattr(plugin, "pytest_fourbit_quantizers"):
            return
        from harness.registry import LoadError

        where = getattr(plugin, "__file__", None) or manager.get_name(plugin) or repr(plugin)
        built.errors.append(
            LoadError(
                f"pytest_fourbit_quantizers in {where}",
                "registered after the registry was built (a conftest.py below the collected folders); "
                "move it to the rootdir conftest.py or the folder passed on the command line, or use -p",
            )
        )


def _parametrized_by_user(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return True
    return False


def _parametrize_pairs(metafunc: pytest.Metafunc) -> None:
    """``quantizer_pair``: every unordered pair of selected implementations of the same format (registration
    order inside a pair, so the built-in reference comes first); pairs with an unavailable one are skips."""
    config = metafunc.config
    known = registry(config)
    patterns = config.getoption("impl")
    selected = known.select(patterns)
    params = [
        pytest.param((first.quantizer, second.quantizer), id=pair_id(first.name, second.name))
        for index, first in enumerate(selected)
        for second in selected[index + 1 :]
        if first.quantizer.spec.format == second.quantizer.spec.format
    ]
    for name, reason in known.select_unavailable(patterns).items():
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
    known = registry(config)
    patterns = config.getoption("impl")
    params = [pytest.param(impl.quantizer, id=impl.name) for impl in known.select(patterns)]
    params += [
        pytest.param(UnavailableQuantizer(name, reason), id=name, marks=pytest.mark.skip(reason=f"{name}: {reason}"))
        for name, reason in known.select_unavailable(patterns).items()
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember which implementation and property each test is about; skip dtypes an implementation
    does not support (with its capabilities' reason)."""
    state = config.stash[_STATE]
    for item in items:
        callspec = getattr(item, "callspec", None)
        pair = None if callspec is None else callspec.params.get("quantizer_pair")
        if isinstance(pair, tuple) and len(pair) == 2:
            state.item_keys[item.nodeid] = ItemKey(
                pair_id(pair[0].name, pair[1].name), _property_name(item), item.path.parent.name
            )
            continue
        quantizer = None if callspec is None else callspec.params.get("quantizer")
        if callspec is None or quantizer is None or not isinstance(getattr(quantizer, "name", None), str):
            continue  # not one of ours (a test may parametrize ``quantizer`` itself)
        state.item_keys[item.nodeid] = ItemKey(quantizer.name, _property_name(item), item.path.parent.name)
        if isinstance(quantizer, UnavailableQuantizer):
            continue  # already marked skip with the install hint
        dtype = callspec.params.get("dtype")
        if dtype is not None and dtype not in quantizer.capabilities.dtypes:
            reason = f"dtype {dtype} not in capabilities.dtypes={quantizer.capabilities.dtypes!r}"
            item.add_marker(pytest.mark.skip(reason=f"{quantizer.name}: {reason}"))
