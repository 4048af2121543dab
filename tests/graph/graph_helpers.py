"""Helpers of the graph front-end tests: a calib/test round trip with a float view."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nndct_lite import torch_quantizer
from nndct_lite.quant.build import set_mode
from nndct_lite.state.modes import QuantMode

#: switches that leave a model's float function alone
PLAIN = {"include_cle": False, "include_bias_corr": False}


def config(directory: Path) -> str:
    path = Path(directory) / "plain.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(PLAIN), encoding="utf-8")
    return str(path)


def quantizer(mode: str, model, example, directory: Path):
    return torch_quantizer(mode, model, (example,), output_dir=str(directory),
                           quant_config_file=config(directory))


def float_view(q) -> torch.nn.Module:
    """The generated model of ``q`` with quantization switched off."""
    set_mode(q.quant_model, QuantMode.FLOAT)
    return q.quant_model


def roundtrip(model, example, calib_batches, test_batch, directory: Path):
    """Calibrate on ``calib_batches``, export, run test mode on ``test_batch``; returns the
    test-mode output and the float output of the generated model on ``test_batch``."""
    q = quantizer("calib", model, example, directory)
    with torch.no_grad():
        for b in calib_batches:
            q.quant_model(b)
    q.export_quant_config()
    qt = quantizer("test", model, example, directory)
    with torch.no_grad():
        y_q = qt.quant_model(test_batch)
        y_f = float_view(qt)(test_batch)
    return y_q, y_f, qt


def seeded(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics (so that folding changes the weights), eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                    m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
    return model.eval()
