"""Issue 21: every op family the DPU runs is written as the XIR op type the original writes.

Per family a tiny model (random weights) goes through calib -> test -> ``export_xmodel``; the
test checks the op types written, that real XIR loads the file (skipped without
../shared/xir) and that our simulator reproduces test mode's output within one output
quantization step (skipped, naming the op type, where the simulator does not run it yet)."""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer
from nndct_lite.errors import ExportError
from nndct_lite.xmodel.reader import read_xmodel
from shared_paths import XIR

ROOT = Path(__file__).resolve().parents[2]


def _quantize(model, x, out):
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(out))
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    q = torch_quantizer("test", model, (x[:1],), output_dir=str(out))
    with torch.no_grad():
        ref = q.quant_model(x[:1])
    return q, ref


def export(model, x, out):
    """(graph read back, file, test-mode output at batch 1)."""
    torch.manual_seed(0)
    q, ref = _quantize(model.eval(), x, out)
    path = q.export_xmodel(output_dir=str(out))
    return read_xmodel(path), path, ref


def types(graph) -> Counter:
    return Counter(op.type for op in graph.ops if op.type not in ("const", "fix", "data"))


def xir_loads(path) -> None:
    if not (XIR / "check_xmodel.py").is_file():
        return                       # the op-type checks still ran; XIR is a test-only tool
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = f"{XIR / 'lib'}:{env.get('LD_LIBRARY_PATH', '')}"
    env["PYTHONPATH"] = f"{XIR / 'python'}:{env.get('PYTHONPATH', '')}"
    r = subprocess.run([sys.executable, str(XIR / "check_xmodel.py"), "--brief", str(path)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def _unsupported(graph) -> list[str]:
    graph_ops = [op for op in graph.ops if op.type not in ("data", "data-fix")]
    try:
        from nndct_lite.sim.registry import resolve
        return sorted({op.type for op in graph_ops if resolve(op) is None})
    except ImportError:
        from nndct_lite.sim import supported_op_types
        known = set(supported_op_types())
        return sorted({op.type for op in graph_ops if op.type not in known})


def sim_matches(graph, path, x, ref) -> None:
    missing = _unsupported(graph)
    if missing:
        pytest.skip(f"the simulator does not run {', '.join(missing)} yet")
    from nndct_lite.sim import Simulator
    sim = Simulator(str(path))
    out = sim.run(x[:1].numpy(), output_layout="NCHW")[sim.outputs[0]]
    fp = sim.output_fix(sim.outputs[0])[1]
    ref = ref.detach().numpy()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 2.0 ** -fp + 1e-7


def check(model, x, tmp_path, expect: dict[str, int], *, sim: bool = True):
    graph, path, ref = export(model, x, tmp_path)
    got = types(graph)
    for t, n in expect.items():
        assert got[t] == n, f"{t}: {got[t]} written, {n} expected; all: {dict(got)}"
    xir_loads(path)
    if sim:
        sim_matches(graph, path, x, ref)
    return graph


# -- convolutions --------------------------------------------------------------------------
class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.dw2 = nn.Conv2d(8, 16, 5, padding=2, groups=8)
        self.same = nn.Conv2d(16, 8, 4, padding="same", dilation=2)

    def forward(self, x):
        return self.same(F.relu(self.dw2(F.relu(self.dw(F.relu(self.bn(self.c(x))))))))


def test_conv_depthwise_and_same_padding(tmp_path):
    g = check(Convs(), torch.randn(8, 3, 12, 12), tmp_path,
              {"conv2d": 2, "depthwise-conv2d": 2, "relu": 3})
    dw = [op for op in g.ops if op.type == "depthwise-conv2d"]
    assert [list(g.op(op.inputs["weights"][0]).shape) for op in dw] == [[1, 3, 3, 8], [2, 5, 5, 8]]
    same = [op for op in g.ops if op.type == "conv2d"][-1]
    assert list(same.attr("pad")) == [3, 3, 3, 3] and list(same.attr("dilation")) == [2, 2]


class Transposed(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.t = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.dt = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1, groups=8)

    def forward(self, x):
        return self.dt(F.relu(self.t(F.relu(self.c(x)))))


def test_transposed_and_depthwise_transposed(tmp_path):
    g = check(Transposed(), torch.randn(8, 3, 6, 6), tmp_path,
              {"transposed-conv2d": 1, "transposed-depthwise-conv2d": 1})
    dt = next(op for op in g.ops if op.type == "transposed-depthwise-conv2d")
    assert list(dt.attr("pad")) == [1, 0, 1, 0] and dt.shape == (1, 24, 24, 8)


# -- pooling -------------------------------------------------------------------------------
class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.mp = nn.MaxPool2d(2, 2, padding=1, ceil_mode=True)    # torch drops the last window
        self.ap = nn.AvgPool2d(3, 1, 1)
        self.c2 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.ap(self.mp(F.relu(self.c(x))))             # 9x9 -> 5x5
        y = F.max_pool2d(self.c2(y), 3, 2, ceil_mode=True)  # 5x5 -> 2x2
        return F.adaptive_avg_pool2d(y, 1)


def test_pools_ceil_mode_and_global(tmp_path):
    g = check(Pools(), torch.randn(8, 3, 9, 9), tmp_path, {"maxpool2d": 2, "avgpool2d": 2})
    mp = [op for op in g.ops if op.type == "maxpool2d"]
    assert mp[0].attr("pad_mode") == "FLOOR" and list(mp[0].attr("pad")) == [1, 0, 1, 0]
    assert mp[1].attr("pad_mode") == "CEIL"
    avg = [op for op in g.ops if op.type == "avgpool2d"]
    assert [op.attr("global") for op in avg] == [False, True]


class AdaptivePool(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.c(x), 2)


def test_adaptive_pool_is_avgpool_with_kernel(tmp_path):
    g = check(AdaptivePool(), torch.randn(8, 3, 8, 8), tmp_path, {"avgpool2d": 1, "mul": 1})
    op = next(op for op in g.ops if op.type == "avgpool2d")
    assert list(op.attr("kernel")) == [4, 4] and list(op.attr("stride")) == [4, 4]


# -- element-wise ---------------------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.red = nn.Conv2d(8, 4, 1)
        self.exp = nn.Conv2d(4, 8, 1)

    def forward(self, x):
        y = F.relu(self.c(x))
        s = y.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.exp(F.relu(self.red(s))))
        z = y * s                                   # N×H×W×C × N×1×1×C
        return (z - y) * 0.5 + y / 4.0


def test_eltwise_broadcast_scalars_and_se_mean(tmp_path):
    g = check(SqueezeExcite(), torch.randn(8, 3, 8, 8), tmp_path,
              {"aten::mean": 1, "mul": 2, "sub": 1, "div": 1, "add": 1, "sigmoid": 1})
    mean = next(op for op in g.ops if op.type == "aten::mean")
    assert list(mean.attr("shape")) == [1, 8, 1, 1] and mean.attr("data_type") == "FLOAT32"
    src = g.op(mean.inputs["input"][0])
    assert src.type == "transpose" and src.name.endswith("_sink_transpose_0")
    se = [op for op in g.ops if op.type == "mul" and op.shape == (1, 8, 8, 8)][0]
    assert sorted(g.op(i).shape for i in se.inputs["input"]) == [(1, 1, 1, 8), (1, 8, 8, 8)]


# -- data movement --------------------------------------------------------------------------
class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.d = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = F.relu(self.c(x))
        a, b = y.chunk(2, dim=1)
        p, q = torch.split(y, [3, 5], dim=1)
        y = torch.cat([a, self.b(b)], 1) + torch.cat([q, p], 1)
        y = torch.cat([y[:, :, 3:], y[..., :3, :]], 2)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.d(y)


def test_split_chunk_slice_concat_and_channel_shuffle(tmp_path):
    g = check(Shuffle(), torch.randn(8, 3, 6, 6), tmp_path,
              {"strided_slice": 6, "concat": 3, "transpose": 3, "reshape": 2})
    sl = [op for op in g.ops if op.type == "strided_slice"]
    assert [(op.attr("begin")[3], op.attr("end")[3]) for op in sl[:4]] == \
        [(0, 4), (4, 8), (0, 3), (3, 8)]


class Shapes(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = F.relu(self.c(x)).unsqueeze(1).squeeze(1)
        y = y.permute(0, 2, 3, 1).permute(0, 3, 1, 2)
        return self.fc(torch.flatten(y, 1))


def test_reshapes_permutes_and_linear(tmp_path):
    g = check(Shapes(), torch.randn(8, 3, 4, 4), tmp_path, {"matmul": 1, "reshape": 3})
    fc = next(op for op in g.ops if op.type == "matmul")
    assert g.op(fc.inputs["input"][0]).shape == (1, 128)


class PadResize(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.c2 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = F.pad(F.relu(self.c(x)), (1, 2, 0, 1))
        y = self.up(y)
        y = F.interpolate(self.c2(y), size=(5, 7), mode="bilinear", align_corners=False)
        return self.c2(y)


def test_pad_and_resize(tmp_path):
    g = check(PadResize(), torch.randn(8, 3, 4, 4), tmp_path, {"pad": 1, "resize": 2})
    pad = next(op for op in g.ops if op.type == "pad")
    assert list(pad.attr("paddings")) == [0, 0, 0, 1, 1, 2, 0, 0]
    rs = [op for op in g.ops if op.type == "resize"]
    assert [op.attr("mode") for op in rs] == ["NEAREST", "BILINEAR"]
    assert rs[1].attr("half_pixel_centers") is True and rs[1].shape == (1, 5, 7, 8)


# -- activations ----------------------------------------------------------------------------
class Acts(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.pr = nn.PReLU(8)
        self.c2 = nn.Conv2d(8, 8, 1)
        self.c3 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.pr(self.c(x))
        y = F.hardswish(self.c2(y))
        y = self.c3(F.leaky_relu(y, 0.1)) * F.hardsigmoid(y)
        y = torch.clamp(y, 0, 6) + F.relu6(y) + torch.tanh(y) + torch.sigmoid(y)
        return y


def test_activations(tmp_path):
    g = check(Acts(), torch.randn(8, 3, 6, 6), tmp_path,
              {"prelu": 1, "hard-sigmoid": 2, "leaky-relu": 1, "relu6": 2, "tanh": 1,
               "sigmoid": 1, "hard-swish": 0})
    hs = [op for op in g.ops if op.type == "fix" and op.name.endswith("_mul_fix")]
    assert len(hs) == 1 and hs[0].attr("fix_point") == 7           # hard-swish's fixed h
    lr = next(op for op in g.ops if op.type == "leaky-relu")
    assert lr.attr("alpha") == pytest.approx(26 / 256)


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        y = F.relu(self.c(x)).mean((2, 3))
        return F.softmax(self.fc(y), dim=1)


def test_mean_reduction_and_softmax(tmp_path):
    g = check(Head(), torch.randn(8, 3, 7, 7), tmp_path,
              {"reduction_mean": 1, "softmax": 1, "matmul": 1, "mul": 1})
    rm = next(op for op in g.ops if op.type == "reduction_mean")
    assert list(rm.attr("axis")) == [1, 2] and rm.attr("keep_dims") is False


# -- CPU ops --------------------------------------------------------------------------------
class CpuOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.SiLU(inplace=True)
        self.c2 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.c2(torch.sin(self.act(self.c(x))))


def test_cpu_ops_are_named_like_the_original_and_summarised(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="nndct_lite"):
        g = check(CpuOps(), torch.randn(8, 3, 6, 6), tmp_path,
                  {"aten::silu_": 1, "aten::sin": 1, "transpose": 2}, sim=False)
    warn = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "run on the CPU" in r.getMessage()]
    assert warn == ["[QUANTIZER_TORCH_CONVERT_XMODEL] 2 op(s) run on the CPU: "
                    "aten::silu_ \u00d71, aten::sin \u00d71"]
    assert sum("CPU op aten::" in r.getMessage() for r in caplog.records
               if r.levelno == logging.DEBUG) == 2
    names = [op.name for op in g.ops if op.type == "transpose"]
    assert names[0].endswith("_sink_transpose_0") and names[1].endswith("_swim_transpose_0")


class BadIndex(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.c(x)[:, 0]


def test_failures_name_the_node_and_op(tmp_path):
    torch.manual_seed(0)
    q, _ = _quantize(BadIndex().eval(), torch.randn(4, 3, 6, 6), tmp_path)
    with pytest.raises(ExportError) as e:
        q.export_xmodel(output_dir=str(tmp_path))
    assert "BadIndex::BadIndex/ret." in str(e.value) and "(strided_slice, getitem)" in str(e.value)


# -- a whole network ------------------------------------------------------------------------
def _cifar_shufflenet():
    spec = importlib.util.spec_from_file_location(
        "cifar_shufflenet_for_export", ROOT / "tests" / "algorithms" / "cifar_shufflenet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ShuffleNetV2()


def test_shufflenet_v2_exports_and_loads_in_xir(tmp_path):
    model = _cifar_shufflenet()
    g = check(model, torch.randn(4, 3, 32, 32), tmp_path,
              {"strided_slice": 26, "concat": 16, "transpose": 48, "reshape": 32},
              sim=False)
    assert not [op for op in g.ops if op.type.startswith("aten::")]


class Unbind(nn.Module):
    """A reshape whose first dim is not the batch, and unbind (attention's q, k, v)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 12, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = F.relu(self.c(x))
        n, c, h, w = y.shape
        q, k, v = y.reshape(n, 3, 4, h, w).unbind(1)
        z = (q + k + v).reshape(n * 4 * h, w).reshape(n, 4, h, w)
        return self.d(z)


def test_unbind_and_non_batch_first_dims(tmp_path):
    batch = 1      # node shapes are recorded at the example's batch: (4 * 4 * h, w) is not batch-1
    torch.manual_seed(0)
    x = torch.randn(8, 3, 6, 6)
    model = Unbind().eval()
    q = torch_quantizer("calib", model, (x[:batch],), output_dir=str(tmp_path))
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    q = torch_quantizer("test", model, (x[:batch],), output_dir=str(tmp_path))
    with torch.no_grad():
        ref = q.quant_model(x[:1])
    path = q.export_xmodel(output_dir=str(tmp_path))
    graph = read_xmodel(path)
    assert types(graph)["strided_slice"] == 3
    assert any(op.type == "reshape" and op.shape == (24, 6) for op in graph.ops)
    xir_loads(path)
    sim_matches(graph, path, x, ref)
