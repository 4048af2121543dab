"""Issue 21 (folding): BatchNorm subclasses with their own forward (timm ``BatchNormAct2d``) are
traced through; their ``F.batch_norm`` call folds into the conv/linear before it exactly like a
BatchNorm module, the activation inside them keeps its op kind, and a BN that cannot be folded
stays a BATCHNORM layer (no float ``other`` op, no leftover constants)."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graph_helpers import float_view, quantizer, seeded
from nndct_lite.graph.capture import capture
from nndct_lite.graph.ops import OpKind
from nndct_lite.graph.passes.fold_bn import fold_batchnorm


def _bn_act(base: type, channels: int, act: nn.Module | None = None) -> nn.Module:
    """A BatchNorm subclass with its own forward: F.batch_norm then an activation."""

    class BNAct(base):
        def __init__(self):
            super().__init__(channels)
            self.act = act if act is not None else nn.Identity()

        def forward(self, x):
            x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             self.training, self.momentum, self.eps)
            return self.act(x)

    return BNAct()


class PlainSubclass(nn.BatchNorm2d):
    """No forward of its own: traced through nn.BatchNorm2d.forward (shape checks included)."""


class Pair(nn.Module):
    def __init__(self, layer, bn):
        super().__init__()
        self.layer, self.bn = layer, bn

    def forward(self, x):
        return self.bn(self.layer(x))


CASES = {
    "conv2d": (lambda: nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d, 6,
               (2, 3, 8, 8), OpKind.CONV2D),
    "depthwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d, 4,
                  (2, 4, 8, 8), OpKind.DEPTHWISE_CONV2D),
    "conv_transpose": (lambda: nn.ConvTranspose2d(3, 5, 2, stride=2, bias=False),
                       nn.BatchNorm2d, 5, (2, 3, 4, 4), OpKind.CONV_TRANSPOSE2D),
    "conv1d": (lambda: nn.Conv1d(3, 6, 3, padding=1), nn.BatchNorm1d, 6, (2, 3, 10),
               OpKind.CONV1D),
    "conv3d": (lambda: nn.Conv3d(2, 4, 3, padding=1), nn.BatchNorm3d, 4, (2, 2, 4, 4, 4),
               OpKind.CONV3D),
    "linear_bn1d": (lambda: nn.Linear(7, 6), nn.BatchNorm1d, 6, (4, 7), OpKind.LINEAR),
}


def _model(case: str, act=None) -> tuple[nn.Module, torch.Tensor]:
    make, base, c, shape, _ = CASES[case]
    torch.manual_seed(0)
    model = seeded(Pair(make(), _bn_act(base, c, act)))
    return model, torch.randn(*shape)


@pytest.mark.parametrize("case", sorted(CASES))
def test_functional_bn_folds_into_the_layer(case):
    model, x = _model(case)
    graph, _ = capture(model, (x[:1] if case != "linear_bn1d" else x,))
    kinds = [n.kind for n in graph.nodes]
    assert OpKind.BATCHNORM in kinds and OpKind.CONST not in kinds and OpKind.OTHER not in kinds
    folded = fold_batchnorm(graph)
    assert folded == ["Pair::Pair/BNAct[bn]/ret.2"]
    assert [n.kind for n in graph.nodes] == [OpKind.INPUT, CASES[case][4]]
    layer = graph.nodes[1]
    assert set(layer.params) == {"weight", "bias"}
    assert layer.param_names["weight"] == "layer.weight"
    assert layer.param_names["bias"] == "layer.bias"
    assert layer.meta["folded_bn"] == "bn"


@pytest.mark.parametrize("case", sorted(CASES))
def test_folded_model_computes_the_same_float_function(case, tmp_path):
    model, x = _model(case, act=nn.ReLU())
    q = quantizer("calib", model, x if case == "linear_bn1d" else x[:1], tmp_path)
    assert not [n for n in q.graph.nodes if n.kind is OpKind.BATCHNORM]
    with torch.no_grad():
        want = model(x)
        got = float_view(q)(x)
    assert want.abs().max() > 0.1            # the check is not vacuous
    assert (got - want).abs().max() < 1e-5


def test_bn_subclass_without_own_forward_folds(tmp_path):
    torch.manual_seed(0)
    model = seeded(Pair(nn.Conv2d(3, 4, 3), PlainSubclass(4)))
    x = torch.randn(2, 3, 6, 6)
    q = quantizer("calib", model, x[:1], tmp_path)
    assert [n.kind for n in q.graph.nodes] == [OpKind.INPUT, OpKind.CONV2D]
    with torch.no_grad():
        assert (float_view(q)(x) - model(x)).abs().max() < 1e-5


class AfterAdd(nn.Module):
    """The BN reads an add: it cannot be folded and stays a BatchNorm layer."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.bn = _bn_act(nn.BatchNorm2d, 4, nn.ReLU())

    def forward(self, x):
        return self.bn(self.a(x) + self.b(x))


