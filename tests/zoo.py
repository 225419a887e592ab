"""A zoo of small 4-bit quantizers written against the harness contract: broken ones the property
suites must flag, and correct-but-differently-written ones they must pass.

Each broken quantizer carries ONE typical bug of real-world implementations (the docstring says which);
``ZOO_BROKEN`` maps its name to ``(class, property tests expected to fail)``. The correct ones
(``ZOO_CORRECT``) take other routes to the same answers (argmin, round(y * 7), searchsorted, a black box,
affine min/max, bfloat16 arithmetic declared as such, symmetric double quantization) and must pass
every property that applies to them.

Run the suites on the zoo from the repository root::

    .venv/bin/python -m pytest suites/properties -p no:cacheprovider --fourbit-no-entry-points \\
        --quantizer tests.zoo:broken_quantizers --impl 'zoo-*'
    .venv/bin/python -m pytest suites/properties -p no:cacheprovider --fourbit-no-entry-points \\
        --quantizer tests.zoo:correct_quantizers --impl 'zoo-*'

Only :mod:`harness.api`, :mod:`harness.formats.packing` and :mod:`harness.formats` are used; nothing here
reuses the reference quantizer's encoder, so a bug in it cannot hide a bug here (or the reverse).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness.api import (
    PACKING_HIGH_FIRST,
    PACKING_LOW_FIRST,
    SCALE_ABSMAX,
    SCALE_AFFINE_INT,
    SCALE_E4M3_TENSOR,
    SCALE_E8M0,
    SCALE_SEARCHED,
    SCALE_SIGNED_ABSMAX,
    Capabilities,
    DoubleQuant,
    FormatSpec,
    QuantizedTensor,
    Quantizer,
)
from harness.formats import codebook as format_codebook
from harness.formats.packing import pack_nibbles, unpack_nibbles

__all__ = [
    "ZOO_BROKEN",
    "ZOO_CORRECT",
    "FakeNF4MeanStd",
    "broken_quantizers",
    "correct_quantizers",
    "junit_cases",
]


# ---------------------------------------------------------------------------------------------- helpers


def _pad_blocks(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """``flat`` zero-padded to whole blocks, viewed as (blocks, block_size)."""
    pad = (-flat.numel()) % block_size
    return F.pad(flat, (0, pad)).view(-1, block_size)


def _per_element(per_block: torch.Tensor, numel: int, block_size: int) -> torch.Tensor:
    return per_block.repeat_interleave(block_size)[:numel]


# ---------------------------------------------------------------------------------------------- absmax family
#
# A small "third-party library" of absmax blockwise quantizers: one class with a hook per step, and
# variants that change one step. The base class itself is correct (nearest level by argmin in float32).


class _AbsmaxBlockwise:
    """Absmax blockwise quantizer: scale = max |x| per block, code = nearest level of x / scale."""

    name: str = "zoo-absmax-base"
    format: ClassVar[str] = "nf4"
    block_size: ClassVar[int] = 64
    packing: ClassVar[str | None] = PACKING_HIGH_FIRST
    exact_zero: ClassVar[bool] = True
    compute_dtype: ClassVar[torch.dtype] = torch.float32
    double_quant: ClassVar[DoubleQuant | None] = None

    def __init__(self) -> None:
        levels = self._codebook()
        self.spec = FormatSpec(
            format=self.format,
            codebook=tuple(float(v) for v in levels.tolist()),
            block_size=self.block_size,
            scale=SCALE_ABSMAX,
            double_quant=self.double_quant,
            exact_zero=self.exact_zero,
            packing=self.packing,
        )
        self.capabilities = Capabilities(compute_dtype=self.compute_dtype)
        self._levels = torch.tensor(self.spec.codebook, dtype=torch.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # -- steps (overridden by the variants)

    def _codebook(self) -> torch.Tensor:
        return format_codebook(self.format, self.block_size)

    @property
    def _pack_order(self) -> str:
        return self.spec.packing or PACKING_HIGH_FIRST

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().reshape(-1).to(torch.float32)

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        return _pad_blocks(flat, self.block_size).abs().amax(dim=1)

    def _store_scales(self, scales: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """What storage keeps for the scales, and the scales as dequantize will see them."""
        return {"absmax": scales}, scales

    def _load_scales(self, q: QuantizedTensor) -> torch.Tensor:
        return q.storage["absmax"]

    def _normalize(self, x: torch.Tensor, flat: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        safe = torch.where(scales == 0, torch.ones_like(scales), scales)
        return flat / _per_element(safe, flat.numel(), self.block_size)

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        return (y[:, None] - self._levels[None, :]).abs().argmin(dim=1).to(torch.uint8)

    def _pack(self, codes: torch.Tensor) -> torch.Tensor:
        return pack_nibbles(codes, self._pack_order)

    def _unpack(self, packed: torch.Tensor, numel: int) -> torch.Tensor:
        return unpack_nibbles(packed, numel, self._pack_order)

    # -- the contract

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        flat = self._flat(x)
        storage, scales = self._store_scales(self._absmax(flat))
        codes = self._encode(self._normalize(x, flat, scales))
        storage["packed"] = self._pack(codes)
        return QuantizedTensor(
            codes=codes.reshape(x.shape), scales=scales, shape=x.shape, dtype=x.dtype, storage=storage
        )

    def _decode(self, q: QuantizedTensor) -> torch.Tensor:
        codes = self._unpack(q.storage["packed"], q.numel).long()
        return self._levels[codes] * _per_element(self._load_scales(q), q.numel, self.block_size)

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        return self._decode(q).reshape(q.shape).to(q.dtype)


# ---------------------------------------------------------------------------------------------- correct ones


class ZooNF4Argmin(_AbsmaxBlockwise):
    """Correct NF4: nearest level by ``argmin |x/absmax - level|`` in float32 (ties to the lower code)."""

    name = "zoo-nf4-argmin"


class ZooAF4Block128(_AbsmaxBlockwise):
    """Correct AF4 at block 128 (its own levels for that block size), nearest by searchsorted + neighbour."""

    name = "zoo-af4-128"
    format = "af4"
    block_size = 128

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        levels = self._levels  # ascending in code order for AF4
        upper = torch.searchsorted(levels, y).clamp(1, 15)
        lower = upper - 1
        go_up = (levels[upper] - y) < (y - levels[lower])
        return torch.where(go_up, upper, lower).to(torch.uint8)


class ZooNF4DoubleQuant(_AbsmaxBlockwise):
    """Correct NF4 with double quantization written another way than QLoRA: no mean subtraction, unsigned
    8-bit codes ``round(127 * s / max s)`` per 256 scales. Error <= max s / 254, inside the declared bound."""

    name = "zoo-nf4-dq-symmetric"
    double_quant = DoubleQuant(bits=8, block_size=256)

    def _scale_table(self, codes: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
        return codes.to(torch.float32) / 127 * _per_element(outer, codes.numel(), 256)

    def _store_scales(self, scales: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        outer = _pad_blocks(scales, 256).amax(dim=1)
        safe = torch.where(outer == 0, torch.ones_like(outer), outer)
        codes = torch.round(scales / _per_element(safe, scales.numel(), 256) * 127).to(torch.uint8)
        return {"absmax_codes": codes, "absmax_outer": outer}, self._scale_table(codes, outer)

    def _load_scales(self, q: QuantizedTensor) -> torch.Tensor:
        return self._scale_table(q.storage["absmax_codes"], q.storage["absmax_outer"])


class ZooFP4Sorted(_AbsmaxBlockwise):
    """Correct FP4 in bitsandbytes' code order (not sorted, +0 and -0 both present): nearest by bucketize
    over the sorted levels, then a table from sorted position to code."""

    name = "zoo-fp4-sorted"
    format = "fp4"

    def __init__(self) -> None:
        super().__init__()
        values = self._levels.tolist()
        order = sorted(range(16), key=lambda c: (values[c], math.copysign(1.0, values[c])))
        self._order = torch.tensor(order)
        ordered = self._levels[self._order].double()
        self._thresholds = ((ordered[1:] + ordered[:-1]) / 2).float()

    def _reported_codes(self, position: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return codes

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        flat = self._flat(x)
        scales = self._absmax(flat)
        position = torch.bucketize(self._normalize(x, flat, scales), self._thresholds)
        codes = self._order[position].to(torch.uint8)
        return QuantizedTensor(
            codes=self._reported_codes(position, codes).reshape(x.shape),
            scales=scales,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": self._pack(codes), "absmax": scales},
        )


class _InputDtypeDivision(_AbsmaxBlockwise):
    """Divides x / absmax in the input's dtype (a bf16 model stays in bf16), then picks levels in float32."""

    def _normalize(self, x: torch.Tensor, flat: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        native = x.detach().reshape(-1)
        safe = torch.where(scales == 0, torch.ones_like(scales), scales).to(native.dtype)
        return (native / _per_element(safe, native.numel(), self.block_size)).to(torch.float32)


class ZooNF4BF16Declared(_InputDtypeDivision):
    """Correct: computes x / absmax in bfloat16 for bf16 inputs and SAYS so (compute_dtype=bfloat16), so
    codes may differ from float32-nearest within a few bf16 ulp of a midpoint."""

    name = "zoo-nf4-bf16-compute-declared"
    compute_dtype = torch.bfloat16


class ZooBlackBoxNF4:
    """Correct NF4 as a black box: reports neither codes nor scales, only storage (own layout: low nibble
    first, float32 absmax). Suites that need codes must skip, the others (codebook, round-trip bound,
    zeros, determinism, idempotence via x_hat, storage) still apply."""

    name = "zoo-blackbox-nf4"

    def __init__(self) -> None:
        levels = format_codebook("nf4")
        self.spec = FormatSpec(format="nf4", codebook=tuple(levels.tolist()), block_size=64, packing=None)
        self.capabilities = Capabilities()
        self._levels = levels
        # decision thresholds between neighbours, as a hand-written kernel would hard-code them
        self._thresholds = ((levels[1:].double() + levels[:-1].double()) / 2).float()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        flat = x.detach().float().reshape(-1)
        blocks = _pad_blocks(flat, 64)
        absmax = blocks.abs().amax(dim=1)
        y = blocks / torch.where(absmax == 0, 1.0, absmax)[:, None]
        codes = torch.bucketize(y.reshape(-1)[: flat.numel()], self._thresholds).to(torch.uint8)
        qweight = pack_nibbles(codes, PACKING_LOW_FIRST)
        return QuantizedTensor(shape=x.shape, dtype=x.dtype, storage={"qweight": qweight, "absmax": absmax})

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["qweight"], q.numel, PACKING_LOW_FIRST).long()
        values = self._levels[codes] * _per_element(q.storage["absmax"], q.numel, 64)
        return values.reshape(q.shape).to(q.dtype)


