"""Tensor-level QAT API: values computed independently (numpy, exact fractions), clipped STE,
calibration through the project's observers, and the quantized layers."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nndct_lite.calib import BatchMode, HistogramObserver, Role
from nndct_lite.config.spec import CalibMethod, QuantSpec, ScaleType
from nndct_lite.numerics.rounding import RoundMode
from nndct_lite.qat import (QuantConv2d, QuantDescriptor, QuantLinear, TensorQuantizer,
                            fake_tensor_quant, tensor_quant)


def _np_fake(x: np.ndarray, amax, bound: int, lo: int) -> np.ndarray:
    """Independent float32 model: scale = bound/amax, round half even, clamp, divide."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.float32(bound) / np.asarray(amax, dtype=np.float32)
    q = np.clip(np.round(x * scale), lo, bound).astype(np.float32)   # np.round: half to even
    return (q / scale).astype(np.float32)


# ------------------------------------------------------------------ values
def test_seed_example_matches_an_independent_computation():
    torch.manual_seed(12345)
    x = torch.rand(10)
    out = fake_tensor_quant(x, x.abs().max())
    xs = x.numpy()
    expected = _np_fake(xs, xs.max(), 127, -127)
    assert np.array_equal(out.numpy(), expected)
    # and the codes by exact rational arithmetic (no tie is near: every |frac - .5| > 1e-3)
    amax = Fraction(float(xs.max()))
    for v, o in zip(xs.tolist(), out.tolist()):
        exact = Fraction(v) * 127 / amax
        code = round(exact)                                  # Python round: half to even
        assert abs(exact - int(exact) - Fraction(1, 2)) > Fraction(1, 1000)
        assert o == pytest.approx(float(code * amax / 127), rel=1e-6)
    # the values as printed (4 decimals), from the exact codes above
    printed = [round(float(round(Fraction(v) * 127 / amax) * amax / 127), 4) for v in xs.tolist()]
    assert [round(v, 4) for v in out.tolist()] == printed
    assert printed[2] == round(float(amax), 4)               # the maximum maps onto itself


def test_seed_example_prints_the_published_numbers():
    """pytorch-quantization's documented example, as printed there (4 decimals)."""
    torch.manual_seed(12345)
    x = torch.rand(10)
    assert [round(v, 4) for v in x.tolist()] == [0.9817, 0.8796, 0.9921, 0.4611, 0.0832,
                                                  0.1784, 0.3674, 0.5676, 0.3376, 0.2119]
    fake = fake_tensor_quant(x, x.abs().max())
    assert [round(v, 4) for v in fake.tolist()] == [0.9843, 0.8828, 0.9921, 0.4609, 0.0859,
                                                     0.1797, 0.3672, 0.5703, 0.3359, 0.2109]
    q, scale = tensor_quant(x, x.abs().max())
    assert q.tolist() == [126.0, 113.0, 127.0, 59.0, 11.0, 23.0, 47.0, 73.0, 43.0, 27.0]
    assert round(float(scale), 4) == 128.0057


def test_ties_round_half_to_even():
    # amax = 127: scale 1, codes are round(x) with ties to even
    x = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    q, scale = tensor_quant(x, 127.0)
    assert float(scale) == 1.0
    assert q.tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0]
    assert fake_tensor_quant(x, 127.0).tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0]


def test_narrow_and_full_range_and_unsigned():
    x = torch.tensor([-2.0, -1.0, 0.25, 1.0, 2.0])
    q, s = tensor_quant(x, 1.0, num_bits=8)
    assert q.tolist() == [-127.0, -127.0, 32.0, 127.0, 127.0] and float(s) == 127.0
    q, _ = tensor_quant(x, 1.0, num_bits=8, narrow_range=False)
    assert q.tolist() == [-128.0, -127.0, 32.0, 127.0, 127.0]
    q, s = tensor_quant(x, 1.0, num_bits=8, unsigned=True)
    assert float(s) == 255.0
    assert q.tolist() == [0.0, 0.0, 64.0, 255.0, 255.0]     # 0.25 * 255 = 63.75 -> 64
    q, s = tensor_quant(x, 2.0, num_bits=4)
    # scale 7/2: -2 -> -7, -1 -> -3.5 -> -4 (even), 0.25 -> 0.875 -> 1, 1 -> 3.5 -> 4, 2 -> 7
    assert q.tolist() == [-7.0, -4.0, 1.0, 4.0, 7.0] and float(s) == 3.5
    out = fake_tensor_quant(x, 2.0, num_bits=4)
    assert torch.equal(out, torch.tensor([-7.0, -4.0, 1.0, 4.0, 7.0]) / 3.5)


