"""Issue 22, "config means what it says": asymmetric ranges always hold 0 (so the zero point is a
code of the integer range), ``signed: false`` clamps negatives instead of failing, and a layer at
16 bits exports an ONNX file onnxruntime loads and runs like test mode (int16 and uint16)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from nndct_lite import torch_quantizer
from nndct_lite.calib.minmax import maxmin_scale
from nndct_lite.config.spec import QuantSpec, RoundMode, ScaleType
from nndct_lite.numerics.fake_quant import fake_quantize_affine

ort = pytest.importorskip("onnxruntime")

FLOAT = QuantSpec(scale_type=ScaleType.FLOAT, round_mode=RoundMode.HALF_EVEN)


def test_asymmetric_range_above_zero_starts_at_zero():
    # [0.5, 0.7] -> [0, 0.7]: scale 0.7 / 255, zero point 0 (the original gave round(-0.5/s) = -182)
    s, z = maxmin_scale([0.5], [0.7], FLOAT.with_(symmetry=False))
    assert s == [pytest.approx(0.7 / 255, rel=1e-12)] and z == [0]


def test_asymmetric_range_below_zero_ends_at_zero():
    # [-2, -1] -> [-2, 0]: scale 2 / 255, zero point round(2 / (2/255)) = 255, the top code
    s, z = maxmin_scale([-2.0], [-1.0], FLOAT.with_(symmetry=False))
    assert s == [pytest.approx(2 / 255, rel=1e-12)] and z == [255]


def test_asymmetric_range_across_zero_is_unchanged():
    s, z = maxmin_scale([-1.0], [3.0], FLOAT.with_(symmetry=False))
    assert s == [pytest.approx(4 / 255)] and z == [64]


def test_unsigned_symmetric_clamps_negatives():
    spec = FLOAT.with_(signed=False)
    s, z = maxmin_scale([-0.3], [2.55], spec)
    assert s == [pytest.approx(0.01)] and z == [0]
    r = spec.int_range
    x = torch.tensor([-0.3, -0.004, 0.0, 0.014, 1.0, 2.55, 9.0])
    got = fake_quantize_affine(x, s[0], 0, r.qmin, r.qmax, spec.round_mode)
    want = torch.tensor([0.0, 0.0, 0.0, 0.01, 1.0, 2.55, 2.55])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.sigmoid(self.conv(x))           # a range entirely above 0
        return self.fc(y.mean((2, 3)))


def _config(tmp_path, **overall):
    cfg = {"target_device": "CPU",
           "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                       "calib_statistic_method": "max", **overall},
           "layer_quantize_config": [{"layer_type": "Linear",
                                      "overall_quantize_config": {"bit_width": 16}}]}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize("symmetry,zp_type", [(True, np.int16), (False, np.uint16)])
def test_sixteen_bit_layer_onnx_runs_like_test_mode(tmp_path, symmetry, zp_type):
    torch.manual_seed(0)
    net, x = _Net().eval(), torch.randn(8, 3, 8, 8)
    cfg, out = _config(tmp_path, symmetry=symmetry), tmp_path / "q"
    q = torch_quantizer("calib", net, (x,), output_dir=str(out), quant_config_file=cfg)
    q.quant_model(x)
    q.export_quant_config()
    info = json.loads((out / "quant_info.json").read_text())
    for key, [entry] in info["output"].items():
        bw, zp = entry[0], entry[2]
        assert zp == 0 if symmetry else 0 <= zp <= 2 ** bw - 1, key
    q = torch_quantizer("test", net, (x,), output_dir=str(out), quant_config_file=cfg)
    with torch.no_grad():
        want = q.quant_model(x[:1]).numpy()
    q.export_onnx_model(str(out))
    path = next(out.glob("*.onnx"))
    model = onnx.load(str(path))
    zps = {onnx.numpy_helper.to_array(n.attribute[0].t).dtype for n in model.graph.node
           if n.op_type == "Constant" and any(n.output[0] == m.input[2] for m in model.graph.node
                                              if m.op_type == "QuantizeLinear")}
    assert np.dtype(zp_type) in zps and len(zps) == 2          # 8-bit and 16-bit points
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
