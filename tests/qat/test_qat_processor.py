"""QatProcessor on a tiny CNN with random data: training lowers the loss, to_deployable writes
quantize_result/ that test mode reproduces, the XModel exports, and the DPU shift rules hold."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from nndct_lite import torch_quantizer
from nndct_lite.errors import InputError, ModeError
from nndct_lite.graph.ops import CONV_LIKE
from nndct_lite.qat.processor import QAT_CONFIG_FILE, QatProcessor, TrainablePof2Quantizer


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _model_and_data():
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():   # non-trivial running statistics, as in a pretrained model
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
    x = torch.randn(32, 3, 8, 8)
    y = (x.mean(dim=(2, 3)) @ torch.randn(3, 4)).argmax(dim=1)   # a learnable labelling
    return net.eval(), x, y


def _train(model, x, y, steps=40, lr=2e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    crit = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    net, x, y = _model_and_data()
    qat = QatProcessor(net, (x[:4],), bitwidth=8)
    model = qat.trainable_model(calib_batches=[x])
    start = qat.fix_positions(model)
    losses = _train(model, x, y)
    out = tmp_path_factory.mktemp("qat") / "quantize_result"
    deployable = qat.to_deployable(model, out)
    return dict(net=net, x=x, y=y, qat=qat, model=model, losses=losses, out=out,
                deployable=deployable, start=start)


def test_training_lowers_the_loss(trained):
    losses = trained["losses"]
    assert losses[-1] < 0.85 * losses[0], losses


def test_every_quantizer_is_trainable_with_a_gradient(trained):
    model = trained["model"]
    qs = [m for m in model.modules() if isinstance(m, TrainablePof2Quantizer)]
    assert len(qs) >= 7          # input, 3 activations, 3 weights, biases
    assert all(isinstance(q.log2_t, nn.Parameter) for q in qs if q.log2_t is not None)
    model.zero_grad()
    nn.CrossEntropyLoss()(model(trained["x"]), trained["y"]).backward()
    grads = [q.log2_t.grad for q in qs if q.log2_t is not None]
    assert any(g is not None and g.abs().item() > 0 for g in grads)


def test_to_deployable_writes_the_calib_files(trained):
    out = trained["out"]
    for name in ("TinyNet.py", "quant_info.json", "resolved_config.json", QAT_CONFIG_FILE):
        assert (out / name).is_file(), name
    info = json.loads((out / "quant_info.json").read_text())
    learned = trained["qat"].fix_positions(trained["model"])
    for section in ("param", "output"):
        for key, entry in info[section].items():
            assert entry[0][1] == learned[key]
    assert info["bias_corrected"] is False


def test_qat_proc_routes_test_mode_to_the_qat_result(trained, tmp_path):
    """torch_quantizer('test', ..., qat_proc=True) reads <output_dir>/qat_config.json (the
    original's routing); calib mode with qat_proc and a folder without a QAT result are refused."""
    from nndct_lite import InputError, QuantInfoError
    out, x = trained["out"], trained["x"]
    q = torch_quantizer("test", trained["deployable"], (x[:4],), output_dir=str(out),
                        qat_proc=True)
    with torch.no_grad():
        assert torch.equal(q.quant_model(x), trained["model"].eval()(x))
    with pytest.raises(InputError, match="not a calibration"):
        torch_quantizer("calib", trained["deployable"], (x[:4],), output_dir=str(tmp_path),
                        qat_proc=True)
    with pytest.raises(QuantInfoError, match="not a QAT result"):
        torch_quantizer("test", trained["deployable"], (x[:4],), output_dir=str(tmp_path),
                        qat_proc=True)
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(InputError, match="qat_proc=True reads"):
        torch_quantizer("test", trained["deployable"], (x[:4],), output_dir=str(out),
                        qat_proc=True, quant_config_file=str(other))


def test_test_mode_reproduces_the_trained_model(trained):
    out, x = trained["out"], trained["x"]
    q = torch_quantizer("test", trained["deployable"], (x[:4],), output_dir=str(out),
                        quant_config_file=str(out / QAT_CONFIG_FILE))
    with torch.no_grad():
        got = q.quant_model(x)
        want = trained["model"].eval()(x)
    assert torch.equal(got, want)
    q.quant_model(x[:1])
    path = q.export_xmodel(str(out))
    assert path.is_file() and path.stat().st_size > 0


def test_processor_export_xmodel(trained):
    path = trained["qat"].export_xmodel(trained["out"])
    assert path.is_file()
    with pytest.raises(ModeError):
        trained["qat"].export_xmodel(trained["out"].parent / "elsewhere")


def test_fix_positions_obey_the_dpu_shift_rules(trained):
    qat = trained["qat"]
    s = qat._session
    fps = qat.fix_positions(trained["model"])
    prefix = s.graph.model_name + "::"
    checked = 0
    for node in s.graph.nodes:
        if node.kind not in CONV_LIKE:
            continue
        src = s.placement.source_quantizer(node.inputs[0])
        out = s.placement.output_quantizer_of(node)
        fi, fo = fps[src.name], fps[out.name]
        fw = fps[prefix + node.param_names["weight"]]
        fb = fps[prefix + node.param_names["bias"]]
        cut = fw + fi - fo
        assert 0 <= cut <= 16
        assert min(0, cut - 16) <= fw + fi - fb <= 16
        checked += 1
    assert checked == 3


def test_deployable_model_is_the_trained_float_model(trained):
    """BN folded into identities: the deployable float model computes the trained model's
    float function."""
    dep, model, x = trained["deployable"], trained["model"], trained["x"]
    from nndct_lite.quant.build import set_mode
    from nndct_lite.state.modes import QuantMode
    import copy
    float_view = copy.deepcopy(model)
    set_mode(float_view, QuantMode.FLOAT)
    with torch.no_grad():
        assert torch.allclose(dep(x), float_view(x), atol=1e-6)
    assert torch.equal(dep.bn1.running_mean, torch.zeros(8))


def test_fixed_fix_positions_stay_fixed():
    net, x, y = _model_and_data()
    qat = QatProcessor(net, (x[:4],))
    model = qat.trainable_model(learn_fix_pos=False, calib_batches=[x])
    before = qat.fix_positions(model)
    _train(model, x, y, steps=5)
    assert qat.fix_positions(model) == before
    assert not any(isinstance(q.log2_t, nn.Parameter) for q in model.modules()
                   if isinstance(q, TrainablePof2Quantizer))


@pytest.mark.parametrize("config", [None, {"target_device": "DPU", "include_cle": True}])
def test_trainable_forward_equals_the_calibrated_test_mode(tmp_path, config):
    """Before training the trainable model is the PTQ test-mode model of the same fix
    positions (no bias correction); with include_cle the weights are equalized before training
    and deployed as they are (qat_config.json has CLE off)."""
    net, x, _ = _model_and_data()
    qat = QatProcessor(net, (x[:4],), config=config)
    assert qat.equalizes is (config is not None)
    assert qat.config_dict()["include_cle"] is False
    assert qat._train_config_dict()["include_cle"] is (config is not None)
    model = qat.trainable_model(calib_batches=[x]).eval()
    dep = qat.to_deployable(model, tmp_path)
    q = torch_quantizer("test", dep, (x[:4],), output_dir=str(tmp_path),
                        quant_config_file=str(tmp_path / QAT_CONFIG_FILE))
    with torch.no_grad():
        assert torch.equal(q.quant_model(x), model(x))


def test_arguments_are_checked():
    net, x, _ = _model_and_data()
    with pytest.raises(InputError, match="mix_bit"):
        QatProcessor(net, (x,), mix_bit=True)
    with pytest.raises(InputError, match="bitwidth"):
        QatProcessor(net, (x,), bitwidth=1)
    with pytest.raises(ModeError):
        QatProcessor(net, (x,)).to_deployable(net, "unused")


@pytest.mark.parametrize("method", ["gptq", "adaquant"])
def test_training_can_start_from_fast_finetune(tmp_path, method):
    """trainable_model(fast_finetune=...) starts from the PTQ + fast finetune model: before
    any step it computes what torch_quantizer's calib + fast_finetune + test mode computes with
    the same config (no CLE, no bias correction)."""
    from nndct_lite.errors import ConfigError
    net, x, _ = _model_and_data()
    qat = QatProcessor(net, (x[:4],))
    model = qat.trainable_model(calib_batches=[x[:16], x[16:]], fast_finetune=method).eval()
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"include_cle": False, "include_bias_corr": False,
                               "fast_finetune_method": method}))

    def run(m, batches):
        with torch.no_grad():
            for b in batches:
                m(b)
    q = torch_quantizer("calib", net, (x[:4],), output_dir=str(tmp_path / "ptq"),
                        quant_config_file=str(cfg))
    q.fast_finetune(run, (q.quant_model, [x[:16], x[16:]]))
    run(q.quant_model, [x[:16], x[16:]])
    q.export_quant_config()
    qt = torch_quantizer("test", net, (x[:4],), output_dir=str(tmp_path / "ptq"),
                         quant_config_file=str(cfg))
    qt.load_ft_param()
    plain = qat.trainable_model(calib_batches=[x[:16], x[16:]]).eval()
    with torch.no_grad():
        assert torch.equal(model(x), qt.quant_model(x))
        assert not torch.equal(model(x), plain(x))       # the finetune changed something
    with pytest.raises(ConfigError, match="fast_finetune_method 'sgd'"):
        qat.trainable_model(calib_batches=[x], fast_finetune="sgd")
