"""The ``fourbit`` command: ``fourbit list`` and ``fourbit run [SUITE...]``, a thin layer over pytest.

Exit codes: 0 all passed; 1 a test failed or a plugin broke; 2 usage error
(unknown suite or implementation, malformed --quantizer), printed as one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.errors import FourbitError, UsageError

__all__ = ["SUITES", "find_suites_dir", "main"]

SUITES = ("properties", "kernels")
"""Suites ``fourbit run`` knows, in the order a bare ``fourbit run`` runs them."""

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fourbit", description="Test and compare 4-bit weight quantizers.")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="implementations, their formats and capabilities, and load errors")
    listing.add_argument("--quantizer", action="append", default=[], metavar="MODULE:ATTR")

    run = commands.add_parser("run", help="run suites (default: all) through pytest")
    run.add_argument("suites", nargs="*", metavar="SUITE", help=f"one of {', '.join(SUITES)}")
    run.add_argument("--impl", action="append", default=[], metavar="NAME", help="glob; repeatable")
    run.add_argument("--quantizer", action="append", default=[], metavar="MODULE:ATTR", help="repeatable")
    run.add_argument("--suites-dir", default=None, metavar="DIR")
    run.epilog = "Arguments after -- go to pytest unchanged, e.g. fourbit run properties -- -x -k exact_zero"
    return parser


def _list(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from harness.plugins import load_registry
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
    if registry.errors:
        console.print(render_load_errors([(e.source, e.error) for e in registry.errors]))
        return EXIT_FAILED
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    import pytest

    suites_dir = find_suites_dir(args.suites_dir)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        raise UsageError(f"unknown suite {', '.join(map(repr, unknown))}, expected one of {', '.join(SUITES)}")
    paths = [str(suites_dir / s) for s in (args.suites or SUITES)]
    pytest_args = list(args.pytest_args)
    argv = [*paths, *(f"--impl={p}" for p in args.impl), *(f"--quantizer={q}" for q in args.quantizer), *pytest_args]
    code = int(pytest.main(argv))
    if code == pytest.ExitCode.USAGE_ERROR:
        return EXIT_USAGE
    return EXIT_OK if code == pytest.ExitCode.OK else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1 :]
    args = _parser().parse_args(argv)
    args.pytest_args = pytest_args
    try:
        return _list(args) if args.command == "list" else _run(args)
    except UsageError as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FourbitError as exc:
        print(f"fourbit: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
