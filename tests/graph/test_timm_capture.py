"""Issue 21 on timm models (random weights, 64x64): the node scopes equal the original's (golden
``<Model>.py`` comments), models with shape-dependent control flow trace, and the captured graph
computes the model's float function at other batch sizes."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graph_helpers import float_view, quantizer
from shared_paths import SHARED, need
from nndct_lite.graph.capture import capture
from nndct_lite.graph.ops import OpKind
from nndct_lite.graph.passes.fold_bn import fold_batchnorm

ZOO = SHARED / "reference" / "golden" / "zoo"
GOLDEN = {"mobilenetv3_small_050": "MobileNetV3", "tinynet_e": "EfficientNet",
          "ghostnet_050": "GhostNet"}
_COMMENT = re.compile(r"#(\S+)\((\S+)\)\s*$")


def _golden_scopes(path) -> list[str]:
    """``Model::Model/.../Conv2d[conv]/ret.3`` -> ``Model::Model/.../Conv2d[conv]`` per node."""
    out = []
    for line in path.read_text().splitlines():
        m = _COMMENT.search(line)
        if m and "self.module_" in line:
            name = m.group(1)
            out.append(name if "::input_" in name else name.rpartition("/")[0])
    return out


def _timm(name: str) -> nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_node_scopes_equal_the_originals(name):
    golden = need(ZOO / name / f"{GOLDEN[name]}.py")
    graph, _ = capture(_timm(name), (torch.randn(1, 3, 64, 64),))
    fold_batchnorm(graph)
    ours = [n.name if n.kind is OpKind.INPUT else n.name.rpartition("/")[0] for n in graph.nodes]
    assert ours == _golden_scopes(golden)


def test_mobilenetv3_bn_folds_into_conv_stem_and_act_keeps_its_scope():
    model = _timm("mobilenetv3_small_050")
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    graph, _ = capture(model, (torch.randn(1, 3, 64, 64),))
    folded = fold_batchnorm(graph)
    assert n_bn == 34 and len(folded) == n_bn
    assert not [n for n in graph.nodes if n.kind is OpKind.BATCHNORM]
    stem, act = graph.nodes[1], graph.nodes[2]
    assert stem.name == "MobileNetV3::MobileNetV3/Conv2d[conv_stem]/ret.1"
    assert stem.meta["folded_bn"] == "bn1" and stem.param_names["bias"] == "conv_stem.bias"
    assert act.kind is OpKind.HARDSWISH
    assert act.name == "MobileNetV3::MobileNetV3/BatchNormAct2d[bn1]/Hardswish[act]/ret.2"
    assert not [n for n in graph.nodes if n.kind in (OpKind.CONST, OpKind.OTHER, OpKind.PYOP)]


@pytest.mark.parametrize("name", ["vgg11_bn", "mobilevit_xxs", "efficientvit_b0"])
def test_shape_dependent_timm_models_trace_and_keep_their_function(name, tmp_path):
    model = _timm(name)
    q = quantizer("calib", model, torch.randn(1, 3, 64, 64), tmp_path)
    kinds = [n.kind for n in q.graph.nodes]
    assert OpKind.CONST not in kinds or name != "vgg11_bn"
    x = torch.randn(3, 3, 64, 64)            # another batch size than the example input
    with torch.no_grad():
        want = model(x)
        got = float_view(q)(x)
    assert got.shape == want.shape == (3, 10)
    assert (got - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))


# ------------------------------------------------------------------ functional activations
class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        a = F.relu(y, inplace=False)
        b = y.relu()
        c = torch.sigmoid(y)
        d = y.clamp(0, 6)
        e = torch.clamp(y, min=0.0)
        f = F.hardtanh(y, 0.0, 6.0)
        g = F.hardswish(y)
        h = F.mish(y)
        i = y.tanh()
        j = F.silu(y)
        k = torch.clamp(y, -1.0, 1.0)
        s = a.add(b).mul(c) + d + e + f + g + h + i + j + k
        return s.mean((2, 3), keepdim=True).sigmoid_()


def test_functional_activation_kinds():
    graph, _ = capture(Functional().eval(), (torch.randn(1, 3, 4, 4),))
    kinds = [n.kind for n in graph.nodes]
    assert kinds[2:13] == [OpKind.RELU, OpKind.RELU, OpKind.SIGMOID, OpKind.RELU6, OpKind.RELU,
                           OpKind.RELU6, OpKind.HARDSWISH, OpKind.MISH, OpKind.TANH, OpKind.SILU,
                           OpKind.HARDTANH]
    assert kinds[-2:] == [OpKind.MEAN, OpKind.SIGMOID]
    assert OpKind.OTHER not in kinds and OpKind.PYOP not in kinds
