"""Cross-layer equalization (numerics.md 9; T20 / Examples 25, 26).

Hand-computed (Example 25): 1x1 convs, conv_a rows [4.0] and [0.5], conv_b weights [0.25, 2.0]:
r_a = [4, 0.5], r_b = [0.25, 2], s = sqrt(r_a / r_b) = [sqrt(16), sqrt(0.25)] = [4, 0.5];
conv_a / s = [1, 1], conv_b * s = [0.25*4, 2*0.5] = [1, 1]. With the bias b_a = [0.4, 0.05]:
f = |b| / |w| = [0.1, 0.1], max|b| = 0.4 < 10 and 0.4 / 4 < 20 and median(f) <= 100 -> k = 2;
the bias columns 0.2 and 0.025 stay below the weights, s is unchanged, b / s = [0.1, 0.1].
Example 26: r_a = 0.1, r_b = 0.3: r_a + r_b = 0.4 < 0.5 -> s = 1.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from algo_helpers import float_view, write_config
from nndct_lite import torch_quantizer
from nndct_lite.algorithms.cle import (bias_shrink_factor, cross_layer_equalize,
                                       find_cle_pairs)
from nndct_lite.graph.capture import capture
from nndct_lite.graph.ops import OpKind
from nndct_lite.graph.passes.fold_bn import fold_batchnorm

CLE_ONLY = {"include_cle": True, "include_bias_corr": False}


class Pair(nn.Module):
    def __init__(self, wa, wb, ba=None, mid=None):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 1, bias=ba is not None)
        self.b = nn.Conv2d(2, 1, 1, bias=False)
        self.mid = mid if mid is not None else nn.ReLU()
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor(wa).view(2, 1, 1, 1))
            self.b.weight.copy_(torch.tensor(wb).view(1, 2, 1, 1))
            if ba is not None:
                self.a.bias.copy_(torch.tensor(ba))

    def forward(self, x):
        return self.b(self.mid(self.a(x)))


def _graph(model, x):
    graph, _ = capture(model.eval(), (x,))
    fold_batchnorm(graph)
    return graph


def _convs(graph):
    return [n for n in graph.nodes if n.kind in (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D,
                                                 OpKind.CONV_TRANSPOSE2D)]


# ------------------------------------------------------------------ T20 and Examples 25, 26
def test_t20_example25_scales_and_weights():
    g = _graph(Pair([4.0, 0.5], [0.25, 2.0]), torch.randn(1, 1, 2, 2))
    a, b = _convs(g)
    assert [(p.name, q.name) for p, q in find_cle_pairs(g)] == [(a.name, b.name)]
    cross_layer_equalize(g)
    torch.testing.assert_close(a.params["weight"].flatten(), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(b.params["weight"].flatten(), torch.tensor([1.0, 1.0]))


def test_example25_with_bias():
    g = _graph(Pair([4.0, 0.5], [0.25, 2.0], ba=[0.4, 0.05]), torch.randn(1, 1, 2, 2))
    a, b = _convs(g)
    assert bias_shrink_factor(a.params["weight"], a.params["bias"]) == 2.0
    cross_layer_equalize(g)
    torch.testing.assert_close(a.params["weight"].flatten(), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(a.params["bias"], torch.tensor([0.1, 0.1]))
    torch.testing.assert_close(b.params["weight"].flatten(), torch.tensor([1.0, 1.0]))


def test_example26_small_ranges_are_left_alone():
    # channel 0: r_a 0.1, r_b 0.3 (sum 0.4 < 0.5) -> s 1; channel 1: 4 and 0.25 -> s 4
    g = _graph(Pair([0.1, 4.0], [0.3, 0.25]), torch.randn(1, 1, 2, 2))
    a, b = _convs(g)
    cross_layer_equalize(g)
    torch.testing.assert_close(a.params["weight"].flatten(), torch.tensor([0.1, 1.0]))
    torch.testing.assert_close(b.params["weight"].flatten(), torch.tensor([0.3, 1.0]))


def test_zero_range_channel_keeps_scale_one():
    g = _graph(Pair([0.0, 4.0], [3.0, 0.25]), torch.randn(1, 1, 2, 2))
    a, b = _convs(g)
    cross_layer_equalize(g)
    torch.testing.assert_close(a.params["weight"].flatten(), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(b.params["weight"].flatten(), torch.tensor([3.0, 1.0]))


def test_large_bias_column_raises_the_range():
    # b = [8, 0.05], w = [1, 0.5], f = [8, 0.1]: max|b| 8 < 10 but 8/1 < 20, median 4.05 -> k 2
    # r_a = [max(1, 8/2), 0.5] = [4, 0.5]; r_b [0.25, 2] -> s [4, 0.5]
    g = _graph(Pair([1.0, 0.5], [0.25, 2.0], ba=[8.0, 0.05]), torch.randn(1, 1, 2, 2))
    a, b = _convs(g)
    cross_layer_equalize(g)
    torch.testing.assert_close(a.params["weight"].flatten(), torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(a.params["bias"], torch.tensor([2.0, 0.1]))
    torch.testing.assert_close(b.params["weight"].flatten(), torch.tensor([1.0, 1.0]))


# ------------------------------------------------------------------ the bias shrink factor k
@pytest.mark.parametrize("w, b, k", [
    ([[1.0, 1.0]], [1.0], 2.0),                     # small bias, median f 1
    ([[1.0, 0.001, 0.001]], [1.0], 5.0),            # median f 1000 > 100
    ([[1.0, 0.5], [1.0, 0.5]], [600.0, 600.0], 20.0),   # max|b| >= 10: median 900 > 30
    ([[1.0, 1.0]], [20.0], 10.0),                   # median 20 in (15, 30]
    ([[1.0, 1.0]], [12.0], 5.0),                    # median 12 <= 15
    ([[0.1, 0.1]], [3.0], 10.0),                    # max|b|/max|w| = 30 >= 20, median 30
    ([[0.0, 2.0]], [1.0], 2.0),                     # the zero weight takes the row's min 2
])
def test_bias_shrink_factor(w, b, k):
    assert bias_shrink_factor(torch.tensor(w), torch.tensor(b)) == k


def test_bias_shrink_factor_all_zero_row_counts_with_f_zero():
    """numerics.md 9.2: an all-zero row gets its bias column set to 0 for f, so its entries
    count as f = 0 in median/mean. Rows [0, 0] (b 3) and [1, 0.001] (b 0.2):
    f = [0, 0, 0.2, 200] -> median 0.1, mean 50.05 -> k = 2 (max|b| 3 < 10, 3/1 < 20)."""
    w = torch.tensor([[0.0, 0.0], [1.0, 0.001]])
    b = torch.tensor([3.0, 0.2])
    assert bias_shrink_factor(w, b) == 2.0


# ------------------------------------------------------------------ which pairs
class Chain(nn.Module):
    def __init__(self, mids):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(len(mids) + 1))
        self.mids = nn.ModuleList(mids)

    def forward(self, x):
        x = self.convs[0](x)
        for mid, conv in zip(self.mids, self.convs[1:]):
            x = conv(mid(x))
        return x


@pytest.mark.parametrize("mid, paired", [
    (nn.ReLU(), True), (nn.MaxPool2d(2), True), (nn.AvgPool2d(2), True),
    (nn.AdaptiveAvgPool2d(2), True),
    (nn.LeakyReLU(0.1), False), (nn.ReLU6(), False), (nn.Hardswish(), False),
    (nn.Sigmoid(), False),
])
def test_chain_members(mid, paired):
    g = _graph(Chain([mid]), torch.randn(1, 4, 8, 8))
    assert bool(find_cle_pairs(g)) is paired


def test_three_convs_give_two_pairs_in_order():
    g = _graph(Chain([nn.ReLU(), nn.ReLU()]), torch.randn(1, 4, 8, 8))
    c0, c1, c2 = _convs(g)
    assert [(a.name, b.name) for a, b in find_cle_pairs(g)] == [(c0.name, c1.name),
                                                               (c1.name, c2.name)]


def test_add_and_fan_out_end_the_chain():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (nn.Conv2d(2, 2, 1) for _ in range(3))

        def forward(self, x):
            y = self.a(x)
            z = self.b(F.relu(y + x))     # add ends the chain
            return self.c(z) + z          # b has two consumers -> no (b, c) pair

    g = _graph(M(), torch.randn(1, 2, 3, 3))
    assert find_cle_pairs(g) == []


def test_linear_is_not_a_chain_member():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))

    assert find_cle_pairs(_graph(M(), torch.randn(1, 3, 5, 5))) == []


def test_ranges_meet_in_the_middle():
    """After CLE (no bias), r_a'[i] = r_a/s = sqrt(r_a r_b) = r_b s = r_b'[i] where s != 1."""
    torch.manual_seed(1)
    model = Chain([nn.ReLU()])
    with torch.no_grad():
        model.convs[0].weight.mul_(5 * torch.tensor([10.0, 0.5, 1.0, 3.0]).view(4, 1, 1, 1))
        model.convs[0].bias.zero_()
        model.convs[1].weight.mul_(5)
    g = _graph(model, torch.randn(1, 4, 8, 8))
    a, b = _convs(g)
    cross_layer_equalize(g)
    ra = a.params["weight"].abs().flatten(1).amax(1)
    rb = b.params["weight"].abs().transpose(0, 1).flatten(1).amax(1)
    torch.testing.assert_close(ra, rb, rtol=1e-5, atol=0)


# ------------------------------------------------------------------ float function unchanged
def _bn(c, g):
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) * 2 + 0.1)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return bn


class ConvReluConv(nn.Module):
    def __init__(self, g):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), _bn(8, g)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), _bn(8, g)
        self.pool = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.b1(self.c1(x)))
        x = self.pool(F.relu(self.b2(self.c2(x))))
        return self.c3(x)


class DepthwiseChain(nn.Module):
    """ShuffleNet / MobileNet style: pw -> BN -> ReLU -> dw -> BN -> pw -> BN -> ReLU6 (module,
    replaced by ReLU when CLE is on) -> grouped conv -> transposed conv."""

    def __init__(self, g):
        super().__init__()
        self.pw1, self.b1 = nn.Conv2d(4, 8, 1, bias=False), _bn(8, g)
        self.dw, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), _bn(8, g)
        self.pw2, self.b3 = nn.Conv2d(8, 8, 1, bias=False), _bn(8, g)
        self.act = nn.ReLU6()
        self.gc = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

    def forward(self, x):
        x = F.relu(self.b1(self.pw1(x)))
        x = self.b3(self.pw2(self.b2(self.dw(x))))
        x = self.gc(self.act(x))
        return self.up(F.relu(x))


def _skew(model: nn.Module, g) -> nn.Module:
    """Make per-channel ranges very unequal, so that CLE really moves them."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            axis = 1 if isinstance(m, nn.ConvTranspose2d) else 0
            n = m.weight.shape[axis]
            shape = [1] * m.weight.dim()
            shape[axis] = n
            with torch.no_grad():
                m.weight.mul_(torch.exp(torch.randn(n, generator=g) * 1.5).view(shape))
    return model.eval()


