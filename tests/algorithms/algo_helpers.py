"""Helpers shared by the algorithm tests: config files, a calib/test round trip, data paths."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from nndct_lite import torch_quantizer
from nndct_lite.quant.build import layer_of, set_mode
from nndct_lite.state.modes import QuantMode

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
GOLDEN_MODEL = SHARED / "reference" / "golden" / "resnet20" / "model.py"
RESNET20_WEIGHTS = DATA / "weights" / "resnet20-12fca82f.th"

#: switches that leave a model's float function alone (for tests of one algorithm)
PLAIN = {"include_cle": False, "include_bias_corr": False}

#: 4-bit per-channel weights, 8-bit activations, float scales (CPU target)
W4A8 = {
    "target_device": "CPU",
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                "calib_statistic_method": "max", "round_mode": "half_even"},
    "tensor_quantize_config": {"weights": {"bit_width": 4, "per_channel": True,
                                           "scale_type": "float", "method": "maxmin"}},
}


def need(*paths: Path) -> None:
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} not available (../shared is not part of a clone)")


def resnet20_module():
    """The golden ResNet-20 module (model.py of the golden files); skips without ../shared."""
    need(GOLDEN_MODEL, RESNET20_WEIGHTS, DATA / "cifar10" / "calib.npz",
         DATA / "cifar10" / "test.npz")
    name = "golden_resnet20_model_algorithms"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GOLDEN_MODEL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_config(directory: Path, cfg: dict | None, name: str = "cfg.json") -> str | None:
    if cfg is None:
        return None
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return str(path)


def forward_batches(model, data: torch.Tensor, batch: int) -> None:
    with torch.no_grad():
        for i in range(0, len(data), batch):
            model(data[i:i + batch])


def calibrate(model_fn, calib: torch.Tensor, out_dir: Path, cfg: dict | None, *,
              batch: int = 100, finetune: bool = False):
    """calib (optionally fast finetune first) -> export -> test quantizer (params loaded)."""
    cfg_file = write_config(out_dir, cfg)
    q = torch_quantizer("calib", model_fn(), (calib[:1],), output_dir=str(out_dir),
                        quant_config_file=cfg_file)
    if finetune:
        q.fast_finetune(forward_batches, (q.quant_model, calib, batch))
    forward_batches(q.quant_model, calib, batch)
    q.export_quant_config()
    qt = torch_quantizer("test", model_fn(), (calib[:1],), output_dir=str(out_dir),
                         quant_config_file=cfg_file)
    if finetune:
        qt.load_ft_param()
    return q, qt


def outputs(model, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    return float((outputs(model, x, batch).argmax(1) == y).float().mean())


def float_view(q) -> torch.nn.Module:
    """The generated model of quantizer ``q`` with quantization switched off."""
    set_mode(q.quant_model, QuantMode.FLOAT)
    return q.quant_model


def layer(q, node):
    return layer_of(q.quant_model, node)
