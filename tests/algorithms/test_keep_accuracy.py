"""ReLU6 -> ReLU (numerics.md 7.6, T24 / Example 23) and the keep-accuracy switches
(decisions.md 8: ``keep_first_last_layer_accuracy`` and ``keep_add_layer_accuracy`` do what their
names say, where vai_q_pytorch 3.5 ignores them).

T24 by hand: input 1.0 (fix position 6, code 64), conv weight 7.5 (fix position 4, code 120)
-> 7.5 before the activation; nn.ReLU6 replaced by ReLU -> 7.5, which the 8-bit output
quantizer holds exactly at fix position 4 (code 120). Kept as a clamp it would give 6.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from algo_helpers import calibrate, float_view, layer
from nndct_lite.graph.ops import CONV_LIKE, OpKind


class Relu6Net(nn.Module):
    def __init__(self, act: nn.Module | None):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.act = act
        with torch.no_grad():
            self.conv.weight.fill_(7.5)

    def forward(self, x):
        y = self.conv(x)
        return self.act(y) if self.act is not None else F.relu6(y)


X1 = torch.ones(1, 1, 1, 1)


def _t24(tmp_path, cfg, act):
    q, qt = calibrate(lambda: Relu6Net(act).eval(), X1, tmp_path, cfg, batch=1)
    with torch.no_grad():
        quantized = float(qt.quant_model(X1))
        floated = float(float_view(q)(X1))
    rewrites = json.loads((tmp_path / "resolved_config.json").read_text())["graph_rewrites"]
    return quantized, floated, rewrites.get("relu6_to_relu", [])


def test_t24_relu6_module_behaves_as_relu_by_default(tmp_path):
    quantized, floated, replaced = _t24(tmp_path, None, nn.ReLU6())
    assert floated == 7.5
    assert quantized == 7.5
    assert len(replaced) == 1 and "ReLU6[act]" in replaced[0]


@pytest.mark.parametrize("cfg, expect", [
    ({"include_cle": False}, 6.0),
    ({"include_cle": False, "convert_relu6_to_relu": False}, 6.0),
    ({"include_cle": False, "convert_relu6_to_relu": True}, 7.5),
    ({"include_cle": True, "convert_relu6_to_relu": False}, 7.5),   # CLE implies it (warning)
    ({"include_cle": True, "convert_relu6_to_relu": True}, 7.5),
])
def test_convert_relu6_to_relu_switch(tmp_path, cfg, expect):
    quantized, floated, replaced = _t24(tmp_path, cfg, nn.ReLU6())
    assert floated == expect and quantized == expect
    assert bool(replaced) is (expect == 7.5)


@pytest.mark.parametrize("act", [None, nn.Hardtanh(0.0, 6.0)])
def test_functional_relu6_and_hardtanh_stay_clamps(tmp_path, act):
    quantized, floated, replaced = _t24(tmp_path, {"convert_relu6_to_relu": True}, act)
    assert floated == 6.0 and quantized == 6.0
    assert replaced == []


def test_relu6_warning_when_cle_overrides_the_switch(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="nndct_lite"):
        _t24(tmp_path, {"include_cle": True, "convert_relu6_to_relu": False}, nn.ReLU6())
    assert any("relu6" in r.getMessage().lower() for r in caplog.records)


# ------------------------------------------------------------------ keep-accuracy switches
class Net(nn.Module):
    """conv -> relu -> [conv + skip] -> relu -> conv -> mean -> linear, and a second output
    that is an add (no quantized consumer)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.c1(x))
        z = torch.relu(self.c2(y) + y)
        w = self.c3(z)
        return self.fc(w.mean([2, 3])), w + z


