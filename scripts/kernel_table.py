"""The README's table of kernel throughput: one row per implementation, from a kernels-suite result file.

    .venv/bin/fourbit run kernels --json out/kernels.json
    .venv/bin/python scripts/kernel_table.py out/kernels.json            # Markdown on stdout

Columns (default shapes, float32, CPU): GB/s of the bytes each op must move and, in parentheses, that as a
fraction of the same-run copy bandwidth; for matmul also the time relative to dense ``F.linear`` (x dense,
the gated ``over_dense``; below 1 is faster than the dense layer).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

COLUMNS = (
    ("quantize 1024x4096", "quantize-1024x4096-float32-cpu", False),
    ("dequantize 4096x4096", "dequantize-4096x4096-float32-cpu", False),
    ("gemv b1 4096x4096", "matmul-b1-4096x4096-float32-cpu", True),
    ("matmul b16 4096x4096", "matmul-b16-4096x4096-float32-cpu", True),
    ("dequantize 256x1024", "dequantize-256x1024-float32-cpu", False),
)


def table(path: Path) -> str:
    from harness.results.files import load_results

    environment, results = load_results(path)
    values = {(r.implementation, r.case, r.metric): r for r in results}
    implementations = list(dict.fromkeys(r.implementation for r in results if r.suite == "kernels"))
    threads = sorted({str(r.extra.get("threads")) for r in results if r.kind == "timing"})
    cpu = environment.get("cpu") or {}
    libraries = environment.get("libraries") or {}
    lines = [
        f"{cpu.get('model', '?')}, {cpu.get('count', '?')} cores ({', '.join(cpu.get('flags', []))}), "
        f"torch {libraries.get('torch', '?')}, {'/'.join(threads)} torch thread(s) while timing; GB/s (fraction "
        "of copy bandwidth); matmul: also x dense F.linear",
        "",
        "| implementation | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for implementation in implementations:
        cells = []
        for _, case, matmul in COLUMNS:
            gbps = values.get((implementation, case, "gbps"))
            fraction = values.get((implementation, case, "fraction_of_copy"))
            dense = values.get((implementation, case, "over_dense"))
            if gbps is None or fraction is None:
                cells.append("-")
                continue
            cell = f"{gbps.value:.2f} ({fraction.value:.2f})"
            if matmul and dense is not None:
                cell += f", {dense.value:.2f}x dense"
            cells.append(cell)
        if any(cell != "-" for cell in cells):
            lines.append(f"| {implementation} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: kernel_table.py RESULTS.json", file=sys.stderr)
        return 2
    from harness.errors import FourbitError

    try:
        print(table(Path(args[0])))
    except FourbitError as exc:
        print(f"kernel_table.py: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
