"""Scale kinds as derivations (harness/scale_kinds.py) and the checks that use them.

Each derivation is tested on blocks small enough to compute by hand from the kind's definition; the expected
numbers are written as that computation (2 / -8, (2 - -1) / 15, 2**(1 - 2)), not pasted from a run. The
check-level tests pin the faults issue 19 measured: a bound multiplied by a signed scale, NaN-laden messages
for an overflowed float16 scale, passes that compared nothing.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness import checks as p
from harness import scale_kinds as sk
from harness.api import (
    SCALE_AFFINE_INT,
    SCALE_KINDS,
    SCALE_MINMAX,
    FormatSpec,
)
from harness.errors import InvalidArgument
from tests import zoo

INT_STEPS = torch.arange(-8, 8, dtype=torch.float64)  # Q4_0's levels k - 8
UINT = torch.arange(16, dtype=torch.float64)  # Q4_1 / GPTQ levels 0..15
E2M1 = torch.tensor(zoo._E2M1, dtype=torch.float64)


def _x(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------- derivations


def test_every_builtin_constant_is_registered() -> None:
    assert set(SCALE_KINDS) <= set(sk.known_scale_kinds())
    for name in SCALE_KINDS:
        kind = sk.get_scale_kind(name)
        assert kind is not None and kind.name == name and kind.rule


def test_absmax() -> None:
    derived = sk.KIND_ABSMAX.derive_for(_x(0.5, -2.0, 1.0, 0.25, 3.0, -1.0, 0.0, 2.0), 4, INT_STEPS)
    assert derived.scales.tolist() == [2.0, 3.0] and derived.offsets is None


def test_signed_absmax_is_q4_0() -> None:
    """d = max / -8 with max the first element of largest magnitude, sign included."""
    x = _x(0.5, -2.0, 1.0, 1.5, 3.0, 1.0, -2.0, 0.0, 2.0, -2.0, 0.0, 1.0)
    derived = sk.KIND_SIGNED_ABSMAX.derive_for(x, 4, INT_STEPS)
    assert derived.scales.tolist() == [-2.0 / -8, 3.0 / -8, 2.0 / -8]
    # +2 and -2 tie in the third block: the other sign convention is valid there, and only there
    ((alternative, _),) = derived.alternatives
    assert alternative.tolist() == [-2.0 / -8, 3.0 / -8, -2.0 / -8]
    # the block's extreme comes back exactly on the level -8
    assert float(-8 * derived.scales[1]) == 3.0


def test_minmax_is_q4_1() -> None:
    """scale = (max - min) / 15, offset = min for levels 0..15."""
    derived = sk.KIND_MINMAX.derive_for(_x(-1.0, 2.0, 0.5, 1.0, 4.0, 4.0, 4.0, 4.0), 4, UINT)
    assert derived.scales.tolist() == [(2.0 - -1.0) / 15, 0.0]
    assert derived.offsets is not None and derived.offsets.tolist() == [-1.0, 4.0]
    # a codebook not starting at 0 moves the offset so that min lands on the lowest level
    shifted = sk.KIND_MINMAX.derive_for(_x(-1.0, 2.0), 2, INT_STEPS)
    assert shifted.offsets is not None
    assert math.isclose(float(shifted.offsets[0]), -1.0 - (-8) * (3.0 / 15))


def test_affine_int_is_gptq() -> None:
    """Range [min(x, 0), max(x, 0)], scale = range / 15, integer zero z = round(-min / scale), offset -z * scale."""
    x = _x(-1.0, 2.0, 0.5, 1.0, 0.5, 3.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0)
    derived = sk.AFFINE_INT.derive_for(x, 4, UINT)
    assert derived.scales.tolist() == pytest.approx([3.0 / 15, 3.0 / 15, 0.0])
    assert derived.offsets is not None
    assert derived.offsets[:2].tolist() == pytest.approx([-round(1.0 / (3.0 / 15)) * 3.0 / 15, 0.0])
    assert derived.free is not None and derived.free.tolist() == [False, False, True]  # GPTQ's guard range
    # -min / scale = 7.5 exactly: half-way, so both neighbouring zero points are valid
    tie = sk.AFFINE_INT.derive_for(_x(-1.0, 1.0), 2, UINT)
    offsets = {round(float(o) / (2.0 / 15)) for _, o in tie.candidates() if o is not None}
    assert offsets == {-8, -7}


def test_e8m0_is_mxfp4() -> None:
    """scale = 2**(floor(log2 amax) - 2) for E2M1 (largest level 6 = 1.5 * 2**2)."""
    x = _x(3.0, -1.0, 4.0, 0.5, 0.1, -0.05, 0.0, 0.0)
    derived = sk.E8M0.derive_for(x, 2, E2M1)
    assert derived.scales.tolist() == [2.0 ** (1 - 2), 2.0 ** (2 - 2), 2.0 ** (-4 - 2), 0.0]
    assert derived.free is not None and derived.free.tolist() == [False, False, False, True]
    # the smallest float32 subnormal asks for 2**-151: clamped to E8M0's 2**-127
    tiny = sk.E8M0.derive_for(torch.tensor([2.0**-149]), 1, E2M1)
    assert float(tiny.scales[0]) == 2.0**-127


def test_e4m3_tensor_is_nvfp4() -> None:
    """s_t = 2688 / (6 * 448) = 1; block scales e4m3(amax / 6): 448, 1, and 100 / 6 = 16.67 -> 16 (E4M3 steps by 2
    between 16 and 32)."""
    x = _x(2688.0, 1.0, 6.0, -3.0, 100.0, 7.0)
    derived = sk.E4M3_TENSOR.derive_for(x, 2, E2M1)
    assert derived.scales.tolist() == [448.0, 1.0, 16.0]
    assert sk.round_to_e4m3(torch.tensor([17.0, 17.5, 500.0, 2.0**-10])).tolist() == [16.0, 18.0, 448.0, 0.0]


def test_max_rounding_error() -> None:
    low, high = torch.tensor([-8.0, 0.0, -0.5]), torch.tensor([8.0, 5.0, 0.25])
    # E2M1 over [-8, 8]: saturation at 8 -> 6 costs 2; over [0, 5]: the midpoint 5 between 4 and 6 costs 1;
    # over [-0.5, 0.25]: the midpoint 0.25 between 0 and 0.5 costs 0.25
    assert sk.max_rounding_error(E2M1, low, high).tolist() == [2.0, 1.0, 0.25]
    # Q4_0 over [-8, 8]: +8 saturates to 7
    assert sk.max_rounding_error(INT_STEPS, torch.tensor([-8.0]), torch.tensor([8.0])).tolist() == [1.0]


def test_nearest_reconstruction() -> None:
    flat = torch.tensor([0.26, -0.74, 1.0, 0.1], dtype=torch.float64)
    out = sk.nearest_reconstruction(flat, 2, UINT, torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 0.0]))
    # block 1: (0.26 + 1) / 0.5 = 2.52 -> level 3 -> 3 * 0.5 - 1 = 0.5; (-0.74 + 1) / 0.5 = 0.52 -> 1 -> -0.5
    # block 2: 1.0 / 0.25 = 4 -> 1.0; 0.1 / 0.25 = 0.4 -> 0 -> 0.0
    assert out.tolist() == [0.5, -0.5, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------- the contract


def test_formatspec_accepts_kinds_and_rejects_near_misses() -> None:
    for name in SCALE_KINDS:
        FormatSpec("x", None, scale=name)
    FormatSpec("x", None, scale="my-own-kind")  # declared, not derivable: checks that need it skip
    for wrong, right in (("Signed_Absmax", "signed-absmax"), ("MINMAX", "minmax"), ("affine int", "affine-int")):
        with pytest.raises(InvalidArgument, match=f"expected '{right}'"):
            FormatSpec("x", None, scale=wrong)


def test_third_party_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin registers its own rule; the checks then derive and compare with it."""
    monkeypatch.setattr(sk, "_REGISTRY", dict(sk._REGISTRY))

    def derive_rms(flat: torch.Tensor, block_size: int, levels: torch.Tensor) -> sk.DerivedScales:
        blocks = sk.block_view(flat, block_size)
        return sk.DerivedScales(scales=blocks.square().mean(dim=1).sqrt())

    kind = sk.register_scale_kind(sk.ScaleKind(name="rms-test", rule="scale = rms of the block", derive=derive_rms))
    assert sk.register_scale_kind(kind) is kind  # the same object again: a no-op
    with pytest.raises(InvalidArgument, match="already registered"):
        sk.register_scale_kind(sk.ScaleKind(name="rms-test", rule="another", derive=None))
    qz = zoo.ZooNF4Argmin()
    qz.spec = FormatSpec("nf4-rms", qz.spec.codebook, block_size=64, scale="rms-test")
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    q = qz.quantize(x)  # reports absmax scales: not the registered rule
    with pytest.raises(p.PropertyViolation, match=r"expected the rule = "):
        p.check_scales(qz, x, q)