def test_unfoldable_functional_bn_stays_a_batchnorm_layer(tmp_path):
    torch.manual_seed(0)
    model = seeded(AfterAdd())
    x = torch.randn(2, 3, 5, 5)
    q = quantizer("calib", model, x[:1], tmp_path)
    kinds = [n.kind for n in q.graph.nodes]
    assert kinds == [OpKind.INPUT, OpKind.CONV2D, OpKind.CONV2D, OpKind.ADD, OpKind.BATCHNORM,
                     OpKind.RELU]
    bn = q.graph.nodes[4]
    assert type(bn.module) is nn.BatchNorm2d
    assert bn.param_names["running_mean"] == "bn.running_mean"
    assert bn.name == "AfterAdd::AfterAdd/BNAct[bn]/ret.4"
    with torch.no_grad():
        assert (float_view(q)(x) - model(x)).abs().max() < 1e-5


def test_batch_statistics_are_not_turned_into_an_affine_op():
    class Stats(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return F.batch_norm(self.conv(x), None, None, training=True)

    graph, _ = capture(Stats().eval(), (torch.randn(2, 3, 4, 4),))
    assert fold_batchnorm(graph) == []
    assert not [n for n in graph.nodes if n.kind is OpKind.BATCHNORM]


# ------------------------------------------------------------------ timm modules
timm = pytest.importorskip("timm")

ACTS = {"relu": OpKind.RELU, "relu6": OpKind.RELU6, "leaky_relu": OpKind.LEAKY_RELU,
        "silu": OpKind.SILU, "swish": OpKind.SILU, "hard_swish": OpKind.HARDSWISH,
        "hard_sigmoid": OpKind.HARDSIGMOID, "sigmoid": OpKind.SIGMOID, "tanh": OpKind.TANH,
        "gelu": OpKind.GELU, "mish": OpKind.MISH}


def _timm_conv_bn_act(act_layer) -> nn.Module:
    from timm.layers import BatchNormAct2d

    class ConvBNAct(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = BatchNormAct2d(8, act_layer=act_layer)

        def forward(self, x):
            return self.bn1(self.conv(x))

    return seeded(ConvBNAct())


@pytest.mark.parametrize("act", sorted(ACTS))
def test_activation_inside_batchnormact2d_keeps_its_kind(act, tmp_path):
    from timm.layers import get_act_layer
    model = _timm_conv_bn_act(get_act_layer(act))
    x = torch.randn(2, 3, 6, 6)
    q = quantizer("calib", model, x[:1], tmp_path)
    nodes = q.graph.nodes
    assert [n.kind for n in nodes] == [OpKind.INPUT, OpKind.CONV2D, ACTS[act]]
    assert nodes[1].name == "ConvBNAct::ConvBNAct/Conv2d[conv]/ret.1"
    assert nodes[2].name.startswith("ConvBNAct::ConvBNAct/BatchNormAct2d[bn1]/")
    assert nodes[2].name.endswith("[act]/ret.2")
    if act == "leaky_relu":
        return       # the builder sets the DPU slope 26/256 on the module, float mode included
    with torch.no_grad():
        assert (float_view(q)(x) - model(x)).abs().max() < 1e-5


TIMM_CLASSES = {"HardSwish": OpKind.HARDSWISH, "HardSigmoid": OpKind.HARDSIGMOID,
                "Swish": OpKind.SILU, "Mish": OpKind.MISH, "GELU": OpKind.GELU,
                "Sigmoid": OpKind.SIGMOID, "Tanh": OpKind.TANH}


@pytest.mark.parametrize("cls", sorted(TIMM_CLASSES))
def test_timm_activation_classes_map_to_their_kind(cls, tmp_path):
    from timm.layers import activations
    model = _timm_conv_bn_act(getattr(activations, cls))
    x = torch.randn(2, 3, 6, 6)
    q = quantizer("calib", model, x[:1], tmp_path)
    assert [n.kind for n in q.graph.nodes] == [OpKind.INPUT, OpKind.CONV2D, TIMM_CLASSES[cls]]
    assert f"/BatchNormAct2d[bn1]/{cls}[act]/" in q.graph.nodes[2].name
    with torch.no_grad():
        assert (float_view(q)(x) - model(x)).abs().max() < 1e-5


def test_timm_conv_norm_act_and_repvgg_block(tmp_path):
    from timm.layers import ConvNormAct
    from timm.models.byobnet import RepVggBlock
    torch.manual_seed(0)
    model = seeded(nn.Sequential(ConvNormAct(3, 8, 3, act_layer=nn.ReLU6),
                                 RepVggBlock(8, 8)))
    x = torch.randn(2, 3, 8, 8)
    q = quantizer("calib", model, x[:1], tmp_path)
    kinds = [n.kind for n in q.graph.nodes]
    # the identity branch's BN reads the block input (two consumers): it stays a layer
    assert kinds.count(OpKind.BATCHNORM) == 1 and OpKind.CONST not in kinds
    assert kinds.count(OpKind.CONV2D) == 3 and OpKind.RELU6 in kinds
    with torch.no_grad():
        assert (float_view(q)(x) - model(x)).abs().max() < 1e-5


def _frozen_classes():
    out = []
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
        out.append(FrozenBatchNorm2d)
    except ImportError:
        pass
    from timm.layers import FrozenBatchNormAct2d
    out.append(FrozenBatchNormAct2d)
    return out


@pytest.mark.parametrize("cls", _frozen_classes(), ids=lambda c: c.__name__)
def test_frozen_batchnorm_arithmetic_folds_into_the_conv(cls, tmp_path):
    """``x * scale + shift`` on per-channel constants after a conv is a BN: it folds."""
    torch.manual_seed(0)
    bn = cls(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), bn).eval()
    x = torch.randn(2, 3, 6, 6)
    q = quantizer("calib", model, x[:1], tmp_path)
    kinds = [n.kind for n in q.graph.nodes]
    assert kinds[:2] == [OpKind.INPUT, OpKind.CONV2D] and len(kinds) <= 3
    assert not set(kinds) & {OpKind.BATCHNORM, OpKind.CONST, OpKind.MUL, OpKind.ADD}
    with torch.no_grad():
        want = model(x)
        assert (float_view(q)(x) - want).abs().max() < 1e-5


def test_per_channel_mul_add_without_a_conv_is_left_alone():
    class ScaleShift(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("s", torch.rand(1, 3, 1, 1))
            self.register_buffer("t", torch.rand(1, 3, 1, 1))

        def forward(self, x):
            return x * self.s + self.t

    graph, _ = capture(ScaleShift().eval(), (torch.randn(1, 3, 4, 4),))
    assert [n.kind for n in graph.nodes].count(OpKind.MUL) == 1
    assert OpKind.BATCHNORM not in [n.kind for n in graph.nodes]
