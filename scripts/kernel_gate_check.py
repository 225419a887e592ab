"""How good is the kernels suite's regression gate on this machine? False alarms on an unchanged tree, and
how often a real 1.2x / 1.5x slowdown is caught.

Protocol (each run is a fresh ``pytest suites/kernels`` process; by default the whole default suite):

1. baseline: ``--baseline-runs`` runs with ``--update-baselines`` into a temporary baseline folder (a timing
   baseline folds the per-run median ratios of up to 10 runs; their spread is what later runs are judged by);
2. ``--runs`` rounds; each round runs every scenario once, in turn, so all scenarios see the same stretches of
   machine load: ``unchanged`` (A/A: goal, no run flags anything) and one ``slowed Nx`` scenario per
   ``--slowdowns`` factor, which runs the same tests with one implementation slowed (``--slowed-only`` runs
   only that implementation's cases: faster, but a process that runs one implementation alone times it
   differently) (goal: 1.2x flagged in at least 19 of 20 runs, 1.5x in all). A run is flagged when any case
   regressed or any implementation's aggregate verdict (harness.results.aggregate) regressed;
3. a summary table: per scenario, the runs flagged (by a case, by an implementation verdict) and how the
   gated metrics moved; the implementation verdicts; each gated metric of the slowed implementation; and, from
   the unchanged runs, how far each reference's ratios sat from the baseline and how much they moved from run
   to run.

The slowed implementation keeps its own name (``ref-nf4`` stays ``ref-nf4``, so its baseline entries apply):
this file is also a pytest plugin (``-p kernel_gate_check``, from ``scripts/`` on PYTHONPATH) that, when
``FOURBIT_GATE_SLOWDOWN`` is set, answers the harness's ``pytest_fourbit_replace_quantizer`` hook with a wrapper
whose ops (``--slow-op``, default all) busy-wait until the call has taken ``factor`` times its own CPU time
(the clock the suite gates on).

    .venv/bin/python scripts/kernel_gate_check.py               # 5 baseline runs, 20 rounds; ref-nf4 slowed 1.2x, 1.5x
    .venv/bin/python scripts/kernel_gate_check.py --runs 3 --baseline-runs 2 --impl 'ref-*'   # a quick check
    .venv/bin/python scripts/kernel_gate_check.py --slow-impl bnb-nf4 --slow-op matmul -k "test_matmul"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
SUITE = "suites/kernels/test_kernels.py"
ENV_FACTOR = "FOURBIT_GATE_SLOWDOWN"
ENV_IMPL = "FOURBIT_GATE_SLOW_IMPL"
ENV_OP = "FOURBIT_GATE_SLOW_OP"


# ---------------------------------------------------------------------------------------------- the slowdown


class SlowedQuantizer:
    """``inner`` under the same name, with one op made ``factor`` times slower by busy-waiting after it.

    The wait is relative to the call's own measured time, so the slowdown follows the machine's state the way a
    slower kernel would; a busy wait (not a sleep) keeps the core occupied, as a slower kernel does.
    """

    def __init__(self, inner: Any, op: str, factor: float) -> None:
        self._inner = inner
        self.name = inner.name
        self.spec = inner.spec
        self.capabilities = inner.capabilities
        self.slowed_op = op
        self.factor = factor

    def __repr__(self) -> str:
        return f"SlowedQuantizer({self._inner!r}, op={self.slowed_op!r}, factor={self.factor})"

    def __getattr__(self, attribute: str) -> Any:  # with_block_size, linear, unpack_codes, ...
        return getattr(self._inner, attribute)

    def _call(self, op: str, call: Callable[..., Any], *args: Any) -> Any:
        if self.slowed_op not in (op, "all"):
            return call(*args)
        # CPU time, the clock the suite gates on (harness.timing.clock): the call's own cost, times factor
        start = time.process_time()
        out = call(*args)
        deadline = start + (time.process_time() - start) * self.factor
        while time.process_time() < deadline:
            pass
        return out

    def quantize(self, x: Any) -> Any:
        return self._call("quantize", self._inner.quantize, x)

    def dequantize(self, q: Any) -> Any:
        return self._call("dequantize", self._inner.dequantize, q)

    def matmul(self, x: Any, q: Any) -> Any:
        return self._call("matmul", self._inner.matmul, x, q)


def pytest_fourbit_replace_quantizer(config: Any, quantizer: Any) -> Any:
    """As a pytest plugin (``-p kernel_gate_check``): with FOURBIT_GATE_SLOWDOWN set, the implementation named by
    FOURBIT_GATE_SLOW_IMPL is replaced by a slowed wrapper under its own name (harness.pytest_plugin.selection)."""
    factor = float(os.environ.get(ENV_FACTOR) or 1.0)
    if factor == 1.0 or quantizer.name != os.environ[ENV_IMPL]:
        return None
    return SlowedQuantizer(quantizer, os.environ.get(ENV_OP, "all"), factor)


# ---------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Scenario:
    name: str
    factor: float


@dataclass
class RunRecord:
    scenario: str
    index: int
    exit_code: int
    seconds: float
    gated: list[dict[str, Any]] = field(default_factory=list)  # one per gated result
    aggregates: list[dict[str, Any]] = field(default_factory=list)  # one per implementation verdict
    errors: str = ""

    @property
    def flagged_by_case(self) -> bool:
        return any(result["verdict"] == "regressed" for result in self.gated)

    @property
    def flagged_by_aggregate(self) -> bool:
        return any(result["verdict"] == "regressed" for result in self.aggregates)

    @property
    def flagged(self) -> bool:
        return self.flagged_by_case or self.flagged_by_aggregate

    @property
    def broken(self) -> bool:
        """pytest itself failed (usage error, crash, no results), not a regression verdict."""
        return self.exit_code not in (0, 1) or not self.gated or bool(self.errors)


def _pytest_command(
    args: argparse.Namespace, workdir: Path, json_path: Path, *, update: bool, slowed_only: bool = False
) -> list[str]:
    command = [
        sys.executable, "-m", "pytest", SUITE,
        "-q", "-p", "no:cacheprovider", "-p", "kernel_gate_check",
        "--fourbit-no-entry-points",
        "--baseline-dir", str(workdir / "baselines"),
        "--fourbit-json", str(json_path),
    ]  # fmt: skip
    if args.k:
        command += ["-k", args.k]
    for impl in [args.slow_impl] if slowed_only else args.impl:
        command += ["--impl", impl]
    for spec in args.quantizer:
        command += ["--quantizer", spec]
    command += args.pytest_arg
    if args.threads is not None:
        command += ["--fourbit-kernel-threads", str(args.threads)]
    if update:
        command.append("--update-baselines")
    return command


def _environment(args: argparse.Namespace, factor: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.pop(ENV_FACTOR, None)
    if factor != 1.0:
        env.update({ENV_FACTOR: repr(factor), ENV_IMPL: args.slow_impl, ENV_OP: args.slow_op})
    return env


def _add_results(record: RunRecord, results: Sequence[Any]) -> None:
    """The run's gated timings and implementation verdicts, as the summary tables read them."""
    for result in results:
        if result.kind == "timing":  # the gated metrics
            record.gated.append(
                {
                    "case": result.case,
                    "implementation": result.implementation,
                    "metric": result.metric,
                    "value": result.value,
                    "baseline": result.baseline,
                    "verdict": result.verdict,
                    "rounds": len(result.samples),
                    "retimed": bool(result.extra.get("retimed")),
                    **_fresh_rerun(result),
                    "load_average_1m": result.extra.get("load_average_1m"),
                }
            )
        elif result.kind == "aggregate":  # an implementation's median change over its cases
            record.aggregates.append(
                {
                    "implementation": result.implementation,
                    "metric": result.metric,
                    "value": result.value,
                    "verdict": result.verdict,
                    "cases": len(result.samples),
                    **_fresh_rerun(result),
                }
            )