def test_per_channel_amax_broadcasts():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 2, 2)
    amax = w.abs().amax(dim=(1, 2, 3), keepdim=True)
    out = fake_tensor_quant(w, amax)
    for c in range(3):
        exp = _np_fake(w[c].numpy(), amax[c].item(), 127, -127)
        assert np.array_equal(out[c].numpy(), exp)


def test_zero_amax_gives_zeros_and_no_nan():
    x = torch.tensor([[-1.0, 0.5], [2.0, -3.0]])
    amax = torch.tensor([[0.0], [3.0]])
    q, scale = tensor_quant(x, amax)
    assert not torch.isnan(q).any() and not torch.isnan(scale).any()
    assert q[0].tolist() == [0.0, 0.0] and scale[0].item() == 1.0
    assert q[1].tolist() == [85.0, -127.0]                  # 2 * 127/3 = 84.67
    out = fake_tensor_quant(x, amax)
    assert out[0].tolist() == [0.0, 0.0] and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="amax must be >= 0"):
        fake_tensor_quant(x, -1.0)


def test_half_precision_input_keeps_its_dtype():
    x = torch.tensor([0.3, -0.7], dtype=torch.float16)
    out = fake_tensor_quant(x, 1.0)
    assert out.dtype == torch.float16
    assert out.float().tolist() == pytest.approx(_np_fake(x.float().numpy(), 1.0, 127, -127),
                                                 abs=1e-3)


# ------------------------------------------------------------------ gradients
def test_clipped_ste_gradient_of_fake_quant():
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.01, 4.0], requires_grad=True)
    fake_tensor_quant(x, 1.0).backward(torch.arange(1.0, 9.0))
    # hand-computed mask |x| <= 1: 0 1 1 1 1 1 0 0, times the incoming gradient 1..8
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]


def test_clipped_ste_gradient_per_channel_and_tensor_quant():
    x = torch.tensor([[0.5, 1.5], [0.5, 1.5]], requires_grad=True)
    amax = torch.tensor([[1.0], [2.0]])
    q, _ = tensor_quant(x, amax)
    q.sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_learned_amax_gets_the_lsq_gradient():
    q = TensorQuantizer(QuantDescriptor(num_bits=4, amax=1.0, learn_amax=True))
    assert isinstance(q.amax, torch.nn.Parameter)
    x = torch.tensor([0.1, 0.5, 2.0, -3.0], requires_grad=True)
    y = q(x)
    assert torch.equal(y.detach(), fake_tensor_quant(x.detach(), 1.0, num_bits=4))
    y.sum().backward()
    # v = 7x: 0.7 -> 1 (+0.3), 3.5 -> 4 (+0.5), 14 -> clip 7, -21 -> clip -7; d/da = (.)/7
    expected = (0.3 + 0.5 + 7.0 - 7.0) / 7.0
    assert q.amax.grad.item() == pytest.approx(expected, rel=1e-5)
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]


# ------------------------------------------------------------------ quantizer and calibration
def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 16, generator=g) * (1 + i) for i in range(3)]


def test_max_calibration_gives_the_running_abs_max():
    tq = TensorQuantizer(QuantDescriptor())
    tq.disable()
    tq.enable_calib()
    data = _batches()
    for b in data:
        assert torch.equal(tq(b), b)                     # quant off: passes through
    tq.disable_calib()
    tq.load_calib_amax()
    tq.enable()
    top = max(float(b.abs().max()) for b in data)
    assert tq.amax.item() == pytest.approx(top, rel=1e-7)
    assert torch.equal(tq(data[0]), fake_tensor_quant(data[0], tq.amax))


