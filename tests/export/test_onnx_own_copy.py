"""The ONNX exporter traces its own copy of the deploy model: the quantizers the session and its
frozen result hold are never patched, not even while the export runs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnx")

from nndct_lite import torch_quantizer  # noqa: E402
from nndct_lite.quant.fake_quantizer import FakeQuantizer  # noqa: E402


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


def test_the_traced_model_is_a_copy_with_qdq_modules(tmp_path, monkeypatch):
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    q = torch_quantizer("calib", _net(), (x[:1],), output_dir=str(tmp_path))
    q.quant_model(x)
    q.export_quant_config()
    qt = torch_quantizer("test", _net(), (x[:1],), output_dir=str(tmp_path))
    qt.quant_model(x[:1])
    live = {id(m) for m in qt.quant_model.modules()}
    traced: list[nn.Module] = []
    real = torch.onnx.export

    def spy(model, *args, **kwargs):
        traced.append(model)
        mods = list(model.modules())
        assert not any(isinstance(m, FakeQuantizer) and m.params is not None and m.params.is_set
                       for m in mods), "a calibrated FakeQuantizer is traced as it is"
        assert not any("forward" in vars(m) for m in mods), "a module's forward is patched"
        assert not live & {id(m) for m in mods}, "the session's own modules are traced"
        return real(model, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", spy)
    path = qt.export_onnx_model(output_dir=str(tmp_path))
    assert path.is_file() and len(traced) == 1
    assert any(type(m).__name__ == "QDQModule" for m in traced[0].modules())
