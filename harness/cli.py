"""The ``fourbit`` command, a thin layer over pytest and the result files.

``fourbit list``; ``fourbit run [SUITE...]``; ``fourbit baseline update [SUITE...]``;
``fourbit report RESULTS.json``; ``fourbit compare OLD.json NEW.json``.

Exit codes: 0 all passed; 1 a test failed, a metric regressed or a plugin broke; 2 usage error
(unknown suite or implementation, malformed --quantizer, unreadable or corrupt baseline or result file),
printed as one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import FourbitError, StoredFileError, UsageError

__all__ = ["SUITES", "find_suites_dir", "main"]

SUITES = ("properties", "agreement", "kernels", "accuracy")
"""Suites ``fourbit run`` knows, in the order a bare ``fourbit run`` runs them (those present in the suites folder)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def find_suites_dir(explicit: str | None = None) -> Path:
    """The suites folder: --suites-dir, $FOURBIT_SUITES, ./suites, or the one beside the installed package."""
    if explicit:
        if not (Path(explicit) / "properties").is_dir():
            raise UsageError(f"--suites-dir {explicit!r} has no properties/ suite, expected the repository's suites/")
        return Path(explicit)
    beside_package = str(Path(__file__).resolve().parents[1] / "suites")
    for candidate in (os.environ.get("FOURBIT_SUITES"), "suites", beside_package):
        if candidate and (Path(candidate) / "properties").is_dir():
            return Path(candidate)
    raise UsageError("cannot find the suites/ folder; run from the repository root or pass --suites-dir DIR")


def _add_run_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("suites", nargs="*", metavar="SUITE", help=f"one of {', '.join(SUITES)} (default: all)")
    command.add_argument("--impl", action="append", default=[], metavar="NAME", help="glob; repeatable")
    command.add_argument("--quantizer", action="append", default=[], metavar="MODULE:ATTR", help="repeatable")
    command.add_argument("--suites-dir", default=None, metavar="DIR")
    command.add_argument("--baseline-dir", default=None, metavar="DIR", help="default: baselines/ beside suites/")
    command.add_argument("--strict", action="store_true", help="new metrics and missing baseline entries fail")
    command.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    command.add_argument("--md", default=None, metavar="PATH", help="write a Markdown summary")
    command.add_argument("--junit", default=None, metavar="PATH", help="write a JUnit XML report")
    command.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots")
    command.epilog = "Arguments after -- go to pytest unchanged, e.g. fourbit run properties -- -x -k exact_zero"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fourbit", description="Test and compare 4-bit weight quantizers.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="implementations, their formats and capabilities, and load errors")
    listing.add_argument("--quantizer", action="append", default=[], metavar="MODULE:ATTR")

    run = commands.add_parser("run", help="run suites (default: all) through pytest, compared with the baseline")
    _add_run_options(run)
    run.add_argument("--update-baselines", action="store_true", help="write the metrics into the baseline file")

    baseline = commands.add_parser("baseline", help="manage stored baselines")
    baseline_commands = baseline.add_subparsers(dest="baseline_command", required=True)
    update = baseline_commands.add_parser("update", help="run suites and write their metrics into the baseline")
    _add_run_options(update)

    report = commands.add_parser("report", help="render a saved --json result file")
    report.add_argument("results", metavar="RESULTS.json")

    compare = commands.add_parser("compare", help="compare two saved --json result files, side by side")
    compare.add_argument("old", metavar="OLD.json")
    compare.add_argument("new", metavar="NEW.json")
    return parser


