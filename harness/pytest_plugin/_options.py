"""Declaring the plugin's command-line options, and passing on those that shape a measurement.

A fresh-process re-run (harness.pytest_plugin.reruns) must measure what the run it repeats measured: the same
implementations, threads, shapes, model. Each option says so where it is declared (``repeat_in_reruns``), so
the re-run's command line is derived from the declarations instead of a second table kept by hand.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

__all__ = ["DeclaredOption", "add_option", "all_declared_options", "declared_options", "repeated_arguments"]


@dataclass(frozen=True)
class DeclaredOption:
    """One option of the plugin: its pytest ``dest``, its flag, how it takes values, and whether a re-run in a
    fresh process repeats it."""

    dest: str
    flag: str
    takes: Literal["flag", "value", "list"]
    repeat_in_reruns: bool
    group: str = ""
    """The option group's description (``fourbit: accuracy suite``), for a command line that lists them."""
    settings: dict[str, Any] = field(default_factory=dict, compare=False)
    """What was passed to ``addoption`` besides the flag (help, metavar, type, default, action)."""


_DECLARED: dict[str, DeclaredOption] = {}
"""Every option declared through :func:`add_option`, by dest (pytest may add options once per config; the
declarations are the same each time)."""


def add_option(group: Any, flag: str, *, repeat_in_reruns: bool, **kwargs: Any) -> None:
    """``group.addoption(flag, **kwargs)``, remembering whether a fresh-process re-run must pass it on."""
    group.addoption(flag, **kwargs)
    dest = kwargs.get("dest") or flag.lstrip("-").replace("-", "_")
    action = kwargs.get("action")
    takes: Literal["flag", "value", "list"] = (
        "flag" if action == "store_true" else "list" if action == "append" else "value"
    )
    description = str(getattr(group, "description", "") or getattr(group, "name", ""))
    _DECLARED[dest] = DeclaredOption(dest, flag, takes, repeat_in_reruns, description, dict(kwargs))


def declared_options() -> dict[str, DeclaredOption]:
    """The options declared so far, by dest."""
    return dict(_DECLARED)


class _Group:
    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description

    def addoption(self, *names: str, **settings: Any) -> None:
        """Declared through :func:`add_option`, which records it; nothing else to do without pytest."""


class _Parser:
    """Stands in for pytest's parser, so the plugin's ``pytest_addoption`` hooks can declare their options for a
    command line that is not pytest's (the ``fourbit`` CLI)."""

    def getgroup(self, name: str, description: str = "") -> _Group:
        return _Group(name, description)


def all_declared_options() -> list[DeclaredOption]:
    """Every option of every part of the plugin (harness.pytest_plugin), in declaration order, without a pytest
    session: each part's ``pytest_addoption`` is run against a stand-in parser."""
    plugin = importlib.import_module("harness.pytest_plugin")
    for name in plugin.pytest_plugins:
        hook = getattr(importlib.import_module(name), "pytest_addoption", None)
        if hook is not None:
            hook(_Parser())
    return list(_DECLARED.values())


def repeated_arguments(config: pytest.Config) -> list[str]:
    """The command-line arguments that give a fresh process this run's values of every option declared with
    ``repeat_in_reruns=True`` (options left at their default are not repeated)."""
    arguments: list[str] = []
    for option in _DECLARED.values():
        if not option.repeat_in_reruns:
            continue
        value = config.getoption(option.dest)
        if option.takes == "flag":
            arguments += [option.flag] if value else []
        elif option.takes == "list":
            for item in value or ():
                arguments += [option.flag, str(item)]
        elif value is not None:
            arguments += [option.flag, str(value)]
    return arguments