def test_underivable_kinds_skip_with_the_reason() -> None:
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    unknown = zoo.ZooInt4ZeroPoint()  # declares 'minmax-zeropoint', which nobody registered
    with pytest.raises(p.NotApplicable, match="is not one the harness can derive"):
        p.check_scales(unknown, x, unknown.quantize(x))
    searched = zoo.ZooNF4Searched()
    q = searched.quantize(x)
    with pytest.raises(p.NotApplicable, match="has no per-block rule"):
        p.check_scales(searched, x, q)
    with pytest.raises(p.NotApplicable, match="idempotence is promised by the derivable kinds"):
        p.check_idempotent(searched, x, q, searched.dequantize(q), q, searched.dequantize(q))


# ---------------------------------------------------------------------------------------------- the checks


def test_signed_scale_bound_is_not_negative() -> None:
    """Regression: a bound multiplied by a signed reported scale was negative (|err| 0.000162 > bound -0.000259).
    A Q4_0 quantizer under a kind the harness does not know is judged on its reported d, by |d|."""
    qz = zoo.ZooQ4_0()
    qz.spec = FormatSpec("q4_0-legacy", qz.spec.codebook, block_size=32, scale="q4_0-legacy")
    x = _x(0.8, -0.1, 0.3, -0.5)  # d = 0.8 / -8 = -0.1 < 0; every x / d is a level
    q = qz.quantize(x)
    assert q.scales is not None and float(q.scales[0]) < 0
    p.check_roundtrip_bound(qz, x, q, qz.dequantize(q))
    p.check_nearest(qz, x, q)


