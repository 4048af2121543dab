"""DPU approximations (LeakyReLU slope 26/256, ...) apply only while quantization is on: the
float passes of a calib session (bias correction's and fast finetune's references, the report's
float run) see the model's own function."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer
from nndct_lite.quant.build import set_mode
from nndct_lite.state.modes import QuantMode


class Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.conv2(F.leaky_relu(self.act(self.conv(x)), 0.3))


def test_leaky_relu_slope_only_when_quantizing(tmp_path):
    torch.manual_seed(0)
    model, x = Leaky().eval(), torch.randn(2, 3, 12, 12)
    q = torch_quantizer("calib", model, (x,), output_dir=str(tmp_path))
    with torch.no_grad():
        set_mode(q.quant_model, QuantMode.FLOAT)
        assert torch.allclose(q.quant_model(x), model(x), atol=1e-5)
        # the same model with both slopes at 26/256 differs from the float model: the check
        # above could fail
        ref = model.conv2(F.leaky_relu(F.leaky_relu(model.conv(x), 26 / 256), 26 / 256))
        assert not torch.allclose(ref, model(x), atol=1e-3)
        set_mode(q.quant_model, QuantMode.CALIB)
        q.quant_model(x)
        # with quantization on, both leaky ReLUs use the DPU slope: near the 26/256 reference
        assert (q.quant_model(x) - ref).abs().max() < (q.quant_model(x) - model(x)).abs().max()
