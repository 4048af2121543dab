"""Quantizer placement rules (numerics.md 5.2, 5.3) on small hand-built models.

Rules checked here:
* a transpose is a follower but not a memory-only op: ending a group it carries the group's
  quantizer (the channel shuffle of ShuffleNetV2: concat -> view -> transpose -> contiguous ->
  view quantizes the transpose), and it is hole-filled like any compute op;
* permute, reshape and contiguous stay memory-only (the quantizer walks back over them);
* concat rule: a group whose only consumer is a concat has no quantizer of its own, the
  concat's own output quantizer covers it, so that concat carries one even when its group ends
  further on (concat -> channel shuffle: both the concat and the transpose are quantized).
"""
from __future__ import annotations

import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import torch_quantizer
from nndct_lite.graph.capture import capture
from nndct_lite.graph.ops import OpKind
from nndct_lite.quant.placement import place_quantizers


def _carriers(model, x) -> list[str]:
    graph, _ = capture(model, (x,))
    placement = place_quantizers(graph)
    return [n.kind.value for n in placement.carriers]


def _conv(cin, cout, w):
    c = nn.Conv2d(cin, cout, 1, bias=False)
    with torch.no_grad():
        c.weight.fill_(w)
    return c


class Shuffle(nn.Module):
    """Two 1x1 branches, concat, channel shuffle (groups 2)."""

    def __init__(self, tail: bool = False):
        super().__init__()
        self.a, self.b = _conv(1, 1, 1.0), _conv(1, 1, 0.5)
        self.tail = _conv(2, 2, 0.25) if tail else None

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w)
        y = torch.transpose(y, 1, 2).contiguous()
        y = y.view(n, c, h, w)
        return self.tail(y) if self.tail is not None else y


def test_channel_shuffle_quantizes_concat_and_transpose():
    # input; the ReLUs feed only the concat (no quantizer); concat; transpose; the tail conv
    got = _carriers(Shuffle(tail=True), torch.rand(1, 1, 1, 3))
    assert got == ["input", "cat", "transpose", "conv2d"]


def test_transpose_ends_a_group_permute_does_not():
    class T(nn.Module):
        def __init__(self, perm: bool):
            super().__init__()
            self.a, self.b, self.perm = _conv(4, 4, 0.1), _conv(4, 4, 0.1), perm

        def forward(self, x):
            y = self.a(x)   # one consumer: the transpose / permute joins its group
            y = y.permute(0, 1, 3, 2) if self.perm else y.transpose(2, 3)
            return self.b(y)

    x = torch.rand(1, 4, 3, 5)
    assert _carriers(T(perm=False), x) == ["input", "transpose", "conv2d"]
    assert _carriers(T(perm=True), x) == ["input", "conv2d", "conv2d"]   # a's own output


def test_transpose_after_a_shared_tensor_is_hole_filled():
    class T(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = _conv(4, 4, 0.1), _conv(4, 4, 0.1)

        def forward(self, x):
            y = self.a(x)   # two consumers: the transpose is a group of its own, not
            return self.b(y.transpose(2, 3)) + y   # quantizable, but it feeds a conv

    got = _carriers(T(), torch.rand(1, 4, 5, 5))
    assert got == ["input", "conv2d", "transpose", "conv2d", "add"]


def test_concat_followed_by_relu_keeps_its_own_quantizer():
    class C(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = _conv(1, 1, 1.0), _conv(1, 1, -1.0)

        def forward(self, x):
            return F.relu(torch.cat([self.a(x), self.b(x)], 1))

    # the convs feed only the concat: the concat's quantizer is theirs; the group ends at ReLU
    assert _carriers(C(), torch.rand(1, 1, 2, 2)) == ["input", "cat", "relu"]


def test_channel_shuffle_numbers(tmp_path):
    """Hand-computed: x = [0.3, 0.7, 1.9] (1x1x1x3).

    Model input (scope 1): step = 1.9/127.5 -> fp0 = floor(log2(67.1)) = 6 ->
    Q(x) = [19, 45, 122]/64 (0.3*64 = 19.2, 0.7*64 = 44.8, 1.9*64 = 121.6). Weights 1.0 and 0.5 are exact at their fps
    (6 and 7). Branch b = [9.5, 22.5, 61]/64; the concat's diffs search: fp0 = 6; fp 6 error
    2*(0.5/64)^2 (9.5 -> 10, 22.5 -> 23 half_up), fp 7 clips 244/128 -> 127/128 (error 0.83):
    concat fp 6, transpose fp 6 (same values). Output, shuffled [a, b] with 1 channel per group:
    [19, 45, 122] / 64 and [10, 23, 61] / 64.
    """
    x = torch.tensor([[[[0.3, 0.7, 1.9]]]])
    q = torch_quantizer("calib", Shuffle(), (x,), output_dir=str(tmp_path))
    with torch.no_grad():
        q.quant_model(x)
    q.export_quant_config()
    info = json.loads((tmp_path / "quant_info.json").read_text())
    kinds = {n.name: n.kind for n in q.graph.nodes}
    out = {kinds[k]: v for k, v in info["output"].items()}
    assert out == {OpKind.INPUT: [[8, 6]], OpKind.CAT: [[8, 6]], OpKind.TRANSPOSE: [[8, 6]]}
    assert info["param"] == {"Shuffle::a.weight": [[8, 6]], "Shuffle::b.weight": [[8, 7]]}
    qt = torch_quantizer("test", Shuffle(), (x,), output_dir=str(tmp_path))
    with torch.no_grad():
        y = qt.quant_model(x)
    expect = torch.tensor([[[[19, 45, 122]], [[10, 23, 61]]]]) / 64.0
    assert torch.equal(y, expect)


def test_mish_has_an_output_quantizer():
    """numerics.md 5.1 lists mish among the quantizable ops (unlike sigmoid, tanh, SiLU)."""
    class M(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.a, self.b, self.act = _conv(2, 2, 0.5), _conv(2, 2, 0.5), act

        def forward(self, x):
            return self.b(self.act(self.a(x)))

    x = torch.rand(1, 2, 3, 3)
    assert _carriers(M(nn.Mish()), x) == ["input", "conv2d", "mish", "conv2d"]
    # SiLU is not quantizable: its output is quantized only because a conv reads it (5.3)
    assert _carriers(M(nn.SiLU()), x) == ["input", "conv2d", "silu", "conv2d"]
    assert _carriers(nn.Sequential(_conv(2, 2, 0.5), nn.SiLU()), x) == ["input", "conv2d"]