def test_q4_0_wrong_sign_fails_scales() -> None:
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(2))
    good, bad = zoo.ZooQ4_0(), zoo.ZooQ4_0WrongSign()
    p.check_scales(good, x, good.quantize(x))
    q = bad.quantize(x)
    with pytest.raises(p.PropertyViolation) as info:
        p.check_scales(bad, x, q)
    assert q.scales is not None
    assert f"scale {float(q.scales[0])!r}, expected m / L" in str(info.value)
    assert f"= {-float(q.scales[0])!r}" in str(info.value)


def test_fp16_overflow_is_one_clear_failure() -> None:
    """Regression: a float16-stored scale that overflowed showed up as 'expected code 8 -> nan' and '|err| inf >
    bound nan'. Now: the scale of block k is inf, and why."""
    qz = zoo.ZooQ4_0HalfScale()
    x = torch.zeros(2, 32)
    x[1, 3] = 1e6  # d = 1e6 / -8 = -125000 > 65504
    q = qz.quantize(x)
    xhat = qz.dequantize(q)
    for check, args in (
        (p.check_scales, (x, q)),
        (p.check_decode_consistency, (x, q, xhat)),
    ):
        with pytest.raises(p.PropertyViolation) as info:
            check(qz, *args)
        message = str(info.value)
        assert "scale of block 1 is -inf (fp16 overflow: the derived scale 125000 exceeds float16's 65504)" in message
        assert "nan" not in message.lower()
    with pytest.raises(p.PropertyViolation) as info:
        p.check_roundtrip_bound(qz, x, q, xhat)
    assert "bound nan" not in str(info.value) and "bound inf" not in str(info.value)


def test_minmax_checks_run() -> None:
    """minmax is derived now: its scales and offsets are compared, and dropping the offset fails."""
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(3)) + 2.0
    good = zoo.ZooMinMaxAffine()
    q = good.quantize(x)
    p.check_scales(good, x, q)
    p.check_roundtrip_bound(good, x, q, good.dequantize(q))
    bad = zoo.ZooMinMaxDropsOffset()
    q_bad = bad.quantize(x)
    with pytest.raises(p.PropertyViolation, match="round-trip error bound"):
        p.check_roundtrip_bound(bad, x, q_bad, bad.dequantize(q_bad))
    no_offsets = good.quantize(x)
    no_offsets.offsets = None
    with pytest.raises(p.PropertyViolation, match=r"has an offset per block but QuantizedTensor\.offsets is None"):
        p.check_scales(good, x, no_offsets)


def test_affine_int_idempotence_excuses_only_moved_grids() -> None:
    """-min / scale = 7.5 rounds the zero point half-way and clips a block end: x_hat's range shrinks and
    re-derives another grid, without a fault of the implementation (the false alarm the zoo once found)."""
    qz = zoo.ZooGPTQAffineInt()
    x = torch.linspace(-1.0, 1.0, 64).reshape(1, 64)
    q = qz.quantize(x)
    xhat = qz.dequantize(q)
    q_again = qz.quantize(xhat)
    p.check_idempotent(qz, x, q, xhat, q_again, qz.dequantize(q_again))


