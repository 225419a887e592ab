"""known_failures.toml: parsing, clear errors for malformed entries, version pinning, and pattern matching.

How a matching entry turns a failing test into an xfail is tested end to end in tests/test_plugin_baselines.py.
"""

from __future__ import annotations

import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from harness.checks.known_failures import FILE_NAME, KnownFailure, load_known_failures, match_known_failure
from harness.errors import UsageError

PYTEST_VERSION = metadata.version("pytest")

VALID_ENTRY = """
[[known_failure]]
implementations = ["bnb-fp4", "bnb-fp4-dq"]
tests = ["test_exact_zero*"]
library = "pytest=={version}"
reason = "  the library rounds -0.0 to the wrong code (3 of 16 codes)  "
"""


def _write(folder: Path, text: str) -> Path:
    path = folder / FILE_NAME
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _known(implementations: tuple[str, ...], tests: tuple[str, ...], library: str = "") -> KnownFailure:
    return KnownFailure(implementations, tests, library or f"pytest=={PYTEST_VERSION}", "a reason", "here#1")


def test_a_valid_file_is_parsed(tmp_path: Path) -> None:
    second = """
        [[known_failure]]
        implementations = ["torchao-*"]
        tests = ["test_packing[*", "test_codebook"]
        library = "torchao == 0.18.0"
        reason = "rounds its table to 4 decimals"
    """
    path = _write(tmp_path, VALID_ENTRY.format(version=PYTEST_VERSION) + textwrap.dedent(second))
    first, other = load_known_failures(path)
    assert first == KnownFailure(
        implementations=("bnb-fp4", "bnb-fp4-dq"),
        tests=("test_exact_zero*",),
        library=f"pytest=={PYTEST_VERSION}",
        reason="the library rounds -0.0 to the wrong code (3 of 16 codes)",
        source=f"{path}#1",
    )
    assert (first.distribution, first.version) == ("pytest", PYTEST_VERSION)
    assert (other.distribution, other.version, other.source) == ("torchao", "0.18.0", f"{path}#2")
    assert other.tests == ("test_packing[*", "test_codebook")


def test_a_file_without_entries_is_empty(tmp_path: Path) -> None:
    assert load_known_failures(_write(tmp_path, "# nothing known yet\n")) == []


@pytest.mark.parametrize(
    ("broken_lines", "field"),
    [
        ('implementations = ["a"]\ntests = ["t"]\nreason = "r"', "library"),
        ('implementations = ["a"]\ntests = ["t"]\nlibrary = "pytest>=8"\nreason = "r"', "library"),
        ('implementations = ["a"]\ntests = ["t"]\nlibrary = "pytest==8"', "reason"),
        ('implementations = ["a"]\ntests = ["t"]\nlibrary = "pytest==8"\nreason = "   "', "reason"),
        ('tests = ["t"]\nlibrary = "pytest==8"\nreason = "r"', "implementations"),
        ('implementations = "a"\ntests = ["t"]\nlibrary = "pytest==8"\nreason = "r"', "implementations"),
        ('implementations = []\ntests = ["t"]\nlibrary = "pytest==8"\nreason = "r"', "implementations"),
        ('implementations = ["a"]\ntests = ["t", 3]\nlibrary = "pytest==8"\nreason = "r"', "tests"),
        ('implementations = ["a"]\ntests = [""]\nlibrary = "pytest==8"\nreason = "r"', "tests"),
    ],
    ids=[
        "no-library",
        "library-not-pinned",
        "no-reason",
        "blank-reason",
        "no-implementations",
        "implementations-string",
        "implementations-empty",
        "tests-not-strings",
        "tests-empty-string",
    ],
)
def test_a_malformed_entry_names_the_file_the_entry_and_the_field(
    tmp_path: Path, broken_lines: str, field: str
) -> None:
    text = VALID_ENTRY.format(version=PYTEST_VERSION) + "\n[[known_failure]]\n" + broken_lines + "\n"
    path = _write(tmp_path, text)
    with pytest.raises(UsageError) as excinfo:
        load_known_failures(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: known_failure #2: {field}="), message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[known_failure]\nreason = \n")
    with pytest.raises(UsageError, match="not valid TOML") as excinfo:
        load_known_failures(path)
    assert str(excinfo.value).startswith(str(path))


def test_known_failure_must_be_an_array_of_tables(tmp_path: Path) -> None:
    path = _write(tmp_path, 'known_failure = "bnb"\n')
    with pytest.raises(UsageError, match=r"\[\[known_failure\]\]") as excinfo:
        load_known_failures(path)
    assert str(excinfo.value).startswith(str(path))


def test_an_array_of_non_tables_is_a_usage_error(tmp_path: Path) -> None:
    path = _write(tmp_path, 'known_failure = ["bnb-fp4"]\n')
    with pytest.raises(UsageError) as excinfo:
        load_known_failures(path)
    assert str(excinfo.value).startswith(f"{path}: known_failure #1")


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot be read") as excinfo:
        load_known_failures(tmp_path / FILE_NAME)
    assert str(excinfo.value).startswith(str(tmp_path / FILE_NAME))


# ------------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("library", "applies"),
    [
        (f"pytest=={PYTEST_VERSION}", True),
        (f"pytest == {PYTEST_VERSION}", True),
        ("pytest==0.0.1", False),
        (f"pytest=={PYTEST_VERSION}.post1", False),
        ("no-such-distribution-for-fourbit==1.0", False),
    ],
)
def test_an_entry_applies_only_to_the_installed_version(library: str, applies: bool) -> None:
    known = _known(("bnb-*",), ("test_*",), library)
    assert known.applies() is applies
    found = match_known_failure([known], "bnb-fp4", "test_exact_zero[bnb-fp4]")
    assert found is (known if applies else None)