class ZooInt4LowFirst:
    """Correct symmetric int4 (levels k/7), written the "integer" way: ``q = round(7 * x / absmax)``, stored
    as ``q + 8`` two per byte, LOW nibble first (declared as such)."""

    name = "zoo-int4-lowfirst"

    def __init__(self) -> None:
        self.spec = FormatSpec(
            format="int4", codebook=tuple(format_codebook("int4").tolist()), block_size=64, packing=PACKING_LOW_FIRST
        )
        self.capabilities = Capabilities()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        absmax = _pad_blocks(w, 64).abs().amax(dim=1)
        denom = _per_element(torch.where(absmax > 0, absmax, torch.ones_like(absmax)), n, 64)
        q = torch.round(w / denom * 7).clamp_(-8, 7)
        codes = (q + 8).to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=absmax,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": pack_nibbles(codes, PACKING_LOW_FIRST), "scales": absmax},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel, PACKING_LOW_FIRST)
        w = (codes.to(torch.float32) - 8) / 7 * _per_element(q.storage["scales"], q.numel, 64)
        return w.reshape(q.shape).to(q.dtype)


class ZooMinMaxAffine:
    """Correct asymmetric (affine) 4-bit: per block offset = min, scale = (max - min) / 15, levels 0..15,
    code = round((x - min) / scale). Its own scale kind "minmax"; zero is not exact (exact_zero=False).
    Dequantizes as plain float32 ``code * scale + min``, as any affine kernel does."""

    name = "zoo-minmax-affine"

    def __init__(self) -> None:
        self.spec = FormatSpec(
            format="uint4-minmax",
            codebook=tuple(float(k) for k in range(16)),
            block_size=64,
            scale="minmax",
            exact_zero=False,
            packing=PACKING_HIGH_FIRST,
        )
        self.capabilities = Capabilities()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        pad = (-n) % 64
        # pad with the block's own first value, so the padding never changes min or max
        blocks = torch.cat([w, w[-1:].expand(pad)]).view(-1, 64) if pad else w.view(-1, 64)
        low, high = blocks.amin(dim=1), blocks.amax(dim=1)
        scale = (high - low) / 15
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        codes = torch.round((w - _per_element(low, n, 64)) / _per_element(safe, n, 64)).clamp_(0, 15)
        codes = codes.to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=scale,
            offsets=low,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": pack_nibbles(codes), "scale": scale, "min": low},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel).to(torch.float32)
        w = codes * _per_element(q.storage["scale"], q.numel, 64) + _per_element(q.storage["min"], q.numel, 64)
        return w.reshape(q.shape).to(q.dtype)


