"""The Triton programs: 4-bit dequantize and fused dequantize + gemv over bitsandbytes' packed layout.

Not imported directly: :mod:`harness.kernels._build` executes this file once per mode (interpreter
for CPU tensors, compiled for CUDA tensors), because ``triton.jit`` picks interpreter or compiler when
the decorator runs, not when the kernel is launched. Every Triton function these kernels call is
either a builtin of ``triton.language`` or defined here, so it is decorated in the same mode as the
kernels (the ``@jit`` helpers of triton's own standard library, such as ``tl.sum`` or
``tl.interleave``, were decorated when triton was imported, in whatever mode that process had then).

Layout read (bitsandbytes', and the harness reference's): element ``i`` of the flattened weight is
in byte ``i // 2``, the high nibble for even ``i``; its scale is ``absmax[i // block_size]`` (float32);
its value is ``codebook[code] * absmax`` rounded once to float32, then once to the output dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

INTERPRETED: bool = bool(triton.knobs.runtime.interpret)
"""Mode this copy of the module was built in (set by the loader through ``triton.knobs``)."""

# Hopper-class tiles. Dequantize is a pure stream (0.5 B in, 2-4 B out per element): tiles of
# 1-4 KiB of packed bytes per program give 8-16 contiguous bytes per thread and enough programs
# to fill 132 SMs from 1M-element weights on.
_DEQUANTIZE_GPU_CONFIGS = [
    triton.Config({"BYTES_PER_PROGRAM": 1024}, num_warps=4),
    triton.Config({"BYTES_PER_PROGRAM": 2048}, num_warps=4),
    triton.Config({"BYTES_PER_PROGRAM": 2048}, num_warps=8),
    triton.Config({"BYTES_PER_PROGRAM": 4096}, num_warps=8),
]
# gemv reads each packed byte once; BLOCK_N trades programs (occupancy on small out_features)
# against reuse of the x tile, BLOCK_K the length of each coalesced row segment. num_stages buys latency
# hiding with shared memory: compiled for sm_90, (64, 256) at 4 stages takes 81 KiB with bf16 x and
# 153 KiB with fp32 x, so the deeper pipelines leave room for one or two programs per SM only.
_GEMV_GPU_CONFIGS = [
    triton.Config({"BLOCK_N": 32, "BLOCK_K": 256}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 32, "BLOCK_K": 512}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 256}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 256}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 512}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 256}, num_warps=8, num_stages=2),
]
# The interpreter runs each program as numpy on whole tiles: few, large programs are fastest, and
# autotuning would time configs with CUDA events, so it gets exactly one config (no benchmarking).
_DEQUANTIZE_INTERPRETER_CONFIGS = [triton.Config({"BYTES_PER_PROGRAM": 1 << 17})]
_GEMV_INTERPRETER_CONFIGS = [triton.Config({"BLOCK_N": 256, "BLOCK_K": 1024})]


@triton.jit
def _round_to_bfloat16(value):
    """float32 -> bfloat16, round to nearest even, on the bits (the interpreter's own cast truncates)."""
    bits = value.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _to_output(value, out_dtype: tl.constexpr):
    """float32 -> the output dtype, rounded once to nearest even (what torch's ``.to`` does)."""
    if out_dtype == tl.bfloat16:
        return _round_to_bfloat16(value)
    else:
        return value.to(out_dtype)


@triton.autotune(
    configs=_DEQUANTIZE_INTERPRETER_CONFIGS if INTERPRETED else _DEQUANTIZE_GPU_CONFIGS,
    key=["numel", "BLOCK_SIZE"],
)
@triton.jit
def dequantize_kernel(
    packed_ptr,
    absmax_ptr,
    codebook_ptr,
    out_ptr,
    numel,
    n_bytes,
    BLOCK_SIZE: tl.constexpr,
    BYTES_PER_PROGRAM: tl.constexpr,
):
    """out[i] = codebook[code_i] * absmax[i // BLOCK_SIZE]: one coalesced run of packed bytes per program.

    Both elements of a byte share a block (BLOCK_SIZE is even), so the scale is loaded per byte; the two
    nibbles' values are interleaved back into element order before one contiguous store. ``n_bytes``
    (= ceil(numel / 2)) comes from the host so that Triton's divisible-by-16 specialization of int
    arguments applies to the mask and the loads can be vectorized.
    """
    program = tl.program_id(0).to(tl.int64)
    byte = program * BYTES_PER_PROGRAM + tl.arange(0, BYTES_PER_PROGRAM)
    in_range = byte < n_bytes
    packed = tl.load(packed_ptr + byte, mask=in_range, other=0).to(tl.int32)
    scale = tl.load(absmax_ptr + byte // (BLOCK_SIZE // 2), mask=in_range, other=0.0)
    first = tl.load(codebook_ptr + (packed >> 4)) * scale
    second = tl.load(codebook_ptr + (packed & 0xF)) * scale
    values = tl.reshape(tl.join(first, second), [2 * BYTES_PER_PROGRAM])
    element = program * (2 * BYTES_PER_PROGRAM) + tl.arange(0, 2 * BYTES_PER_PROGRAM)
    tl.store(out_ptr + element, _to_output(values, out_ptr.dtype.element_ty), mask=element < numel)


@triton.jit
def _weights_in_input_dtype(codes, scale, codebook_ptr, x_dtype: tl.constexpr, upcast: tl.constexpr):
    """codebook[code] * absmax in float32, rounded once to x's dtype (exactly what dequantize returns in that
    dtype); widened back to float32 (exactly) when the dot runs in float32."""
    weights = tl.load(codebook_ptr + codes) * scale
    if x_dtype == tl.bfloat16:
        weights = _round_to_bfloat16(weights)
    elif x_dtype == tl.float16:
        weights = weights.to(tl.float16)
    if upcast:
        weights = weights.to(tl.float32)
    return weights


def _scale_groups(args: dict) -> int:
    """Scales per row of a K tile: a tile spans BLOCK_K // BLOCK_SIZE whole blocks, or lies inside one."""
    return max(args["BLOCK_K"] // args["BLOCK_SIZE"], 1)


@triton.autotune(
    configs=_GEMV_INTERPRETER_CONFIGS if INTERPRETED else _GEMV_GPU_CONFIGS,
    key=["out_features", "in_features", "BLOCK_SIZE"],
)
@triton.heuristics({"SCALE_GROUPS": _scale_groups})
@triton.jit
def gemv_kernel(
    x_ptr,
    packed_ptr,
    absmax_ptr,
    codebook_ptr,
    out_ptr,
    batch,
    out_features,
    in_features,
    bytes_per_row,
    blocks_per_row,
    stride_x_row,
    stride_out_row,
    BLOCK_SIZE: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SCALE_GROUPS: tl.constexpr,
):
    """out[m, n] = sum_k x[m, k] * W[n, k] for BLOCK_N output features per program, all rows of x at once.

    W rows are row-major in the packed bytes (in_features // 2 bytes each, in_features % BLOCK_SIZE == 0,
    so no block or byte straddles two rows). Each K step loads a [BLOCK_N, BLOCK_K // 2] tile of bytes,
    contiguous along K, as [BLOCK_N, SCALE_GROUPS, bytes per group] so that each group has one scale:
    the tile loads BLOCK_N * SCALE_GROUPS scales, not one per byte. The high nibbles are the even columns
    of W, the low nibbles the odd ones, so the step is two dots, x[:, even] @ W_even.T + x[:, odd] @ W_odd.T,
    accumulated in float32.
    ``bytes_per_row`` (in_features // 2) and ``blocks_per_row`` (in_features // BLOCK_SIZE) come from the
    host, where Triton's divisible-by-16 specialization sees them, so row starts are known aligned.
    ``UPCAST`` runs the dots in float32 (exact products of fp16/bf16 operands, and the interpreter's dot
    cannot multiply bfloat16); otherwise they take x's dtype (tensor cores), still accumulating in float32.
    """
    x_dtype: tl.constexpr = x_ptr.dtype.element_ty
    GROUP_BYTES: tl.constexpr = BLOCK_K // 2 // SCALE_GROUPS
    program = tl.program_id(0)
    features = program * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.arange(0, BLOCK_M)
    pairs = tl.arange(0, BLOCK_K // 2)
    group_start = tl.arange(0, SCALE_GROUPS) * GROUP_BYTES
    feature_ok = features < out_features
    row_ok = rows < batch
    feature_byte = features.to(tl.int64) * bytes_per_row
    feature_block = features.to(tl.int64) * blocks_per_row
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_x_row
    accumulator = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)  # tl.zeros is a @jit of the stdlib: see above
    for k_start in range(0, in_features, BLOCK_K):
        byte = k_start // 2 + pairs
        byte_ok = byte < bytes_per_row
        tile_ok = feature_ok[:, None] & byte_ok[None, :]
        packed = tl.load(packed_ptr + feature_byte[:, None] + byte[None, :], mask=tile_ok, other=0).to(tl.int32)
        packed = tl.reshape(packed, [BLOCK_N, SCALE_GROUPS, GROUP_BYTES])
        block = (k_start // 2 + group_start) // (BLOCK_SIZE // 2)
        scale_ok = feature_ok[:, None] & (block < blocks_per_row)[None, :]
        scale = tl.load(absmax_ptr + feature_block[:, None] + block[None, :], mask=scale_ok, other=0.0)[:, :, None]
        w_even = _weights_in_input_dtype(packed >> 4, scale, codebook_ptr, x_dtype, UPCAST)
        w_odd = _weights_in_input_dtype(packed & 0xF, scale, codebook_ptr, x_dtype, UPCAST)
        w_even = tl.reshape(w_even, [BLOCK_N, BLOCK_K // 2])
        w_odd = tl.reshape(w_odd, [BLOCK_N, BLOCK_K // 2])
        x_ok = row_ok[:, None] & byte_ok[None, :]
        x_even = tl.load(x_rows + 2 * byte[None, :], mask=x_ok, other=0.0)
        x_odd = tl.load(x_rows + 2 * byte[None, :] + 1, mask=x_ok, other=0.0)
        if UPCAST:
            x_even = x_even.to(tl.float32)
            x_odd = x_odd.to(tl.float32)
        accumulator = tl.dot(x_even, tl.trans(w_even), accumulator, input_precision="ieee")
        accumulator = tl.dot(x_odd, tl.trans(w_odd), accumulator, input_precision="ieee")
    out = out_ptr + rows.to(tl.int64)[:, None] * stride_out_row + features[None, :]
    tl.store(out, _to_output(accumulator, out_ptr.dtype.element_ty), mask=row_ok[:, None] & feature_ok[None, :])