def _fresh_rerun(result: Any) -> dict[str, Any]:
    """Whether the result was measured again in a fresh process (harness.timing.reruns), and its first verdict."""
    first = result.extra.get("first_process")
    return {
        "fresh_rerun": bool(result.extra.get("rerun_in_fresh_process")),
        "first_verdict": first.get("verdict") if isinstance(first, dict) else None,
    }


def _reruns_cell(runs: Sequence[RunRecord]) -> str:
    """Results measured again in a fresh process, and how many of those went from regressed to not regressed."""
    again = [g for r in runs for g in (*r.gated, *r.aggregates) if g.get("fresh_rerun")]
    cleared = sum(g["first_verdict"] == "regressed" and g["verdict"] != "regressed" for g in again)
    return f"{len(again)} ({cleared} cleared)"


def _inconclusive_cell(runs: Sequence[RunRecord]) -> str:
    """Results (gated cases and implementation verdicts) that ended inconclusive, and in how many runs: they pass
    a default run and fail one under --fourbit-strict."""
    counts = [sum(g["verdict"] == "inconclusive" for g in (*r.gated, *r.aggregates)) for r in runs]
    return f"{sum(counts)} ({sum(c > 0 for c in counts)} runs)"


def rejudged_records(
    folder: Path, suite: str, metric: str, *, first_process: bool = False
) -> tuple[list[RunRecord], list[Scenario]]:
    """Result files of an earlier gate check (``<scenario>-<index>.json``, as run_once names them), with the
    implementation verdicts formed again by the current harness.results.aggregate: what the current rule would have
    said about those runs. Per-case verdicts are kept as recorded, and so is a verdict that was formed from a
    re-run in a fresh process (harness.timing.reruns): the re-run's measurements are in it, not in the saved cases.
    With ``first_process`` such a verdict is formed again too, from the first process's cases: what the rule
    says before any re-run."""
    from harness.results.aggregate import aggregate_timing
    from harness.results.files import load_results

    records: list[RunRecord] = []
    scenarios: dict[str, Scenario] = {}
    for path in sorted(folder.glob("*-*.json")):
        stem, _, index = path.stem.rpartition("-")
        name = stem.replace("_", " ")
        if name == "baseline" or not index.isdigit():
            continue
        factor = float(name.removeprefix("slowed ").removesuffix("x")) if name.startswith("slowed ") else 1.0
        scenarios.setdefault(name, Scenario(name, factor))
        _, results = load_results(path)
        measured = [r for r in results if r.kind != "aggregate"]
        rerun = {
            (r.implementation, r.metric): r
            for r in results
            if r.kind == "aggregate" and r.extra.get("rerun_in_fresh_process") and not first_process
        }
        formed = [rerun.get((a.implementation, a.metric), a) for a in aggregate_timing(measured, suite, metric)]
        record = RunRecord(name, int(index), 0, math.nan)
        _add_results(record, [*measured, *formed])
        records.append(record)
    order = sorted(scenarios.values(), key=lambda scenario: scenario.factor)
    return records, order


