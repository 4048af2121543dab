"""Issue 21: small models with the layers the zoo's remaining simulator failures came from,
quantized, exported and simulated: the real XIR loads each file (skipped without ../shared/xir)
and the simulator agrees with test mode on a batch of 4 (bit-exact where the xmodel has no float
op; within one output step where it has).

* CPU ops carry the torch call's arguments as attributes (``cpu_args``): log_softmax ``dim``,
  hardtanh bounds, mean ``dim`` / ``keepdim``, layer norm ``normalized_shape`` / ``eps`` and a
  module's parameters as inputs (timm's ``LayerNorm2d`` and ``nn.LayerNorm``);
* attention (``F.scaled_dot_product_attention``) with the batch folded into another axis
  (MobileViT's unfold);
* torchvision's ``StochasticDepth`` (identity in eval);
* res2net's ``torch.split`` read as ``parts[-1]``, with a part never read (dead code).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer
from nndct_lite.sim import Simulator
from nndct_lite.xmodel import read_xmodel

from _xmodel_testlib import XIR, run_xir_check


def _export(model, tmp_path, shape=(3, 8, 8)):
    torch.manual_seed(0)
    model = model.eval()
    g = torch.Generator().manual_seed(1)
    calib = torch.randn(8, *shape, generator=g)
    x = torch.randn(4, *shape, generator=g)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path))
    with torch.no_grad():
        q.quant_model(calib)
    q.export_quant_config()
    q = torch_quantizer("test", model, (x[:1],), output_dir=str(tmp_path))
    with torch.no_grad():
        ref = q.quant_model(x).numpy()
    path = q.export_xmodel(output_dir=str(tmp_path))
    return read_xmodel(path), Path(path), x.numpy(), ref


def _xir(path: Path) -> None:
    if (XIR / "check_xmodel.py").is_file():
        r = run_xir_check(path, brief=True)
        assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]


def _simulate(path: Path, x, ref, *, exact: bool):
    sim = Simulator(str(path))
    name = sim.outputs[0]
    out = sim.run(x, layout="NCHW", output_layout="NCHW", outputs=[name])[name]
    step = 2.0 ** -sim.output_fix(name)[1]
    assert out.shape == ref.shape
    assert bool(sim.float_ops) != exact, sim.float_ops
    diff = np.abs(out - ref)
    if exact:
        assert diff.max() <= step * (1 + 1e-9)
    else:
        assert diff.max() <= 2 * step and (diff <= step * (1 + 1e-9)).mean() >= 0.98
    return sim


def _types(graph) -> Counter:
    return Counter(op.type for op in graph.ops if op.type not in ("const", "fix", "data"))


class CpuArgs(nn.Module):
    """log_softmax over channels, a hardtanh that is no ReLU, a squeeze-excite mean."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.se = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = F.hardtanh(self.c(x), -0.5, 2.0)
        y = y * torch.sigmoid(self.se(y.mean((2, 3), keepdim=True)))
        return self.d(F.log_softmax(y, dim=1))


def test_cpu_ops_carry_their_torch_arguments(tmp_path):
    g, path, x, ref = _export(CpuArgs(), tmp_path)
    cpu = {op.type: op for op in g.ops if op.type.startswith("aten::")}
    assert set(cpu) == {"aten::hardtanh", "aten::mean", "aten::log_softmax"}, set(cpu)
    ht = cpu["aten::hardtanh"]
    assert (ht.attr("min_val"), ht.attr("max_val")) == (-0.5, 2.0)
    assert list(cpu["aten::mean"].attr("dim")) == [2, 3] and cpu["aten::mean"].attr("keepdim")
    assert cpu["aten::log_softmax"].attr("dim") == 1
    assert list(cpu["aten::log_softmax"].attr("input_args")) == ["input"]
    assert list(cpu["aten::log_softmax"].attr("shape")) == [1, 8, 8, 8]
    _xir(path)
    _simulate(path, x, ref, exact=False)


