"""Issue 6: export_xmodel on a small model: real XIR loads it (when ../shared/xir exists), our
reader and simulator agree with the test-mode model, unsupported ops are aten:: CPU ops with a
warning, deploy_check dumps golden data, and the deploy preconditions raise clear errors."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import ModeError, CalibrationError, torch_quantizer
from nndct_lite.xmodel.reader import read_xmodel
from nndct_lite.sim import Simulator
from shared_paths import XIR


class Net(nn.Module):
    def __init__(self, unsupported=False):
        super().__init__()
        self.unsupported = unsupported
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = F.relu(self.bn1(self.c1(x)))
        z = F.relu(self.c2(F.relu(self.dw(y))))
        y = self.pool(y + z)
        if self.unsupported:
            y = torch.sin(y)
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return self.fc(y)


def _quantize(model, x, out):
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(out))
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    return torch_quantizer("test", model, (x[:1],), output_dir=str(out))


def _check_with_xir(path):
    if not (XIR / "check_xmodel.py").is_file():
        pytest.skip("../shared/xir not available")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{XIR / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    env["PYTHONPATH"] = f"{XIR / 'python'}:{env.get('PYTHONPATH', '')}"
    r = subprocess.run([sys.executable, str(XIR / "check_xmodel.py"), "--brief", str(path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_xmodel_export_runs_in_simulator_and_xir(tmp_path):
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(16, 3, 12, 12)
    qt = _quantize(model, x, tmp_path)
    with pytest.raises(CalibrationError):
        qt.export_xmodel(output_dir=str(tmp_path))        # no forward yet
    with torch.no_grad():
        ref = qt.quant_model(x).numpy()
    path = qt.export_xmodel(output_dir=str(tmp_path), deploy_check=True)
    assert path.name == "Net_int.xmodel"
    graph = read_xmodel(path)
    types = [op.type for op in graph.ops]
    assert "depthwise-conv2d" in types and "conv2d" in types and "matmul" in types
    sim = Simulator(str(path))
    out = sim(x.numpy())
    fp = sim.output_fix(sim.outputs[0])[1]
    assert (out == ref).mean() >= 0.9999 and np.abs(out - ref).max() <= 2.0 ** -fp
    dump = tmp_path / "deploy_check_data_int" / "Net"
    assert (dump / "shape.txt").is_file() and any(dump.glob("*_fix.bin"))
    _check_with_xir(path)


def test_unsupported_op_is_a_cpu_op(tmp_path, caplog):
    """An op with no DPU equivalent is written like the original writes one: an ``aten::<op>``
    custom op (NCHW, ``shape`` + ``data_type``) between layout transposes, summarised in one
    warning per export."""
    torch.manual_seed(0)
    model = Net(unsupported=True).eval()
    x = torch.randn(4, 3, 12, 12)
    qt = _quantize(model, x, tmp_path)
    qt.quant_model(x[:1])
    with caplog.at_level(logging.WARNING, logger="nndct_lite"):
        path = qt.export_xmodel(output_dir=str(tmp_path))
    msgs = [r.getMessage() for r in caplog.records if "run on the CPU" in r.getMessage()]
    assert len(msgs) == 1 and "1 op(s) run on the CPU: aten::sin \u00d71" in msgs[0], msgs
    graph = read_xmodel(path)
    sin = [op for op in graph.ops if op.type == "aten::sin"]
    assert len(sin) == 1 and sin[0].attr("data_type") == "FLOAT32"
    assert list(sin[0].attr("shape")) == [1, 8, 12, 12]          # NCHW, like the original
    producer = graph.op(sin[0].inputs["input"][0])
    assert producer.type == "transpose" and list(producer.attr("order")) == [0, 3, 1, 2]
    assert graph.root is None
    _check_with_xir(path)


def test_export_needs_test_mode(tmp_path):
    model = Net().eval()
    x = torch.randn(2, 3, 12, 12)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path))
    q.quant_model(x)
    with pytest.raises(ModeError, match="test"):
        q.export_xmodel(output_dir=str(tmp_path))
