"""percentile / mse / entropy with power-of-two scale (issue 22, "method on the DPU"): the fix
position is the range rule on the clip range the method chooses, on every target, DPU included.

One outlier (40.0) among 999 values of 0.3. The range rule on max|x| = 40 gives
floor(log2(127.5 / 40)) = floor(1.67) = 1. The diffs search (fp 1..5) keeps 1: at fp 1 (step 0.5)
each 0.3 rounds to 0.5 (999 * 0.2^2 = 40) and 40 is exact; at fp 2 (step 0.25) 0.3 -> 0.25
(999 * 0.05^2 = 2.5) but 40 clips to 31.75 (8.25^2 = 68). The 99th percentile clips the outlier:
2048 bins over [0, 40] are 40/2048 = 0.01953 wide, 0.3 lies in bin 15 ([0.293, 0.3125)), the clip
is one of that bin's edges, and floor(log2(127.5 / T)) = 8 for both (408.0 -> 8.67, 435.2 -> 8.77).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from nndct_lite.calib import Role, make_observer
from nndct_lite.calib.histogram import batch_amax
from nndct_lite.calib.pof2 import diffs_fix_pos, histogram_fix_pos
from nndct_lite.config.spec import DPU_ACT_SPEC, CalibMethod, TargetDevice

X = torch.cat([torch.full((999,), 0.3), torch.tensor([40.0])])


def _spec(method, **kw):
    return DPU_ACT_SPEC.with_(method=method, **kw)


def _expected_fp(t: float) -> int:
    import math
    return min(math.floor(math.log2(127.5 / t)), 12)


def test_range_rule_and_diffs_on_the_outlier():
    assert diffs_fix_pos(X, DPU_ACT_SPEC, scope=1) == [1]
    assert diffs_fix_pos(X, DPU_ACT_SPEC) == [1]


@pytest.mark.parametrize("method", [CalibMethod.PERCENTILE, CalibMethod.MSE, CalibMethod.ENTROPY])
def test_histogram_method_fix_pos_is_the_range_rule_on_its_clip(method):
    spec = _spec(method, percentage=99.0)
    t, nonfinite = batch_amax(X, spec)
    assert not nonfinite and 0.0 < t <= 40.0, t
    fp, _ = histogram_fix_pos(X, spec)
    assert fp == _expected_fp(t)


def test_percentile_hand_computed():
    spec = _spec(CalibMethod.PERCENTILE, percentage=99.0)
    t, _ = batch_amax(X, spec)
    assert any(abs(t - e) < 1e-6 for e in (15 * 40 / 2048, 16 * 40 / 2048)), t
    assert histogram_fix_pos(X, spec) == (8, False)


@pytest.mark.parametrize("target", [TargetDevice.DPU, TargetDevice.CPU, None])
def test_every_target_honours_the_method(target):
    obs = make_observer(_spec(CalibMethod.PERCENTILE, percentage=99.0), role=Role.ACTIVATION,
                        target=target)
    obs.observe(X)
    obs.observe(X * 1.0)
    assert obs.compute().fix_pos == 8
    diffs = make_observer(DPU_ACT_SPEC, role=Role.ACTIVATION, target=target)
    diffs.observe(X)
    assert diffs.compute().fix_pos == 1


def test_batches_vote():
    obs = make_observer(_spec(CalibMethod.MSE), role=Role.ACTIVATION, target=TargetDevice.DPU)
    for x in (X, X, X * 8):          # two batches vote for one fp, the third for 3 less
        obs.observe(x)
    fp = histogram_fix_pos(X, _spec(CalibMethod.MSE))[0]
    assert histogram_fix_pos(X * 8, _spec(CalibMethod.MSE))[0] == fp - 3
    assert obs.compute().fix_pos == fp


def test_all_zero_and_nonfinite():
    fp, nonfinite = histogram_fix_pos(torch.zeros(10), _spec(CalibMethod.ENTROPY))
    assert fp == 12 and not nonfinite          # an all-zero tensor: the cap, as for diffs
    fp, nonfinite = histogram_fix_pos(torch.tensor([float("nan"), 1.0, -0.5]),
                                      _spec(CalibMethod.PERCENTILE))
    assert nonfinite and fp == 6               # range [-1, 1]: floor(log2(127.5)) = 6
    assert histogram_fix_pos(torch.tensor([float("inf")]), _spec(CalibMethod.MSE)) == (None, True)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_end_to_end_the_configured_method_runs_on_the_dpu(tmp_path):
    """quant_info.json differs between diffs and percentile on the DPU target, and
    resolved_config.json names the method that ran."""
    from nndct_lite import torch_quantizer
    torch.manual_seed(0)
    x = torch.randn(8, 3, 16, 16)
    x[0, 0, 0, 0] = 60.0                       # an outlier the percentile clips
    fps = {}
    for method in ("diffs", "percentile"):
        out = tmp_path / method
        cfg = tmp_path / f"{method}.json"
        cfg.write_text(json.dumps({"target_device": "DPU",
                                   "tensor_quantize_config": {"input": {"method": method, "percentage": 99.0}}}))
        q = torch_quantizer("calib", _Net().eval(), (x,), output_dir=str(out),
                            quant_config_file=str(cfg))
        q.quant_model(x)
        q.export_quant_config()
        info = json.loads((out / "quant_info.json").read_text())
        fps[method] = info["output"]["_Net::input_0"][0][1]
        resolved = json.loads((out / "resolved_config.json").read_text())
        assert resolved["global"]["input"]["method"]["value"] == method
    # diffs on the input (scope 1, the model input): floor(log2(127.5 / 60)) = 1
    assert fps["diffs"] == 1
    assert fps["percentile"] > fps["diffs"]
