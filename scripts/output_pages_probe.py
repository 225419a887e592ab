"""Why the kernels suite keeps freed memory: one op timed with fresh pages for its output, then with reused ones.

Runs bitsandbytes' NF4 (or any registered implementation's) dequantize of a 4096x4096 float32 weight on one
torch thread, 15 calls, printing each call's process CPU time in ms: first with the C allocator as it comes
(glibc maps a 64 MiB output anew on every call and unmaps it on free, so every call faults its pages in),
then in a second process after harness.timing.clock.keep_freed_memory().

    .venv/bin/python scripts/output_pages_probe.py            # bnb-nf4 and ref-nf4
    .venv/bin/python scripts/output_pages_probe.py torchao-nf4
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence


def probe(names: Sequence[str], keep: bool) -> None:
    import torch

    from harness.registry import load_registry
    from harness.timing.clock import keep_freed_memory

    pages = keep_freed_memory() if keep else "system"
    torch.set_num_threads(1)
    registry = load_registry()
    weight = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0))
    for implementation in registry.select(list(names)):
        quantizer = implementation.quantizer
        quantized = quantizer.quantize(weight)
        times = []
        for _ in range(15):
            start = time.process_time()
            quantizer.dequantize(quantized)
            times.append(1e3 * (time.process_time() - start))
        print(f"{implementation.name:12s} output pages {pages:7s}: " + " ".join(f"{t:.1f}" for t in times), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        probe(args[2:], keep=args[1] == "reused")
        return 0
    names = args or ["bnb-nf4", "ref-nf4"]
    for mode in ("system", "reused"):
        subprocess.run([sys.executable, __file__, "--child", mode, *names], check=True, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
