"""torch_quantizer's vai_q_pytorch arguments: each one is implemented or rejected, never ignored."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from nndct_lite import InputError, torch_quantizer


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("kwargs, culprit", [
    ({"mix_bit": True}, "mix_bit"),
    ({"app_deploy": "NLP"}, "app_deploy"),
    ({"custom_quant_ops": ["my_op"]}, "custom_quant_ops"),
    ({"dynamo": True}, "dynamo"),
    ({"target": "cpu"}, "target"),
    ({"target": 3}, "target"),
])
def test_unimplemented_arguments_are_rejected(tmp_path, kwargs, culprit):
    with pytest.raises(InputError) as err:
        torch_quantizer("calib", _model(), (X,), output_dir=str(tmp_path), **kwargs)
    assert culprit in str(err.value) and err.value.hint
    assert not (tmp_path / "Sequential.py").exists()      # nothing half-written


@pytest.mark.parametrize("kwargs", [
    {"mix_bit": False}, {"app_deploy": "CV"}, {"custom_quant_ops": None},
    {"custom_quant_ops": []}, {"dynamo": False}, {"target": None},
])
def test_defaults_are_accepted(tmp_path, kwargs):
    torch_quantizer("calib", _model(), (X,), output_dir=str(tmp_path), **kwargs)


def test_target_is_recorded_and_announced(tmp_path, caplog):
    q = torch_quantizer("calib", _model(), (X,), output_dir=str(tmp_path),
                        target="DPUCZDX8G_ISA1_B4096")
    assert "DPUCZDX8G_ISA1_B4096" in caplog.text
    q.quant_model(X)
    q.export_quant_config()
    resolved = json.loads((tmp_path / "resolved_config.json").read_text())
    assert resolved["dpu_target"] == "DPUCZDX8G_ISA1_B4096"


def test_xmodel_dynamic_batch_is_rejected(tmp_path):
    m = _model()
    q = torch_quantizer("calib", m, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    q.export_quant_config()
    q = torch_quantizer("test", m, (X,), output_dir=str(tmp_path))
    q.quant_model(X)
    with pytest.raises(InputError) as err:
        q.export_xmodel(output_dir=str(tmp_path), dynamic_batch=True)
    assert "dynamic_batch" in str(err.value)
    assert not list(tmp_path.glob("*.xmodel"))
    assert q.export_xmodel(output_dir=str(tmp_path)).is_file()
