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
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

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
from harness.formats import codebook as format_codebook
from harness.formats.packing import pack_nibbles, unpack_nibbles

__all__ = [
    "ZOO_BROKEN",
    "ZOO_CORRECT",
    "FakeNF4MeanStd",
    "broken_quantizers",
    "correct_quantizers",
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

    def quantize(self, x: torch.Tensor) -> QuantizedTensor:
        w = x.detach().float().reshape(-1)
        n = w.numel()
        xmin, xmax = self._range(_pad_blocks(w, 64))  # zero padding is harmless: the range always holds 0
        scale = (xmax - xmin) / 15
        zero = torch.round(-xmin / scale)
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
    (ZooFloorRounding, {"test_nearest_code", "test_roundtrip_bound", "test_error_statistics"}),
    (ZooWrongMidpoint, {"test_nearest_code", "test_error_statistics"}),
    (ZooSwappedNibblesPack, {"test_packing"}),
    (ZooSwappedNibblesUnpack, {"test_decode_consistency", "test_roundtrip_bound", "test_monotone"}),
    (ZooNaNZeroBlocks, {"test_shape_dtype_finite", "test_zero_blocks", "test_exact_zero"}),
    (ZooLostShape, {"test_shape_dtype_finite"}),
    (ZooLostDtype, {"test_shape_dtype_finite"}),
    (ZooMutatedInput, {"test_input_unchanged"}),
    (ZooHiddenCopy, {"test_storage_used"}),
    (ZooStorageView, {"test_storage_size"}),
    (ZooNondeterministic, {"test_deterministic"}),
    (ZooFakeNF4Uniform, {"test_codebook", "test_error_statistics"}),
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
