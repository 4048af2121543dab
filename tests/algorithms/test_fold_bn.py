"""BatchNorm folding (numerics.md 8, T19 / Example 24).

Hand-computed: gamma [2, 1.5], beta [1, -1], mean [0.5, 2], var [4, 0.25], eps 0 give
a = gamma / sqrt(var + eps) = [2/2, 1.5/0.5] = [1, 3] and offset = beta - mean * a =
[1 - 0.5, -1 - 6] = [0.5, -7]. A conv without bias gets the bias [0.5, -7]; with the bias
[0.2, 0.1] it becomes [0.2*1 + 0.5, 0.1*3 - 7] = [0.7, -6.7]. Output channel 1's weights are
tripled: along torch axis 0 for conv and depthwise conv, axis 1 for transposed conv.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from algo_helpers import PLAIN, float_view, write_config
from nndct_lite import torch_quantizer
from nndct_lite.graph.capture import capture
from nndct_lite.graph.ops import OpKind
from nndct_lite.graph.passes.fold_bn import fold_batchnorm

A = torch.tensor([1.0, 3.0])
OFFSET = torch.tensor([0.5, -7.0])


def _example_bn(channels: int = 2) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=0.0)
    reps = channels // 2
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 1.5]).repeat(reps))
        bn.bias.copy_(torch.tensor([1.0, -1.0]).repeat(reps))
        bn.running_mean.copy_(torch.tensor([0.5, 2.0]).repeat(reps))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]).repeat(reps))
    return bn.eval()


class ConvBN(nn.Module):
    def __init__(self, conv: nn.Module, bn: nn.Module):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x):
        return self.bn(self.conv(x))


def _folded(model: nn.Module, x: torch.Tensor):
    graph, _ = capture(model, (x,))
    folded = fold_batchnorm(graph)
    convs = [n for n in graph.nodes if n.module is not None and n.kind is not OpKind.BATCHNORM]
    return graph, folded, convs


def _seeded_weight(shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(shape, generator=g)


# ------------------------------------------------------------------ T19, hand-computed values
def test_t19_conv_without_bias_gets_the_offset_as_new_bias():
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    w = _seeded_weight(conv.weight.shape)
    with torch.no_grad():
        conv.weight.copy_(w)
    model = ConvBN(conv, _example_bn()).eval()
    graph, folded, (node,) = _folded(model, torch.randn(1, 3, 5, 5))
    assert len(folded) == 1
    assert not [n for n in graph.nodes if n.kind is OpKind.BATCHNORM]
    assert torch.equal(node.params["bias"], OFFSET)
    assert node.param_names["bias"] == "conv.bias"       # named like the weight
    torch.testing.assert_close(node.params["weight"][0], w[0], rtol=0, atol=0)
    torch.testing.assert_close(node.params["weight"][1], 3 * w[1], rtol=1e-6, atol=0)


def test_t19_conv_with_bias():
    conv = nn.Conv2d(1, 2, 1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 1.0]).view(2, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.2, 0.1]))
    model = ConvBN(conv, _example_bn()).eval()
    _, _, (node,) = _folded(model, torch.randn(1, 1, 2, 2))
    torch.testing.assert_close(node.params["bias"], torch.tensor([0.7, -6.7]))
    torch.testing.assert_close(node.params["weight"].flatten(), A)   # scale [1, 3]


def test_t19_depthwise_conv():
    conv = nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
    w = _seeded_weight(conv.weight.shape)
    with torch.no_grad():
        conv.weight.copy_(w)
    model = ConvBN(conv, _example_bn()).eval()
    _, folded, (node,) = _folded(model, torch.randn(1, 2, 4, 4))
    assert node.kind is OpKind.DEPTHWISE_CONV2D and len(folded) == 1
    assert torch.equal(node.params["bias"], OFFSET)
    torch.testing.assert_close(node.params["weight"], w * A.view(2, 1, 1, 1))


def test_t19_transposed_conv_scales_weight_axis_1():
    conv = nn.ConvTranspose2d(3, 2, 2, stride=2, bias=False)     # weight [in 3, out 2, 2, 2]
    w = _seeded_weight(conv.weight.shape)
    with torch.no_grad():
        conv.weight.copy_(w)
    model = ConvBN(conv, _example_bn()).eval()
    _, folded, (node,) = _folded(model, torch.randn(1, 3, 3, 3))
    assert node.kind is OpKind.CONV_TRANSPOSE2D and len(folded) == 1
    assert torch.equal(node.params["bias"], OFFSET)
    torch.testing.assert_close(node.params["weight"], w * A.view(1, 2, 1, 1))


def test_bn1d_after_linear_is_folded():
    """Issue 21 (our choice; numerics.md 8.2: the original leaves it): Linear -> BatchNorm1d
    folds along the weight's axis 0 with the same formula."""
    class LinBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2, bias=True)
            self.bn = nn.BatchNorm1d(2, eps=0.0)

        def forward(self, x):
            return self.bn(self.fc(x))

    model = LinBN()
    w = _seeded_weight(model.fc.weight.shape)
    with torch.no_grad():
        model.fc.weight.copy_(w)
        model.fc.bias.copy_(torch.tensor([0.2, 0.1]))
        ref = _example_bn()
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(model.bn, k).copy_(getattr(ref, k))
    model.eval()
    graph, folded, (node,) = _folded(model, torch.randn(2, 3))
    assert node.kind is OpKind.LINEAR and len(folded) == 1
    assert not [n for n in graph.nodes if n.kind is OpKind.BATCHNORM]
    torch.testing.assert_close(node.params["bias"], torch.tensor([0.7, -6.7]))
    torch.testing.assert_close(node.params["weight"], w * A.view(2, 1))


