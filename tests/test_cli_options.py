"""The ``fourbit run`` command line: every option of the pytest plugin under its CLI spelling, passed on to
pytest; ``--quantizer`` from a file or the current folder; a plugin's load error named when ``--impl`` finds
nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import cli
from harness.errors import UsageError
from harness.pytest_plugin._options import all_declared_options
from harness.registry import load_registry, resolve_spec

REPO = Path(__file__).resolve().parents[1]
MODULE = """
from harness import ReferenceQuantizer


def quantizer():
    return ReferenceQuantizer("int4", name="{name}")
"""


def _pytest_arguments(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> list[str]:
    """What ``fourbit`` hands to pytest.main for ``argv`` (pytest itself is not run)."""
    seen: list[list[str]] = []

    def fake_main(arguments: list[str]) -> int:
        seen.append(list(arguments))
        return 0

    monkeypatch.setattr(pytest, "main", fake_main)
    assert cli.main(argv) == 0
    (arguments,) = seen
    return arguments


def test_run_help_lists_every_plugin_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for option in all_declared_options():
        if option.flag not in ("--baseline-dir", "--update-baselines"):  # the CLI's own, also listed
            assert cli.cli_flag(option.flag) in text, option.flag
    for flag in ("--model", "--coqa-data", "--coqa-impl", "--coqa-last-turn", "--full-kernels", "--kernel-threads"):
        assert flag in text
    assert "--timing-reruns" in text and "--hypothesis-profile" in text and "--baseline-dir" in text


def test_suite_options_reach_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    arguments = _pytest_arguments(
        monkeypatch,
        [
            "run", "accuracy", "kernels", "--suites-dir", str(REPO / "suites"), "--model", "/models/m",
            "--coqa-impl", "ref-*", "--coqa-impl", "fp32", "--coqa-last-turn", "--full-kernels", "--kernel-threads",
            "2", "--timing-reruns", "0", "--hypothesis-profile", "fourbit-thorough", "--strict", "--json", "out.json",
            "--", "-x",
        ],
    )  # fmt: skip
    assert arguments[:2] == [str(REPO / "suites" / "accuracy"), str(REPO / "suites" / "kernels")]
    expected = [
        "--model=/models/m", "--coqa-impl=ref-*", "--coqa-impl=fp32", "--coqa-last-turn", "--fourbit-full-kernels",
        "--fourbit-kernel-threads=2", "--fourbit-timing-reruns=0", "--hypothesis-profile=fourbit-thorough",
        "--fourbit-strict", "--fourbit-json=out.json", f"--baseline-dir={REPO / 'baselines'}",
    ]  # fmt: skip
    for argument in expected:
        assert argument in arguments, argument
    assert arguments[-1] == "-x"  # after --, unchanged
    assert not any(a.startswith("--model-cache") or a.startswith("--coqa-data") for a in arguments)  # unset


def test_options_left_out_are_not_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    arguments = _pytest_arguments(monkeypatch, ["run", "properties", "--suites-dir", str(REPO / "suites")])
    assert arguments == [str(REPO / "suites" / "properties"), f"--baseline-dir={REPO / 'baselines'}"]


def test_quantizer_from_a_python_file(tmp_path: Path) -> None:
    path = tmp_path / "pkgless" / "file_quant_for_tests.py"
    path.parent.mkdir()
    path.write_text(MODULE.format(name="file-int4"), encoding="utf-8")
    try:
        registry = load_registry([f"{path}:quantizer"], use_entry_points=False)
    finally:
        sys.modules.pop("file_quant_for_tests", None)
    assert "file-int4" in registry.names and not registry.errors
    with pytest.raises(Exception, match="no such file"):
        resolve_spec(f"{tmp_path / 'absent.py'}:quantizer")


def test_quantizer_from_a_module_in_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd_quant_for_tests.py").write_text(MODULE.format(name="cwd-int4"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        registry = load_registry(["cwd_quant_for_tests:quantizer"], use_entry_points=False)
    finally:
        sys.modules.pop("cwd_quant_for_tests", None)
    assert "cwd-int4" in registry.names and not registry.errors


def test_a_selected_plugin_that_failed_to_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """--impl 'my-*' with the plugin that would provide my-* failing to import: the usage error names the plugin
    and its error instead of only 'matches no implementation'."""
    registry = load_registry(["missing_module_for_fourbit_tests:quantizer"], use_entry_points=False)
    with pytest.raises(UsageError) as excinfo:
        registry.select(["my-*"])
    message = str(excinfo.value)
    assert "--impl 'my-*' matches no implementation" in message
    assert "--quantizer missing_module_for_fourbit_tests:quantizer failed to load" in message
    assert "ModuleNotFoundError" in message


def test_fourbit_run_with_a_failed_selected_plugin_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["run", "properties", "--suites-dir", str(REPO / "suites"), "--quantizer", "missing_module_for_fourbit_tests:q",
         "--impl", "my-*"]
    )  # fmt: skip
    assert code == 2
    assert "missing_module_for_fourbit_tests" in capsys.readouterr().err


def test_the_baseline_folder_is_beside_a_suites_folder_and_never_inside_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suites of a checkout (or the user's own): baselines/ beside them, whatever folder the run starts in (a test
    run from the repository root once wrote into the repository's baseline this way). The suites inside the
    installed package: ./baselines only when it exists, else none, never a folder inside the package."""
    monkeypatch.chdir(REPO)  # has a baselines/ folder of its own
    args = cli._parser().parse_args(["run"])
    checkout = tmp_path / "checkout"
    assert cli._baseline_arguments(args, checkout / "suites") == []  # none beside these suites: the plugin's default
    (checkout / "baselines").mkdir(parents=True)
    assert cli._baseline_arguments(args, checkout / "suites") == [f"--baseline-dir={checkout / 'baselines'}"]
    installed = Path(cli.__file__).resolve().parent / "_suites"
    assert cli._baseline_arguments(args, installed) == [f"--baseline-dir={REPO / 'baselines'}"]
    monkeypatch.chdir(tmp_path)
    assert cli._baseline_arguments(args, installed) == []
    given = cli._parser().parse_args(["run", "--baseline-dir", "mine"])
    assert cli._baseline_arguments(given, installed) == ["--baseline-dir=mine"]


def test_installed_suites_run_with_their_own_rootdir_and_no_cache() -> None:
    installed = Path(cli.__file__).resolve().parent / "_suites"
    arguments = cli._installed_suites_arguments(installed)
    assert f"--rootdir={installed}" in arguments and "no:cacheprovider" in arguments
    assert cli._installed_suites_arguments(REPO / "suites") == []


def test_workers_become_xdist_s_option_and_refuse_the_timing_suite() -> None:
    run = cli._parser().parse_args(["run", "properties", "agreement", "--workers", "3"])
    assert cli._worker_arguments(run, ["suites/properties", "suites/agreement"]) == ["-n", "3"]
    assert cli._worker_arguments(cli._parser().parse_args(["run"]), ["suites/kernels"]) == []
    with pytest.raises(UsageError) as excinfo:
        cli._worker_arguments(run, ["suites/properties", "suites/kernels"])
    assert str(excinfo.value) == (
        "--workers 3: the kernels suite times code and must not share the CPU with other workers; run "
        "`fourbit run properties --workers 3` and `fourbit run kernels` apart"
    )
    assert cli.main(["run", "kernels", "--workers", "2"]) == 2
