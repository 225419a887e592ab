"""The environment fingerprint stored with every result file and baseline, and the key that picks a baseline.

Numbers only compare across runs on comparable machines: the key (``cpu-x86_64``,
``cuda-sm90``) chooses the baseline file; the full fingerprint (versions, CPU model
and flags, GPU and driver, git commit) is stored beside the numbers so a reviewer can
see what changed when a number moved. Library versions are read from package metadata,
never by importing the libraries (importing bitsandbytes or triton costs seconds).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["LIBRARIES", "environment_fingerprint", "environment_key"]

LIBRARIES = (
    "torch",
    "numpy",
    "scipy",
    "bitsandbytes",
    "torchao",
    "triton",
    "transformers",
    "lm_eval",
    "pytest",
    "hypothesis",
    "fourbit-harness",
)
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}
_CPU_FLAGS_OF_INTEREST = (
    *("avx", "avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "fma", "f16c"),
    *("neon", "asimd"),
)


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu() -> dict[str, Any]:
    """CPU model and the SIMD flags that decide kernel speed (Linux: /proc/cpuinfo; elsewhere platform)."""
    model = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            present = set(value.split())
            flags = [flag for flag in _CPU_FLAGS_OF_INTEREST if flag in present]
    return {"model": model, "machine": platform.machine(), "count": os.cpu_count(), "flags": flags}


def _cuda() -> dict[str, Any] | None:
    """The first CUDA device and the driver, if torch sees one (torch is imported: every run has it loaded)."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    driver = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "device": torch.cuda.get_device_name(0),
        "capability": f"{major}.{minor}",
        "cuda": torch.version.cuda,
        "driver": driver,
    }


def _git_commit(project_root: Path) -> dict[str, Any] | None:
    """HEAD of the project's checkout and whether the tree had local changes; None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(project_root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(project_root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


@functools.cache
def environment_fingerprint() -> dict[str, Any]:
    """Everything that can make a number differ between two runs, as JSON-ready plain data (cached per process)."""
    import torch

    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "cpu": _cpu(),
        "torch_threads": torch.get_num_threads(),
        "cuda": _cuda(),
        "libraries": _library_versions(),
        "git": _git_commit(Path(__file__).resolve().parents[1]),
    }


def timing_machine(fingerprint: dict[str, Any]) -> str:
    """The hardware a timing ratio belongs to: the GPU's name, else the CPU model, its core count and the SIMD
    flags that choose a library's kernels. Ratios to a same-run reference cancel a machine's drift, not a
    different machine (another CPU can have another balance of compute and memory bandwidth, and a library
    picks another kernel without AVX-512), so timings are compared only on the machine they came from. The
    model name alone is not enough: virtual machines report "AMD EPYC" for parts with and without AVX-512
    (bitsandbytes' CPU dequantize and gemv ran 1.5-2.5x slower against the same references on the one without,
    docs/measured-times.md)."""
    cuda = fingerprint.get("cuda")
    if cuda:
        return f"{cuda.get('device')} (CUDA)"
    cpu = fingerprint.get("cpu") or {}
    flags = cpu.get("flags")
    simd = f", {' '.join(sorted(str(f) for f in flags))}" if isinstance(flags, list) and flags else ""
    return f"{cpu.get('model')}, {cpu.get('count')} cores{simd}"


def environment_key(fingerprint: dict[str, Any] | None = None) -> str:
    """The baseline file stem: ``cuda-sm<major><minor>`` with a GPU, else ``cpu-<machine>``."""
    fingerprint = environment_fingerprint() if fingerprint is None else fingerprint
    cuda = fingerprint.get("cuda")
    if cuda:
        return "cuda-sm" + str(cuda["capability"]).replace(".", "")
    machine = str(fingerprint.get("cpu", {}).get("machine") or platform.machine() or "unknown").lower()
    return "cpu-" + _MACHINE_ALIASES.get(machine, machine)
