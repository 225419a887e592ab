"""What an implementation's output must look like: the QuantizedTensor's fields, the codebook, the
dequantized tensor's shape/dtype/finiteness, an untouched input, determinism, the packed nibbles, and
storage that is both complete (nbytes) and actually read by dequantize."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import replace

import torch

from harness.api import SCALE_ABSMAX, QuantizedTensor, Quantizer
from harness.checks._common import (
    NotApplicable,
    _codebook,
    _codes,
    _fail,
    _scale_kind,
    describe_element,
)
from harness.formats.packing import packed_size, unpack_nibbles

__all__ = [
    "CANONICAL_TOLERANCE",
    "check_codebook",
    "check_deterministic",
    "check_finite_shape_dtype",
    "check_input_unchanged",
    "check_output_contract",
    "check_packing",
    "check_storage_size",
    "check_storage_used",
]


CANONICAL_TOLERANCE = {"nf4": 1e-6, "fp4": 1e-6, "af4": 2e-4}
"""Max |difference| from the harness's computed codebook for a quantizer to call itself by that name.
NF4 and FP4 are exact constructions (1e-6 is a few float32 ulp); AF4's published tables carry 8 decimals
but match the construction only to about 1e-4."""


def _check_tensor(
    quantizer: Quantizer, prop: str, name: str, t: object, dtype: torch.dtype, numel: int | None = None
) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise _fail(quantizer, prop, f"QuantizedTensor.{name} is a {type(t).__name__}, expected a torch.Tensor")
    if t.dtype != dtype:
        raise _fail(quantizer, prop, f"QuantizedTensor.{name}.dtype={t.dtype}, expected {dtype}")
    if numel is not None and t.numel() != numel:
        raise _fail(quantizer, prop, f"QuantizedTensor.{name} has {t.numel()} elements, expected {numel}")
    return t


def check_output_contract(quantizer: Quantizer, x: torch.Tensor, q: object) -> None:
    """``quantize`` returned a QuantizedTensor whose fields have the documented types and sizes."""
    prop = "output contract"
    if not isinstance(q, QuantizedTensor):
        raise _fail(quantizer, prop, f"quantize returned a {type(q).__name__}, expected a harness.QuantizedTensor")
    if tuple(q.shape) != tuple(x.shape):
        raise _fail(quantizer, prop, f"QuantizedTensor.shape={tuple(q.shape)}, expected the input's {tuple(x.shape)}")
    if q.dtype != x.dtype:
        raise _fail(quantizer, prop, f"QuantizedTensor.dtype={q.dtype}, expected the input's {x.dtype}")
    blocks = -(-x.numel() // quantizer.spec.block_size)
    if q.codes is not None:
        codes = _check_tensor(quantizer, prop, "codes", q.codes, torch.uint8)
        if tuple(codes.shape) != tuple(x.shape):
            raise _fail(quantizer, prop, f"codes.shape={tuple(codes.shape)}, expected the input's {tuple(x.shape)}")
        if codes.numel() and int(codes.max()) > 15:
            index = int(codes.reshape(-1).argmax())
            raise _fail(quantizer, prop, f"code {int(codes.reshape(-1)[index])} > 15 at {describe_element(x, index)}")
    if q.scales is not None:
        _check_tensor(quantizer, prop, "scales", q.scales, torch.float32, blocks)
    if q.offsets is not None:
        _check_tensor(quantizer, prop, "offsets", q.offsets, torch.float32, blocks)
    if not isinstance(q.storage, Mapping):
        raise _fail(quantizer, prop, f"storage is a {type(q.storage).__name__}, expected a dict of tensors")
    for key, value in q.storage.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _fail(quantizer, prop, f"storage[{key!r}] is a {type(value).__name__}, expected a torch.Tensor")


def check_codebook(quantizer: Quantizer) -> None:
    """16 values, no duplicates but +-0, a monotone map once sorted; absmax formats hold +-1; exact-zero formats
    hold 0; a derivable scale kind gets a codebook its rule can use (harness.scale_kinds: integer levels for
    affine-int...) and is one that can keep 0 exact when exact zero is promised; a quantizer named after a
    known format carries that format's codebook."""
    from harness.formats import codebook as canonical_codebook

    spec = quantizer.spec
    prop = "codebook"
    levels = _codebook(quantizer, "the codebook check")
    values = levels.tolist()
    for i in range(16):
        for j in range(i + 1, 16):
            if values[i] == values[j] and not (
                values[i] == 0 and math.copysign(1, values[i]) != math.copysign(1, values[j])
            ):
                raise _fail(
                    quantizer,
                    prop,
                    f"codes {i} and {j} share the value {values[i]!r}; "
                    "expected 16 distinct levels (only +0/-0 may coincide)",
                )
    ordered = sorted(values)
    for lower, upper in itertools.pairwise(ordered):
        if not lower <= upper:  # also rejects NaN, which FormatSpec already excludes
            raise _fail(quantizer, prop, f"sorted levels are not monotone at {lower!r}, {upper!r}")
    if spec.scale == SCALE_ABSMAX and (1.0 not in values or -1.0 not in values):
        raise _fail(
            quantizer,
            prop,
            f"scale='absmax' but the codebook lacks {'1.0' if 1.0 not in values else '-1.0'}: a block's largest "
            f"element could not come back exactly; codebook={values}",
        )
    if spec.exact_zero and 0.0 not in values:
        raise _fail(quantizer, prop, f"exact_zero=True but 0 is not a level; codebook={values}")
    kind = _scale_kind(quantizer)
    if kind is not None and kind.name != SCALE_ABSMAX:
        problem = None if kind.codebook_problem is None else kind.codebook_problem(levels)
        if problem is not None:
            raise _fail(quantizer, prop, f"scale={kind.name!r} but {problem}; codebook={values}")
        if spec.exact_zero and not kind.exact_zero:
            raise _fail(
                quantizer,
                prop,
                f"exact_zero=True but scale kind {kind.name!r} cannot keep 0 exact (its offset moves the grid off "
                "0); declare exact_zero=False or use 'affine-int'",
            )
    tolerance = CANONICAL_TOLERANCE.get(spec.format)
    if tolerance is not None:
        canonical = sorted(canonical_codebook(spec.format, spec.block_size).double().tolist())
        diffs = [abs(a - b) for a, b in zip(ordered, canonical, strict=True)]
        worst = max(range(16), key=diffs.__getitem__)
        if diffs[worst] > tolerance:
            raise _fail(
                quantizer,
                prop,
                f"format={spec.format!r} but sorted level {worst} is {ordered[worst]!r}, expected "
                f"{canonical[worst]!r} (|diff|={diffs[worst]:.3g} > {tolerance:g}); a quantizer that calls itself "
                f"{spec.format.upper()} must carry the {spec.format.upper()} codebook",
            )


