"""fourbit-harness: test, benchmark and compare 4-bit weight quantizers through one contract."""

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
from harness.errors import (
    BaselineFormatError,
    ContractViolation,
    FourbitError,
    ImplementationError,
    InvalidArgument,
    PluginError,
    UsageError,
)
from harness.formats import codebook
from harness.metrics import ErrorStats, error_stats
from harness.plugins import Registry, load_registry
from harness.quantizers.identity import IdentityQuantizer
from harness.quantizers.reference import ReferenceQuantizer
from harness.results import Result

__all__ = [
    "PACKING_HIGH_FIRST",
    "PACKING_LOW_FIRST",
    "SCALE_ABSMAX",
    "BaselineFormatError",
    "Capabilities",
    "ContractViolation",
    "DoubleQuant",
    "ErrorStats",
    "FormatSpec",
    "FourbitError",
    "IdentityQuantizer",
    "ImplementationError",
    "InvalidArgument",
    "PluginError",
    "QuantizedTensor",
    "Quantizer",
    "ReferenceQuantizer",
    "Registry",
    "Result",
    "UsageError",
    "codebook",
    "error_stats",
    "load_registry",
]

__version__ = "0.1.0"
