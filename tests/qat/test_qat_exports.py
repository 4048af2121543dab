"""A trained, deployed QAT model: its XModel (in the integer simulator), ONNX (onnxruntime) and
TorchScript files agree with its test mode, which equals the trained model; and float-scale QAT
(CPU target, per-channel weights, 4 and 8 bits, learned or fixed scales) deploys the same way."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite.qat import QatProcessor
from nndct_lite.qat.processor import TrainablePof2Quantizer, TrainableScaleQuantizer


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)) + x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _data():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(64, 3, 8, 8)
    y = (x.mean(dim=(2, 3)) @ torch.randn(3, 4)).argmax(dim=1)
    return net.eval(), x, y


def _train(model, x, y, steps=20):
    thresholds = [p for n, p in model.named_parameters() if n.endswith(("log2_t", "log_scale"))]
    ids = {id(p) for p in thresholds}
    opt = torch.optim.Adam([{"params": [p for p in model.parameters() if id(p) not in ids],
                             "lr": 1e-2}, {"params": thresholds, "lr": 1e-2}])
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _scales_and_positions(model):
    return {q.key: (q.params.fix_pos, q.params.scale) for q in model.modules()
            if isinstance(q, (TrainablePof2Quantizer, TrainableScaleQuantizer))
            and q.params is not None}


def _deploy(tmp_path, config=None, learn=True):
    net, x, y = _data()
    qat = QatProcessor(net, (x[:1],), config=config)
    model = qat.trainable_model(learn_fix_pos=learn, calib_batches=[x])
    start = _scales_and_positions(model)
    _train(model, x, y)
    out = tmp_path / "qat"
    qat.to_deployable(model, out)
    q = qat.test_quantizer(out)
    with torch.no_grad():
        ref = q.quant_model(x)
        assert torch.equal(ref, model(x)), "test mode differs from the trained model"
    return qat, model, q, out, x, ref, start


@pytest.fixture(scope="module")
def dpu(tmp_path_factory):
    return _deploy(tmp_path_factory.mktemp("qat_dpu"))


def test_xmodel_in_the_simulator_agrees_with_test_mode(dpu):
    from nndct_lite.sim import Simulator
    qat, _, _, out, x, ref, _ = dpu
    path = qat.export_xmodel(out)
    sim = Simulator(str(path))
    got = np.concatenate([sim(x[i:i + 1].numpy()) for i in range(16)])
    want = ref[:16].numpy()
    fp = sim.output_fix(sim.outputs[0])[1]
    assert np.abs(want).max() > 4 * 2.0 ** -fp, "degenerate: outputs are all ~0"
    assert np.abs(got - want).max() <= 2.0 ** -fp          # at most one output step
    assert (got == want).mean() >= 0.99
    assert not sim.float_ops


def test_xmodel_loads_in_real_xir(dpu):
    """The trained model's XModel loads in the real XIR library (skips without ../shared/xir)."""
    import importlib.util
    import sys
    from pathlib import Path
    name = "_nndct_xmodel_testlib"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).resolve().parents[1] / "xmodel" / "_xmodel_testlib.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    qat, _, _, out, *_ = dpu
    r = sys.modules[name].run_xir_check(qat.export_xmodel(out), brief=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_onnx_agrees_with_test_mode(dpu):
    ort = pytest.importorskip("onnxruntime")
    qat, _, _, out, x, ref, _ = dpu
    path = qat.export_onnx_model(out, dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.array_equal(got, ref.numpy())


def test_torchscript_agrees_with_test_mode(dpu):
    qat, _, _, out, x, ref, _ = dpu
    script = qat.export_torch_script(out)
    with torch.no_grad():
        assert torch.equal(script(x), ref)
    loaded = torch.jit.load(str(next(out.glob("*_int.pt"))))
    with torch.no_grad():
        assert torch.equal(loaded(x), ref)


CPU = {"target_device": "CPU",
       "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                   "calib_statistic_method": "max", "round_mode": "half_even"},
       "tensor_quantize_config": {"weights": {"per_channel": True}}}


@pytest.mark.parametrize("bits,learn", [(4, True), (8, True), (4, False)])
def test_float_scale_qat_deploys_exactly(tmp_path, bits, learn):
    cfg = {**CPU, "overall_quantize_config": {**CPU["overall_quantize_config"], "bit_width": bits}}
    qat, model, _, out, x, ref, start = _deploy(tmp_path, cfg, learn)
    qs = [m for m in model.modules() if isinstance(m, TrainableScaleQuantizer)
          and m.params is not None]
    assert qs and all(q.params.bit_width == bits for q in qs)
    per_channel = [q for q in qs if q.key.endswith(".weight")]
    assert per_channel and all(isinstance(q.params.scale, tuple) for q in per_channel)
    learned = [isinstance(q.log_scale, nn.Parameter) for q in qs]
    assert all(learned) if learn else not any(learned)
    assert (_scales_and_positions(model) != start) == learn
    script = qat.export_torch_script(out)
    with torch.no_grad():
        assert torch.equal(script(x), ref)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(qat.export_onnx_model(out)),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    last = [m for m in model.modules() if isinstance(m._modules.get("out_q"),
                                                     TrainableScaleQuantizer)][-1]
    step = last.out_q.params.scale                  # the model output's quantizer (fc)
    assert np.abs(got - ref[:1].numpy()).max() <= step * 1.001


def test_float_datatype_points_stay_casts_and_deploy(tmp_path):
    """A config with float ``datatype`` points (here float16 biases): they stay casts in the
    trainable model (nothing to train), and quant_info.json's dtype section names them, so
    test mode loads and equals the trained model."""
    import json
    cfg = {**CPU, "tensor_quantize_config": {**CPU["tensor_quantize_config"],
                                             "bias": {"datatype": "float16"}}}
    _, model, _, out, *_ = _deploy(tmp_path, cfg)
    casts = [m for m in model.modules() if type(m).__name__ == "FakeQuantizer"
             and m.cast is not None]
    assert casts and all(m.key.endswith(".bias") for m in casts)
    info = json.loads((out / "quant_info.json").read_text())
    assert set(info["dtype"]["param"]) == {m.key for m in casts}
    assert not set(info["param"]) & {m.key for m in casts}
