"""Which reference moves with a kernel when a neighbour loads the machine? A probe for the kernels suite's gate.

Times a few kernels on one torch thread (as the suite does, freed memory kept) in interleaved rounds against
four references: the suite's two (``copy``: a copy of the bytes the kernel must move; ``dense``: F.linear at
batch 16 on the same weight) and two candidates: ``weight_copy``, a copy of a dense weight's bytes (read and
write rows x cols float32), which is the traffic a kernel that materialises the weight really has, and
``lookup``, a frozen pure-torch dequantize (table lookup and block scales) like the pure-torch references. Three
phases in one process: quiet, then with a neighbour process on the other core streaming memory (copies of
256 MiB tensors), then with a neighbour that only computes (a Python busy loop). For each kernel and
reference it prints the median per-round ratio kernel/reference per phase and its change from the quiet
phase: a reference tracks the kernel when that change stays near zero.

    .venv/bin/python scripts/reference_tracking_probe.py            # about 2 minutes
    .venv/bin/python scripts/reference_tracking_probe.py --seconds 8
    .venv/bin/python scripts/reference_tracking_probe.py --small --cold   # 256x1024, caches evicted per call
    for i in 1 2 3 4; do .venv/bin/python scripts/reference_tracking_probe.py --quiet-only; done   # per process
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

NEIGHBOURS = {
    "memory": "import torch\ntorch.set_num_threads(1)\na=torch.ones(1<<28,dtype=torch.uint8)\nb=torch.empty_like(a)\n"
    "while True:\n    b.copy_(a)\n",
    "compute": "while True:\n    sum(i*i for i in range(10000))\n",
}
CASES = (
    ("ref-nf4", "dequantize", (4096, 4096)),
    ("ref-nf4", "matmul", (4096, 4096)),
    ("ref-fp4", "matmul", (256, 1024)),
    ("bnb-nf4", "dequantize", (4096, 4096)),
    ("bnb-nf4", "matmul", (4096, 4096)),
)
SMALL_CASES = (
    ("bnb-fp4", "quantize", (256, 1024)),
    ("bnb-nf4", "quantize", (256, 1024)),
    ("ref-nf4", "quantize", (256, 1024)),
    ("torchao-nf4", "matmul", (256, 1024)),
    ("ref-nf4", "dequantize", (256, 1024)),
)


def _calls(
    cases: Sequence[tuple[str, str, tuple[int, int]]],
) -> list[tuple[str, Callable[[], object], dict[str, Callable[[], object]], int]]:
    import torch
    import torch.nn.functional as F

    from harness.registry import load_registry
    from harness.timing.clock import copy_reference

    registry = load_registry()
    calls: list[tuple[str, Callable[[], object], dict[str, Callable[[], object]], int]] = []
    for name, op, (rows, cols) in cases:
        if name not in registry.implementations:
            continue
        quantizer = registry.implementations[name].quantizer
        weight = torch.randn((rows, cols), generator=torch.Generator().manual_seed(0))
        q = quantizer.quantize(weight.clone())
        x = torch.randn((16, cols), generator=torch.Generator().manual_seed(1))
        moved = q.nbytes + (rows * cols * 4 if op in ("dequantize", "quantize") else 16 * (rows + cols) * 4)
        kernel: Callable[[], object]
        if op == "quantize":
            kernel = functools.partial(quantizer.quantize, weight)
        elif op == "dequantize":
            kernel = functools.partial(quantizer.dequantize, q)
        else:
            kernel = functools.partial(getattr(quantizer, "matmul"), x, q)  # noqa: B009  # optional in the contract
        references: dict[str, Callable[[], object]] = {
            "copy": copy_reference(moved),
            "weight_copy": copy_reference(2 * rows * cols * 4),
            "dense": functools.partial(F.linear, x, weight),
            "lookup": _lookup_control(rows, cols),
        }
        calls.append((f"{name} {op} {rows}x{cols}", kernel, references, moved))
    return calls


def _lookup_control(rows: int, cols: int) -> Callable[[], object]:
    """A frozen pure-torch dequantize: 4-bit codes (one per byte) looked up in a 16-entry table and scaled per
    block of 64, into a new tensor, as the pure-torch references do (int64 indices, temporaries and all)."""
    import torch

    generator = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 16, (rows * cols,), dtype=torch.uint8, generator=generator)
    table = torch.linspace(-1.0, 1.0, 16)
    scales = torch.rand(rows * cols // 64, generator=generator)

    def control() -> object:
        return (table[codes.long()].view(-1, 64) * scales[:, None]).view(rows, cols)

    return control


def _phase(
    calls: Sequence[tuple[str, Callable[[], object], dict[str, Callable[[], object]], int]],
    seconds: float,
    flush_bytes: int = 0,
) -> dict[tuple[str, str], float]:
    from harness.timing.clock import time_interleaved

    medians = {}
    for label, kernel, references, moved in calls:
        runs = time_interleaved(
            kernel, references, bytes_moved=moved, min_rounds=5, max_rounds=2000, warmup=3, max_seconds=seconds,
            target_ci=1e-9, flush_bytes=flush_bytes,
        )  # fmt: skip
        for reference, run in runs.items():
            medians[(label, reference)] = run.median_ratio
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of rounds per kernel and phase")
    parser.add_argument(
        "--quiet-only",
        action="store_true",
        help="one quiet phase, ratios only: run it in several processes to see which reference varies least "
        "between processes",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="the 256x1024 cases (quantize, dequantize, matmul) instead of the large ones",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="evict the caches before every timed call (harness.timing.clock flush_bytes: twice the last-level cache)",
    )
    args = parser.parse_args(argv)
    import torch

    from harness.timing.clock import keep_freed_memory, last_level_cache_bytes

    keep_freed_memory()
    torch.set_num_threads(1)
    calls = _calls(SMALL_CASES if args.small else CASES)
    flush = 2 * (last_level_cache_bytes() or 32 << 20) if args.cold else 0
    phase = functools.partial(_phase, seconds=args.seconds, flush_bytes=flush)
    phases = {"quiet": phase(calls)}
    if args.quiet_only:
        for (label, reference), ratio in phases["quiet"].items():
            print(f"{label} | {reference} | {ratio:.4g}")
        return 0
    for neighbour, code in NEIGHBOURS.items():
        process = subprocess.Popen([sys.executable, "-c", code])
        try:
            time.sleep(1.0)
            phases[neighbour] = phase(calls)
        finally:
            process.kill()
            process.wait()
        phases[f"quiet again after {neighbour}"] = phase(calls)
    print("| kernel | reference | " + " | ".join(phases) + " |")
    print("|---|---|" + "---|" * len(phases))
    for key in phases["quiet"]:
        quiet = phases["quiet"][key]
        cells = [f"{quiet:.3g}"] + [
            f"{values[key] / quiet - 1:+.1%}" for name, values in phases.items() if name != "quiet"
        ]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