def check_finite_shape_dtype(quantizer: Quantizer, x: torch.Tensor, xhat: object) -> None:
    """dequantize returns a tensor of the input's shape, dtype and device, finite where the input is."""
    prop = "output shape/dtype/finiteness"
    if not isinstance(xhat, torch.Tensor):
        raise _fail(quantizer, prop, f"dequantize returned a {type(xhat).__name__}, expected a torch.Tensor")
    if tuple(xhat.shape) != tuple(x.shape):
        raise _fail(quantizer, prop, f"dequantized shape {tuple(xhat.shape)}, expected the input's {tuple(x.shape)}")
    if xhat.dtype != x.dtype:
        raise _fail(quantizer, prop, f"dequantized dtype {xhat.dtype}, expected the input's {x.dtype}")
    if xhat.device != x.device:
        raise _fail(quantizer, prop, f"dequantized device {xhat.device}, expected the input's {x.device}")
    finite = torch.isfinite(xhat).reshape(-1)
    if not bool(finite.all()):
        index = int((~finite).nonzero()[0])
        raise _fail(
            quantizer,
            prop,
            f"non-finite output {float(xhat.reshape(-1)[index])!r} for finite {describe_element(x, index)}",
        )


def check_input_unchanged(quantizer: Quantizer, before: torch.Tensor, after: torch.Tensor) -> None:
    """quantize/dequantize left the caller's tensor bit for bit as it was."""
    a = before.reshape(-1).view(_int_view(before.dtype))
    b = after.reshape(-1).view(_int_view(after.dtype))
    changed = (a != b).nonzero()
    if changed.numel():
        index = int(changed[0])
        raise _fail(
            quantizer,
            "input not modified",
            f"{changed.numel()} input elements changed, first {describe_element(before, index)} now "
            f"{float(after.reshape(-1)[index])!r}",
        )


