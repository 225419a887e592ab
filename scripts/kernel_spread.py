"""Run-to-run spread of the kernels suite's gated ratios on this machine: what the timing gate has to beat.

Runs ``pytest suites/kernels`` ``--runs`` times (fresh processes, one after another; extra arguments after
``--`` go to pytest, e.g. ``-- --fourbit-kernel-threads 0 --impl 'bnb-*'``), or reads result files saved
before (``--from DIR``), and prints, per gated metric and op, the standard deviation across runs of the log
of each case's median ratio (about the relative spread): the median over cases and the worst case. A
timing gate with a 10% minimum effect needs about 3% or less here to catch a 1.2x slowdown every time
without false alarms (see harness/results/stats.py: compare_timing).

    .venv/bin/python scripts/kernel_spread.py --runs 6 --keep /tmp/spread
    .venv/bin/python scripts/kernel_spread.py --from /tmp/spread
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_suite(folder: Path, runs: int, pytest_args: Sequence[str]) -> list[Path]:
    paths = []
    for index in range(runs):
        path = folder / f"run-{index:02d}.json"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "suites/kernels",
            "-q",
            "-p",
            "no:cacheprovider",
            "--fourbit-json",
            str(path),
            *pytest_args,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
        print(
            f"run {index + 1}/{runs}: exit {done.returncode}, {time.perf_counter() - start:.0f} s: {tail}", flush=True
        )
        paths.append(path)
    return paths


def spread_table(paths: Sequence[Path]) -> str:
    from harness.results.files import load_results

    values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    threads: set[object] = set()
    for path in paths:
        if not path.is_file():
            continue
        _, results = load_results(path)
        for result in results:
            if result.kind == "timing" and result.value and result.value > 0:
                values[(result.metric, result.case, result.implementation)].append(math.log(result.value))
                threads.add(result.extra.get("threads"))
    groups: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    for (metric, case, impl), logs in values.items():
        if len(logs) >= 3:
            op = case.split("-")[0] + ("-small" if "256x1024" in case else "")
            groups[(metric, op)].append((statistics.stdev(logs), f"{impl} {case}"))
    lines = [
        f"{len(paths)} runs, threads {sorted(map(str, threads))}; sd of log(median ratio) across runs",
        f"{'metric':18s} {'op':16s} {'cases':>5s} {'median sd':>9s} {'90th pct':>8s} {'worst':>7s}  worst case",
    ]
    for (metric, op), rows in sorted(groups.items()):
        sds = sorted(sd for sd, _ in rows)
        worst_sd, worst_case = max(rows)
        p90 = sds[min(len(sds) - 1, int(0.9 * len(sds)))]
        lines.append(
            f"{metric:18s} {op:16s} {len(rows):5d} {100 * statistics.median(sds):8.1f}% {100 * p90:7.1f}% "
            f"{100 * worst_sd:6.1f}%  {worst_case}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="runs of the suite (default 6)")
    parser.add_argument("--from", dest="source", type=Path, default=None, help="read run-*.json from DIR instead")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs' result files into DIR")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args(argv)
    if args.source is not None:
        paths = sorted(args.source.glob("run-*.json"))
        if not paths:
            parser.error(f"--from {args.source}: no run-*.json files there")
    else:
        if args.runs < 3:
            parser.error(f"--runs={args.runs}, expected at least 3 (a spread needs several runs)")
        folder = args.keep or Path(tempfile.mkdtemp(prefix="fourbit-spread-"))
        folder.mkdir(parents=True, exist_ok=True)
        paths = run_suite(folder, args.runs, args.pytest_args)
    print(spread_table(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
