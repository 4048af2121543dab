"""export_torch_script: the traced ``<Model>_int.pt`` reproduces the test-mode model bit for bit.

The helpers at the top (models, configs, the calib -> test flow) are shared with test_onnx.py,
which also holds the ResNet-20 checks (TorchScript included), so the golden model is
calibrated once per config.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import ExportError, ModeError, torch_quantizer
from nndct_lite.calib import Role
from nndct_lite.quant.build import quantizers
from shared_paths import DATA, golden_model_module, need

#: per-channel float-scale weights, float-scale activations, CPU target (numbers round half-even)
CPU_CONFIG = {
    "target_device": "CPU", "include_cle": False, "include_bias_corr": False,
    "overall_quantize_config": {"method": "maxmin", "scale_type": "float",
                                "calib_statistic_method": "max", "round_mode": "half_even"},
    "tensor_quantize_config": {"weights": {"per_channel": True}},
}


def _randomize_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


class SmallNet(nn.Module):
    """conv-bn-relu, a residual add, a depthwise conv, max and average pooling, a linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)) + y)
        y = F.relu(self.bn3(self.dw(y)))
        y = F.max_pool2d(y, 2)
        y = F.relu(self.pw(y))
        y = F.adaptive_avg_pool2d(y, 1)
        return self.fc(y.view(y.size(0), -1))


def small_net(seed: int = 0) -> SmallNet:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return _randomize_bn(SmallNet(), gen).eval()


