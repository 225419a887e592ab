"""fourbit-harness: test, benchmark and compare 4-bit weight quantizers through one contract.

What a third party needs is here: the contract (:class:`Quantizer`, :class:`FormatSpec`, :class:`QuantizedTensor`,
:class:`Capabilities`), the error tree, the registry, the codebooks, the reference quantizers to compare with, the
error statistics the suites compute, and reading and writing the harness's stored files (baselines, results).
Everything else lives in the subpackages (checks, timing, results, report, pytest_plugin) and may change.
"""

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
from harness.checks.metrics import ErrorStats, error_stats
from harness.errors import (
    BaselineFormatError,
    BaselineLockTimeout,
    ContractViolation,
    FourbitError,
    ImplementationError,
    InvalidArgument,
    MissingDependency,
    PluginError,
    ResultFileFormatError,
    StoredFileError,
    UsageError,
)
from harness.formats import codebook
from harness.quantizers.identity import IdentityQuantizer
from harness.quantizers.reference import ReferenceQuantizer
from harness.registry import Deferred, Registry, load_registry
from harness.results.baselines import Baseline, load_baseline, save_baseline
from harness.results.files import load_results, save_results
from harness.results.records import Result

__all__ = [
    "PACKING_HIGH_FIRST",
    "PACKING_LOW_FIRST",
    "SCALE_ABSMAX",
    "Baseline",
    "BaselineFormatError",
    "BaselineLockTimeout",
    "Capabilities",
    "ContractViolation",
    "Deferred",
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
    "ResultFileFormatError",
    "StoredFileError",
    "UsageError",
    "codebook",
    "error_stats",
    "load_baseline",
    "load_registry",
    "load_results",
    "save_baseline",
    "save_results",
]

__version__ = "0.1.0"
