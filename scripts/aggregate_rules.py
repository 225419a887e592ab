"""Which implementation-verdict rule separates an unchanged tree from a slowed implementation best? Reads the
result files of earlier gate checks (scripts/kernel_gate_check.py, ``WORKDIR/runs``) and forms each run's
implementation verdicts (harness.results.aggregate, sign test and all) from the first process's cases under three
rules:

- ``baseline``: each implementation against its baseline alone (the rule before peers);
- ``all peers``: relative to the run's other implementations (the current rule);
- ``family``: relative to the other implementations of its family (the name before the first ``-``: ``ref``,
  ``bnb``, ``torchao``), where it has at least two; otherwise to all of them.

Per check, scenario and rule it prints the runs flagged by any implementation verdict, how often the slowed
implementation regressed, and its change (median [min, max]). Verdicts that the check formed again in a fresh
process are formed here from the first process, since the re-run's cases are not in the files.

    .venv/bin/python scripts/aggregate_rules.py /tmp/gatework7/runs /tmp/gatework8/runs
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.results.aggregate import aggregate_timing
from harness.results.files import load_results
from harness.results.records import Result

SUITE, METRIC = "kernels", "over_dense"


def _family(implementation: str) -> str:
    return implementation.split("-", 1)[0]


def verdicts_by_baseline(results: list[Result]) -> list[Result]:
    implementations = dict.fromkeys(r.implementation for r in results)
    return [
        a
        for impl in implementations
        for a in aggregate_timing([r for r in results if r.implementation == impl], SUITE, METRIC)
    ]


def verdicts_by_all_peers(results: list[Result]) -> list[Result]:
    return aggregate_timing(results, SUITE, METRIC)


def verdicts_by_family(results: list[Result]) -> list[Result]:
    everyone = {a.implementation: a for a in aggregate_timing(results, SUITE, METRIC)}
    formed = []
    for impl, fallback in everyone.items():
        members = {r.implementation for r in results if _family(r.implementation) == _family(impl)}
        family = {
            a.implementation: a
            for a in aggregate_timing([r for r in results if r.implementation in members], SUITE, METRIC)
        }
        own = family.get(impl)
        formed.append(own if own is not None and own.extra.get("peers") else fallback)
    return formed


RULES: dict[str, Callable[[list[Result]], list[Result]]] = {
    "baseline": verdicts_by_baseline,
    "all peers": verdicts_by_all_peers,
    "family": verdicts_by_family,
}


def compare(folders: Sequence[Path], slow_impl: str) -> str:
    lines = [
        "| check | scenario | rule | runs | runs flagged | slowed implementation regressed "
        "| its change: median [min, max] |",
        "|---|---|---|---|---|---|---|",
    ]
    for folder in folders:
        runs: dict[str, list[list[Result]]] = {}
        for path in sorted(folder.glob("*-*.json")):
            stem, _, index = path.stem.rpartition("-")
            if not index.isdigit() or stem == "baseline":
                continue
            _, results = load_results(path)
            runs.setdefault(stem.replace("_", " "), []).append([r for r in results if r.kind != "aggregate"])
        for scenario, measured in sorted(runs.items(), key=lambda item: (item[0] != "unchanged", item[0])):
            for rule, form in RULES.items():
                formed = [form(results) for results in measured]
                flagged = sum(any(a.verdict == "regressed" for a in verdicts) for verdicts in formed)
                slowed = [a for verdicts in formed for a in verdicts if a.implementation == slow_impl]
                changes = [a.value - 1 for a in slowed]
                spread = (
                    f"{statistics.median(changes):+.1%} [{min(changes):+.1%}, {max(changes):+.1%}]" if changes else "-"
                )
                regressed = sum(a.verdict == "regressed" for a in slowed)
                lines.append(
                    f"| {folder.parent.name} | {scenario} | {rule} | {len(measured)} | {flagged} | "
                    f"{regressed} of {len(slowed)} | {spread} |"
                )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("runs", type=Path, nargs="+", help="gate-check result folders (WORKDIR/runs)")
    parser.add_argument("--slow-impl", default="ref-nf4", help="the implementation the check slowed")
    args = parser.parse_args(argv)
    missing = [str(folder) for folder in args.runs if not any(folder.glob("*-*.json"))]
    if missing:
        print(f"no gate-check result files (<scenario>-<index>.json) in: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(compare(args.runs, args.slow_impl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
