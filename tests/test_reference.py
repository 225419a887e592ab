"""The reference quantizers: nearest rounding with the documented tie rule, layout, storage, double quantization."""

from __future__ import annotations

import math

import pytest
import torch

from harness import DoubleQuant, InvalidArgument, ReferenceQuantizer, codebook, error_stats
from harness.formats.packing import unpack_nibbles
from harness.quantizers.blockwise import nearest_table


def _block(values: list[float]) -> torch.Tensor:
    """One block whose absmax is exactly 1 (anchor first), so x / scale == x."""
    return torch.tensor([1.0, *values], dtype=torch.float32)


@pytest.mark.parametrize("fmt", ["nf4", "fp4", "af4", "int4"])
def test_codes_are_exactly_nearest_away_from_ties(fmt: str) -> None:
    ref = ReferenceQuantizer(fmt)
    x = torch.linspace(-1, 1, 64 * 500, dtype=torch.float64).float().reshape(500, 64)
    x[:, 0] = 1.0  # every block's absmax is 1
    q = ref.quantize(x)
    levels = codebook(fmt).double()
    distance = (x.reshape(-1, 1).double() - levels).abs()
    chosen = distance.gather(1, q.codes.reshape(-1, 1).long()).squeeze(1)
    assert torch.equal(chosen, distance.min(dim=1).values)


def test_exact_float32_ties_go_toward_zero_on_both_sides() -> None:
    # NF4 levels are float32 numbers; their midpoints are exact in float64 and often exact in float32.
    ref = ReferenceQuantizer("nf4")
    levels = codebook("nf4").double().tolist()
    ties = []
    for k in range(15):
        midpoint = (levels[k] + levels[k + 1]) / 2
        if float(torch.tensor(midpoint, dtype=torch.float32)) == midpoint and -1 < midpoint < 1:
            ties.append((k, midpoint))
    assert len(ties) >= 5  # enough exact ties to be a test
    q = ref.quantize(_block([m for _, m in ties])).codes[1:].tolist()
    expected = [k if m > 0 else k + 1 for k, m in ties]  # the smaller-magnitude neighbour
    assert q == expected


def test_fp4_signed_zero_follows_bitsandbytes() -> None:
    ref = ReferenceQuantizer("fp4")
    x = _block([0.0, -0.0, 1e-4, -1e-4])
    codes = ref.quantize(x).codes.tolist()
    assert codes[1:] == [0, 0, 0, 8]  # +0, -0 -> code 0; a tiny negative keeps its sign (code 8 is -0)
    out = ref.dequantize(ref.quantize(x))
    assert torch.signbit(out[4]) and not torch.signbit(out[1]) and not torch.signbit(out[2])


def test_decision_boundaries_are_float32_and_sorted() -> None:
    for fmt in ("nf4", "fp4", "af4", "int4"):
        table = nearest_table(codebook(fmt))
        assert table.boundaries.dtype == torch.float32
        assert bool((table.boundaries[1:] >= table.boundaries[:-1]).all())


def test_packing_is_high_nibble_first() -> None:
    ref = ReferenceQuantizer("nf4")
    x = _block([-1.0, 0.0])[:3]  # codes 15, 0, 7
    q = ref.quantize(x)
    assert q.codes.tolist() == [15, 0, 7]
    assert q.storage["packed"].tolist() == [0xF0, 0x70]  # odd tail padded with code 0
    assert torch.equal(unpack_nibbles(q.storage["packed"], 3), q.codes)


@pytest.mark.parametrize(
    ("double_quant", "expected_bits"),
    [(None, 4 + 32 / 64), (DoubleQuant(bits=8, block_size=256), 4 + 8 / 64 + 32 / (64 * 256))],
)
def test_storage_bits_per_parameter(double_quant: DoubleQuant | None, expected_bits: float) -> None:
    ref = ReferenceQuantizer("nf4", double_quant=double_quant)
    x = torch.randn(1024, 1024)
    q = ref.quantize(x)
    # the double-quantized layout also keeps one float32 mean for the whole tensor
    extra = 0 if double_quant is None else 32 / x.numel()
    assert math.isclose(q.bits_per_parameter, expected_bits + extra, rel_tol=1e-12)
    assert q.nbytes == sum(t.numel() * t.element_size() for t in q.storage.values())


def test_qlora_double_quantization_costs_about_4_127_bits() -> None:
    q = ReferenceQuantizer("nf4", double_quant=DoubleQuant()).quantize(torch.randn(4096, 4096))
    assert round(q.bits_per_parameter, 3) == 4.127


def test_nf4_block64_mean_abs_error_on_standard_normal() -> None:
    x = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    ref = ReferenceQuantizer("nf4")
    stats = error_stats(x, ref.dequantize(ref.quantize(x)))
    assert abs(stats.mae - 0.0728) < 0.0005


