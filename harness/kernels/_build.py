"""Lazy build of the Triton kernels: triton is imported on the first launch, never at ``import harness``.

``triton.jit`` chooses between the interpreter and the compiler when the decorator runs (it reads
``triton.knobs.runtime.interpret``, i.e. TRITON_INTERPRET, at that moment). A process that imported
triton without the interpreter (``import bitsandbytes`` does, for one) could then never run the kernels
on CPU, and one with TRITON_INTERPRET=1 could never compile them for CUDA. So the kernel source is
executed once per mode, on demand, with the knob set for that execution only: CPU tensors run on
the interpreter copy, CUDA tensors on the compiled one, whatever TRITON_INTERPRET said at import.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from types import ModuleType

import torch

from harness.errors import InvalidArgument, MissingDependency

__all__ = ["INSTALL_HINT", "interpreter_requested", "kernels_for", "triton_installed"]

INSTALL_HINT = "pip install 'fourbit-harness[triton]'"
_SOURCE_MODULE = "harness.kernels._triton_source"
_TRUE_WORDS = ("1", "true", "yes", "on", "y")
"""The values triton itself reads as true for a boolean environment knob (checked against triton 3.9)."""

_lock = threading.Lock()
_built: dict[bool, ModuleType] = {}


def triton_installed() -> bool:
    """True if ``import triton`` can be attempted (without importing it: that takes seconds)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules, or a broken parent package
        return False


def interpreter_requested() -> bool:
    """True when TRITON_INTERPRET asks for the (slow) CPU interpreter: the opt-in for CPU devices."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in _TRUE_WORDS


def _import_triton() -> ModuleType:
    try:
        import triton
    except ImportError as exc:
        raise MissingDependency(
            source="triton", names=(), reason=f"triton cannot be imported ({exc})", hint=INSTALL_HINT
        ) from exc
    return triton


def _interpreted_for(device: torch.device) -> bool:
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return False
    raise InvalidArgument(f"device={str(device)!r}, expected a 'cuda' device, or 'cpu' for the Triton interpreter")


def kernels_for(device: torch.device) -> ModuleType:
    """The kernel module built for ``device``: the interpreter copy for CPU, the compiled one for CUDA."""
    interpreted = _interpreted_for(device)
    module = _built.get(interpreted)
    if module is not None:
        return module
    with _lock:
        module = _built.get(interpreted)
        if module is None:
            module = _execute_source(_import_triton(), interpreted)
            _built[interpreted] = module
    return module


def _execute_source(triton: ModuleType, interpreted: bool) -> ModuleType:
    spec = importlib.util.find_spec(_SOURCE_MODULE)
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the package
        raise MissingDependency(source="triton", names=(), reason=f"{_SOURCE_MODULE} is missing from the install")
    module = importlib.util.module_from_spec(spec)
    # scope() restores the knobs and the TRITON_INTERPRET variable it sets, whatever happens inside.
    with triton.knobs.runtime.scope():
        triton.knobs.runtime.interpret = interpreted
        spec.loader.exec_module(module)
    return module