def test_max_calibration_per_channel():
    tq = TensorQuantizer(QuantDescriptor(axis=0))
    tq.enable_calib()
    w = torch.randn(5, 3, 3, 3)
    tq(w)
    tq.disable_calib()
    tq.load_calib_amax("max")
    assert torch.allclose(tq.amax, w.abs().amax(dim=(1, 2, 3)))
    assert torch.equal(tq(w), fake_tensor_quant(w, w.abs().amax(dim=(1, 2, 3), keepdim=True)))


@pytest.mark.parametrize("method", ["percentile", "mse", "entropy"])
def test_histogram_load_calib_amax_equals_the_observer(method):
    tq = TensorQuantizer(QuantDescriptor(calib_method="histogram"))
    tq.disable()
    tq.enable_calib()
    data = _batches(1)
    for b in data:
        tq(b)
    tq.disable_calib()
    tq.load_calib_amax(method, percentile=99.9)
    spec = QuantSpec(bit_width=8, method=CalibMethod(method), round_mode=RoundMode.HALF_EVEN,
                     narrow_range=True, scale_type=ScaleType.FLOAT, percentage=99.9)
    obs = HistogramObserver(spec, role=Role.ACTIVATION, batch_mode=BatchMode.ACCUMULATE)
    for b in data:
        obs.observe(b)
    p = obs.compute()
    assert tq.amax.item() == pytest.approx(p.scale * 127, rel=1e-6)
    # the same statistics re-used with another method give another amax
    tq.load_calib_amax("max")
    assert tq.amax.item() == pytest.approx(max(float(b.abs().max()) for b in data), rel=1e-7)


def test_load_calib_amax_errors():
    tq = TensorQuantizer(QuantDescriptor())
    with pytest.raises(RuntimeError, match="needs statistics"):
        tq.load_calib_amax()
    tq.enable_calib()
    tq(torch.randn(8))
    with pytest.raises(ValueError, match="histogram"):
        tq.load_calib_amax("entropy")
    with pytest.raises(ValueError):
        QuantDescriptor(calib_method="histogram", axis=0)
    tq2 = TensorQuantizer(QuantDescriptor())
    with pytest.raises(RuntimeError, match="no amax"):
        tq2(torch.randn(3))


# ------------------------------------------------------------------ layers
def _calibrate(layer, x):
    for q in (layer.input_quantizer, layer.weight_quantizer):
        q.enable_calib()
        q.disable()
    layer(x)
    for q in (layer.input_quantizer, layer.weight_quantizer):
        q.disable_calib()
        q.load_calib_amax()
        q.enable()


def test_quant_conv2d_is_conv_on_fake_quantized_tensors():
    torch.manual_seed(3)
    conv = QuantConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    _calibrate(conv, x)
    assert conv.weight_quantizer.amax.shape == (4,)
    xq = fake_tensor_quant(x, x.abs().max())
    wq = fake_tensor_quant(conv.weight, conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True))
    assert torch.equal(conv(x), F.conv2d(xq, wq, conv.bias, padding=1))
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_quant_linear_with_descriptors():
    torch.manual_seed(4)
    lin = QuantLinear(6, 2, quant_desc_input=QuantDescriptor(num_bits=4, amax=2.0),
                      quant_desc_weight=QuantDescriptor(num_bits=8, axis=0, amax=None))
    lin.weight_quantizer.enable_calib()
    lin.weight_quantizer.disable()
    x = torch.randn(5, 6)
    lin(x)
    lin.weight_quantizer.disable_calib()
    lin.weight_quantizer.load_calib_amax()
    lin.weight_quantizer.enable()
    wq = fake_tensor_quant(lin.weight, lin.weight.abs().amax(dim=1, keepdim=True))
    assert torch.equal(lin(x), F.linear(fake_tensor_quant(x, 2.0, num_bits=4), wq, lin.bias))
