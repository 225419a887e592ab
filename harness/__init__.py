"""fourbit-harness: test, benchmark and compare 4-bit weight quantizers through one contract."""

from harness.aggregate import aggregate_timing
from harness.api import (
    PACKING_HIGH_FIRST,
    PACKING_LOW_FIRST,
    SCALE_ABSMAX,
    Capabilities,
    DoubleQuant,
    FormatSpec,
    QuantizedTensor,
    Quantizer,
)
from harness.baselines import Baseline, compare_result, load_baseline, save_baseline
from harness.environment import environment_fingerprint, environment_key
from harness.errors import (
    BaselineFormatError,
    ContractViolation,
    FourbitError,
    ImplementationError,
    InvalidArgument,
    MissingDependency,
    PluginError,
    UsageError,
)
from harness.formats import codebook
from harness.metrics import ErrorStats, error_stats
from harness.plugins import Registry, load_registry
from harness.quantizers.identity import IdentityQuantizer
from harness.quantizers.reference import ReferenceQuantizer
from harness.results import Result, load_results, save_results

__all__ = [
    "PACKING_HIGH_FIRST",
    "PACKING_LOW_FIRST",
    "SCALE_ABSMAX",
    "Baseline",
    "BaselineFormatError",
    "Capabilities",
    "Comparison",
    "ContractViolation",
    "DoubleQuant",
    "ErrorStats",
    "FormatSpec",
    "FourbitError",
    "IdentityQuantizer",
    "ImplementationError",
    "InvalidArgument",
    "MissingDependency",
    "PluginError",
    "QuantizedTensor",
    "Quantizer",
    "ReferenceQuantizer",
    "Registry",
    "Result",
    "UsageError",
    "aggregate_timing",
    "codebook",
    "compare_exact",
    "compare_result",
    "compare_sampled",
    "compare_timing",
    "environment_fingerprint",
    "environment_key",
    "error_stats",
    "load_baseline",
    "load_registry",
    "load_results",
    "save_baseline",
    "save_results",
]

__version__ = "0.1.0"

_LAZY = {name: "harness.stats" for name in ("Comparison", "compare_exact", "compare_sampled", "compare_timing")}
"""Names whose modules import scipy (half a second): loaded on first use, not with ``import harness``."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
