"""An adaptive average pool to a size that does not divide its input (2x2 -> 7x7, timm's VGG
pre-logits on small inputs) exports to ONNX as two MatMuls with the averaging matrices; torch's
exporter refuses the op itself. onnxruntime agrees with test mode."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer
from nndct_lite.export.onnx_ops import averaging_matrix

ort = pytest.importorskip("onnxruntime")


def test_averaging_matrix_is_torchs_adaptive_pool():
    # hand-computed: 3 -> 2 averages rows {0, 1} and {1, 2}
    assert torch.equal(averaging_matrix(3, 2), torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]))
    x = torch.randn(2, 3, 5, 2, dtype=torch.float64)
    for (h, w), (oh, ow) in [((5, 2), (3, 7)), ((5, 2), (7, 1))]:
        ref = F.adaptive_avg_pool2d(x, (oh, ow))
        got = averaging_matrix(h, oh).double() @ x @ averaging_matrix(w, ow).double().t()
        assert torch.allclose(ref, got, atol=1e-6)


class Upsampling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.head = nn.Conv2d(8, 4, 7)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x)))).flatten(1)


def test_upsampling_adaptive_pool_exports_and_agrees(tmp_path):
    torch.manual_seed(0)
    model, x = Upsampling().eval(), torch.randn(4, 3, 8, 8)     # conv -> 2x2, pool -> 7x7
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path))
    q.quant_model(x)
    q.export_quant_config()
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(tmp_path))
    with torch.no_grad():
        ref = qt.quant_model(x).numpy()
    path = qt.export_onnx_model(output_dir=str(tmp_path), dynamic_batch=True)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MatMul") == 2 and "AveragePool" not in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    step = float(np.min(np.abs(np.diff(np.unique(ref)))))       # the output grid
    assert np.abs(got - ref).max() <= step + 1e-6
    assert (got.argmax(1) == ref.argmax(1)).all()