def _data():
    return torch.randn(16, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def _run(tmp_path, cfg):
    torch.manual_seed(0)
    base = {"include_cle": False, "include_bias_corr": False}
    q, qt = calibrate(lambda: Net().eval(), _data(), tmp_path, {**base, **cfg}, batch=8)
    info = json.loads((tmp_path / "quant_info.json").read_text())
    return q, qt, info


def _entry(section: dict, key: str):
    """None when the tensor is float: no entry, or an entry without a fix position."""
    e = section.get(key)
    return None if e is None or e[0][1] is None else e[0]


def _compute(q):
    return [n for n in q.graph.nodes if n.kind in CONV_LIKE]


def test_default_quantizes_every_layer(tmp_path):
    q, _, info = _run(tmp_path, {})
    for n in _compute(q):
        for p in ("weight", "bias"):
            assert _entry(info["param"], f"Net::{n.param_names[p]}") is not None


def test_keep_first_last_layer_accuracy(tmp_path):
    q, qt, info = _run(tmp_path, {"keep_first_last_layer_accuracy": True})
    convs = _compute(q)
    first, last = convs[0], convs[-1]
    assert first.module_path == "c1" and last.module_path == "fc"
    for n in (first, last):
        for p in ("weight", "bias"):
            assert _entry(info["param"], f"Net::{n.param_names[p]}") is None, (n.name, p)
        assert _entry(info["output"], n.name) is None
        mod = layer(qt, n)
        assert mod._modules.get("weight_q") is None and mod._modules.get("out_q") is None
    for n in convs[1:-1]:
        assert _entry(info["param"], f"Net::{n.param_names['weight']}") is not None
    resolved = json.loads((tmp_path / "resolved_config.json").read_text())
    assert sorted(resolved["graph_rewrites"]["kept_float_by_config"]) == \
        sorted([first.name, last.name])

    # the last layer computes in float: its output is the float linear of its input
    seen = {}
    fc = layer(qt, last)
    h = fc.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    with torch.no_grad():
        qt.quant_model(_data()[:4])
    h.remove()
    torch.testing.assert_close(seen["y"], F.linear(seen["x"], fc.weight, fc.bias),
                               rtol=0, atol=0)


def test_keep_first_layer_float_output_is_requantized_for_the_next_layer(tmp_path):
    """c1 runs in float, but c2 (on the DPU) needs a quantized input: the ReLU after c1 keeps
    an output quantizer (filled as a hole), so c2 still reads an 8-bit tensor."""
    q, _, info = _run(tmp_path, {"keep_first_last_layer_accuracy": True})
    relu = q.graph.nodes[[n.module_path for n in q.graph.nodes].index("c1") + 1]
    assert relu.kind is OpKind.RELU
    assert _entry(info["output"], relu.name) is not None


def test_keep_first_layer_does_not_quantize_its_input(tmp_path):
    q, _, info = _run(tmp_path, {"keep_first_last_layer_accuracy": True})
    assert _entry(info["output"], "Net::input_0") is None


def test_keep_add_layer_accuracy(tmp_path):
    q, qt, info = _run(tmp_path, {"keep_add_layer_accuracy": True})
    adds = [n for n in q.graph.nodes if n.kind is OpKind.ADD]
    assert len(adds) == 2
    resolved = json.loads((tmp_path / "resolved_config.json").read_text())
    assert sorted(resolved["graph_rewrites"]["kept_float_by_config"]) == \
        sorted(n.name for n in adds)
    for n in adds:
        assert _entry(info["output"], n.name) is None
        assert layer(qt, n)._modules.get("out_q") is None
    # conv/linear layers stay quantized
    for n in _compute(q):
        assert _entry(info["param"], f"Net::{n.param_names['weight']}") is not None
    # the output add (w + z) is exactly the float sum of its (quantized) inputs
    seen = {}
    out_add = adds[-1]
    h = layer(qt, out_add).register_forward_hook(lambda m, a, o: seen.update(a=a, y=o))
    with torch.no_grad():
        _, s = qt.quant_model(_data()[:4])
    h.remove()
    torch.testing.assert_close(s, seen["a"][0] + seen["a"][1], rtol=0, atol=0)


def test_keep_add_off_quantizes_adds(tmp_path):
    q, qt, info = _run(tmp_path, {})
    out_add = [n for n in q.graph.nodes if n.kind is OpKind.ADD][-1]
    assert _entry(info["output"], out_add.name) is not None
