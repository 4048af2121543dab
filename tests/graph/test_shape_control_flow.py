"""Issue 21 (capture): Python control flow on shapes is resolved with the example input's shapes
(as torch.jit.trace freezes it), the shape reads stay in the graph (other batch sizes work), and
control flow on tensor data still raises a TraceError naming the module and the line."""
from __future__ import annotations

import logging
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graph_helpers import roundtrip
from nndct_lite.errors import TraceError
from nndct_lite.graph.capture import capture
from nndct_lite.graph.ops import OpKind

THIS = os.path.basename(__file__)


class ShapeBranch(nn.Module):
    """timm ConvMlp-style: pool only when the feature map is smaller than the kernel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        y = self.conv(x)
        if y.shape[-2] > 4:
            y = F.adaptive_avg_pool2d(y, 4)
        else:
            y = y * 2.0
        return self.fc(y.reshape(y.size(0), -1))


def _kinds(graph):
    return [n.kind for n in graph.nodes]


def test_shape_branch_is_frozen_with_the_example_shape():
    big, _ = capture(ShapeBranch().eval(), (torch.randn(1, 3, 8, 8),))
    small, _ = capture(ShapeBranch().eval(), (torch.randn(1, 3, 4, 4),))
    assert OpKind.ADAPTIVE_AVGPOOL2D in _kinds(big) and OpKind.MUL not in _kinds(big)
    assert OpKind.MUL in _kinds(small) and OpKind.ADAPTIVE_AVGPOOL2D not in _kinds(small)
    # the condition itself (getattr shape, getitem, gt) is not left in the graph
    assert not [n for n in big.nodes if n.kind is OpKind.PYOP and n.users == []]


def test_shape_reads_stay_traced_so_other_batch_sizes_work(tmp_path):
    torch.manual_seed(0)
    model = ShapeBranch().eval()
    graph, _ = capture(model, (torch.randn(1, 3, 8, 8),))
    sizes = [n for n in graph.nodes if n.kind is OpKind.SIZE]
    assert sizes, "x.size(0) must stay a node, not the constant 1"
    reshape = next(n for n in graph.nodes if n.kind is OpKind.RESHAPE)
    assert reshape.args[1] is sizes[0]
    x1 = torch.randn(1, 3, 8, 8)
    calib = [torch.randn(4, 3, 8, 8), torch.randn(3, 3, 8, 8)]
    test = torch.randn(6, 3, 8, 8)
    y_q, y_f, _ = roundtrip(model, x1, calib, test, tmp_path)
    assert y_q.shape == (6, 5)
    with torch.no_grad():
        want = model(test)
    assert (y_f - want).abs().max() < 1e-5
    assert (y_q - want).abs().max() < 0.2 * want.abs().max()


class SamePad(nn.Module):
    """TF 'SAME' padding computed from the input size with math.ceil and max (timm pad_same)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        ih, iw = x.size()[-2:]
        pad_h = max((math.ceil(ih / 2) - 1) * 2 + 3 - ih, 0)
        pad_w = max((math.ceil(iw / 2) - 1) * 2 + 3 - iw, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return self.conv(x)


def test_same_padding_from_sizes_traces_and_matches(tmp_path):
    torch.manual_seed(0)
    model = SamePad().eval()
    x = torch.randn(1, 3, 9, 9)
    graph, _ = capture(model, (x,))
    assert OpKind.PAD in _kinds(graph)
    test = torch.randn(3, 3, 9, 9)
    y_q, y_f, _ = roundtrip(model, x, [torch.randn(2, 3, 9, 9)], test, tmp_path)
    with torch.no_grad():
        want = model(test)
    assert y_f.shape == want.shape == (3, 4, 5, 5)
    assert (y_f - want).abs().max() < 1e-5


def test_timm_pad_same_traces():
    pytest.importorskip("timm")
    from timm.layers import Conv2dSame
    model = nn.Sequential(Conv2dSame(3, 4, 3, stride=2)).eval()
    graph, gm = capture(model, (torch.randn(1, 3, 9, 9),))
    x2 = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(gm(x2), model(x2), atol=1e-6)
    assert OpKind.PAD in _kinds(graph)


class IntOfShape(nn.Module):
    def forward(self, x):
        c = int(x.shape[1])                 # frozen to 3: the channel count never changes
        return x.reshape(x.size(0), c, -1).mean(-1)


def test_int_of_a_shape_is_frozen_and_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="nndct_lite"):
        graph, gm = capture(IntOfShape().eval(), (torch.randn(1, 3, 4, 4),))
    reshape = next(n for n in graph.nodes if n.kind is OpKind.RESHAPE)
    assert reshape.args[2] == 3
    assert any("frozen" in r.getMessage() for r in caplog.records)
    x = torch.randn(5, 3, 4, 4)
    assert torch.allclose(gm(x), IntOfShape()(x))


class ShapeAssert(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.skip = nn.Identity()

    def forward(self, x):
        torch._assert(x.ndim == 4, "expected NCHW")
        return self.skip(self.conv(x)) + len(x.shape)


def test_shape_assert_and_identity_leave_no_nodes():
    graph, _ = capture(ShapeAssert().eval(), (torch.randn(1, 3, 4, 4),))
    assert _kinds(graph) == [OpKind.INPUT, OpKind.CONV2D, OpKind.ADD]
    assert graph.nodes[2].args[1] == 4


# ------------------------------------------------------------------ data-dependent: still raises
class DataIf(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            return y
        return -y


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(DataIf())

    def forward(self, x):
        return self.block(x)


def test_data_dependent_if_raises_with_module_and_line():
    with pytest.raises(TraceError) as info:
        capture(Outer().eval(), (torch.randn(1, 3, 4, 4),))
    msg = str(info.value)
    assert "data-dependent" in msg and "control flow" in msg
    assert "Outer/Sequential[block]/DataIf[0]" in msg
    assert f"{THIS}:" in msg and "if y.sum() > 0:" in msg


class DataLoop(nn.Module):
    def forward(self, x):
        for _ in range(int(x.mean() * 10)):
            x = x + 1
        return x


def test_int_of_data_raises():
    with pytest.raises(TraceError) as info:
        capture(DataLoop().eval(), (torch.randn(1, 3, 4, 4),))
    assert "data-dependent" in str(info.value)
    assert "range(int(x.mean() * 10))" in str(info.value)


class ParamIf(nn.Module):
    """A condition on a parameter's value is data too (not only on the input's)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        if self.conv.weight.abs().max() > 100:
            return x
        return self.conv(x)


def test_condition_on_parameter_values_raises():
    with pytest.raises(TraceError, match="data-dependent"):
        capture(ParamIf().eval(), (torch.randn(1, 3, 4, 4),))


class LenOfTensor(nn.Module):
    def forward(self, x):
        return x * len(x)


def test_len_of_a_tensor_raises_instead_of_freezing_the_batch():
    with pytest.raises(TraceError, match="batch"):
        capture(LenOfTensor().eval(), (torch.randn(2, 3),))


def test_names_are_deterministic():
    a, _ = capture(ShapeBranch().eval(), (torch.randn(1, 3, 8, 8),))
    b, _ = capture(ShapeBranch().eval(), (torch.randn(1, 3, 8, 8),))
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    assert a.nodes[1].name == "ShapeBranch::ShapeBranch/Conv2d[conv]/ret.1"
