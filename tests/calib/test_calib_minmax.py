"""Float-scale maxmin and the batch statistics (numerics.md 3.1, 4.2, 4.3; T21)."""
import math

import pytest
import torch

from nndct_lite.calib import (BatchMode, MinMaxObserver, Role, make_observer, maxmin_scale,
                              mode_of, reduce_values)
from nndct_lite.config.spec import CalibMethod, QuantSpec, RoundMode, ScaleType, StatMethod
from nndct_lite.errors import ConfigError
from nndct_lite.numerics import fake_quantize_affine

FLOAT = QuantSpec(scale_type=ScaleType.FLOAT, method=CalibMethod.MAXMIN,
                  round_mode=RoundMode.HALF_EVEN, calib_statistic_method=StatMethod.MAX)
ASYM = FLOAT.with_(symmetry=False)


def run(spec, batches, role=Role.ACTIVATION, axis=None, **kw):
    obs = make_observer(spec, role=role, axis=axis, **kw)
    for b in batches:
        obs.observe(torch.as_tensor(b, dtype=torch.float32))
    return obs.compute()


def test_t21_asymmetric_per_tensor():
    p = run(ASYM, [[-1.0, 0.5, 3.0]])
    assert p.scale == 4 / 255 and p.zero_point == 64 and p.float_max == 4 / 255 * 255
    assert p.fix_pos is None and p.is_set and not p.per_channel
    x = torch.tensor([3.0, -1.0, 0.5])
    got = fake_quantize_affine(x, p.scale, p.zero_point, 0, 255, RoundMode.HALF_EVEN).tolist()
    assert got == pytest.approx([2.9960784, -1.0039216, 0.5019608], abs=1e-7)


def test_example_3_per_channel_with_zero_channel():
    w = torch.tensor([[0.5, -1.27, 0.2], [0.01, 0.02, -0.03], [0.0, 0.0, 0.0]])
    p = run(FLOAT.with_(per_channel=True), [w], role=Role.PARAM, axis=0)
    f32 = lambda v: torch.tensor(v).item()  # noqa: E731  (extremes are float32 values)
    assert p.scale == (f32(1.27) / 127, f32(0.03) / 127, 0.0)
    assert p.zero_point == (0, 0, 0) and p.axis == 0
    q = fake_quantize_affine(w, p.scale, p.zero_point, -128, 127, RoundMode.HALF_EVEN, axis=0)
    assert q[2].tolist() == [0.0, 0.0, 0.0]
    assert (q[0] / p.scale[0]).round().tolist() == [50.0, -127.0, 20.0]


def test_symmetric_signed_uses_qmax_also_when_narrow():
    assert run(FLOAT, [[-2.54, 1.0]]).scale == torch.tensor(2.54).item() / 127
    assert run(FLOAT.with_(narrow_range=True), [[-2.54, 1.0]]).scale == \
        torch.tensor(2.54).item() / 127


def test_unsigned_symmetric():
    assert run(FLOAT.with_(signed=False), [[0.0, 2.55]]).scale == torch.tensor(2.55).item() / 255
    # negatives clamp to 0 (the original raised for a per-tensor range; issue 22)
    assert run(FLOAT.with_(signed=False), [[-0.1, 2.55]]).scale == torch.tensor(2.55).item() / 255
    p = run(FLOAT.with_(signed=False, per_channel=True), [[[-0.1, 2.55], [-1.0, -0.5]]],
            axis=0)
    assert p.scale == (torch.tensor(2.55).item() / 255, 0.0)


def test_asymmetric_constant_and_per_channel():
    assert run(ASYM, [[1.5, 1.5]]).zero_point == 0
    p = run(ASYM.with_(per_channel=True), [[[-1.0, 3.0], [0.0, 2.55], [1.0, 3.0]]], axis=0)
    # channel 2, [1, 3], is widened to [0, 3] so its zero point is a code (the original: -128)
    assert p.scale[0] == 4 / 255 and p.zero_point == (64, 0, 0)
    assert p.scale[2] == 3 / 255