def images(n: int, seed: int = 1, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def write_config(tmp_path: Path, config: dict | None, name: str = "config.json") -> str | None:
    if config is None:
        return None
    path = tmp_path / name
    path.write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def quantize(model_fn, calib: torch.Tensor, out: Path, config: dict | None = None,
             example: torch.Tensor | None = None, batch: int = 64):
    """Calibrate a fresh ``model_fn()`` on ``calib``, then return the test-mode quantizer
    (forwarded once, so it can export)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = write_config(out, config)
    example = calib[:1] if example is None else example
    q = torch_quantizer("calib", model_fn(), (example,), output_dir=str(out),
                        quant_config_file=cfg)
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            q.quant_model(calib[i:i + batch])
    q.export_quant_config()
    qt = torch_quantizer("test", model_fn(), (example,), output_dir=str(out),
                         quant_config_file=cfg)
    with torch.no_grad():
        qt.quant_model(calib[:1])
    return qt


def reference(qt, x: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """Test-mode outputs of ``x``, in batches."""
    with torch.no_grad():
        return torch.cat([qt.quant_model(x[i:i + batch]) for i in range(0, len(x), batch)])


def output_step(qt) -> float:
    """The quantization step of the model output (its last activation quantizer)."""
    p = [q for q in quantizers(qt.quant_model).values() if q.role is not Role.PARAM][-1].params
    return 2.0 ** -p.fix_pos if p.fix_pos is not None else float(p.scale)


def jit_load(path: Path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        return torch.jit.load(str(path))


def resnet20_flow(out: Path, config: dict | None = None) -> dict:
    """ResNet-20 of the golden files calibrated on 200 calib images: {"qt", "out", "x_test"
    (the first 1000 test images), "labels"}. Skips when ../shared/data is absent."""
    need(DATA / "cifar10" / "calib.npz")
    need(DATA / "cifar10" / "test.npz")
    mod = golden_model_module()
    x_calib, _ = mod.cifar("calib", 200)
    x_test, labels = mod.cifar("test", 1000)
    return {"qt": quantize(mod.resnet20, x_calib, out, config, batch=100), "out": out,
            "x_test": x_test, "labels": labels}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dpu(tmp_path_factory):
    """SmallNet with the default (DPU, power-of-two) config; returns (quantizer, out dir)."""
    out = tmp_path_factory.mktemp("ts_dpu")
    return quantize(small_net, images(64), out, batch=32), out


# ----------------------------------------------------------------------------- tests
def test_writes_model_int_pt_and_returns_script_module(dpu):
    qt, out = dpu
    script = qt.export_torch_script(output_dir=str(out))
    assert isinstance(script, torch.jit.ScriptModule)
    assert (out / "SmallNet_int.pt").is_file()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_loaded_module_is_bit_exact_at_any_batch_size(dpu, batch):
    qt, out = dpu
    qt.export_torch_script(output_dir=str(out))
    loaded = jit_load(out / "SmallNet_int.pt")
    x = images(batch, seed=batch)
    y_ref = reference(qt, x)
    with torch.no_grad():
        for _ in range(3):  # the profiling executor optimises the graph after a few runs
            y = loaded(x)
            assert torch.equal(y, y_ref)


def test_fake_quant_is_traced_from_the_float_parameters(dpu):
    qt, out = dpu
    script = qt.export_torch_script(output_dir=str(out))
    graph = str(script.inlined_graph)
    assert "prim::PythonOp" not in graph
    assert "aten::clamp" in graph
    # the float (BN-folded) weight is what the module holds: the quantization is in the graph
    weights = [v for k, v in script.state_dict().items() if k.endswith("weight")]
    assert weights and any(torch.unique(w).numel() > 256 for w in weights)
    assert torch.equal(script(images(5)), reference(qt, images(5)))


def test_state_is_restored_after_export(dpu):
    qt, out = dpu
    session = qt._session
    forwards = session.forwards
    x = images(8, seed=5)
    before = reference(qt, x)
    qt.quant_model.train()
    qt.export_torch_script(output_dir=str(out))
    assert qt.quant_model.training
    qt.quant_model.eval()
    assert session.forwards == forwards + 1  # only the reference() forward above counted
    assert torch.equal(reference(qt, x), before)


def test_loads_without_nndct_lite(dpu, tmp_path):
    qt, out = dpu
    qt.export_torch_script(output_dir=str(out))
    x = images(6, seed=9)
    torch.save({"x": x, "y": reference(qt, x)}, tmp_path / "io.pt")
    script = textwrap.dedent("""
        import importlib.abc, sys, warnings
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "nndct_lite":
                    raise ImportError("nndct_lite is blocked in this process")
        sys.meta_path.insert(0, Block())
        warnings.simplefilter("ignore")
        import torch
        m = torch.jit.load(sys.argv[1])
        io = torch.load(sys.argv[2])
        assert torch.equal(m(io["x"]), io["y"])
        assert not [k for k in sys.modules if k.startswith("nndct_lite")]
        print("loaded-ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script, str(out / "SmallNet_int.pt"),
                        str(tmp_path / "io.pt")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "loaded-ok" in r.stdout


def test_cpu_per_channel_float_scale_is_bit_exact(tmp_path):
    qt = quantize(small_net, images(64), tmp_path, CPU_CONFIG)
    weight_qs = [q for k, q in quantizers(qt.quant_model).items() if k.endswith(".weight")]
    assert weight_qs and all(isinstance(q.params.scale, tuple) for q in weight_qs)
    qt.export_torch_script(output_dir=str(tmp_path))
    loaded = jit_load(tmp_path / "SmallNet_int.pt")
    x = images(100, seed=3)
    assert torch.equal(loaded(x), reference(qt, x))


def test_example_with_batch_above_one_is_traced_at_batch_one(tmp_path):
    x = images(32)
    qt = quantize(small_net, x, tmp_path, example=x[:8])
    script = qt.export_torch_script(output_dir=str(tmp_path))
    traced_input = list(script.graph.inputs())[1].type()
    assert traced_input.sizes()[0] == 1
    loaded = jit_load(tmp_path / "SmallNet_int.pt")
    assert torch.equal(loaded(x[:8]), reference(qt, x[:8]))


def test_verbose_prints_the_inlined_graph(dpu, capsys):
    qt, out = dpu
    qt.export_torch_script(output_dir=str(out), verbose=True)
    assert "graph(" in capsys.readouterr().out


def test_output_dir_is_created(dpu, tmp_path):
    qt, _ = dpu
    target = tmp_path / "deep" / "er"
    qt.export_torch_script(output_dir=str(target))
    assert (target / "SmallNet_int.pt").is_file()


class WithShape(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y, y.size(0)


class TwoInTwoOut(nn.Module):
    """Two inputs, two outputs (a feature map and its spatial mean)."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, a, b):
        y = F.relu(self.conv_a(a)) + self.conv_b(b)
        return y, y.mean((2, 3))


def quantize_two_inputs(out: Path, a: torch.Tensor, b: torch.Tensor):
    q = torch_quantizer("calib", TwoInTwoOut().eval(), (a[:1], b[:1]), output_dir=str(out))
    with torch.no_grad():
        q.quant_model(a, b)
    q.export_quant_config()
    qt = torch_quantizer("test", TwoInTwoOut().eval(), (a[:1], b[:1]), output_dir=str(out))
    with torch.no_grad():
        qt.quant_model(a[:1], b[:1])
    return qt


def test_two_inputs_and_a_tuple_output(tmp_path):
    a, b = images(16, seed=1), images(16, seed=2)
    qt = quantize_two_inputs(tmp_path, a, b)
    qt.export_torch_script(output_dir=str(tmp_path))
    loaded = jit_load(tmp_path / "TwoInTwoOut_int.pt")
    with torch.no_grad():
        got, want = loaded(a, b), qt.quant_model(a, b)
    assert isinstance(got, tuple) and len(got) == 2
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_non_tensor_output_raises_with_the_node(tmp_path):
    qt = quantize(lambda: WithShape().eval(), images(8), tmp_path)
    with pytest.raises(ExportError) as err:
        qt.export_torch_script(output_dir=str(tmp_path))
    assert "output[1]" in str(err.value) and "int" in str(err.value)
    assert err.value.where.startswith("node WithShape::")
    assert not (tmp_path / "WithShape_int.pt").exists()


def test_calib_mode_export_is_an_error(tmp_path):
    q = torch_quantizer("calib", small_net(), (images(1),), output_dir=str(tmp_path))
    with torch.no_grad():
        q.quant_model(images(4))
    with pytest.raises(ModeError):
        q.export_torch_script(output_dir=str(tmp_path))
