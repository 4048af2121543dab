"""Mode switches and fast finetune leave the model as they found it when interrupted."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nndct_lite import torch_quantizer
from nndct_lite.algorithms import fast_finetune as ff
from nndct_lite.quant.build import quantizers
from nndct_lite.quant.fake_quantizer import FakeQuantizer
from nndct_lite.quant.modes import model_transaction, quant_mode
from nndct_lite.quant.modules import QuantOp
from nndct_lite.state.modes import QuantMode


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(y.mean((2, 3)))


def _calib(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 8, 8)
    q = torch_quantizer("calib", _Net().eval(), (x[:1],), output_dir=str(tmp_path))
    q.quant_model(x)
    return q, x


def _fingerprint(model):
    modes = [(type(m).__name__, m.__dict__.get("mode", m.__dict__.get("qmode")))
             for m in model.modules() if isinstance(m, (FakeQuantizer, QuantOp))]
    correctors = [id(m.__dict__.get("bias_corrector")) for m in model.modules()
                  if isinstance(m, QuantOp)]
    params = {k: q.params for k, q in quantizers(model).items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return modes, correctors, params, state


def _same(a, b):
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2]
    assert a[3].keys() == b[3].keys()
    assert all(torch.equal(a[3][k], b[3][k]) for k in a[3])


def test_quant_mode_restores_on_exception(tmp_path):
    q, x = _calib(tmp_path)
    model = q.quant_model
    before = _fingerprint(model)
    with pytest.raises(RuntimeError), quant_mode(model, QuantMode.FLOAT):
        assert all(m.mode is QuantMode.FLOAT for m in quantizers(model).values())
        raise RuntimeError("boom")
    _same(before, _fingerprint(model))


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_fast_finetune_leaves_the_calibration_intact(tmp_path, monkeypatch, exc):
    q, x = _calib(tmp_path)
    model = q.quant_model
    before = _fingerprint(model)
    calls = {"n": 0}
    real = ff._tune_layer

    def tune_then_fail(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc("interrupted")
        return real(*a, **kw)
    monkeypatch.setattr(ff, "_tune_layer", tune_then_fail)
    with pytest.raises(exc):
        q.fast_finetune(lambda data: model(data), (x,))
    assert calls["n"] == 2
    _same(before, _fingerprint(model))
    assert not (tmp_path / "param.pth").exists()
    assert q._session.fast_finetuned is False
    q.quant_model(x)                      # calibration goes on, and exports
    assert q.export_quant_config().is_file()


def test_transaction_keeps_changes_when_the_block_succeeds(tmp_path):
    q, _ = _calib(tmp_path)
    model = q.quant_model
    with model_transaction(model):
        with torch.no_grad():
            model.module_1.weight.add_(1.0)
    assert not torch.equal(model.module_1.weight, _Net().c1.weight)
