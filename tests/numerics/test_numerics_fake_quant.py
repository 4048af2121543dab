"""Fake quantization, power-of-two and float scale (numerics.md 1, 3; T1-T4, T21)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nndct_lite.numerics import (RoundMode, dequantize_affine, dequantize_pof2,
                                 fake_quantize_affine, fake_quantize_pof2, int_range,
                                 quantize_affine, quantize_pof2, round_tensor, ste)
from nndct_lite.numerics.fake_quant import channel_view

M = RoundMode
ALL = list(RoundMode)
ACT, PAR = M.HALF_UP, M.STD_ROUND


def fq(values, fp, mode=ACT, lo=-128, hi=127, dtype=torch.float32):
    return fake_quantize_pof2(torch.tensor(values, dtype=dtype), fp, lo, hi, mode).tolist()


def reference_pof2(x, fp, lo, hi, mode):
    """The formula of numerics.md 1.1 written out plainly."""
    m = 2.0 ** fp
    return torch.clamp(round_tensor(x * m, mode), lo, hi) * (1.0 / m)


# ----------------------------------------------------------------------- worked numbers
def test_example_1():
    assert fq([0.3], 6) == [0.296875]
    assert fq([1.9], 7) == [0.9921875]
    assert fq([200.0], -1) == [200.0]
    assert fq([-1.0, 1.0], 7) == [-1.0, 127 / 128]


def test_t2_tie_at_fp7():
    x = -1.5 / 128
    assert fq([x], 7, ACT) == [-1 / 128]
    assert fq([x], 7, PAR) == [-2 / 128]


def test_t3_signed_clamp():
    assert fq([1.0, -1.0], 7) == [0.9921875, -1.0]


def test_t4_negative_fp():
    assert quantize_pof2(torch.tensor([200.0]), -1, -128, 127, ACT).tolist() == [100.0]
    assert fq([201.0], -1, ACT) == [202.0]
    assert fq([201.0], -1, PAR) == [202.0]
    assert fq([201.0], -1, M.HALF_EVEN) == [200.0]


def test_t21_asymmetric_float_scale():
    scale, z = 4.0 / 255.0, 64
    x = torch.tensor([3.0, -1.0, 0.5, 0.0])
    q = quantize_affine(x, scale, z, 0, 255, M.HALF_EVEN)
    assert q.tolist() == [255.0, 0.0, 96.0, 64.0]
    got = fake_quantize_affine(x, scale, z, 0, 255, M.HALF_EVEN).tolist()
    assert got == pytest.approx([2.9960784, -1.0039216, 0.5019608, 0.0], abs=1e-7)
    assert got[3] == 0.0
    assert torch.equal(dequantize_affine(q, scale, z), fake_quantize_affine(x, scale, z, 0, 255,
                                                                              M.HALF_EVEN))


def test_example_3_per_channel_float():
    w = torch.tensor([[0.5, -1.27, 0.2], [0.01, 0.02, -0.03]])
    scales = [1.27 / 127, 0.03 / 127]
    q = quantize_affine(w, scales, [0, 0], -128, 127, M.HALF_EVEN, axis=0)
    assert q[0].tolist() == [50.0, -127.0, 20.0]
    assert q[1].tolist() == [42.0, 85.0, -127.0]


# ----------------------------------------------------------------------- ranges
@pytest.mark.parametrize("mode", ALL)
def test_saturation_both_ends(mode):
    assert fq([5.0, -5.0, 1e30, -1e30, math.inf, -math.inf], 7, mode) == \
        [127 / 128, -1.0, 127 / 128, -1.0, 127 / 128, -1.0]


def test_narrow_range():
    r = int_range(8, narrow_range=True)
    assert fq([-1.0, -5.0, 1.0], 7, ACT, r.qmin, r.qmax) == [-127 / 128, -127 / 128, 127 / 128]


def test_unsigned_clamps_negatives():
    r = int_range(8, signed=False)
    assert fq([-0.3, -100.0, 0.0, 1.0, 3.0], 7, ACT, r.qmin, r.qmax) == [0.0, 0.0, 0.0, 1.0,
                                                                         255 / 128]


def test_bit_width_2_and_16():
    r2, r16 = int_range(2), int_range(16)
    assert fq([-3.0, -0.6, 0.4, 0.75, 3.0], 1, ACT, r2.qmin, r2.qmax) == [-1.0, -0.5, 0.5, 0.5,
                                                                          0.5]
    x = torch.tensor([1.0, -1.0, 0.5 + 2 ** -16, 0.123456])
    got = fake_quantize_pof2(x, 15, r16.qmin, r16.qmax, ACT).tolist()
    assert got[:3] == [32767 / 32768, -1.0, 0.5 + 2 ** -15]
    assert abs(got[3] - 0.123456) <= 2 ** -16


def test_per_channel_pof2_with_zero_channel():
    w = torch.tensor([[0.3, -0.7, 1.9], [0.0, 0.0, 0.0], [0.001, -0.0004, 0.0002]])
    got = fake_quantize_pof2(w, [6, 12, 12], -128, 127, PAR, axis=0)
    assert got[0].tolist() == [0.296875, -0.703125, 1.90625]
    assert got[1].tolist() == [0.0, 0.0, 0.0]
    assert got[2].tolist() == [4 / 4096, -2 / 4096, 1 / 4096]  # -1.6384 -> -2, 0.8192 -> 1
    # same as slicing
    for c, fp in enumerate([6, 12, 12]):
        assert torch.equal(got[c], fake_quantize_pof2(w[c], fp, -128, 127, PAR))


def test_per_channel_axis_1_and_affine_zero_scale():
    w = torch.randn(4, 3, 2, 2)
    got = fake_quantize_pof2(w, [5, 6, 7], -128, 127, ACT, axis=1)
    for c, fp in enumerate([5, 6, 7]):
        assert torch.equal(got[:, c], fake_quantize_pof2(w[:, c], fp, -128, 127, ACT))
    # a zero scale (an all-zero channel) is replaced by 2^-18
    z = torch.zeros(2, 3)
    z[0] = torch.tensor([1e-6, 0.0, -2e-6])
    out = fake_quantize_affine(z, [0.0, 0.0], [0, 0], -128, 127, M.HALF_EVEN, axis=0)
    assert out[0].tolist() == [0.0, 0.0, -2 ** -18]
    assert out[1].tolist() == [0.0, 0.0, 0.0]
    assert channel_view(torch.arange(3), 4, 1).shape == (1, 3, 1, 1)


def test_per_channel_affine_zero_points():
    x = torch.tensor([[-1.0, 3.0, 0.5], [0.0, 2.0, 1.0]])
    scales, zps = [4 / 255, 2 / 255], [64, 0]
    got = fake_quantize_affine(x, scales, zps, 0, 255, M.HALF_EVEN, axis=0)
    for c in range(2):
        assert torch.equal(got[c], fake_quantize_affine(x[c], scales[c], zps[c], 0, 255,
                                                        M.HALF_EVEN))
    q = quantize_affine(x, scales, zps, 0, 255, M.HALF_EVEN, axis=0)
    assert torch.equal(dequantize_affine(q, scales, zps, axis=0), got)


# ----------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("mode", ALL)
def test_float64_inputs(mode):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10_000, generator=g, dtype=torch.float64) * 2
    x[:5] = torch.tensor([0.5 / 64, -1.5 / 64, 2.5 / 64, 1.0, -2.0], dtype=torch.float64)
    got = fake_quantize_pof2(x, 6, -128, 127, mode)
    assert got.dtype == torch.float64
    assert torch.equal(got, reference_pof2(x, 6, -128, 127, mode))
    assert fake_quantize_affine(x, 0.01, 3, 0, 255, mode).dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ALL)
def test_half_inputs_compute_in_float32(dtype, mode):
    # numerics.md 1.4: half tensors are converted to float32 and back
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(20_000, generator=g) * 3).to(dtype)
    for fn, args in [(fake_quantize_affine, (0.0123, 0, -128, 127, mode)),
                     (fake_quantize_affine, (4 / 255, 64, 0, 255, mode)),
                     (fake_quantize_pof2, (5, -128, 127, mode)),
                     (fake_quantize_pof2, (13, -32768, 32767, mode))]:
        got = fn(x, *args)
        assert got.dtype == dtype
        assert torch.equal(got, fn(x.float(), *args).to(dtype))
    codes = quantize_pof2(x, 13, -32768, 32767, mode)
    assert codes.dtype == torch.float32  # 16-bit codes do not fit float16
    assert torch.equal(codes, quantize_pof2(x.float(), 13, -32768, 32767, mode))


@pytest.mark.parametrize("mode", ALL)
def test_matches_plain_formula(mode):
    g = torch.Generator().manual_seed(5)
    ties = torch.arange(-300, 301, dtype=torch.float32) / 2
    for fp in (-3, 0, 4, 7, 12):
        x = torch.cat([torch.randn(20_000, generator=g) * 4, ties * 2.0 ** -fp])
        for lo, hi in [(-128, 127), (-127, 127), (0, 255), (-2, 1)]:
            assert torch.equal(fake_quantize_pof2(x, fp, lo, hi, mode),
                               reference_pof2(x, fp, lo, hi, mode))
            assert torch.equal(quantize_pof2(x, fp, lo, hi, mode),
                               torch.clamp(round_tensor(x * 2.0 ** fp, mode), lo, hi))


def test_nan_propagates():
    out = fake_quantize_pof2(torch.tensor([math.nan, 1.0]), 7, -128, 127, ACT)
    assert math.isnan(out[0].item()) and out[1].item() == 127 / 128


# ----------------------------------------------------------------------- autograd
def test_ste_gradient_is_identity():
    x = torch.tensor([0.3, -0.7, 1.9, 5.0], requires_grad=True)
    y = ste(fake_quantize_pof2, x, 6, -128, 127, ACT)
    assert y.tolist() == fq([0.3, -0.7, 1.9, 5.0], 6)
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]
    x.grad = None
    w = torch.randn(3, 4, requires_grad=True)
    ste(fake_quantize_affine, w, [0.1, 0.2, 0.3], [0, 0, 0], -128, 127, M.HALF_EVEN, 0).sum() \
        .backward()
    assert torch.equal(w.grad, torch.ones(3, 4))
    with torch.no_grad():
        assert not ste(fake_quantize_pof2, x, 6, -128, 127, ACT).requires_grad


# ----------------------------------------------------------------------- properties
finite32 = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=150, deadline=None)
@given(st.lists(finite32, min_size=1, max_size=40), st.integers(-8, 14), st.sampled_from(ALL),
       st.sampled_from([(8, True), (8, False), (4, True), (16, True), (2, True)]))
def test_pof2_properties(values, fp, mode, bits):
    r = int_range(bits[0], signed=bits[1])
    x = torch.tensor(values, dtype=torch.float32)
    y = fake_quantize_pof2(x, fp, r.qmin, r.qmax, mode)
    step = 2.0 ** -fp
    codes = (y.double() / step)
    assert torch.equal(codes, codes.round())                      # on the grid
    assert codes.min() >= r.qmin and codes.max() <= r.qmax        # inside the range
    assert torch.equal(fake_quantize_pof2(y, fp, r.qmin, r.qmax, mode), y)  # idempotent
    inside = (x.double() >= r.qmin * step) & (x.double() <= r.qmax * step)
    err = (x.double() - y.double()).abs()[inside]
    bound = step if not mode.is_nearest else step / 2
    assert bool((err <= bound).all())
    assert torch.equal(dequantize_pof2(quantize_pof2(x, fp, r.qmin, r.qmax, mode), fp), y)


@settings(max_examples=150, deadline=None)
@given(st.lists(finite32, min_size=1, max_size=40),
       st.floats(min_value=1e-4, max_value=10.0), st.integers(-20, 20),
       st.sampled_from([m for m in ALL if m.is_nearest]))
def test_affine_properties(values, scale, z, mode):
    x = torch.tensor(values, dtype=torch.float32)
    y = fake_quantize_affine(x, scale, z, 0, 255, mode)
    inv = np.float32(1.0 / scale)
    back = np.float32(1.0) / inv
    q = quantize_affine(x, scale, z, 0, 255, mode)
    assert torch.equal(q, q.round()) and q.min() >= 0 and q.max() <= 255
    assert torch.equal(y, ((q - z) * float(back)))
    lo, hi = (0 - z) * float(back), (255 - z) * float(back)
    inside = (x >= lo) & (x <= hi)
    assert bool(((x - y).abs()[inside] <= float(back) / 2 * (1 + 1e-5) + 1e-6).all())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ALL)
def test_cuda_matches_cpu(mode):
    x = torch.randn(4, 3, 8, 8) * 3
    for fn, args in [(fake_quantize_pof2, (6, -128, 127, mode)),
                     (fake_quantize_pof2, ([5, 6, 7], -128, 127, mode, 1)),
                     (fake_quantize_affine, (0.0123, 3, 0, 255, mode)),
                     (fake_quantize_affine, ([0.01, 0.02, 0.03], [0, 1, 2], 0, 255, mode, 1))]:
        assert torch.equal(fn(x.cuda(), *args).cpu(), fn(x, *args))