def test_the_first_applicable_match_wins() -> None:
    outdated = _known(("bnb-*",), ("test_*",), "pytest==0.0.1")
    other_test = _known(("bnb-*",), ("test_packing*",))
    current = _known(("bnb-fp4",), ("test_exact_zero*",))
    later = _known(("*",), ("*",))
    assert match_known_failure([outdated, other_test, current, later], "bnb-fp4", "test_exact_zero[x]") is current
    assert match_known_failure([outdated, other_test], "bnb-fp4", "test_exact_zero[x]") is None


# ------------------------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("implementations", "tests", "implementation", "test_name", "matches"),
    [
        (("bnb-fp4",), ("test_exact_zero",), "bnb-fp4", "test_exact_zero", True),
        (("bnb-*",), ("test_exact_zero*",), "bnb-fp4-dq", "test_exact_zero[bnb-fp4-dq-float16]", True),
        (("bnb-fp?",), ("test_*",), "bnb-fp4", "test_codebook[bnb-fp4]", True),
        (("bnb-fp?",), ("test_*",), "bnb-fp4-dq", "test_codebook[bnb-fp4-dq]", False),  # ? is one character
        (("BNB-*",), ("test_*",), "bnb-fp4", "test_codebook", False),  # case-sensitive on every platform
        (("bnb-*",), ("TEST_*",), "bnb-fp4", "test_codebook", False),
        (("bnb-fp4",), ("test_exact_zero",), "bnb-fp4", "test_exact_zero[bnb-fp4]", False),  # whole name
        (("bnb-fp4",), ("test_exact_zero",), "bnb-fp4-dq", "test_exact_zero", False),  # no prefix match
        (("torchao-*", "bnb-fp4"), ("test_packing*", "test_exact_zero*"), "bnb-fp4", "test_exact_zero[x]", True),
        (("bnb-*",), ("test_packing*",), "bnb-fp4", "test_exact_zero[x]", False),  # implementation alone
        (("torchao-*",), ("test_exact_zero*",), "bnb-fp4", "test_exact_zero[x]", False),  # test alone
        (("bnb-fp4",), ("test_exact_zero[bnb-fp4-*]",), "bnb-fp4", "test_exact_zero[bnb-fp4-float32]", True),
        (("bnb-fp4",), ("test_exact_zero[[]bnb-fp4-*]",), "bnb-fp4", "test_exact_zero[bnb-fp4-float32]", False),
    ],
)
def test_patterns_match_both_names_with_literal_brackets(
    implementations: tuple[str, ...], tests: tuple[str, ...], implementation: str, test_name: str, matches: bool
) -> None:
    assert _known(implementations, tests).matches(implementation, test_name) is matches


def test_the_documented_example_pattern_matches_parametrized_tests() -> None:
    import harness.checks.known_failures

    assert 'tests = ["test_exact_zero[*]"]' in (harness.checks.known_failures.__doc__ or "")
    known = _known(("bnb-fp4",), ("test_exact_zero[*]",))
    assert known.matches("bnb-fp4", "test_exact_zero[bnb-fp4-float32]")
