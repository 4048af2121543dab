"""Issue 3: the torchvision models calibrate and test; the generated model in float mode equals
the original (up to BN folding / CLE rounding), and quantized outputs stay close to float."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from nndct_lite import torch_quantizer
from nndct_lite.quant.build import set_mode
from nndct_lite.state.modes import QuantMode

ZOO = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
       "squeezenet1_1", "densenet121", "shufflenet_v2_x0_5", "vgg11_bn", "googlenet"]


def _model(name):
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(weights=None, **kw).eval()


def _roundtrip(model, x, tmp_path, config=None):
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=config)
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    gen = q.quant_model
    set_mode(gen, QuantMode.FLOAT)
    with torch.no_grad():
        y_gen = gen(x)
    qt = torch_quantizer("test", model, (x[:1],), output_dir=str(tmp_path),
                         quant_config_file=config)
    with torch.no_grad():
        y_q = qt.quant_model(x)
        y_f = model(x)
    return y_f, y_gen, y_q, qt


@pytest.mark.parametrize("name", ZOO)
def test_torchvision_model_calibrates_and_tests(name, tmp_path):
    torch.set_num_threads(2)
    model = _model(name)
    x = torch.randn(2, 3, 64, 64)
    cfg = None
    if name in ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"):
        # ReLU6 -> ReLU (implied by CLE) changes the float function; keep it out of the check
        cfg = tmp_path / "cfg.json"
        cfg.write_text('{"include_cle": false}')
    y_f, y_gen, y_q, qt = _roundtrip(model, x, tmp_path / "qr", cfg and str(cfg))
    assert torch.isfinite(y_q).all()
    scale = y_f.abs().max().clamp_min(1e-12)
    assert (y_gen - y_f).abs().max() / scale < 1e-3, "generated model (float mode) != original"
    assert (tmp_path / "qr" / f"{type(model).__name__}.py").is_file()


class Functional(nn.Module):
    """Functional ops only: F.relu, torch.cat, +, view/flatten, mean, F.interpolate."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.c = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        a = F.relu(self.a(x))
        b = F.relu(self.b(x))
        y = torch.cat([a, b], dim=1)
        y = F.relu(self.c(y)) + a
        y = F.interpolate(F.max_pool2d(y, 2), scale_factor=2, mode="nearest")
        y = y.mean(dim=(2, 3))
        return self.fc(y.view(y.size(0), -1))


def test_functional_model(tmp_path):
    torch.manual_seed(0)
    model = Functional().eval()
    x = torch.randn(4, 3, 16, 16)
    y_f, y_gen, y_q, qt = _roundtrip(model, x, tmp_path)
    assert (y_gen - y_f).abs().max() < 1e-4
    rel = float((y_q - y_f).norm() / y_f.norm())
    assert rel < 0.1, rel
    # the generated file imports and runs on its own
    import importlib.util
    spec = importlib.util.spec_from_file_location("gen_functional", tmp_path / "Functional.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fresh = mod.Functional()
    with torch.no_grad():
        assert fresh(x).shape == y_f.shape


def test_float_mode_is_the_original_model(tmp_path):
    model = Functional().eval()
    q = torch_quantizer("float", model, (torch.randn(1, 3, 16, 16),), output_dir=str(tmp_path))
    assert q.quant_model is model