class ZooInt4ZeroPoint:
    """Correct GPTQ/AWQ-style asymmetric int4 with an integer zero point: per block the range
    [min(x, 0), max(x, 0)], ``scale = range / 15``, ``zero = round(-min / scale)``, ``q = clamp(round(x /
    scale) + zero, 0, 15)``, dequantized as ``(q - zero) * scale``. Zero is exact (q = zero), so
    exact_zero=True; an all-zero block gets GPTQ's guard range [-1, 1]. Reported as the contract asks:
    codebook 0..15, scales = scale, offsets = -zero * scale (float32)."""

    name = "zoo-int4-zeropoint"

    def __init__(self) -> None:
        self.spec = FormatSpec(
            format="uint4-zp",
            codebook=tuple(float(k) for k in range(16)),
            block_size=64,
            scale="minmax-zeropoint",
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )
        self.capabilities = Capabilities()

    def _range(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xmin = blocks.amin(dim=1).clamp(max=0)
        xmax = blocks.amax(dim=1).clamp(min=0)
        dead = (xmin == 0) & (xmax == 0)  # GPTQ: tmp = (xmin == 0) & (xmax == 0); xmin[tmp] = -1; xmax[tmp] = +1
        return torch.where(dead, -1.0, xmin), torch.where(dead, 1.0, xmax)

    def _zero(self, xmin: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The integer zero point: the code of 0.0 on the block's grid."""
        return torch.round(-xmin / scale)

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        xmin, xmax = self._range(_pad_blocks(w, 64))  # zero padding is harmless: the range always holds 0
        scale = (xmax - xmin) / 15
        zero = self._zero(xmin, scale)
        q = torch.round(w / _per_element(scale, n, 64) + _per_element(zero, n, 64)).clamp(0, 15)
        codes = q.to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=scale,
            offsets=-zero * scale,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": pack_nibbles(codes), "scale": scale, "zero": zero.to(torch.float16)},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel).to(torch.float32)
        n = q.numel
        zero = q.storage["zero"].to(torch.float32)
        w = (codes - _per_element(zero, n, 64)) * _per_element(q.storage["scale"], n, 64)
        return w.reshape(q.shape).to(q.dtype)


# ---------------------------------------------------------------------------------------------- broken ones


class ZooOffByOneBlocks(_AbsmaxBlockwise):
    """BUG: the absmax of block i is taken over ``flat[i*B : i*B + B - 1]`` (slice end off by one), so the
    last element of every full block is not counted and may exceed the scale (it gets clipped)."""

    name = "zoo-offbyone-blocks"

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        return _pad_blocks(flat, self.block_size)[:, : self.block_size - 1].abs().amax(dim=1)


class ZooPartialBlockPrevScale(_AbsmaxBlockwise):
    """BUG: the last partial block reuses the previous (full) block's scale instead of its own."""

    name = "zoo-partial-block-prev-scale"

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        full = flat.numel() - flat.numel() % self.block_size
        if full == 0 or full == flat.numel():
            return super()._absmax(flat)
        head = flat[:full].view(-1, self.block_size).abs().amax(dim=1)
        return torch.cat([head, head[-1:]])


class ZooFloorRounding(_AbsmaxBlockwise):
    """BUG: rounds down (largest level <= x / absmax, like truncation) instead of to the nearest level."""

    name = "zoo-floor-rounding"

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        return (torch.searchsorted(self._levels, y, right=True) - 1).clamp(0, 15).to(torch.uint8)


class ZooWrongMidpoint(_AbsmaxBlockwise):
    """BUG: hard-coded decision thresholds with one typo: between levels 0.4407 and 0.5626 it compares
    against the upper LEVEL instead of the midpoint, so (0.5017, 0.5626) goes to 0.4407."""

    name = "zoo-wrong-midpoint"

    def __init__(self) -> None:
        super().__init__()
        levels = self._levels.double()
        thresholds = (levels[1:] + levels[:-1]) / 2
        thresholds[12] = levels[13]  # typo: should be (levels[12] + levels[13]) / 2
        self._thresholds = thresholds.float()

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        return torch.bucketize(y, self._thresholds).to(torch.uint8)


class ZooSwappedNibblesPack(_AbsmaxBlockwise):
    """BUG: declares high-nibble-first but packs (and unpacks) low nibble first; round trips are fine,
    the bytes are not what a high-nibble-first kernel would read."""

    name = "zoo-swapped-nibbles-pack"

    def _pack(self, codes: torch.Tensor) -> torch.Tensor:
        return pack_nibbles(codes, PACKING_LOW_FIRST)

    def _unpack(self, packed: torch.Tensor, numel: int) -> torch.Tensor:
        return unpack_nibbles(packed, numel, PACKING_LOW_FIRST)


class ZooSwappedNibblesUnpack(_AbsmaxBlockwise):
    """BUG: packs high nibble first (as declared) but dequantize unpacks low nibble first: every pair of
    neighbouring elements comes back swapped."""

    name = "zoo-swapped-nibbles-unpack"

    def _unpack(self, packed: torch.Tensor, numel: int) -> torch.Tensor:
        return unpack_nibbles(packed, numel, PACKING_LOW_FIRST)


class ZooLostShape(_AbsmaxBlockwise):
    """BUG: dequantize returns the flat tensor (forgets ``reshape(q.shape)``)."""

    name = "zoo-lost-shape"

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        return self._decode(q).to(q.dtype)


class ZooLostDtype(_AbsmaxBlockwise):
    """BUG: dequantize returns float32 whatever the input dtype (forgets ``.to(q.dtype)``)."""

    name = "zoo-lost-dtype"

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        return self._decode(q).reshape(q.shape)


class ZooMutatedInput(_AbsmaxBlockwise):
    """BUG: normalises in place. ``x.reshape(-1).to(float32)`` is the caller's own storage for a contiguous
    float32 input, so ``div_`` overwrites the caller's weight with x / absmax (bf16/fp16 inputs are copied
    by the cast and survive, which is why this goes unnoticed)."""

    name = "zoo-mutated-input"

    def _normalize(self, x: torch.Tensor, flat: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        safe = torch.where(scales == 0, torch.ones_like(scales), scales)
        return flat.div_(_per_element(safe, flat.numel(), self.block_size))


@dataclass
class _HiddenState:
    """A "quant state" object that happens to hold the original weight."""

    original: torch.Tensor


class ZooHiddenCopy(_AbsmaxBlockwise):
    """BUG (storage that lies): keeps the full-precision weight in ``state`` and dequantizes by quantizing
    that copy again; ``storage``/``nbytes`` report only the 4-bit data. Outputs are bit-identical to an
    honest implementation, so only the storage-used check can tell."""

    name = "zoo-hidden-copy"

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        q = super().quantize(x)
        q.state = _HiddenState(original=x.detach().clone())
        return q

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        original = q.state.original
        return super().dequantize(super().quantize(original))


class ZooStorageView(_AbsmaxBlockwise):
    """BUG (storage that lies): packs into a one-byte-per-element workspace and keeps ``work[:n/2]``, a view
    that pins the whole workspace, so nbytes reports half the memory actually held."""

    name = "zoo-storage-view"

    def _pack(self, codes: torch.Tensor) -> torch.Tensor:
        packed = pack_nibbles(codes, self._pack_order)
        work = torch.empty(codes.numel() + 1, dtype=torch.uint8)
        work[: packed.numel()] = packed
        return work[: packed.numel()]


class ZooNondeterministic(_AbsmaxBlockwise):
    """BUG: "unbiased" random tie-breaking: when x / absmax is within 2**-22 of a midpoint it picks either
    neighbour at random (global RNG), so two calls on the same input can differ."""

    name = "zoo-nondeterministic"

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        distance = (y[:, None] - self._levels[None, :]).abs()
        best, which = distance.topk(2, dim=1, largest=False)
        tie = (best[:, 1] - best[:, 0]) <= 2.0**-22
        coin = torch.rand(y.numel()) < 0.5
        return torch.where(tie & coin, which[:, 1], which[:, 0]).to(torch.uint8)


class ZooFakeNF4Uniform(_AbsmaxBlockwise):
    """BUG (wrong codebook under a right name): calls itself NF4 but uses the uniform levels k/7."""

    name = "zoo-fake-nf4-uniform"

    def _codebook(self) -> torch.Tensor:
        return format_codebook("int4")


class ZooClippedScales(_AbsmaxBlockwise):
    """BUG: "clips outliers" with scale = 0.99 * absmax while declaring scale kind 'absmax'."""

    name = "zoo-clipped-scales"

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        return super()._absmax(flat) * 0.99


class ZooClampedAbsmax(_AbsmaxBlockwise):
    """BUG: guards the division with ``absmax.clamp(min=1e-5)``: blocks smaller than 1e-5 get a scale that
    is not their absmax, and most of their elements round to zero."""

    name = "zoo-clamped-absmax"

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        return super()._absmax(flat).clamp(min=1e-5)


class ZooNoExactZero(_AbsmaxBlockwise):
    """BUG: a symmetric 16-level grid (2k+1)/15 without a zero level, while declaring exact_zero=True."""

    name = "zoo-no-exact-zero"
    format = "int4-sym"

    def _codebook(self) -> torch.Tensor:
        return torch.arange(-15, 16, 2, dtype=torch.float64).div(15).float()


class ZooCodesDisagree(ZooFP4Sorted):
    """BUG (reported codes disagree with dequantize): the FP4 quantizer above, reporting its internal
    sorted-position index as ``codes`` while packing (and decoding) the real bitsandbytes codes."""

    name = "zoo-codes-disagree"

    def _reported_codes(self, position: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return position.to(torch.uint8)  # the bug: should be ``codes``


class ZooDoubleQuant4Bit(_AbsmaxBlockwise):
    """BUG (double quantization with a bogus bound): declares DoubleQuant(bits=8) but stores the scales as
    4-bit codes (-7..7 around their mean), so stored scales are 8x coarser than promised."""

    name = "zoo-dq-4bit-declared-8bit"
    double_quant = DoubleQuant(bits=8, block_size=256)

    def _scale_table(self, codes: torch.Tensor, outer: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return (codes.to(torch.float32) / 7 * _per_element(outer, codes.numel(), 256) + mean).clamp(min=0)

    def _store_scales(self, scales: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        mean = scales.mean().reshape(1)
        centred = scales - mean
        outer = _pad_blocks(centred, 256).abs().amax(dim=1)
        safe = torch.where(outer == 0, torch.ones_like(outer), outer)
        codes = torch.round(centred / _per_element(safe, scales.numel(), 256) * 7).clamp(-7, 7).to(torch.int8)
        storage = {"absmax_codes": codes, "absmax_outer": outer, "absmax_mean": mean}
        return storage, self._scale_table(codes, outer, mean)

    def _load_scales(self, q: QuantizedTensor) -> torch.Tensor:
        s = q.storage
        return self._scale_table(s["absmax_codes"], s["absmax_outer"], s["absmax_mean"])


class ZooBF16ComputeUndeclared(_InputDtypeDivision):
    """BUG: divides x / absmax in bfloat16/float16 (the input dtype) but declares the default
    compute_dtype=float32: codes near midpoints are off by far more than a few float32 ulp."""

    name = "zoo-bf16-compute-undeclared"


class ZooNaNZeroBlocks(ZooInt4ZeroPoint):
    """BUG (NaN on all-zero blocks): the GPTQ-style quantizer above without its zero-range guard: an
    all-zero block gets scale 0 and zero point round(-0 / 0) = NaN, and ``(q - zero) * scale`` is NaN."""

    name = "zoo-nan-zero-blocks"

    def _range(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return blocks.amin(dim=1).clamp(max=0), blocks.amax(dim=1).clamp(min=0)  # no guard: 0 / 0 below


class FakeNF4MeanStd:
    """BUG (the famous write-up's "NF4"): each block is normalised by its mean and standard deviation and
    rounded as ``round(z * 7)`` onto the uniform grid k/7, k = -8..7, dequantized as
    ``k/7 * std + mean``; it still calls itself NF4 (and so promises NF4's exact zero). Scale kind
    "meanstd", offsets = block mean. Values beyond 8/7 standard deviations are clipped."""

    name = "zoo-fake-nf4-meanstd"

    def __init__(self) -> None:
        self.spec = FormatSpec(
            format="nf4",
            codebook=tuple(format_codebook("int4").tolist()),
            block_size=64,
            scale="meanstd",
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )
        self.capabilities = Capabilities()

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        blocks = [w[i : i + 64] for i in range(0, n, 64)]
        mean = torch.stack([b.mean() for b in blocks])
        std = torch.stack([b.std(correction=0) for b in blocks])
        safe = torch.where(std == 0, torch.ones_like(std), std)  # constant blocks: z = 0
        z = (w - _per_element(mean, n, 64)) / _per_element(safe, n, 64)
        codes = (torch.round(z * 7).clamp(-8, 7) + 8).to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=std,
            offsets=mean,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": pack_nibbles(codes), "std": std, "mean": mean},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel).to(torch.float32)
        n = q.numel
        w = (codes - 8) / 7 * _per_element(q.storage["std"], n, 64) + _per_element(q.storage["mean"], n, 64)
        return w.reshape(q.shape).to(q.dtype)


# ---------------------------------------------------------------------------------------------- registry

ZOO_CORRECT: list[type[Any]] = [
    ZooNF4Argmin,
    ZooInt4LowFirst,
    ZooAF4Block128,
    ZooBlackBoxNF4,
    ZooMinMaxAffine,
    ZooNF4BF16Declared,
    ZooNF4DoubleQuant,
    ZooInt4ZeroPoint,
    ZooFP4Sorted,
]
"""Correct implementations: every property test that applies must pass (skips only where it does not)."""

_BROKEN: list[tuple[type[Any], set[str]]] = [
    (ZooOffByOneBlocks, {"test_scales", "test_nearest_code", "test_roundtrip_bound"}),
    (ZooPartialBlockPrevScale, {"test_scales", "test_nearest_code", "test_roundtrip_bound"}),
    (ZooFloorRounding, {"test_nearest_code", "test_roundtrip_bound", "test_error_vs_reference"}),
    (ZooWrongMidpoint, {"test_nearest_code", "test_error_vs_reference"}),
    (ZooSwappedNibblesPack, {"test_packing"}),
    (ZooSwappedNibblesUnpack, {"test_decode_consistency", "test_roundtrip_bound", "test_monotone"}),
    (ZooNaNZeroBlocks, {"test_shape_dtype_finite", "test_zero_blocks", "test_exact_zero"}),
    (ZooLostShape, {"test_shape_dtype_finite"}),
    (ZooLostDtype, {"test_shape_dtype_finite"}),
    (ZooMutatedInput, {"test_input_unchanged"}),
    (ZooHiddenCopy, {"test_storage_used"}),
    (ZooStorageView, {"test_storage_size"}),
    (ZooNondeterministic, {"test_deterministic"}),
    (ZooFakeNF4Uniform, {"test_codebook", "test_error_vs_reference"}),
    (FakeNF4MeanStd, {"test_codebook", "test_exact_zero", "test_roundtrip_bound"}),
    (ZooClippedScales, {"test_scales", "test_nearest_code"}),
    (ZooClampedAbsmax, {"test_scales", "test_nearest_code", "test_roundtrip_bound"}),
    (ZooNoExactZero, {"test_codebook", "test_exact_zero"}),
    (ZooCodesDisagree, {"test_decode_consistency", "test_nearest_code"}),
    (ZooDoubleQuant4Bit, {"test_scales", "test_roundtrip_bound"}),
    (ZooBF16ComputeUndeclared, {"test_nearest_code"}),
]

ZOO_BROKEN: dict[str, tuple[type[Any], set[str]]] = {cls.name: (cls, expected) for cls, expected in _BROKEN}
"""name -> (class, property tests that must fail for it). Other tests may fail too where the bug spills over."""


def correct_quantizers() -> list[Quantizer]:
    """Fresh instances of every correct zoo quantizer (``--quantizer tests.zoo:correct_quantizers``)."""
    return [cls() for cls in ZOO_CORRECT]


def broken_quantizers() -> list[Quantizer]:
    """Fresh instances of every broken zoo quantizer (``--quantizer tests.zoo:broken_quantizers``)."""
    return [cls() for cls, _ in ZOO_BROKEN.values()]


# ---------------------------------------------------------------------------------------------- non-finite inputs
#
# NaN, +-Inf and empty tensors (suites/properties/test_nonfinite.py). Each is otherwise the base class, so it
# passes every other property; ``nonfinite_quantizers`` adds a clear rejecter, which stays out of ZOO_CORRECT
# (its "rejected" skips are an outcome of that property, not a check that does not apply).


class ZooNF4NonFiniteBlockNaN(_AbsmaxBlockwise):
    """Correct, and deliberate about non-finite inputs: a block holding a NaN or an Inf gets a NaN scale, so
    that block (and only it) comes back all NaN, whatever the value's sign or position; an empty tensor comes
    back empty."""

    name = "zoo-nf4-nonfinite-block-nan"

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        poisoned = _pad_blocks((~torch.isfinite(flat)).to(torch.float32), self.block_size).amax(dim=1) > 0
        return torch.where(poisoned, torch.full_like(poisoned, math.nan, dtype=torch.float32), super()._absmax(flat))


class ZooNF4RejectsNonFinite(_AbsmaxBlockwise):
    """Correct by refusing: a NaN, an Inf or an empty tensor raises ValueError saying what and where."""

    name = "zoo-nf4-rejects-nonfinite"

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        if x.numel() == 0:
            raise ValueError(f"x.shape={tuple(x.shape)} is empty, expected at least one element")
        bad = (~torch.isfinite(x)).reshape(-1).nonzero()
        if bad.numel():
            index = int(bad[0])
            raise ValueError(f"x has {float(x.reshape(-1)[index])!r} at flat index {index}, expected finite values")
        return super().quantize(x)


class ZooClampToTensorRange(_AbsmaxBlockwise):
    """BUG (NaN spreads to the whole tensor despite per-block scales): dequantize "guards against overshoot"
    by clamping the output to the largest stored scale. A NaN block's scale is NaN, ``scales.max()`` is NaN,
    and ``clamp`` with a NaN bound returns NaN everywhere. An Inf only makes the bound infinite (harmless), and
    finite inputs never reach the bound (|level| <= 1), so only a NaN shows it."""

    name = "zoo-clamp-to-tensor-range"

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        values = self._decode(q)
        scales = self._load_scales(q)
        if scales.numel():
            limit = scales.max()
            values = values.clamp(-limit, limit)
        return values.reshape(q.shape).to(q.dtype)


class ZooInt4StepTable(_AbsmaxBlockwise):
    """BUG (unclear crash): symmetric int4 encoded as ``step = round(7 * x / absmax)`` and mapped to its code
    through a table (so one encoder serves any code order). A NaN or an Inf makes a step NaN (inf / inf),
    which ``long()`` turns into -2**63, and the table lookup raises IndexError; an empty tensor raises
    IndexError where the last block is padded with ``flat[-1]``. Finite inputs are quantized correctly."""

    name = "zoo-int4-step-table"
    format = "int4"

    def __init__(self) -> None:
        super().__init__()
        self._code_of_step = torch.arange(16, dtype=torch.uint8)  # step k (-8..7) -> code k + 8

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        pad = (-flat.numel()) % self.block_size
        padded = torch.cat([flat, flat[-1].abs().expand(pad)])  # |last| never changes the block's absmax
        return padded.view(-1, self.block_size).abs().amax(dim=1)

    def _encode(self, y: torch.Tensor) -> torch.Tensor:
        steps = torch.round(y * 7).long()
        return self._code_of_step[steps + 8]


ZOO_CORRECT.append(ZooNF4NonFiniteBlockNaN)
ZOO_BROKEN[ZooClampToTensorRange.name] = (ZooClampToTensorRange, {"test_nonfinite_input"})
ZOO_BROKEN[ZooInt4StepTable.name] = (ZooInt4StepTable, {"test_nonfinite_input", "test_empty_input"})
__all__ += ["nonfinite_quantizers"]


def nonfinite_quantizers() -> list[Quantizer]:
    """One zoo quantizer per outcome of the non-finite/empty property (``--quantizer tests.zoo:nonfinite_quantizers``):
    confined to its block, confined to its double-quantization group, rejected, whole tensor lost to a
    tensor-wide mean, NaN spread despite per-block scales, unclear crash."""
    return [
        ZooNF4NonFiniteBlockNaN(),
        ZooNF4DoubleQuant(),
        ZooNF4RejectsNonFinite(),
        ZooDoubleQuant4Bit(),
        ZooClampToTensorRange(),
        ZooInt4StepTable(),
    ]


# ---------------------------------------------------------------------------------------------- scale kinds
#
# One correct and one broken quantizer per scale kind the harness derives (harness/scale_kinds.py), written
# the way the libraries write them (llama.cpp's Q4_0, GPTQ, OCP MX, NVFP4), not through the harness's rules.

_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
"""FP4 E2M1 in OCP code order: bit 3 is the sign, the three low bits the magnitude's exponent and mantissa."""


class ZooQ4_0:
    """Correct llama.cpp Q4_0 (scale kind signed-absmax): per 32 values, ``max`` is the first element of
    largest magnitude, ``d = max / -8``, ``q = min(15, (int8)(x / d + 8.5))``, decoded as ``(q - 8) * d``.
    The codebook is the integer steps -8..7; d is kept in float32 (ggml keeps it in float16, which overflows
    beyond 65504: see ZooQ4_0HalfScale). Codes packed two per byte in pair order (ggml's own layout, element j
    beside j + 16, is not a pair order: packing is not declared)."""

    name = "zoo-q4_0"
    scale_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(self) -> None:
        self.spec = FormatSpec(
            format="q4_0",
            codebook=tuple(float(k - 8) for k in range(16)),
            block_size=32,
            scale=SCALE_SIGNED_ABSMAX,
            exact_zero=True,
        )
        self.capabilities = Capabilities()

    def _d(self, blocks: torch.Tensor) -> torch.Tensor:
        first = blocks.abs().argmax(dim=1)  # argmax keeps the first of equal magnitudes, as ggml's strict '<'
        signed = blocks.gather(1, first[:, None]).squeeze(1)
        return signed / -8

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        d = self._d(_pad_blocks(w, 32))
        stored = d.to(self.scale_dtype)
        inverse = torch.where(d == 0, torch.zeros_like(d), 1.0 / torch.where(d == 0, 1.0, d))
        q = torch.trunc(w * _per_element(inverse, n, 32) + 8.5).clamp(max=15)
        codes = q.to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=stored.to(torch.float32),
            shape=x.shape,
            dtype=x.dtype,
            storage={"qs": pack_nibbles(codes, PACKING_LOW_FIRST), "d": stored},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["qs"], q.numel, PACKING_LOW_FIRST).to(torch.float32)
        w = (codes - 8) * _per_element(q.storage["d"].to(torch.float32), q.numel, 32)
        return w.reshape(q.shape).to(q.dtype)


class ZooQ4_0WrongSign(ZooQ4_0):
    """BUG (sign convention): ``d = max / 8`` instead of ``max / -8``. Encoding and decoding agree with each
    other, so round trips look fine, but the block's largest element lands on +7 * d instead of -8 * d (clipped
    by 1/8 of it) and every code is the mirror of Q4_0's: a Q4_0 kernel reading these blocks negates them."""

    name = "zoo-q4_0-wrong-sign"

    def _d(self, blocks: torch.Tensor) -> torch.Tensor:
        return -super()._d(blocks)


class ZooQ4_0HalfScale(ZooQ4_0):
    """BUG (ggml's float16 d, declared as an exact signed-absmax scale): d is stored in float16, so the scale
    is off by float16 rounding everywhere, and a block whose d exceeds 65504 (|max| > 524032) gets d = inf and
    decodes to inf/NaN."""

    name = "zoo-q4_0-half-scale"  # not in ZOO_BROKEN: tests/test_scale_kinds.py pins its one message
    scale_dtype = torch.float16


class ZooMinMaxDropsOffset(ZooMinMaxAffine):
    """BUG: the affine min/max quantizer above, whose dequantize forgets ``+ min``: it reports the right codes,
    scales and offsets, and decodes ``code * scale``."""

    name = "zoo-minmax-drops-offset"

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel).to(torch.float32)
        return (codes * _per_element(q.storage["scale"], q.numel, 64)).reshape(q.shape).to(q.dtype)


class ZooGPTQAffineInt(ZooInt4ZeroPoint):
    """Correct GPTQ/AWQ-style int4 as above, declared with the harness's scale kind affine-int (so its scales
    and zero points are derived and compared, not trusted)."""

    name = "zoo-gptq-affine-int"

    def __init__(self) -> None:
        super().__init__()
        self.spec = FormatSpec(
            format="uint4-gptq",
            codebook=tuple(float(k) for k in range(16)),
            block_size=64,
            scale=SCALE_AFFINE_INT,
            exact_zero=True,
            packing=PACKING_HIGH_FIRST,
        )


class ZooGPTQFloorZero(ZooGPTQAffineInt):
    """BUG: the zero point is ``floor(-min / scale)`` instead of ``round``: the grid sits up to one step too
    high, so a block's most negative values clip by up to a whole step."""

    name = "zoo-gptq-floor-zero"

    def _zero(self, xmin: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.floor(-xmin / scale)


class ZooMXFP4:
    """Correct OCP MXFP4 (scale kind e8m0): per 32 values a shared scale 2**(floor(log2 amax) - 2), kept as
    one biased E8M0 byte; E2M1 elements (OCP code order), nearest by argmin, saturating at +-6; codes packed low
    nibble first. An all-zero block keeps the smallest scale 2**-127."""

    name = "zoo-mxfp4"

    def __init__(self) -> None:
        self.spec = FormatSpec(
            format="mxfp4", codebook=_E2M1, block_size=32, scale=SCALE_E8M0, exact_zero=True, packing=PACKING_LOW_FIRST
        )
        self.capabilities = Capabilities()
        self._levels = torch.tensor(_E2M1, dtype=torch.float32)

    def _exponent(self, amax: torch.Tensor) -> torch.Tensor:
        _, e = torch.frexp(amax)  # amax = m * 2**e, m in [0.5, 1): floor(log2 amax) = e - 1
        return e - 1

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        amax = _pad_blocks(w, 32).abs().amax(dim=1)
        shared = torch.where(amax == 0, -127, self._exponent(amax) - 2).clamp(-127, 127)
        scale = torch.ldexp(torch.ones_like(amax), shared)
        y = w / _per_element(scale, n, 32)
        codes = (y[:, None] - self._levels[None, :]).abs().argmin(dim=1).to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=scale,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": pack_nibbles(codes, PACKING_LOW_FIRST), "e8m0": (shared + 127).to(torch.uint8)},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel, PACKING_LOW_FIRST).long()
        exponent = q.storage["e8m0"].to(torch.int32) - 127
        scale = torch.ldexp(torch.ones(exponent.shape, dtype=torch.float32), exponent)
        return (self._levels[codes] * _per_element(scale, q.numel, 32)).reshape(q.shape).to(q.dtype)


class ZooMXFP4ExponentUp(ZooMXFP4):
    """BUG: the shared exponent is ``ceil(log2 amax) - 2`` (rounded up instead of down): twice the scale for
    every block whose amax is not a power of two, so the block uses only half of the E2M1 range."""

    name = "zoo-mxfp4-exponent-up"

    def _exponent(self, amax: torch.Tensor) -> torch.Tensor:
        return torch.ceil(torch.log2(amax)).to(torch.int32)


class ZooNVFP4:
    """Correct NVFP4 (scale kind e4m3-tensor): a float32 tensor scale ``s_t = amax(tensor) / (6 * 448)``, per 16
    values an FP8 E4M3 scale ``s_b = e4m3(amax(block) / (6 * s_t))``, E2M1 elements of ``x / (s_b * s_t)``.
    The tensor scale is tensor-wide, so a NaN would reach every block through it: the tensor scale is taken over
    the finite values, and a block holding a NaN or an Inf gets a NaN block scale instead."""

    name = "zoo-nvfp4"

    def __init__(self) -> None:
        self.spec = FormatSpec(format="nvfp4", codebook=_E2M1, block_size=16, scale=SCALE_E4M3_TENSOR)
        self.capabilities = Capabilities()
        self._levels = torch.tensor(_E2M1, dtype=torch.float32)

    def _tensor_scale(self, w: torch.Tensor) -> torch.Tensor:
        finite = torch.where(torch.isfinite(w), w, torch.zeros_like(w))  # a NaN/Inf must not set every block's scale
        return (finite.abs().amax() / (6 * 448)).reshape(1) if w.numel() else torch.zeros(1)

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        s_t = self._tensor_scale(w)
        safe_t = torch.where(s_t == 0, torch.ones_like(s_t), s_t)
        blocks = _pad_blocks(w, 16)
        amax = blocks.abs().amax(dim=1)
        s_b = (amax / (6 * safe_t)).clamp(max=448).to(torch.float8_e4m3fn)
        # a block holding a NaN or an Inf gets a NaN scale (E4M3 has NaN): that block, and only it, comes back NaN
        poisoned = (~torch.isfinite(blocks)).any(dim=1)
        s_b = torch.where(poisoned, torch.full_like(amax, math.nan), s_b.to(torch.float32)).to(torch.float8_e4m3fn)
        scale = s_b.to(torch.float32) * s_t
        safe = torch.where(scale == 0, torch.ones_like(scale), scale)
        y = w / _per_element(safe, n, 16)
        codes = (y[:, None] - self._levels[None, :]).abs().argmin(dim=1).to(torch.uint8)
        return QuantizedTensor(
            codes=codes.reshape(x.shape),
            scales=scale,
            shape=x.shape,
            dtype=x.dtype,
            storage={"packed": pack_nibbles(codes), "block_scale": s_b, "tensor_scale": s_t},
        )

    def dequantize(self, q: QuantizedTensor) -> torch.Tensor:
        codes = unpack_nibbles(q.storage["packed"], q.numel).long()
        scale = q.storage["block_scale"].to(torch.float32) * q.storage["tensor_scale"]
        return (self._levels[codes] * _per_element(scale, q.numel, 16)).reshape(q.shape).to(q.dtype)


class ZooNVFP4NoTensorScale(ZooNVFP4):
    """BUG: leaves out the per-tensor scale (s_t = 1): the E4M3 block scale saturates at 448 for blocks beyond
    2688 and flushes to zero below about 1e-3, where the tensor scale would have kept them in range."""

    name = "zoo-nvfp4-no-tensor-scale"

    def _tensor_scale(self, w: torch.Tensor) -> torch.Tensor:
        return torch.ones(1)


ZOO_CORRECT += [ZooQ4_0, ZooGPTQAffineInt, ZooMXFP4, ZooNVFP4]
for _cls, _expected in (
    (ZooQ4_0WrongSign, {"test_scales", "test_nearest_code"}),
    (ZooMinMaxDropsOffset, {"test_decode_consistency", "test_roundtrip_bound"}),
    (ZooGPTQFloorZero, {"test_scales", "test_roundtrip_bound"}),
    (ZooMXFP4ExponentUp, {"test_scales", "test_nearest_code"}),
    (ZooNVFP4NoTensorScale, {"test_scales", "test_roundtrip_bound"}),
):
    ZOO_BROKEN[_cls.name] = (_cls, _expected)


class ZooNF4Searched(_AbsmaxBlockwise):
    """Correct NF4 with a searched scale (scale kind 'searched'): per block it tries ``r * absmax`` for clip
    ratios r in CLIP_RATIOS (1 included) and keeps the one with the lowest squared error, so clipping a few
    outliers may pay for a finer grid; it can never do worse than absmax."""

    name = "zoo-nf4-searched"
    CLIP_RATIOS: ClassVar[tuple[float, ...]] = (1.0, 0.95, 0.9, 0.85, 0.8)

    def __init__(self) -> None:
        super().__init__()
        self.spec = FormatSpec(
            format="nf4",
            codebook=self.spec.codebook,
            block_size=self.block_size,
            scale=SCALE_SEARCHED,
            exact_zero=True,
            packing=self.packing,
        )

    def _absmax(self, flat: torch.Tensor) -> torch.Tensor:
        blocks = _pad_blocks(flat, self.block_size)
        amax = blocks.abs().amax(dim=1)
        safe = torch.where(amax == 0, torch.ones_like(amax), amax)
        best_scale, best_error = amax.clone(), torch.full_like(amax, math.inf)
        for ratio in self.CLIP_RATIOS:
            scale = safe * ratio
            y = blocks / scale[:, None]
            nearest = self._levels[(y[..., None] - self._levels).abs().argmin(dim=-1)]
            error = (nearest * scale[:, None] - blocks).square().sum(dim=1)
            better = error < best_error
            best_scale = torch.where(better, torch.where(amax == 0, amax, scale), best_scale)
            best_error = torch.where(better, error, best_error)
        return best_scale


class ZooNF4SearchedTooNarrow(ZooNF4Searched):
    """BUG (a search over the wrong candidates): the clip ratios were meant as 1.0 .. 0.8 but read 0.5 .. 0.3,
    so every block clips hard; honest about its scales, but worse than plain absmax on Gaussian blocks."""

    name = "zoo-nf4-searched-too-narrow"
    CLIP_RATIOS = (0.5, 0.4, 0.3)


ZOO_CORRECT.append(ZooNF4Searched)
ZOO_BROKEN[ZooNF4SearchedTooNarrow.name] = (ZooNF4SearchedTooNarrow, {"test_error_vs_reference"})


def junit_cases(junit: Path, names: Sequence[str]) -> Iterator[tuple[str, str, str, str, str]]:
    """The tests of a suite run on zoo implementations, read back from its ``--junitxml`` file: (implementation,
    test function, the rest of the test id after the implementation, outcome, message), outcome one of passed,
    failed (a failure or an error) and skipped."""
    by_length = sorted(names, key=len, reverse=True)
    for testcase in ET.parse(junit).getroot().iter("testcase"):
        match = re.fullmatch(r"(\w+)\[(.*)\]", testcase.get("name", ""))
        assert match, f"unexpected test id {testcase.get('name')!r} in {junit}"
        test, ident = match.groups()
        name = next((n for n in by_length if ident == n or ident.startswith(n + "-")), None)
        assert name is not None, f"{test}[{ident}] is not a zoo implementation (--impl 'zoo-*' leaked)"
        outcome, message = "passed", ""
        for tag, verdict in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            element = testcase.find(tag)
            if element is not None:
                outcome, message = verdict, (element.get("message") or "") + "\n" + (element.text or "")
                break
        yield name, test, ident[len(name) + 1 :], outcome, message