def _list(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from harness.registry import load_registry
    from harness.report import render_load_errors

    _SHORT_DTYPE = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
    registry = load_registry(args.quantizer)
    table = Table(title="fourbit implementations")
    for column in ("name", "format", "block", "scale", "double quant", "packing", "dtypes", "ops", "source"):
        table.add_column(column)
    for impl in registry.implementations.values():
        spec, caps = impl.quantizer.spec, impl.quantizer.capabilities
        dq = "-" if spec.double_quant is None else f"{spec.double_quant.bits}-bit/{spec.double_quant.block_size}"
        dtypes = ",".join(_SHORT_DTYPE.get(d, str(d).removeprefix("torch.")) for d in caps.dtypes)
        ops = ",".join(op for op, flag in (("matmul", caps.has_matmul), ("module", caps.has_module)) if flag) or "-"
        blocks = str(spec.block_size)
        if caps.block_sizes:
            blocks += f" ({min(caps.block_sizes)}-{max(caps.block_sizes)})"
        table.add_row(impl.name, spec.format, blocks, spec.scale, dq, spec.packing or "-", dtypes, ops, impl.source)
    console = Console(width=max(Console().width, 150))
    console.print(table)
    if registry.unavailable:
        unavailable = Table(title="unavailable here (their tests skip with this reason)", title_style="yellow")
        unavailable.add_column("name", style="bold")
        unavailable.add_column("reason")
        for name, reason in registry.unavailable.items():
            unavailable.add_row(name, Text(reason))
        console.print(unavailable)
    if registry.errors:
        console.print(render_load_errors([(e.source, e.error) for e in registry.errors]))
        return EXIT_FAILED
    return EXIT_OK


def _run(args: argparse.Namespace, *, update_baselines: bool = False) -> int:
    import pytest

    suites_dir = find_suites_dir(args.suites_dir)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        raise UsageError(f"unknown suite {', '.join(map(repr, unknown))}, expected one of {', '.join(SUITES)}")
    absent = [s for s in args.suites if not (suites_dir / s).is_dir()]
    if absent:
        raise UsageError(f"suite {', '.join(map(repr, absent))} is not in {str(suites_dir)!r}")
    paths = [str(suites_dir / s) for s in (args.suites or [s for s in SUITES if (suites_dir / s).is_dir()])]
    baseline_dir = args.baseline_dir or str(suites_dir.resolve().parent / "baselines")
    options = [
        *(f"--impl={p}" for p in args.impl),
        *(f"--quantizer={q}" for q in args.quantizer),
        f"--baseline-dir={baseline_dir}",
        *(["--update-baselines"] if update_baselines or getattr(args, "update_baselines", False) else []),
        *(["--fourbit-strict"] if args.strict else []),
        *([f"--fourbit-json={args.json}"] if args.json else []),
        *([f"--fourbit-md={args.md}"] if args.md else []),
        *([f"--junitxml={args.junit}"] if args.junit else []),
        *([f"--fourbit-plots={args.plots}"] if args.plots else []),
    ]
    code = int(pytest.main([*paths, *options, *args.pytest_args]))
    if code == pytest.ExitCode.USAGE_ERROR:
        return EXIT_USAGE
    return EXIT_OK if code == pytest.ExitCode.OK else EXIT_FAILED


def _console() -> Any:
    from rich.console import Console

    return Console(width=max(Console().width, 120))


def _report(args: argparse.Namespace) -> int:
    """A saved run rendered as at its end, following the suites' declarations stored in the file."""
    from harness.report import RunSummary, render_run
    from harness.results.files import load_run

    run = load_run(args.results)
    console = _console()
    commit = (run.environment.get("git") or {}).get("commit", "?")
    torch_version = (run.environment.get("libraries") or {}).get("torch", "?")
    console.print(f"{args.results}: {len(run.results)} results; torch {torch_version}, commit {commit}", markup=False)
    console.print(render_run(RunSummary(results=run.results, suites=run.suites)))
    return EXIT_FAILED if any(r.verdict == "regressed" for r in run.results) else EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from harness.report import render_comparison
    from harness.results.compare import compare_runs
    from harness.results.files import load_run

    old = load_run(args.old)
    new = load_run(args.new)
    compared = compare_runs(old.results, new.results)
    _console().print(render_comparison(compared, old_label=args.old, new_label=args.new, suites=new.suites))
    return EXIT_FAILED if any(r.verdict == "regressed" for r in compared) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    args.pytest_args = pytest_args
    try:
        if args.command == "list":
            return _list(args)
        if args.command == "run":
            return _run(args)
        if args.command == "baseline":
            return _run(args, update_baselines=True)
        if args.command == "report":
            return _report(args)
        return _compare(args)
    except (UsageError, StoredFileError) as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FourbitError as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
