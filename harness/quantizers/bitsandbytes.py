"""Thin adapters over bitsandbytes' 4-bit functions (bnb-nf4, bnb-fp4, bnb-nf4-dq, bnb-fp4-dq).

Everything comes from the library: ``quantize`` calls
``bitsandbytes.functional.quantize_4bit`` and only *decodes* what it returns
(packed bytes unpacked high nibble first into ``codes``; ``scales`` is bnb's
absmax, or for the ``-dq`` variants the nested statistics undone exactly as
``dequantize_4bit`` undoes them: ``dequantize_blockwise(absmax, state2) + offset``).
``dequantize`` rebuilds a ``QuantState`` from ``q.storage`` and calls
``bitsandbytes.functional.dequantize_4bit``; ``matmul`` calls ``bitsandbytes.matmul_4bit``.
Library behaviour, bugs included, is passed through unchanged: the suites judge it.

Storage (what ``nbytes`` counts), per quantized tensor:

* ``packed``: bnb's packed uint8 tensor, as returned (shape ``[(n + 1) // 2, 1]``).
* without double quantization: ``absmax``, float32 per block.
* with it (``compress_statistics=True``): ``absmax_codes`` (uint8 per block, bnb's
  ``QuantState.absmax``), ``absmax_outer`` (float32 per 256 blocks, ``state2.absmax``)
  and ``absmax_mean`` (the float32 ``offset``, a 0-d tensor).

Not counted: the 16-entry 4-bit table (``QuantState.code``) and the 256-entry dynamic
8-bit table of the nested statistics (``state2.code``). Both are constants of the format,
identical for every tensor, so they are treated like the codebook; ``dequantize`` takes them
from the library (``get_4bit_type`` / ``create_dynamic_map``), not from ``q.state``. Note that bnb
itself keeps a private copy of each per QuantState (64 B + 1 KiB in memory) and its
``state_dict`` serializes them per weight (``quant_map``, ``nested_quant_map``), so bnb's real
per-tensor footprint is that much larger than ``nbytes`` here.

bitsandbytes is imported lazily; without it, :func:`bitsandbytes_quantizers` raises
:class:`~harness.errors.PluginError` with the install hint, which the registry records as a
load error for its source (the run goes on with the other implementations).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from harness.api import PACKING_HIGH_FIRST, SCALE_ABSMAX, Capabilities, DoubleQuant, FormatSpec, QuantizedTensor
from harness.errors import ImplementationError, InvalidArgument, PluginError
from harness.packing import unpack_nibbles
from harness.validation import check_weight

__all__ = ["BNB_BLOCK_SIZES", "BNB_FORMATS", "BitsandbytesQuantizer", "bitsandbytes_quantizers"]

BNB_FORMATS = ("nf4", "fp4")
BNB_BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
"""The block sizes ``quantize_4bit`` accepts in bitsandbytes 0.50 (others: ValueError 'invalid blocksize')."""
NESTED_BLOCK_SIZE = 256
"""``quantize_4bit(compress_statistics=True)`` quantizes the absmax with 8-bit codes in blocks of 256."""
INSTALL_HINT = "pip install 'fourbit-harness[bnb]'"


def _import_bnb() -> tuple[ModuleType, ModuleType]:
    """``(bitsandbytes, bitsandbytes.functional)``, or PluginError with the install hint."""
    try:
        import bitsandbytes
        import bitsandbytes.functional as bnb_functional
    except ImportError as exc:
        raise PluginError(
            "bitsandbytes", f"bitsandbytes is not installed ({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return bitsandbytes, bnb_functional


class BitsandbytesQuantizer:
    """bitsandbytes' ``quantize_4bit``/``dequantize_4bit`` for ``nf4`` or ``fp4``, optionally double-quantized."""

    def __init__(
        self, format: str = "nf4", block_size: int = 64, double_quant: bool = False, name: str | None = None
    ) -> None:
        if format not in BNB_FORMATS:
            raise InvalidArgument(f"format={format!r}, expected one of {BNB_FORMATS}")
        _, functional = _import_bnb()
        self.name = name or f"bnb-{format}" + ("-dq" if double_quant else "")
        self.compress_statistics = bool(double_quant)
        table = functional.get_4bit_type(format, device="cpu")
        self.spec = FormatSpec(
            format=format,
            codebook=tuple(float(v) for v in table.tolist()),
            block_size=block_size,
            scale=SCALE_ABSMAX,
            double_quant=DoubleQuant(bits=8, block_size=NESTED_BLOCK_SIZE) if double_quant else None,
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )
        # bnb's CPU quantize_4bit works in float32 whatever the input dtype.
        self.capabilities = Capabilities(block_sizes=BNB_BLOCK_SIZES, has_matmul=True, compute_dtype=torch.float32)
        self._dynamic_map: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"BitsandbytesQuantizer({self.spec.format!r}, block_size={self.spec.block_size}, "
            f"double_quant={self.compress_statistics}, name={self.name!r})"
        )

    def with_block_size(self, block_size: int) -> BitsandbytesQuantizer:
        """The same adapter at another block size; bnb itself rejects sizes outside :data:`BNB_BLOCK_SIZES`
        when quantizing (an ImplementationError keeping its message)."""
        return BitsandbytesQuantizer(self.spec.format, block_size, self.compress_statistics, name=self.name)

    # ------------------------------------------------------------------------------------------ helpers

    def _library_error(self, operation: str, exc: Exception) -> ImplementationError:
        return ImplementationError(self.name, operation, exc)

    def _nested_code(self, functional: ModuleType) -> torch.Tensor:
        """bnb's shared 256-entry dynamic map (the table ``quantize_blockwise`` uses by default)."""
        if self._dynamic_map is None:
            self._dynamic_map = functional.create_dynamic_map().to("cpu")
        return self._dynamic_map

    def _storage(self, q: QuantizedTensor, *keys: str) -> list[torch.Tensor]:
        try:
            return [q.storage[key] for key in keys]
        except KeyError as missing:
            raise InvalidArgument(
                f"{self.name}: QuantizedTensor.storage lacks {missing}, expected the entries quantize() wrote "
                f"({', '.join(keys)})"
            ) from None

    def _state_from_storage(self, q: QuantizedTensor) -> Any:
        """A bnb QuantState rebuilt from ``q.storage`` and the static metadata (shape, dtype, block size)."""
        _, functional = _import_bnb()
        common: dict[str, Any] = {
            "shape": torch.Size(q.shape),
            "dtype": q.dtype,
            "blocksize": self.spec.block_size,
            "code": functional.get_4bit_type(self.spec.format, device="cpu"),
            "quant_type": self.spec.format,
        }
        if not self.compress_statistics:
            (absmax,) = self._storage(q, "absmax")
            return functional.QuantState(absmax=absmax, **common)
        codes, outer, mean = self._storage(q, "absmax_codes", "absmax_outer", "absmax_mean")
        state2 = functional.QuantState(
            absmax=outer, code=self._nested_code(functional), blocksize=NESTED_BLOCK_SIZE, dtype=torch.float32
        )
        return functional.QuantState(absmax=codes, offset=mean, state2=state2, **common)

    # ------------------------------------------------------------------------------------------ contract

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        check_weight(x)
        _, functional = _import_bnb()
        block_size = self.spec.block_size
        try:
            packed, state = functional.quantize_4bit(
                x.detach(),
                blocksize=block_size,
                compress_statistics=self.compress_statistics,
                quant_type=self.spec.format,
            )
        except Exception as exc:  # bnb raises ValueError/RuntimeError/...; keep its message
            raise self._library_error(
                f"bitsandbytes.functional.quantize_4bit(blocksize={block_size}, quant_type={self.spec.format!r}, "
                f"compress_statistics={self.compress_statistics})",
                exc,
            ) from exc
        codes = unpack_nibbles(packed.reshape(-1), x.numel(), PACKING_HIGH_FIRST).reshape(x.shape)
        storage: dict[str, torch.Tensor] = {"packed": packed}
        if state.nested:
            storage.update(absmax_codes=state.absmax, absmax_outer=state.state2.absmax, absmax_mean=state.offset)
            try:
                # exactly what dequantize_4bit does with nested statistics
                scales = functional.dequantize_blockwise(state.absmax, state.state2)
                scales += state.offset
            except Exception as exc:
                raise self._library_error("bitsandbytes.functional.dequantize_blockwise(absmax, state2)", exc) from exc
            scales = scales.float()
        else:
            storage["absmax"] = state.absmax
            scales = state.absmax.float()
        return QuantizedTensor(
            codes=codes,
            scales=scales.reshape(-1),
            offsets=None,
            shape=x.shape,
            dtype=x.dtype,
            storage=storage,
            state=state,
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        """bnb's ``dequantize_4bit`` on ``storage['packed']`` with a QuantState rebuilt from ``q.storage``."""
        _, functional = _import_bnb()
        state = self._state_from_storage(q)
        (packed,) = self._storage(q, "packed")
        try:
            out = functional.dequantize_4bit(packed, state)
        except Exception as exc:
            raise self._library_error(f"bitsandbytes.functional.dequantize_4bit(shape={tuple(q.shape)})", exc) from exc
        return out

    def matmul(self, x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
        """``x @ W.T`` through ``bitsandbytes.matmul_4bit`` (W of shape [out_features, in_features])."""
        bitsandbytes, _ = _import_bnb()
        state = self._state_from_storage(q)
        (packed,) = self._storage(q, "packed")
        try:
            out = bitsandbytes.matmul_4bit(x, packed, state)
        except Exception as exc:
            raise self._library_error(
                f"bitsandbytes.matmul_4bit(x shape={tuple(x.shape)}, W shape={tuple(q.shape)})", exc
            ) from exc
        return out


def bitsandbytes_quantizers() -> list[BitsandbytesQuantizer]:
    """bnb-nf4, bnb-fp4, bnb-nf4-dq, bnb-fp4-dq at block 64; PluginError with the install hint without bnb."""
    _import_bnb()
    return [BitsandbytesQuantizer(fmt) for fmt in BNB_FORMATS] + [
        BitsandbytesQuantizer(fmt, double_quant=True) for fmt in BNB_FORMATS
    ]