def _int_view(dtype: torch.dtype) -> torch.dtype:
    return {
        torch.float32: torch.int32,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
        torch.float64: torch.int64,
    }[dtype]


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bytes (NaN equals NaN, -0 differs from +0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(_as_bytes(a), _as_bytes(b))


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as raw bytes; a copy in contiguous layout first, because a library's tensor may
    be a strided view (torchao keeps a 1-element view of a larger buffer) that ``view(uint8)`` rejects."""
    return t.detach().reshape(-1).clone(memory_format=torch.contiguous_format).view(torch.uint8)


def _storage_equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> str | None:
    if set(a) != set(b):
        return f"storage keys {sorted(a)} vs {sorted(b)}"
    for key in a:
        ta, tb = a[key], b[key]
        if ta.shape != tb.shape or ta.dtype != tb.dtype or not torch.equal(_as_bytes(ta), _as_bytes(tb)):
            return f"storage[{key!r}] differs"
    return None


def check_deterministic(
    quantizer: Quantizer,
    x: torch.Tensor,
    q1: QuantizedTensor,
    q2: QuantizedTensor,
    xhat1: torch.Tensor,
    xhat2: torch.Tensor,
) -> None:
    """Quantizing the same input twice gives the same codes, scales, storage and output, bit for bit."""
    prop = "determinism"
    for field_name in ("codes", "scales", "offsets"):
        a, b = getattr(q1, field_name), getattr(q2, field_name)
        if (a is None) != (b is None) or (a is not None and not _bitwise_equal(a, b)):
            raise _fail(
                quantizer,
                prop,
                f"two quantize() calls on the same input ({tuple(x.shape)}, {x.dtype}) gave different {field_name}",
            )
    difference = _storage_equal(q1.storage, q2.storage)
    if difference:
        raise _fail(quantizer, prop, f"two quantize() calls on the same input gave different storage: {difference}")
    mismatch = (xhat1.reshape(-1).view(_int_view(x.dtype)) != xhat2.reshape(-1).view(_int_view(x.dtype))).nonzero()
    if mismatch.numel():
        index = int(mismatch[0])
        raise _fail(
            quantizer,
            prop,
            f"two round trips differ at {describe_element(x, index)}: "
            f"{float(xhat1.reshape(-1)[index])!r} vs {float(xhat2.reshape(-1)[index])!r}",
        )


def check_packing(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """storage['packed'] holds the codes two per byte in the declared nibble order."""
    prop = "packing"
    spec = quantizer.spec
    if spec.packing is None:
        raise NotApplicable(f"{quantizer.name} declares no packing order")
    codes = _codes(quantizer, q, prop)
    packed = q.storage.get("packed")
    if packed is None:
        raise _fail(
            quantizer,
            prop,
            f"packing={spec.packing!r} declared but storage has no 'packed' entry (keys: {sorted(q.storage)})",
        )
    expected_bytes = packed_size(x.numel())
    if packed.dtype != torch.uint8 or packed.numel() != expected_bytes:
        raise _fail(
            quantizer,
            prop,
            f"storage['packed'] is {packed.dtype} with {packed.numel()} elements, "
            f"expected {expected_bytes} uint8 bytes for {x.numel()} codes",
        )
    unpacked = unpack_nibbles(packed, x.numel(), spec.packing).long()
    differ = (unpacked != codes).nonzero()
    if differ.numel():
        index = int(differ[0])
        raise _fail(
            quantizer,
            prop,
            f"unpacking storage['packed'] as {spec.packing} gives code "
            f"{int(unpacked[index])} at {describe_element(x, index)}, but codes[] says "
            f"{int(codes[index])} ({differ.numel()} mismatches)",
        )


def check_storage_size(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor) -> None:
    """nbytes is the real storage (no tensor is a view of a larger hidden buffer), and bits per parameter
    is at least what the spec needs."""
    prop = "storage size"
    if not q.storage:
        raise _fail(quantizer, prop, "storage is empty: nbytes would claim the weight takes no memory")
    for key, tensor in q.storage.items():
        counted = tensor.numel() * tensor.element_size()
        real = tensor.untyped_storage().nbytes()
        if real > counted:
            raise _fail(
                quantizer,
                prop,
                f"storage[{key!r}] counts {counted} bytes but is a view of a {real}-byte "
                f"buffer, so nbytes understates the memory kept",
            )
    if quantizer.spec.codebook is None:
        return
    needed = _min_bits_per_parameter(quantizer, has_offsets=q.offsets is not None)
    bits = 8 * q.nbytes / x.numel()
    if bits < needed - 1e-9:
        raise _fail(
            quantizer,
            prop,
            f"storage holds {q.nbytes} bytes for {x.numel()} elements ({bits:.4f} "
            f"bits/parameter), expected at least {needed:.4f} for this spec: some data "
            f"must live outside storage",
        )


def _min_bits_per_parameter(quantizer: Quantizer, *, has_offsets: bool) -> float:
    """FormatSpec.min_bits_per_parameter, with the scale kind's own scale and offset widths when it declares
    them (an E8M0 or E4M3 block scale is one byte, a GPTQ zero point 4 bits; NVFP4's float32 tensor scale is
    negligible per element)."""
    spec = quantizer.spec
    kind = _scale_kind(quantizer)
    if kind is None or spec.double_quant is not None:
        return spec.min_bits_per_parameter(has_offsets=has_offsets)
    return 4.0 + kind.scale_bits / spec.block_size + (kind.offset_bits / spec.block_size if has_offsets else 0.0)


def _perturbed(t: torch.Tensor, variant: int) -> torch.Tensor:
    """Two unrelated ways of altering stored data (one alone can cancel out: FP4's code 3 -> 2 is
    1 -> 2/3, undone by a scale 1 -> 1.5)."""
    if t.dtype.is_floating_point and t.element_size() == 1:  # float8 (an E4M3 block scale) has no arithmetic
        return _perturbed(t.float(), variant).to(t.dtype)
    if t.dtype.is_floating_point:
        return t * 0.5 + 1.0 if variant == 0 else t * -0.75 - 2.0
    if t.dtype == torch.bool:
        return ~t
    if t.dtype == torch.uint8:
        return t ^ (0x11 if variant == 0 else 0x66)
    return t + (1 if variant == 0 else 3)


def check_storage_used(quantizer: Quantizer, x: torch.Tensor, q: QuantizedTensor, xhat: torch.Tensor) -> None:
    """dequantize reads what the QuantizedTensor holds: changing all of it changes the output. An output
    that survives this comes from a hidden copy, so nbytes is not what the implementation keeps."""
    prop = "dequantize uses the stored data"
    if not bool((x != 0).any()):
        return  # an all-zero input cannot show whether the stored data is used
    for variant in (0, 1):
        fake = replace(
            q,
            codes=None if q.codes is None else _perturbed(q.codes, variant) & 0x0F,
            scales=None if q.scales is None else _perturbed(q.scales, variant),
            offsets=None if q.offsets is None else _perturbed(q.offsets, variant),
            storage={key: _perturbed(value, variant) for key, value in q.storage.items()},
        )
        try:
            fake_out = quantizer.dequantize(fake)
        except Exception:
            return  # it read the altered data and rejected it: the data is used
        if not (isinstance(fake_out, torch.Tensor) and fake_out.shape == xhat.shape and torch.equal(fake_out, xhat)):
            return  # the output moved with the data
    raise _fail(
        quantizer,
        prop,
        f"altering every stored tensor (keys {sorted(q.storage)}) and the codes/scales, in two unrelated ways, "
        f"left the output of input shape={tuple(x.shape)} unchanged: dequantize reads state outside the "
        "QuantizedTensor",
    )