def test_double_quantized_scales_stay_within_half_a_code_step() -> None:
    ref = ReferenceQuantizer("nf4", double_quant=DoubleQuant())
    x = torch.randn(512, 512) * torch.rand(512, 1) * 10
    q = ref.quantize(x)
    true = x.reshape(-1, 64).abs().amax(1)
    centred = true - true.mean()
    step = centred.reshape(-1, 256).abs().amax(1).repeat_interleave(256) / 127
    assert bool(((q.scales - true).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all())


def test_double_quantized_tiny_block_scale_never_goes_negative() -> None:
    ref = ReferenceQuantizer("nf4", double_quant=DoubleQuant())
    x = torch.randn(64 * 8)
    x[:64] *= 1e-6  # far below the mean scale: its decoded scale would be below zero without the clamp
    q = ref.quantize(x)
    assert bool((q.scales >= 0).all())
    assert bool((ref.dequantize(q)[:64] * x[:64] >= 0).all())  # no sign flips


def test_partial_last_block_uses_its_own_scale() -> None:
    ref = ReferenceQuantizer("nf4")
    x = torch.cat([torch.full((64,), 100.0), torch.tensor([0.5, -0.25, 0.125])])
    q = ref.quantize(x)
    assert q.scales.tolist() == [100.0, 0.5]
    assert ref.dequantize(q)[64].item() == 0.5


def test_with_block_size_keeps_the_name_and_rederives_af4() -> None:
    ref = ReferenceQuantizer("af4")
    other = ref.with_block_size(256)
    assert other.name == ref.name and other.spec.block_size == 256
    assert other.spec.codebook == tuple(codebook("af4", 256).tolist())
    assert other.spec.codebook != ref.spec.codebook


def test_matmul_is_x_times_dequantized_weight_transposed() -> None:
    ref = ReferenceQuantizer("nf4")
    w, x = torch.randn(32, 128), torch.randn(3, 128)
    q = ref.quantize(w)
    assert torch.equal(ref.matmul(x, q), x @ ref.dequantize(q).T)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_round_trip_in_their_dtype(dtype: torch.dtype) -> None:
    ref = ReferenceQuantizer("nf4")
    x = torch.randn(3, 100).to(dtype)
    out = ref.dequantize(ref.quantize(x))
    assert out.dtype == dtype and out.shape == x.shape
    expected = ReferenceQuantizer("nf4").dequantize(ref.quantize(x.float())).to(dtype)
    assert torch.equal(out, expected)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.tensor([1, 2, 3]), "expected a floating dtype"),
        (torch.tensor([1.0, float("nan")]), "non-finite value nan at flat index 1"),
        (torch.tensor([float("inf")]), "non-finite value inf"),
        (torch.empty(0), "is empty"),
        ([1.0, 2.0], "expected a torch.Tensor"),
    ],
)
def test_bad_input_is_an_invalid_argument(bad: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        ReferenceQuantizer("nf4").quantize(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kwargs", [{"format": "nf5"}, {"block_size": 100}, {"block_size": 0}])
def test_bad_configuration_is_an_invalid_argument(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        ReferenceQuantizer(**kwargs)  # type: ignore[arg-type]


def test_dequantize_without_its_storage_names_what_is_missing() -> None:
    ref = ReferenceQuantizer("nf4")
    q = ref.quantize(torch.randn(64))
    q.storage = {"packed": q.storage["packed"]}
    with pytest.raises(InvalidArgument, match="storage lacks 'absmax'"):
        ref.dequantize(q)


@pytest.mark.parametrize("fmt", ["nf4", "fp4", "af4", "int4"])
def test_cell_lookup_encoder_equals_bucketize_at_every_boundary(fmt: str) -> None:
    from harness.quantizers.blockwise import encode_nearest, quantize_absmax_blocks

    table = nearest_table(codebook(fmt))
    assert table.cell_code is not None  # the fast path is in use for every reference format
    probes = [torch.rand(20000, generator=torch.Generator().manual_seed(1)) * 2 - 1]
    for boundary in table.boundaries.tolist():
        centre = torch.tensor([boundary], dtype=torch.float32)
        up, down = centre.clone(), centre.clone()
        steps = [centre]
        for _ in range(3):
            up, down = torch.nextafter(up, torch.tensor(2.0)), torch.nextafter(down, torch.tensor(-2.0))
            steps += [up, down]
        probes += steps
    probes.append(torch.tensor([1.0, -1.0, 0.0, -0.0, 1e-30, -1e-30, 1 - 2**-24, -1 + 2**-24]))
    y = torch.cat(probes).clamp(-1, 1)
    blocks = y.reshape(-1, 1)  # one value per block, anchored by a +1 so that x / scale == y exactly
    x = torch.cat([torch.ones_like(blocks), blocks], dim=1).reshape(-1)
    codes, _, scales = quantize_absmax_blocks(x, 2, table)
    assert bool((scales == 1).all())
    assert torch.equal(codes.reshape(-1, 2)[:, 1], encode_nearest(y, table))
