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

bitsandbytes is imported lazily, so this module imports without it; :func:`bitsandbytes_quantizers`
then raises :class:`~harness.errors.MissingDependency` naming the four implementations, which the
registry turns into skips carrying the install hint. A bitsandbytes that is installed but fails to import
is a :class:`~harness.errors.PluginError` (a broken install is reported, not skipped).

``matmul`` and ``linear`` go through the library only: ``bitsandbytes.matmul_4bit`` with the rebuilt
QuantState, and a real ``bitsandbytes.nn.Linear4bit`` quantized on the CPU. Every exception raised by a
bitsandbytes call, in the returned module's ``forward`` too, comes back as
:class:`~harness.errors.ImplementationError` naming the implementation and the call, with bnb's message.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from harness._validation import check_weight
from harness.api import PACKING_HIGH_FIRST, SCALE_ABSMAX, Capabilities, DoubleQuant, FormatSpec, QuantizedTensor
from harness.errors import ImplementationError, InvalidArgument, MissingDependency, PluginError
from harness.formats.packing import unpack_nibbles
from harness.registry import Deferred

__all__ = ["BNB_BLOCK_SIZES", "BNB_FORMATS", "BNB_NAMES", "BitsandbytesQuantizer", "bitsandbytes_quantizers"]

BNB_FORMATS = ("nf4", "fp4")
BNB_NAMES = ("bnb-nf4", "bnb-fp4", "bnb-nf4-dq", "bnb-fp4-dq")
"""What :func:`bitsandbytes_quantizers` provides (and what a missing bitsandbytes makes unavailable)."""
BNB_BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
"""The block sizes ``quantize_4bit`` accepts in bitsandbytes 0.50 (others: ValueError 'invalid blocksize')."""
NESTED_BLOCK_SIZE = 256
"""``quantize_4bit(compress_statistics=True)`` quantizes the absmax with 8-bit codes in blocks of 256."""
INSTALL_HINT = "pip install 'fourbit-harness[bnb]'"