def run_once(args: argparse.Namespace, workdir: Path, scenario: Scenario, index: int, *, update: bool) -> RunRecord:
    json_path = workdir / "runs" / f"{scenario.name.replace(' ', '_')}-{index:02d}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    completed = subprocess.run(
        _pytest_command(
            args, workdir, json_path, update=update, slowed_only=scenario.factor != 1.0 and args.slowed_only
        ),
        cwd=REPO,
        env=_environment(args, scenario.factor),
        capture_output=True,
        text=True,
        check=False,
    )
    record = RunRecord(scenario.name, index, completed.returncode, time.perf_counter() - started)
    if not json_path.exists():
        record.errors = (completed.stdout + completed.stderr)[-3000:]
        return record
    from harness.results.files import load_results

    _, results = load_results(json_path)
    _add_results(record, results)
    if record.exit_code not in (0, 1):
        record.errors = (completed.stdout + completed.stderr)[-3000:]
    return record


# ---------------------------------------------------------------------------------------------- summary


def _change(entry: dict[str, Any]) -> float | None:
    baseline = entry["baseline"]
    return entry["value"] / baseline - 1.0 if baseline else None


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def summary_table(records: Sequence[RunRecord], scenarios: Sequence[Scenario], slow_impl: str) -> str:
    """Markdown: per scenario the runs flagged and how the gated metrics moved against the baseline; then, for
    the slowed scenarios, each gated metric of the slowed implementation."""
    lines = [
        "| scenario | runs | runs flagged | by a case | by an implementation | gated metrics compared | regressed | "
        "inconclusive (runs) | retimed | fresh-process re-runs | change: median, 1st-99th pct, max | run time | "
        "load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        runs = [r for r in records if r.scenario == scenario.name and not r.broken]
        if not runs:
            continue
        entries = [g for r in runs for g in r.gated if g["baseline"]]
        changes = sorted(c for c in (_change(g) for g in entries) if c is not None)
        spread = (
            f"{_pct(statistics.median(changes))}, {_pct(_quantile(changes, 0.01))} to "
            f"{_pct(_quantile(changes, 0.99))}, {_pct(changes[-1])}"
            if changes
            else "-"
        )
        loads = [g["load_average_1m"] for g in entries if g["load_average_1m"] is not None]
        load = f"{statistics.median(loads):.1f} [{min(loads):.1f}, {max(loads):.1f}]" if loads else "-"
        retimed = sum(g["retimed"] for g in entries)
        lines.append(
            f"| {scenario.name} | {len(runs)} | {sum(r.flagged for r in runs)} of {len(runs)} | "
            f"{sum(r.flagged_by_case for r in runs)} | {sum(r.flagged_by_aggregate for r in runs)} | {len(entries)} | "
            f"{sum(g['verdict'] == 'regressed' for g in entries)} | {_inconclusive_cell(runs)} | {retimed} | "
            f"{_reruns_cell(runs)} | {spread} | {_seconds(runs)} | {load} |"
        )
    lines += [
        "",
        "Implementation verdicts (median change over an implementation's cases, relative to the run's other "
        "implementations; harness.results.aggregate)",
        "",
    ]
    lines += [
        "| scenario | implementation | regressed | median change: median [min, max] |",
        "|---|---|---|---|",
    ]
    for scenario in scenarios:
        runs = [r for r in records if r.scenario == scenario.name and not r.broken]
        aggregates = [a for r in runs for a in r.aggregates]
        for label, chosen in (
            (slow_impl, [a for a in aggregates if a["implementation"] == slow_impl]),
            ("every other", [a for a in aggregates if a["implementation"] != slow_impl]),
        ):
            if not chosen:
                continue
            changes = [a["value"] - 1.0 for a in chosen]
            lines.append(
                f"| {scenario.name} | {label} | {sum(a['verdict'] == 'regressed' for a in chosen)} of {len(chosen)} | "
                f"{_pct(statistics.median(changes))} [{_pct(min(changes))}, {_pct(max(changes))}] |"
            )
    lines += ["", f"Gated metrics of {slow_impl}, runs regressed of runs, change vs baseline: median [min, max]", ""]
    lines += ["| scenario | metric | regressed | change |", "|---|---|---|---|"]
    for scenario in scenarios:
        runs = [r for r in records if r.scenario == scenario.name and not r.broken]
        keys = sorted({(g["case"], g["metric"]) for r in runs for g in r.gated if g["implementation"] == slow_impl})
        for case, metric in keys:
            entries = [
                g
                for r in runs
                for g in r.gated
                if (g["implementation"], g["case"], g["metric"]) == (slow_impl, case, metric)
            ]
            changes = [c for c in (_change(g) for g in entries) if c is not None]
            change = (
                f"{_pct(statistics.median(changes))} [{_pct(min(changes))}, {_pct(max(changes))}]" if changes else "-"
            )
            regressed = sum(g["verdict"] == "regressed" for g in entries)
            lines.append(f"| {scenario.name} | {case} {metric} | {regressed} of {len(entries)} | {change} |")
    return "\n".join(lines)


def reference_table(records: Sequence[RunRecord]) -> str:
    """Markdown, from the unchanged runs: per implementation and gated metric, how far its cases sat from the
    baseline over all runs (the median over cases of |median change over runs|: what the baseline's session
    left behind) and how much they moved from run to run (median over cases of the standard deviation of the
    log change). The reference a suite aggregates over should be the one with the smaller numbers."""
    changes: dict[tuple[str, str, str], list[float]] = {}
    for record in records:
        if record.scenario != "unchanged" or record.broken:
            continue
        for g in record.gated:
            if g["baseline"] and g["value"] > 0:
                key = (g["implementation"], g["metric"], g["case"])
                changes.setdefault(key, []).append(math.log(g["value"] / g["baseline"]))
    metrics = sorted({metric for _, metric, _ in changes})
    header = " | ".join(f"{m}: offset, run-to-run sd" for m in metrics)
    lines = [f"| implementation | {header} |", "|---|" + "---|" * len(metrics)]
    for implementation in sorted({impl for impl, _, _ in changes}):
        cells = []
        for metric in metrics:
            per_case = [v for (i, m, _), v in changes.items() if (i, m) == (implementation, metric)]
            offsets = [abs(statistics.median(v)) for v in per_case]
            sds = [statistics.stdev(v) for v in per_case if len(v) > 1]
            cells.append(f"{statistics.median(offsets):.1%}, {statistics.median(sds):.1%}" if offsets and sds else "-")
        lines.append(f"| {implementation} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _seconds(runs: Sequence[RunRecord]) -> str:
    seconds = [r.seconds for r in runs if math.isfinite(r.seconds)]
    return f"{statistics.median(seconds):.1f} s" if seconds else "-"


def _quantile(values: Sequence[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def baseline_summary(workdir: Path) -> str:
    """How many timing entries the baseline has, from how many runs, and the spread they will be judged by."""
    from harness.results.baselines import load_baseline
    from harness.results.stats import fold_runs

    files = sorted((workdir / "baselines").glob("*.json"))
    if not files:
        return "no baseline written"
    baseline = load_baseline(files[0])
    timing = [entry for entry in baseline.entries.values() if entry.kind == "timing" and entry.runs]
    if not timing:
        return "no timing entries"
    spreads = sorted(fold_runs(entry.runs)[1] for entry in timing)
    runs = sorted(len(entry.runs) for entry in timing)
    return (
        f"baseline {files[0].name}: {len(timing)} timing entries folded from {runs[0]}-{runs[-1]} runs; run-to-run "
        f"spread pooled with the prior: median {statistics.median(spreads):.1%}, max {spreads[-1]:.1%}"
    )


# ---------------------------------------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per scenario (default 20)")
    parser.add_argument("--baseline-runs", type=int, default=5, help="runs folded into the baseline (default 5)")
    parser.add_argument(
        "--impl", action="append", default=[], help="implementations to run (repeatable; default: every one)"
    )
    parser.add_argument("-k", default="", help="pytest -k expression selecting cases (default: every case)")
    parser.add_argument(
        "--slowdowns", default="1.2,1.5", help="comma-separated slowdown factors, one scenario each (default 1.2,1.5)"
    )
    parser.add_argument("--slow-impl", default="ref-nf4", help="the implementation slowed (default ref-nf4)")
    parser.add_argument(
        "--slow-op",
        default="all",
        choices=("all", "quantize", "dequantize", "matmul"),
        help="the op slowed (default: every op of --slow-impl)",
    )
    parser.add_argument(
        "--slowed-only",
        action="store_true",
        help="slowed scenarios run only --slow-impl (faster; default: the same tests as the unchanged runs, since a "
        "process that runs one implementation alone times it differently: the copy reference came out up to 35%% "
        "slower there)",
    )
    parser.add_argument(
        "--quantizer", action="append", default=[], help="passed on to pytest (a third-party MODULE:ATTR)"
    )
    parser.add_argument(
        "--pytest-arg",
        action="append",
        default=[],
        help="passed on to pytest, e.g. --pytest-arg=--fourbit-full-kernels",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="--fourbit-kernel-threads for the runs (default: the suite's, 1; 0 = torch's own)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep baselines and result files here")
    parser.add_argument(
        "--baseline-dir",
        type=Path,
        default=None,
        help="judge against a copy of this folder's baselines (e.g. the shipped baselines/) instead of writing new "
        "ones; no baseline runs",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every run's gated results here")
    parser.add_argument(
        "--rejudge",
        type=Path,
        default=None,
        metavar="RUNS_DIR",
        help="run nothing: read an earlier check's result files (WORKDIR/runs) and print the tables, with the "
        "implementation verdicts formed by the current rule",
    )
    parser.add_argument(
        "--first-process",
        action="store_true",
        help="with --rejudge: form every implementation verdict from the first process's cases, also those that "
        "were re-run in a fresh process (what the rule says before any re-run)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.baseline_runs < 1:
        parser.error("--runs and --baseline-runs must be at least 1")
    if args.baseline_dir is not None and not any(args.baseline_dir.glob("*.json")):
        parser.error(f"--baseline-dir {args.baseline_dir}: no baseline files (*.json) there")
    try:
        args.factors = [float(f) for f in args.slowdowns.split(",") if f.strip()]
    except ValueError:
        parser.error(f"--slowdowns={args.slowdowns!r}, expected numbers such as 1.2,1.5")
    return args


def _progress(record: RunRecord) -> None:
    gated = ", ".join(
        f"{g['metric']} {g['value']:.4g}"
        + (f" ({_pct(c)})" if (c := _change(g)) is not None else "")
        + (f" {g['verdict']}" if g["verdict"] not in (None, "ok") else "")
        + (" retimed" if g["retimed"] else "")
        for g in record.gated
    )
    aggregates = ", ".join(
        f"{a['implementation']} {_pct(a['value'] - 1.0)}{' REGRESSED' if a['verdict'] == 'regressed' else ''}"
        for a in record.aggregates
    )
    gated = f"implementations: {aggregates}; cases: {gated}" if aggregates else gated
    state = "BROKEN" if record.broken else ("FLAGGED" if record.flagged else "ok")
    print(f"  {record.scenario:>12} #{record.index:02d} {state:7} {record.seconds:5.1f} s  {gated}", flush=True)
    if record.errors:
        print(record.errors, file=sys.stderr, flush=True)


def print_tables(records: Sequence[RunRecord], scenarios: Sequence[Scenario], slow_impl: str) -> None:
    print(summary_table(records, scenarios, slow_impl))
    print()
    print("Unchanged runs against the baseline, per implementation (median over its cases):")
    print()
    print(reference_table(records))
    print()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.rejudge is not None:
        judged, judged_scenarios = rejudged_records(
            args.rejudge, "kernels", "over_dense", first_process=args.first_process
        )
        if not judged:
            print(f"--rejudge {args.rejudge}: no result files (<scenario>-<index>.json) there", file=sys.stderr)
            return 2
        print(f"{len(judged)} runs read from {args.rejudge}; implementation verdicts formed again")
        print_tables(judged, judged_scenarios, args.slow_impl)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kernel-gate-"))
    if (workdir / "baselines").exists():
        shutil.rmtree(workdir / "baselines")
    scenarios = [Scenario("unchanged", 1.0)] + [Scenario(f"slowed {f:g}x", f) for f in args.factors]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"kernel gate check: impl {', '.join(args.impl) or 'all'}; -k {args.k!r}; slowed: {args.slow_impl} "
        f"{args.slow_op}; "
        f"{args.baseline_runs} baseline runs, {args.runs} rounds of {len(scenarios)} scenarios; "
        f"threads {'the suite default' if args.threads is None else args.threads}; slowed runs: "
        f"{'only ' + args.slow_impl if args.slowed_only else 'the same tests'}; load average {load:.2f}; "
        f"workdir {workdir}",
        flush=True,
    )
    started = time.perf_counter()
    records: list[RunRecord] = []
    if args.baseline_dir is not None:
        shutil.copytree(args.baseline_dir, workdir / "baselines")
        print(f"baseline: a copy of {args.baseline_dir}", flush=True)
    else:
        print("baseline runs (--update-baselines):", flush=True)
    for index in range(0 if args.baseline_dir is not None else args.baseline_runs):
        record = run_once(args, workdir, Scenario("baseline", 1.0), index, update=True)
        _progress(record)
        if record.broken:
            print("a baseline run failed; stopping", file=sys.stderr)
            return 2
    print(baseline_summary(workdir), flush=True)
    print("compared runs:", flush=True)
    for index in range(args.runs):
        for scenario in scenarios:
            record = run_once(args, workdir, scenario, index, update=False)
            records.append(record)
            _progress(record)
    elapsed = time.perf_counter() - started
    broken = sum(r.broken for r in records)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print_tables(records, scenarios, args.slow_impl)
    print(
        f"{len(records) + (0 if args.baseline_dir else args.baseline_runs)} runs in {elapsed / 60:.1f} min "
        f"({broken} broken); "
        f"load average at the end {load_end:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in records], indent=1), encoding="utf-8")
    return 0 if not broken else 2


if __name__ == "__main__":
    sys.exit(main())