@pytest.mark.parametrize("cls, expect_pairs", [(ConvReluConv, 2), (DepthwiseChain, 4)])
def test_cle_keeps_the_float_function(tmp_path, cls, expect_pairs):
    g = torch.Generator().manual_seed(7)
    model = _skew(cls(g), g)
    x = torch.randn(3, 3 if cls is ConvReluConv else 4, 8, 8, generator=g)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, CLE_ONLY))
    pairs = find_cle_pairs(q.graph)
    assert len(pairs) == expect_pairs
    ref = {n.name: n.params["weight"] for n in _convs(_graph(model, x[:1]))}
    moved = [n for n in _convs(q.graph) if not torch.allclose(n.params["weight"], ref[n.name])]
    assert len(moved) >= expect_pairs            # CLE did change the weights ...
    if hasattr(model, "act"):
        model.act = nn.ReLU()                    # what CLE implies for nn.ReLU6 (T24)
    with torch.no_grad():                        # ... but not the function
        want = model(x)
        got = float_view(q)(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_depthwise_pair_scales_per_channel():
    """pw (rows [8, 1]) -> ReLU -> dw (channel maxima [0.5, 4]): s = sqrt([16, 0.25]) = [4, 0.5]."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pw = nn.Conv2d(1, 2, 1, bias=False)
            self.dw = nn.Conv2d(2, 2, 3, padding=1, groups=2, bias=False)
            with torch.no_grad():
                self.pw.weight.copy_(torch.tensor([8.0, 1.0]).view(2, 1, 1, 1))
                self.dw.weight.zero_()
                self.dw.weight[0, 0, 1, 1] = 0.5
                self.dw.weight[1, 0, 0, 0] = -4.0

        def forward(self, x):
            return self.dw(F.relu(self.pw(x)))

    g = _graph(M(), torch.randn(1, 1, 4, 4))
    pw, dw = _convs(g)
    assert dw.kind is OpKind.DEPTHWISE_CONV2D
    cross_layer_equalize(g)
    torch.testing.assert_close(pw.params["weight"].flatten(), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(dw.params["weight"][0, 0, 1, 1], torch.tensor(2.0))
    torch.testing.assert_close(dw.params["weight"][1, 0, 0, 0], torch.tensor(-2.0))


def test_cle_off_leaves_weights(tmp_path):
    g = torch.Generator().manual_seed(7)
    model = _skew(ConvReluConv(g), g)
    x = torch.randn(1, 3, 8, 8)
    q = torch_quantizer("calib", model, (x,), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, {"include_cle": False}))
    ref = {n.name: n.params["weight"] for n in _convs(_graph(model, x))}
    for n in _convs(q.graph):
        assert torch.equal(n.params["weight"], ref[n.name])


# ------------------------------------------------------------------ transposed convs in chains
def _transposed_chain(groups: int, transposed_first: bool) -> nn.Module:
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            if transposed_first:
                self.a = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=groups, bias=False)
                self.b = nn.Conv2d(4, 3, 3, padding=1)
            else:
                self.a = nn.Conv2d(4, 4, 3, padding=1)
                self.b = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=groups)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    torch.manual_seed(0)
    return _skew(M(), torch.Generator().manual_seed(3))


def _check_function(tmp_path, model, x):
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, CLE_ONLY))
    assert len(find_cle_pairs(q.graph)) <= 1
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(float_view(q)(x), want, rtol=1e-4,
                                   atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_transposed_conv_as_second_member(tmp_path, groups):
    _check_function(tmp_path, _transposed_chain(groups, False), torch.randn(2, 4, 4, 4))


def test_transposed_conv_as_first_member(tmp_path):
    _check_function(tmp_path, _transposed_chain(1, True), torch.randn(2, 4, 4, 4))


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_transposed_conv_as_first_member(tmp_path, groups):
    _check_function(tmp_path, _transposed_chain(groups, True), torch.randn(2, 4, 4, 4))


# ------------------------------------------------------------------ evidence on real data
@pytest.mark.shared
@pytest.mark.slow
def test_cle_helps_pretrained_shufflenet(tmp_path):
    """Pretrained CIFAR ShuffleNetV2 x0.5 (19 depthwise convs), DPU default (per-tensor W8A8,
    power-of-two), calibrated on 500 calib images, evaluated on 2000 test images: top-1 with
    CLE >= without. Measured: 90.85 % with CLE, 90.45 % without (float 90.65 %)."""
    import cifar_shufflenet as cs
    from algo_helpers import accuracy, calibrate
    if not cs.available():
        pytest.skip("../shared/data (ShuffleNetV2 weights, CIFAR-10) not available")
    xc, _ = cs.cifar("calib", 500)
    xt, yt = cs.cifar("test", 2000)
    acc = {}
    for cle in (True, False):
        _, qt = calibrate(cs.shufflenet_v2_x0_5, xc, tmp_path / str(cle),
                          {"include_cle": cle}, batch=100)
        acc[cle] = accuracy(qt.quant_model, xt, yt)
    assert acc[True] >= acc[False], acc
    assert acc[True] > 0.89, acc              # and it stays close to float (0.9065)


@pytest.mark.shared
def test_shufflenet_architecture_and_cle_keeps_its_function(tmp_path):
    """The README's architecture loads strictly (352,042 parameters, 19 depthwise convs); CLE
    pairs its pw -> dw -> pw chains and the equalized float model gives the same logits."""
    import cifar_shufflenet as cs
    if not cs.available():
        pytest.skip("../shared/data (ShuffleNetV2 weights, CIFAR-10) not available")
    model = cs.shufflenet_v2_x0_5()
    assert sum(p.numel() for p in model.parameters()) == 352042
    assert sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules()) == 19
    x, _ = cs.cifar("test", 64)
    q = torch_quantizer("calib", model, (x[:1],), output_dir=str(tmp_path),
                        quant_config_file=write_config(tmp_path, CLE_ONLY))
    pairs = find_cle_pairs(q.graph)
    kinds = {(a.kind, b.kind) for a, b in pairs}
    assert (OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D) in kinds
    assert (OpKind.DEPTHWISE_CONV2D, OpKind.CONV2D) in kinds
    assert len(pairs) == 3 + 2 * 16            # branch1: dw->pw; branch2: pw->dw, dw->pw
    with torch.no_grad():
        want = model(x)
        got = float_view(q)(x)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert bool((got.argmax(1) == want.argmax(1)).all())