def test_mxfp4_exponent_up_fails_scales() -> None:
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(4))
    good, bad = zoo.ZooMXFP4(), zoo.ZooMXFP4ExponentUp()
    p.check_scales(good, x, good.quantize(x))
    with pytest.raises(p.PropertyViolation, match=r"expected 2\*\*\(floor\(log2 max\|x\|\) - emax_elem\)"):
        p.check_scales(bad, x, bad.quantize(x))


def test_codebook_must_fit_the_kind() -> None:
    qz = zoo.ZooMinMaxAffine()
    qz.spec = FormatSpec("u4", qz.spec.codebook, block_size=64, scale=SCALE_MINMAX, exact_zero=True)
    with pytest.raises(p.PropertyViolation, match="scale kind 'minmax' cannot keep 0 exact"):
        p.check_codebook(qz)
    qz.spec = FormatSpec("u4", tuple(k / 2 for k in range(16)), block_size=64, scale=SCALE_AFFINE_INT)
    with pytest.raises(p.PropertyViolation, match="levels are not integers"):
        p.check_codebook(qz)


def test_searched_is_compared_with_the_best_rule() -> None:
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(5))
    good, bad = zoo.ZooNF4Searched(), zoo.ZooNF4SearchedTooNarrow()
    best = p.best_derived_mse(good, x)
    assert best is not None and best[1] == "absmax"
    p.check_searched_error(good, x, good.dequantize(good.quantize(x)))
    with pytest.raises(p.PropertyViolation, match="the MSE of the derived rule 'absmax'"):
        p.check_searched_error(bad, x, bad.dequantize(bad.quantize(x)))


def test_derived_reference_matches_an_independent_encoder() -> None:
    """The harness's nearest-rounding reference of a derived kind equals what an independently written
    quantizer of that kind produces (ties aside, which Gaussian data does not hit)."""
    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(6))
    for qz in (zoo.ZooMXFP4(), zoo.ZooNVFP4(), zoo.ZooQ4_0()):
        rebuilt = p.derived_reconstruction(qz, x)
        assert rebuilt is not None
        assert torch.allclose(rebuilt.float(), qz.dequantize(qz.quantize(x)), rtol=0, atol=1e-6), qz.name


# ---------------------------------------------------------------------------------------------- agreement


class _Q4_0Argmin(zoo.ZooQ4_0):
    """Q4_0 written another way: the nearest of the 16 values (k - 8) * d by argmin, not trunc(x / d + 8.5)."""

    name = "zoo-q4_0-argmin"

    def quantize(self, x: torch.Tensor) -> zoo.QuantizedTensor:
        q = super().quantize(x)
        assert q.scales is not None
        w = x.detach().float().reshape(-1)
        d = q.scales.repeat_interleave(32)[: w.numel()]
        grid = (torch.arange(16, dtype=torch.float32) - 8)[None, :] * d[:, None]
        codes = (w[:, None] - grid).abs().argmin(dim=1).to(torch.uint8)
        q.codes = codes.reshape(x.shape)
        q.storage = {"qs": zoo.pack_nibbles(codes, zoo.PACKING_LOW_FIRST), "d": q.storage["d"]}
        return q


def test_agreement_covers_derived_kinds_without_offsets() -> None:
    from harness.checks.agreement import check_comparable, compare_pair

    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(7))
    first, second = zoo.ZooQ4_0(), _Q4_0Argmin()
    check_comparable(first, second)
    q1, q2 = first.quantize(x), second.quantize(x)
    result = compare_pair(x, first, q1, first.dequantize(q1), second, q2, second.dequantize(q2))
    assert result.violations() == [] and result.level_agreement > 0.999
    wrong = zoo.ZooQ4_0WrongSign()
    q3 = wrong.quantize(x)
    broken = compare_pair(x, first, q1, first.dequantize(q1), wrong, q3, wrong.dequantize(q3))
    assert any("block scales differ" in v for v in broken.violations())
    mx = zoo.ZooMXFP4()
    q4 = mx.quantize(x)
    assert compare_pair(x, mx, q4, mx.dequantize(q4), mx, q4, mx.dequantize(q4)).violations() == []
    with pytest.raises(p.NotApplicable, match="scale kinds differ"):
        check_comparable(first, mx)
    with pytest.raises(p.NotApplicable, match="agreement is judged on y = x / the derived scale"):
        check_comparable(zoo.ZooMinMaxAffine(), zoo.ZooMinMaxAffine())
