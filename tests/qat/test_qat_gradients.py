"""Every QAT gradient rule against values computed by hand: the clipped STE of the inputs, TQT
for power-of-two log2 thresholds, LSQ for float scales (per tensor, per channel, with a zero
point). The tensor-level rules (fake_tensor_quant's clipped STE, the LSQ amax) are in
test_tensor_quant.py."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from nndct_lite.calib import Role
from nndct_lite.config.spec import QuantSpec, ScaleType
from nndct_lite.numerics.params import QuantParams
from nndct_lite.numerics.rounding import RoundMode
from nndct_lite.qat.processor import TrainablePof2Quantizer, TrainableScaleQuantizer
from nndct_lite.quant.fake_quantizer import FakeQuantizer

# 4-bit signed, full range: codes -8..7
POF2 = QuantSpec(bit_width=4, round_mode=RoundMode.HALF_EVEN)
FLOAT = QuantSpec(bit_width=4, round_mode=RoundMode.HALF_EVEN, scale_type=ScaleType.FLOAT)
X = [0.3, 1.0, 2.5, -3.0]
UPSTREAM = [1.0, 2.0, 3.0, 4.0]


def _quantizer(cls, spec, params, learn=True, axis=None):
    base = FakeQuantizer("q", spec, Role.ACTIVATION if axis is None else Role.PARAM, axis=axis)
    return cls(base, params, learn)


def _backward(q, x, upstream):
    x = torch.tensor(x, requires_grad=True)
    y = q(x)
    y.backward(torch.tensor(upstream))
    return y.detach(), x.grad


def test_tqt_forward_and_gradients_by_hand():
    q = _quantizer(TrainablePof2Quantizer, POF2, QuantParams(4, fix_pos=2))
    # log2_t starts in the middle of its interval: 3 - 2 - 0.5; ceil -> 1, fix_pos 3 - 1 = 2
    assert isinstance(q.log2_t, nn.Parameter) and q.log2_t.item() == 0.5
    y, gx = _backward(q, X, UPSTREAM)
    # s = 1/4; x/s = 1.2, 4, 10, -12 -> codes 1, 4, clip 7, clip -8
    assert y.tolist() == [0.25, 1.0, 1.75, -2.0]
    # clipped STE: 1 inside [-8 s, 7 s] = [-2, 1.75], 0 outside
    assert gx.tolist() == [1.0, 2.0, 0.0, 0.0]
    # TQT: s ln2 (round(v) - v) inside, s ln2 * clipped code outside
    # = 0.25 ln2 (1 * (1 - 1.2) + 2 * 0 + 3 * 7 + 4 * (-8)) = 0.25 ln2 * (-11.2)
    assert q.log2_t.grad.item() == pytest.approx(-2.8 * math.log(2.0), rel=1e-6)


def test_tqt_fixed_threshold_has_no_parameter_and_keeps_the_input_rule():
    q = _quantizer(TrainablePof2Quantizer, POF2, QuantParams(4, fix_pos=2), learn=False)
    assert not any(True for _ in q.parameters())
    _, gx = _backward(q, X, UPSTREAM)
    assert gx.tolist() == [1.0, 2.0, 0.0, 0.0]


def test_tqt_step_moves_the_fix_position():
    """A negative gradient (too many values clipped) raises log2_t: a larger threshold, a
    smaller fix position, once log2_t crosses its interval's edge."""
    q = _quantizer(TrainablePof2Quantizer, POF2, QuantParams(4, fix_pos=2))
    with torch.no_grad():
        q.log2_t.add_(0.6)                        # 1.1: ceil 2 -> fix_pos 1
    assert q.params.fix_pos == 1
    q.params = QuantParams(4, fix_pos=3)          # assigning moves it back (mid-interval)
    assert q.log2_t.item() == -0.5 and q.params.fix_pos == 3


def test_lsq_forward_and_gradients_by_hand():
    q = _quantizer(TrainableScaleQuantizer, FLOAT, QuantParams(4, scale=0.25, zero_point=0))
    assert isinstance(q.log_scale, nn.Parameter)
    y, gx = _backward(q, X, UPSTREAM)
    assert y.tolist() == [0.25, 1.0, 1.75, -2.0]
    assert gx.tolist() == [1.0, 2.0, 0.0, 0.0]
    # d/d log s = s * (round(v) - v) inside, s * clipped code outside: 0.25 * (-11.2)
    assert q.log_scale.grad.item() == pytest.approx(-2.8, rel=1e-6)
    assert q.params.scale == 0.25 and q.params.float_max == 0.25 * 7


def test_lsq_with_a_zero_point_by_hand():
    q = _quantizer(TrainableScaleQuantizer, FLOAT, QuantParams(4, scale=0.25, zero_point=2))
    y, gx = _backward(q, X, UPSTREAM)
    # codes clamp(round(v) + 2, -8, 7) - 2: range of round(v) is [-10, 5]
    # v = 1.2, 4, 10, -12 -> 1, 4, clip 5, clip -10
    assert y.tolist() == [0.25, 1.0, 1.25, -2.5]
    assert gx.tolist() == [1.0, 2.0, 0.0, 0.0]
    # 0.25 * (1 * (-0.2) + 2 * 0 + 3 * 5 + 4 * (-10)) = 0.25 * (-25.2)
    assert q.log_scale.grad.item() == pytest.approx(-6.3, rel=1e-6)


def test_lsq_per_channel_by_hand():
    q = _quantizer(TrainableScaleQuantizer, FLOAT,
                   QuantParams(4, scale=(0.25, 0.5), zero_point=(0, 0), axis=0), axis=0)
    y, gx = _backward(q, [[0.3, 2.5], [0.3, 2.5]], [[1.0, 1.0], [1.0, 1.0]])
    # channel 0: v = 1.2, 10 -> 1, clip 7; channel 1: v = 0.6, 5 -> 1, 5
    assert y.tolist() == [[0.25, 1.75], [0.5, 2.5]]
    assert gx.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    # channel 0: 0.25 * ((1 - 1.2) + 7) = 1.7; channel 1: 0.5 * ((1 - 0.6) + 0) = 0.2
    assert q.log_scale.grad.tolist() == pytest.approx([1.7, 0.2], rel=1e-6)
    assert q.params.scale == (0.25, 0.5) and q.params.axis == 0


def test_tqt_per_channel_by_hand():
    q = _quantizer(TrainablePof2Quantizer, POF2, QuantParams(4, fix_pos=(2, 1), axis=0), axis=0)
    y, gx = _backward(q, [[0.3, 2.5], [0.3, 2.5]], [[1.0, 1.0], [1.0, 1.0]])
    # channel 0: s = 1/4 as above; channel 1: s = 1/2, v = 0.6, 5 -> 1, 5
    assert y.tolist() == [[0.25, 1.75], [0.5, 2.5]]
    assert gx.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    ln2 = math.log(2.0)
    assert q.log2_t.grad.tolist() == pytest.approx([1.7 * ln2, 0.2 * ln2], rel=1e-6)