def test_bn1d_over_a_sequence_after_linear_is_not_folded():
    """[N, C, L] BatchNorm1d after a linear on [N, L, F] normalizes L, not the features."""
    class SeqBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 5)
            self.bn = nn.BatchNorm1d(3)

        def forward(self, x):
            return self.bn(self.fc(x))

    graph, folded, _ = _folded(SeqBN().eval(), torch.randn(2, 3, 4))
    assert folded == []
    assert [n for n in graph.nodes if n.kind is OpKind.BATCHNORM]


# ------------------------------------------------------------------ float function unchanged
class _Mixed(nn.Module):
    """conv (no bias) -> BN -> ReLU -> depthwise (bias) -> BN -> transposed conv -> BN, plus a
    depthwise conv with channel multiplier 2 and a BN that cannot be folded (after an add)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8)
        self.dw2, self.b3 = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False), \
            nn.BatchNorm2d(16)
        self.up, self.b4 = nn.ConvTranspose2d(16, 4, 2, stride=2), nn.BatchNorm2d(4)
        self.side = nn.Conv2d(3, 4, 1, stride=1)
        self.b5 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b3(self.dw2(self.b2(self.dw(y))))
        y = self.b4(self.up(y))
        s = nn.functional.interpolate(self.side(x), scale_factor=2.0)
        return self.b5(y + s)


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.bias.copy_(torch.randn(n, generator=g))
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
    return model.eval()


def test_folded_model_equals_original(tmp_path):
    torch.manual_seed(0)
    model = _randomise_bn(_Mixed())
    x = torch.randn(4, 3, 8, 8)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, PLAIN))
    kinds = [n.kind for n in q.graph.nodes]
    assert kinds.count(OpKind.BATCHNORM) == 1            # only the BN after the add is left
    assert OpKind.DEPTHWISE_CONV2D in kinds and OpKind.CONV_TRANSPOSE2D in kinds
    with torch.no_grad():
        want = model(x)
        got = float_view(q)(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_conv_with_two_consumers_keeps_its_bn(tmp_path):
    """Our choice (numerics.md 8.2 says the original folds anyway and so changes the other
    consumer's input): a conv whose output also feeds another op keeps its BN unfolded."""
    class Fan(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1, bias=False), _example_bn()

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = Fan().eval()
    x = torch.randn(2, 2, 3, 3)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, PLAIN))
    assert any(n.kind is OpKind.BATCHNORM for n in q.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(float_view(q)(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_gets_bias_quantizer(tmp_path, bias):
    """After folding every conv has a bias, so it gets weight *and* bias quantizers."""
    model = ConvBN(nn.Conv2d(3, 2, 3, padding=1, bias=bias), _example_bn()).eval()
    x = torch.randn(2, 3, 6, 6)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, PLAIN))
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    import json
    info = json.loads((tmp_path / "quant_info.json").read_text())
    assert any(k.endswith("conv.bias") for k in info["param"]), info["param"].keys()
    assert any(k.endswith("conv.weight") for k in info["param"])
