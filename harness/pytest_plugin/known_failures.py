"""Known library bugs (``known_failures.toml`` beside the suites and in their parents up to the rootdir): the
tests they name are expected to fail (xfail, strict unless the entry says otherwise), and inputs an entry
excludes are left out of an implementation's other properties while its test runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.pytest_plugin import output
from harness.pytest_plugin._options import add_option
from harness.pytest_plugin.selection import UnavailableQuantizer, item_key

if TYPE_CHECKING:
    from harness.checks.known_failures import KnownFailure
    from harness.checks.trials import InputExclusion

__all__: list[str] = []


@dataclass
class _KnownFailureState:
    files: dict[Path, list[KnownFailure]] = field(default_factory=dict)
    input_exclusions: dict[str, tuple[InputExclusion, ...]] = field(default_factory=dict)
    known_bug_items: set[str] = field(default_factory=set)


_STATE = pytest.StashKey[_KnownFailureState]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fourbit-known-failures", "fourbit: known library bugs")
    add_option(
        group,
        "--fourbit-no-known-failures",
        repeat_in_reruns=True,
        action="store_true",
        default=False,
        help="ignore known_failures.toml: known library bugs fail like any other failure",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _KnownFailureState()


def _entries_for(config: pytest.Config, path: Path) -> list[KnownFailure]:
    """Entries of every known_failures.toml in the test file's folder and its parents up to the rootdir."""
    from harness.checks.known_failures import FILE_NAME, load_known_failures
    from harness.errors import UsageError

    state = config.stash[_STATE]
    found: list[KnownFailure] = []
    root = Path(config.rootpath)
    for folder in path.parents:
        if folder not in state.files:
            candidate = folder / FILE_NAME
            try:
                state.files[folder] = load_known_failures(candidate) if candidate.is_file() else []
            except UsageError as exc:
                raise pytest.UsageError(str(exc)) from None
        found += state.files[folder]
        if folder == root or root not in folder.parents:
            break
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("fourbit_no_known_failures"):
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        quantizer = None if callspec is None else callspec.params.get("quantizer")
        if item_key(config, item.nodeid) is None or quantizer is None or isinstance(quantizer, UnavailableQuantizer):
            continue  # pairs, tests that are not about one implementation, and skipped placeholders
        _mark(config, item, quantizer.name)


def _mark(config: pytest.Config, item: pytest.Item, implementation: str) -> None:
    from harness.checks.known_failures import input_exclusions_for, match_known_failure
    from harness.checks.trials import InputExclusion

    state = config.stash[_STATE]
    entries = _entries_for(config, Path(item.path))
    known = match_known_failure(entries, implementation, item.name)
    if known is not None:
        item.add_marker(pytest.mark.xfail(reason=f"known {known.library} bug: {known.reason}", strict=known.strict))
        state.known_bug_items.add(item.nodeid)
    exclusions = input_exclusions_for(entries, implementation, item.name)
    if exclusions:
        state.input_exclusions[item.nodeid] = tuple(
            InputExclusion(k.max_numel or 0, f"{k.library}: {k.reason}") for k in exclusions
        )
        for k in exclusions:
            output.note(
                config,
                f"{implementation}: inputs of <= {k.max_numel} elements left out of its other properties "
                f"(known {k.library} bug, shown by {', '.join(k.tests)})",
            )


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """While the test runs, the property checks see its input exclusions and whether it is a known bug."""
    state = item.config.stash[_STATE]
    exclusions = state.input_exclusions.get(item.nodeid, ())
    known_bug = item.nodeid in state.known_bug_items
    if not (exclusions or known_bug):
        return (yield)
    from harness.checks.trials import expected_to_fail, input_exclusions

    tokens = (input_exclusions.set(exclusions), expected_to_fail.set(known_bug))
    try:
        result: Any = yield
    finally:
        input_exclusions.reset(tokens[0])
        expected_to_fail.reset(tokens[1])
    return result
