"""The fourbit command: listing, running a suite, and exit codes (0 pass, 1 failure or broken plugin, 2 usage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import find_suites_dir, main

ROOT = Path(__file__).resolve().parents[1]


def test_list_shows_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("ref-nf4", "ref-fp4", "ref-af4", "ref-int4", "ref-nf4-dq", "fp32", "fp16", "bf16"):
        assert name in out
    assert "high-nibble-first" in out and "8-bit/256" in out


def test_list_reports_a_broken_plugin_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--quantizer", "no_such_module_xyz:thing"]) == 1
    out = capsys.readouterr().out
    assert "plugins that failed to load" in out and "no_such_module_xyz" in out


def test_unknown_suite_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nosuch", "--suites-dir", str(ROOT / "suites")]) == 2
    assert "unknown suite 'nosuch'" in capsys.readouterr().err


def test_unknown_implementation_is_a_usage_error() -> None:
    assert main(["run", "properties", "--suites-dir", str(ROOT / "suites"), "--impl", "no-such-impl"]) == 2


def test_malformed_quantizer_spec_is_a_usage_error() -> None:
    assert main(["run", "properties", "--suites-dir", str(ROOT / "suites"), "--quantizer", "nocolon"]) == 2


def test_missing_suites_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--suites-dir", str(tmp_path)]) == 2
    assert "has no properties/ suite" in capsys.readouterr().err
    assert find_suites_dir(str(ROOT / "suites")) == ROOT / "suites"


def test_run_properties_for_one_implementation_passes() -> None:
    argv = ["run", "properties", "--suites-dir", str(ROOT / "suites"), "--impl", "ref-int4"]
    assert main([*argv, "--", "-q", "-p", "no:cacheprovider", "-k", "codebook or exact_zero"]) == 0


def test_run_exits_1_when_a_property_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wrong_book.py").write_text(
        "from harness import ReferenceQuantizer\n"
        "class Uniform(ReferenceQuantizer):\n"
        "    def __init__(self):\n"
        "        super().__init__('int4', name='uniform-called-nf4')\n"
        "        import dataclasses\n"
        "        self.spec = dataclasses.replace(self.spec, format='nf4')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["run", "properties", "--suites-dir", str(ROOT / "suites"), "--quantizer", "wrong_book:Uniform"]
    assert main([*argv, "--impl", "uniform-called-nf4", "--", "-q", "-p", "no:cacheprovider", "-k", "codebook"]) == 1
