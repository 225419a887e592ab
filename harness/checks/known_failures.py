"""Known bugs of third-party libraries, reported as expected failures instead of hidden or left red.

An adapter never papers over a library's bug: the suites find it. Once a bug is understood, an entry in
``known_failures.toml`` (in the suites folder, or any folder above a test file) turns the failing tests into
``xfail(strict=True)`` with the entry's reason, for the library version it was seen with only. When the
library fixes the bug, the test passes, strict xfail turns that into a failure, and the entry gets removed;
when the library is upgraded, the entry stops applying and the failures show again until re-checked.
``--fourbit-no-known-failures`` shows every failure as a failure.

Format::

    [[known_failure]]
    implementations = ["bnb-fp4", "bnb-fp4-dq"]   # patterns on implementation names (* and ? are wildcards)
    tests = ["test_exact_zero[*]"]                 # patterns on test names with their [params]; brackets are literal
    library = "bitsandbytes==0.50.2"               # distribution==version the failure was seen with
    reason = "what the library does wrong, with its measured size"
    max_numel = 2                                  # optional: see KnownFailure.max_numel
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from harness.errors import UsageError

__all__ = ["FILE_NAME", "KnownFailure", "input_exclusions_for", "load_known_failures", "match_known_failure"]

FILE_NAME = "known_failures.toml"


@dataclass(frozen=True)
class KnownFailure:
    """One understood library bug and the tests it makes fail."""

    implementations: tuple[str, ...]
    tests: tuple[str, ...]
    library: str
    reason: str
    source: str
    max_numel: int | None = None
    strict: bool = True
    """False only for a failure that does not reproduce every run (the reason must say why): a pass is then
    not an error. Every such entry is a debt: it hides whether the bug was fixed."""
    """If set, the bug hits every input of at most this many elements: the matching implementations' other
    property tests leave such inputs out (so the bug does not hide everything else) and ``tests`` names the
    test that shows it."""

    @property
    def distribution(self) -> str:
        return self.library.partition("==")[0].strip()

    @property
    def version(self) -> str:
        return self.library.partition("==")[2].strip()

    def applies(self) -> bool:
        """Only for the library version the failure was seen with (an upgrade must be re-checked)."""
        try:
            return metadata.version(self.distribution) == self.version
        except metadata.PackageNotFoundError:
            return False

    def matches(self, implementation: str, test_name: str) -> bool:
        return any(_wildcard(p).fullmatch(implementation) for p in self.implementations) and any(
            _wildcard(p).fullmatch(test_name) for p in self.tests
        )


@functools.cache
def _wildcard(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` are wildcards, everything else literal: test names carry ``[params]``, which fnmatch
    would read as a character class (``test_x[*]`` would then match only ``test_x*``)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def _strings(path: Path, index: int, entry: dict[str, object], name: str) -> tuple[str, ...]:
    value = entry.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{path}: known_failure #{index + 1}: {name}={value!r}, expected a non-empty list of strings")
    return tuple(value)


def load_known_failures(path: str | Path) -> list[KnownFailure]:
    """Parse a known-failures file; a malformed one is a UsageError naming the file and the entry."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    entries = document.get("known_failure", [])
    if not isinstance(entries, list):
        raise UsageError(f"{path}: known_failure must be an array of tables ([[known_failure]])")
    known = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise UsageError(
                f"{path}: known_failure #{index + 1} is {type(entry).__name__}, expected a table ([[known_failure]])"
            )
        library, reason = entry.get("library"), entry.get("reason")
        if not isinstance(library, str) or "==" not in library:
            raise UsageError(
                f"{path}: known_failure #{index + 1}: library={library!r}, expected 'distribution==version'"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{path}: known_failure #{index + 1}: reason={reason!r}, expected a sentence")
        max_numel = entry.get("max_numel")
        if max_numel is not None and (not isinstance(max_numel, int) or isinstance(max_numel, bool) or max_numel < 1):
            raise UsageError(f"{path}: known_failure #{index + 1}: max_numel={max_numel!r}, expected an integer >= 1")
        strict = entry.get("strict", True)
        if not isinstance(strict, bool):
            raise UsageError(f"{path}: known_failure #{index + 1}: strict={strict!r}, expected true or false")
        known.append(
            KnownFailure(
                implementations=_strings(path, index, entry, "implementations"),
                tests=_strings(path, index, entry, "tests"),
                library=library,
                reason=reason.strip(),
                source=f"{path}#{index + 1}",
                max_numel=max_numel,
                strict=strict,
            )
        )
    return known


def input_exclusions_for(known: list[KnownFailure], implementation: str, test_name: str) -> list[KnownFailure]:
    """Entries with ``max_numel`` that apply to this implementation, for every test but the ones showing them."""
    return [
        k
        for k in known
        if k.max_numel is not None
        and any(_wildcard(p).fullmatch(implementation) for p in k.implementations)
        and not any(_wildcard(p).fullmatch(test_name) for p in k.tests)
        and k.applies()
    ]


def match_known_failure(known: list[KnownFailure], implementation: str, test_name: str) -> KnownFailure | None:
    """The first entry that applies to the installed library and matches this test, if any."""
    return next((k for k in known if k.matches(implementation, test_name) and k.applies()), None)