def test_example_9_statistics():
    v = [0.010, 0.012, 0.020]
    assert reduce_values(v, StatMethod.MAX) == 0.020
    assert reduce_values(v, StatMethod.MEAN) == pytest.approx(0.014, abs=1e-15)
    assert reduce_values(v, StatMethod.MEDIAN) == 0.012
    assert reduce_values([0.010, 0.012, 0.020, 0.030], StatMethod.MEDIAN) == (0.012 + 0.020) / 2
    assert reduce_values([0.02, 0.01, 0.02, 0.01], StatMethod.MODAL) == 0.01
    assert mode_of([5, 6, 6, 5]) == 5 and mode_of([5, 6, 6, 5], prefer_larger=True) == 6
    with pytest.raises(ValueError):
        reduce_values([], StatMethod.MAX)


@pytest.mark.parametrize("stat, expect", [
    (StatMethod.MAX, 1 / 16), (StatMethod.MEAN, (1 / 64 + 1 / 32 + 1 / 16 + 1 / 64) / 4),
    (StatMethod.MEDIAN, (1 / 64 + 1 / 32) / 2), (StatMethod.MODAL, 1 / 64)])
def test_per_batch_statistics(stat, expect):
    batches = [[-127 / 64, 0.5], [127 / 32], [-127 / 16], [0.25, 127 / 64]]
    p = run(FLOAT.with_(calib_statistic_method=stat), batches)
    assert p.scale == expect
    assert p.float_max == reduce_values([127 / 64, 127 / 32, 127 / 16, 127 / 64], stat)


def test_accumulate_mode():
    batches = [[-1.0, 0.5], [0.0, 3.0]]
    acc = run(ASYM, batches, batch_mode=BatchMode.ACCUMULATE)
    assert acc.scale == 4 / 255 and acc.zero_point == 64
    per = run(ASYM.with_(calib_statistic_method=StatMethod.MAX), batches)
    assert per.scale == 3 / 255 and per.zero_point == 0  # max of 1.5/255, 3/255; mode of 170, 0


def test_running_value_and_param_once():
    obs = make_observer(FLOAT.with_(calib_statistic_method=StatMethod.MEAN),
                        role=Role.ACTIVATION)
    obs.observe(torch.tensor([1.27]))
    first = obs.compute().scale
    obs.observe(torch.tensor([2.54]))
    assert obs.compute().scale == (first + torch.tensor(2.54).item() / 127) / 2
    par = make_observer(FLOAT, role=Role.PARAM)
    par.observe(torch.tensor([1.27]))
    par.observe(torch.tensor([100.0]))
    assert par.batches == 1 and par.compute().scale == first


def test_nonfinite_ignored():
    obs = make_observer(ASYM, role=Role.ACTIVATION)
    obs.observe(torch.tensor([-1.0, math.nan, 3.0, math.inf]))
    assert obs.nonfinite_batches == 1 and obs.compute().zero_point == 64
    pc = make_observer(ASYM.with_(per_channel=True), role=Role.PARAM, axis=0)
    pc.observe(torch.tensor([[-1.0, math.nan, 3.0], [math.inf, -math.inf, math.nan]]))
    p = pc.compute()
    assert p.scale == (4 / 255, 0.0) and p.zero_point == (64, 0)
    obs.observe(torch.tensor([math.nan]))
    assert obs.batches == 1 and obs.nonfinite_batches == 2


def test_maxmin_scale_pure():
    s, z = maxmin_scale([-1.0, 0.0], [3.0, 0.0], ASYM, per_channel=True)
    assert s == [4 / 255, 0.0] and z == [64, 0]
    assert not make_observer(FLOAT, role=Role.ACTIVATION).compute().is_set


def test_errors():
    with pytest.raises(ConfigError):
        MinMaxObserver(QuantSpec(), role=Role.ACTIVATION)
    with pytest.raises(ConfigError):
        make_observer(FLOAT.with_(method=CalibMethod.DIFFS), role=Role.ACTIVATION)
    with pytest.raises(ConfigError):
        from nndct_lite.config.spec import TargetDevice
        make_observer(FLOAT, role=Role.ACTIVATION, target=TargetDevice.DPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(3, 8, 4, 4)
    for spec, axis in [(ASYM, None), (FLOAT.with_(per_channel=True), 1)]:
        assert run(spec, [x], axis=axis) == run(spec, [x.cuda()], axis=axis)