def _import_bnb() -> tuple[ModuleType, ModuleType]:
    """``(bitsandbytes, bitsandbytes.functional)``; MissingDependency when bitsandbytes is not installed,
    PluginError when it is installed but its import fails."""
    try:
        import bitsandbytes
        import bitsandbytes.functional as bnb_functional
    except ModuleNotFoundError as exc:
        if exc.name != "bitsandbytes":
            raise PluginError(
                "bitsandbytes", f"bitsandbytes is installed but importing it failed: {type(exc).__name__}: {exc}"
            ) from exc
        raise MissingDependency(
            source="bitsandbytes", names=BNB_NAMES, reason="bitsandbytes is not installed", hint=INSTALL_HINT
        ) from exc
    except ImportError as exc:
        raise PluginError(
            "bitsandbytes", f"bitsandbytes is installed but importing it failed: {type(exc).__name__}: {exc}"
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
        self.capabilities = Capabilities(
            block_sizes=BNB_BLOCK_SIZES, has_matmul=True, has_module=True, compute_dtype=torch.float32
        )
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
        """``x @ W.T`` through ``bitsandbytes.matmul_4bit`` (W of shape [out_features, in_features]).

        ``x`` is ``[..., in_features]``, any number of rows (one row included). bnb would silently compute
        ``x @ W`` when ``x``'s last dim matches W's first dim instead (its deprecated [K, N] layout), so the
        shapes are checked here first.
        """
        bitsandbytes, _ = _import_bnb()
        if not isinstance(x, torch.Tensor):
            raise InvalidArgument(f"x is a {type(x).__name__}, expected a torch.Tensor of shape [..., in_features]")
        if len(q.shape) != 2:
            raise InvalidArgument(
                f"{self.name}: q.shape={tuple(q.shape)}, expected a 2-D weight [out_features, in_features] for matmul"
            )
        if x.dim() < 1 or x.shape[-1] != q.shape[1]:
            raise InvalidArgument(
                f"{self.name}: x.shape={tuple(x.shape)}, expected [..., {q.shape[1]}] "
                f"(in_features of W shape {tuple(q.shape)})"
            )
        state = self._state_from_storage(q)
        (packed,) = self._storage(q, "packed")
        try:
            out = bitsandbytes.matmul_4bit(x, packed, state)
        except Exception as exc:
            raise self._library_error(
                f"bitsandbytes.matmul_4bit(x shape={tuple(x.shape)}, W shape={tuple(q.shape)})", exc
            ) from exc
        return out

    def linear(self, module: torch.nn.Linear) -> torch.nn.Module:
        """A real ``bitsandbytes.nn.Linear4bit`` holding ``module``'s weight quantized on the CPU, and its bias.

        Its quant_type, blocksize and compress_statistics are this adapter's, its compute dtype is the
        module's weight dtype, so its stored bytes are what :meth:`quantize` returns for that weight.
        bnb quantizes a ``Params4bit`` when it is first moved to a device; that move is done here, to
        the CPU, so the module is ready and nothing is quantized later. Its ``forward`` is bnb's, with
        any exception from it re-raised as ImplementationError (see :func:`_linear4bit_class`).
        """
        bitsandbytes, _ = _import_bnb()
        if not isinstance(module, torch.nn.Linear):
            raise InvalidArgument(f"module is a {type(module).__name__}, expected a torch.nn.Linear")
        weight = module.weight.detach()
        check_weight(weight, name="module.weight")
        if weight.dtype not in self.capabilities.dtypes:
            raise InvalidArgument(
                f"module.weight.dtype={weight.dtype}, expected one of capabilities.dtypes={self.capabilities.dtypes}"
            )
        if weight.device.type not in self.capabilities.devices:
            raise InvalidArgument(
                f"module.weight.device={weight.device}, "
                f"expected one of capabilities.devices={self.capabilities.devices}"
            )
        block_size, quant_type = self.spec.block_size, self.spec.format
        operation = (
            f"bitsandbytes.nn.Linear4bit({module.in_features}, {module.out_features}, bias={module.bias is not None}, "
            f"compute_dtype={weight.dtype}, quant_type={quant_type!r}, blocksize={block_size}, "
            f"compress_statistics={self.compress_statistics}) quantizing on .to('cpu')"
        )
        try:
            layer = _linear4bit_class(bitsandbytes)(
                module.in_features,
                module.out_features,
                bias=module.bias is not None,
                compute_dtype=weight.dtype,
                compress_statistics=self.compress_statistics,
                quant_type=quant_type,
                device="meta",  # no random init: the weight and bias are replaced below
            )
            layer.implementation = self.name
            # Linear4bit takes no blocksize: it lives on the Params4bit; .to("cpu") runs quantize_4bit.
            layer.weight = bitsandbytes.nn.Params4bit(
                weight,
                requires_grad=False,
                blocksize=block_size,
                compress_statistics=self.compress_statistics,
                quant_type=quant_type,
                module=layer,
            ).to("cpu")
            if module.bias is not None:
                layer.bias = torch.nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
        except Exception as exc:
            raise self._library_error(operation, exc) from exc
        return layer


_LINEAR4BIT_CLASSES: dict[int, type] = {}


def _linear4bit_class(bitsandbytes: ModuleType) -> type:
    """A subclass of ``bitsandbytes.nn.Linear4bit`` (so still one, for isinstance checks in model code) whose
    ``forward`` is bnb's, re-raising its exceptions as ImplementationError naming the implementation and the call.

    Created on first use, because bitsandbytes is imported lazily; one per imported bitsandbytes module.
    """
    cached = _LINEAR4BIT_CLASSES.get(id(bitsandbytes))
    if cached is not None:
        return cached

    class HarnessLinear4bit(bitsandbytes.nn.Linear4bit):  # type: ignore[name-defined]
        """bitsandbytes' Linear4bit; exceptions from its forward name the implementation and keep bnb's message."""

        implementation: str = "bitsandbytes"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # bnb 0.50.2's eval-mode kernel on AVX512-BF16 CPUs takes K from x and never checks it against
            # the weight: a wrong width returns garbage (or reads past the weight) instead of raising.
            if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise InvalidArgument(
                    f"{self.implementation}: x.shape={shape}, expected [..., {self.in_features}] (in_features)"
                )
            try:
                return super().forward(x)
            except Exception as exc:
                raise ImplementationError(
                    self.implementation,
                    f"bitsandbytes.nn.Linear4bit.forward(x shape={tuple(x.shape)}, training={self.training})",
                    exc,
                ) from exc

    _LINEAR4BIT_CLASSES[id(bitsandbytes)] = HarnessLinear4bit
    return HarnessLinear4bit


def _build_quantizers() -> list[BitsandbytesQuantizer]:
    """bnb-nf4, bnb-fp4, bnb-nf4-dq, bnb-fp4-dq at block 64; MissingDependency (with the install hint)
    when bitsandbytes is not installed."""
    _import_bnb()
    return [BitsandbytesQuantizer(fmt) for fmt in BNB_FORMATS] + [
        BitsandbytesQuantizer(fmt, double_quant=True) for fmt in BNB_FORMATS
    ]


bitsandbytes_quantizers = Deferred(
    names=BNB_NAMES, load=_build_quantizers, requires=("bitsandbytes",), hint=INSTALL_HINT
)
"""The entry point: bitsandbytes (seconds to import) is imported only when a run selects one of its
implementations; calling it builds them (bnb-nf4, bnb-fp4, bnb-nf4-dq, bnb-fp4-dq at block 64)."""