class LayerNorm2d(nn.LayerNorm):
    """timm's channels-first layer norm: permute, F.layer_norm, permute back."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 2, stride=2)
        self.n = LayerNorm2d(8, eps=1e-6)
        self.d = nn.Conv2d(8, 8, 1)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        with torch.no_grad():
            for m in (self.n, self.ln):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        y = self.d(self.n(self.c(x)))
        return self.fc(self.ln(y.flatten(2).transpose(1, 2)))


def test_layer_norm_function_and_module(tmp_path):
    g, path, x, ref = _export(ConvNeXtLike(), tmp_path)
    f = next(op for op in g.ops if op.type == "aten::layer_norm")
    m = next(op for op in g.ops if op.type == "aten::layernorm")
    assert list(f.attr("normalized_shape")) == [8] and f.attr("eps") == pytest.approx(1e-6)
    assert list(f.attr("input_args")) == ["input", "weight", "bias"]
    assert list(m.attr("normalized_shape")) == [8] and m.attr("eps") == pytest.approx(1e-5)
    # the module's parameters follow its input, as float consts named after the state dict
    assert list(m.attr("input_args")) == ["input", "weight", "bias"]
    assert [i.split("__")[-1] for i in m.inputs["input"][1:]] == ["ln_weight", "ln_bias"]
    assert g.op(m.inputs["input"][1]).type == "const"
    _xir(path)
    _simulate(path, x, ref, exact=False)


class Attention(nn.Module):
    """A MobileViT-style block: patches with the batch folded into the leading axis, layer norm,
    qkv, F.scaled_dot_product_attention, projection, fold back."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.heads = heads
        self.c = nn.Conv2d(3, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        y = self.c(x)
        b, c, h, w = y.shape
        t = y.reshape(b * c * h // 2, 2, w // 2, 2).transpose(1, 2)       # patches 2x2
        t = t.reshape(b, c, h * w // 4, 4).transpose(1, 3).reshape(b * 4, h * w // 4, c)
        n = t.shape[1]
        qkv = self.qkv(self.norm(t)).reshape(b * 4, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        t = t + self.proj(a.transpose(1, 2).reshape(b * 4, n, c))
        t = t.reshape(b, 4, n, c).transpose(1, 3).reshape(b * c * h // 2, w // 2, 2, 2)
        y = t.transpose(1, 2).reshape(b, c, h, w)
        return self.out(y)


def test_attention_with_the_batch_folded(tmp_path):
    g, path, x, ref = _export(Attention(), tmp_path)
    types = _types(g)
    assert types["aten::scaled_dot_product_attention"] == 1 and types["aten::layernorm"] == 1
    _xir(path)
    sim = _simulate(path, x, ref, exact=False)
    assert sim.batch_folding


class StochasticDepthNet(nn.Module):
    def __init__(self):
        super().__init__()
        from torchvision.ops import StochasticDepth
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.d = nn.Conv2d(8, 8, 3, padding=1)
        self.sd = StochasticDepth(0.2, "row")

    def forward(self, x):
        y = F.relu(self.c(x))
        return y + self.sd(self.d(y))


def test_stochastic_depth_is_an_exact_identity(tmp_path):
    pytest.importorskip("torchvision")
    g, path, x, ref = _export(StochasticDepthNet(), tmp_path)
    sd = [op for op in g.ops if "stochastic" in op.type]
    assert len(sd) == 1 and sd[0].attr("p") == pytest.approx(0.2) and sd[0].attr("mode") == "row"
    _xir(path)
    _simulate(path, x, ref, exact=True)


class Res2NetSplit(nn.Module):
    """res2net's Bottle2neck: ``sp = spx[0]`` never read, ``spx[-1]`` the last part."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 12, 1)
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(2))
        self.d = nn.Conv2d(12, 8, 1)

    def forward(self, x):
        spx = torch.split(F.relu(self.c(x)), 4, 1)
        sp = spx[0]  # noqa: F841 - dead, as in timm
        out = []
        for i, conv in enumerate(self.convs):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = F.relu(conv(sp))
            out.append(sp)
        out.append(spx[-1])
        return self.d(torch.cat(out, 1))


def test_split_last_part_and_dead_getitem(tmp_path):
    g, path, x, ref = _export(Res2NetSplit(), tmp_path)
    sl = [op for op in g.ops if op.type == "strided_slice"]
    assert sorted((op.attr("begin")[3], op.attr("end")[3]) for op in sl) == \
        [(0, 4), (4, 8), (8, 12)]
    assert [op.type for op in g.output_ops()] == ["fix"]      # nothing dangling
    _xir(path)
    _simulate(path, x, ref, exact=True)


class LinearAttention(nn.Module):
    """EfficientViT's LiteMLA: relu kernels, ``kv = k^T @ [v, 1]``, ``out = q @ kv``, then
    ``out[..., :-1] / (out[..., -1:] + eps)``. Quantized, the sum ``out[..., -1:] + eps`` is 0
    wherever it is below half a step and the quotient inf or NaN; a tensor read only as a
    divisor stays float (quant/placement.py), and the CPU ops ``aten::float`` / ``aten::matmul``
    / ``aten::to`` are simulated."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Conv2d(3, 12, 1)
        self.proj = nn.Conv2d(4, 8, 1)
        with torch.no_grad():
            self.qkv.bias[:4] -= 3.0          # most of q is cut by the relu: tiny sums

    def forward(self, x):
        b, _, h, w = x.shape
        t = self.qkv(x).reshape(b, 1, 12, h * w).transpose(-1, -2)
        q, k, v = t.chunk(3, dim=-1)
        q, k = F.relu(q).float(), F.relu(k).float()
        v = F.pad(v, (0, 1), mode="constant", value=1.0).float()
        out = q @ (k.transpose(-1, -2) @ v)
        out = out[..., :-1] / (out[..., -1:] + 1e-5)
        out = out.to(x.dtype).transpose(-1, -2).reshape(b, 4, h, w)
        return self.proj(out)


def test_linear_attention_divisor_stays_float(tmp_path):
    g, path, x, ref = _export(LinearAttention(), tmp_path)
    assert np.isfinite(ref).all()
    div = next(op for op in g.ops if op.type == "div")
    assert g.op(div.inputs["input"][1]).type == "add"      # no fix on out[..., -1:] + eps
    assert {"aten::float", "aten::matmul", "aten::to"} <= set(_types(g))
    _xir(path)
    _simulate(path, x, ref, exact=False)


class UpsamplingPool(nn.Module):
    """timm's ConvMlp pre-logits at a small input: ``adaptive_avg_pool2d`` from 2x2 up to 7x7
    (no DPU pool expresses it: a CPU op), then a 7x7 conv."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 8, 4, stride=4)
        self.fc = nn.Conv2d(8, 10, 7)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(F.relu(self.c(x)), 7)
        return self.fc(y)


def test_cpu_pool_output_is_quantized_for_the_conv_after_it(tmp_path):
    g, path, x, ref = _export(UpsamplingPool(), tmp_path)
    pool = next(op for op in g.ops if op.type == "aten::adaptive_avg_pool2d")
    conv = next(op for op in g.ops if op.type == "conv2d" and op.attr("kernel")[0] == 7)
    src = g.op(conv.inputs["input"][0])
    while src.type in ("transpose", "reshape"):
        src = g.op(src.inputs["input"][0])
    # the DPU conv reads a quantized input: the pool's output has its fix (numerics.md 5.3)
    assert src.type == "fix" and src.inputs["input"] == [pool.name]
    _xir(path)
    _simulate(path, x, ref, exact=False)
