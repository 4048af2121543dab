"""Numerics at the edges, end to end (calib -> quant_info.json -> test): all-zero and constant
tensors and channels, NaN/Inf in calibration data, tiny and huge magnitudes, bit widths 2 and 16.

The invariants: calibration always writes finite, strictly valid JSON numbers (never NaN/Inf, never
a scale computed from non-finite values); a finite input never turns into inf/NaN in test mode;
every non-finite value met in calibration is reported with the node's name.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nndct_lite import CalibrationError, ExportError, torch_quantizer
from nndct_lite.quant.build import quantizers

FLT_MAX = torch.finfo(torch.float32).max
CPU_CONFIG = {
    "target_device": "CPU", "include_cle": False, "include_bias_corr": False,
    "overall_quantize_config": {"scale_type": "float", "method": "maxmin",
                                "calib_statistic_method": "max"},
    "tensor_quantize_config": {"weights": {"per_channel": True}},
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        y = F.relu(self.conv2(x)) + x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Tiny(nn.Module):
    """relu then a 1x1 conv: the model input quantizer sees the raw values."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.c(F.relu(x))


def _strict_json(text: str):
    def bad(word):
        raise AssertionError(f"quant_info.json holds the non-JSON number {word}")
    return json.loads(text, parse_constant=bad)


def _numbers(entry):
    for v in entry:
        if isinstance(v, list):
            yield from _numbers(v)
        elif v is not None:
            yield v


class Run:
    """One calibration + a test-mode quantizer on the same folder."""

    def __init__(self, tmp: Path, model: nn.Module, calib: torch.Tensor, *, config=None,
                 bitwidth=None, name="run"):
        self.dir = tmp / name
        kw = {"bitwidth": bitwidth}
        if config is not None:
            cfg = tmp / f"{name}_config.json"
            cfg.write_text(json.dumps(config))
            kw["quant_config_file"] = str(cfg)
        self.kw = kw
        self.model = model
        q = torch_quantizer("calib", model, (calib[:1],), output_dir=str(self.dir), **kw)
        q.quant_model(calib)
        q.export_quant_config()
        self.text = (self.dir / "quant_info.json").read_text()
        self.info = _strict_json(self.text)
        self.qt = torch_quantizer("test", model, (calib[:1],), output_dir=str(self.dir), **kw)
        self.example = calib[:1]

    def entry(self, key: str):
        section = self.info["param"] if key in self.info["param"] else self.info["output"]
        return section[key][0]

    def fix_pos(self, key: str):
        return self.entry(key)[1]

    def quantized(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """What the quantizer ``key`` outputs when the test model runs on ``x``."""
        seen = {}
        h = quantizers(self.qt.quant_model)[key].register_forward_hook(
            lambda m, i, o: seen.setdefault("y", o.detach().clone()))
        try:
            with torch.no_grad():
                self.qt.quant_model(x)
        finally:
            h.remove()
        return seen["y"]

    def qweight(self, key: str) -> torch.Tensor:
        """The test-mode quantized weight of quantizer ``key`` (e.g. ``Net::conv1.weight``)."""
        for m in self.qt.quant_model.modules():
            wq = m._modules.get("weight_q")
            if wq is not None and wq.key == key:
                with torch.no_grad():
                    return m._qweight().detach().clone()
        raise KeyError(key)

    def all_finite(self) -> bool:
        for section in ("param", "output", "input"):
            for entries in self.info[section].values():
                for e in entries:
                    if not all(isinstance(v, (int, float)) and math.isfinite(v)
                               for v in _numbers(e)):
                        return False
        return True


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return Net().eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(8, 3, 8, 8)


@pytest.fixture
def logged():
    messages: list[str] = []

    class H(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
    h = H(logging.WARNING)
    lg = logging.getLogger("nndct_lite")
    logging.disable(logging.NOTSET)
    old = {n: (logging.getLogger(n).level, logging.getLogger(n).disabled)
           for n in list(logging.root.manager.loggerDict) if n.startswith("nndct_lite")}
    for n in old:
        logging.getLogger(n).setLevel(logging.NOTSET)
        logging.getLogger(n).disabled = False
    lg.setLevel(logging.WARNING)
    lg.addHandler(h)
    yield messages
    lg.removeHandler(h)
    for n, (level, disabled) in old.items():
        logging.getLogger(n).setLevel(level)
        logging.getLogger(n).disabled = disabled


# ------------------------------------------------------------------ zero and constant tensors
def test_all_zero_calibration_input_gets_the_capped_fix_position(tmp_path, net):
    zeros = torch.zeros(4, 3, 8, 8)
    r = Run(tmp_path, net, zeros)
    assert r.fix_pos("Net::input_0") == 12            # numerics.md T7: raw 18, capped to 12
    assert r.all_finite()
    y = r.qt.quant_model(zeros)
    assert torch.isfinite(y).all()
    assert torch.equal(r.quantized("Net::input_0", zeros), zeros)


def test_all_zero_weight_channel_dpu(tmp_path, x):
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.conv2.weight[3] = 0
    r = Run(tmp_path, m, x)
    assert r.all_finite()
    assert isinstance(r.fix_pos("Net::conv2.weight"), int)
    assert torch.isfinite(r.qt.quant_model(x)).all()
    qw = r.qweight("Net::conv2.weight")
    assert torch.count_nonzero(qw[3]) == 0 and torch.count_nonzero(qw) > 0


def test_all_zero_weight_channel_per_channel_scale_is_usable(tmp_path, x):
    """A per-channel float scale of an all-zero channel is stored as 0 (as the original does)
    and used as 2^-18 (numerics.md 3.1); nothing turns into inf/NaN and the channel stays 0."""
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.conv1.weight[2] = 0
    r = Run(tmp_path, m, x, config=CPU_CONFIG)
    assert r.all_finite()
    bw, scales, zps, fmax = r.entry("Net::conv1.weight")
    assert len(scales) == 8 and scales[2] == 0.0 and all(s > 0 for i, s in enumerate(scales)
                                                          if i != 2)
    y = r.qt.quant_model(x)
    assert torch.isfinite(y).all()
    qw = r.qweight("Net::conv1.weight")
    assert torch.count_nonzero(qw[2]) == 0 and torch.isfinite(qw).all()


def test_constant_tensor_is_represented_exactly(tmp_path, net):
    fives = torch.full((4, 3, 8, 8), 5.0)
    r = Run(tmp_path, net, fives)
    assert r.fix_pos("Net::input_0") == 4             # 5 * 2^4 = 80 <= 127; 2^5 would clip
    assert torch.equal(r.quantized("Net::input_0", fives), fives)
    c = Run(tmp_path, net, fives, config=CPU_CONFIG, name="cpu")
    bw, scale, zp, fmax = c.entry("Net::input_0")
    assert fmax == 5.0 and zp == 0 and scale == pytest.approx(5.0 / 127)
    assert torch.allclose(c.quantized("Net::input_0", fives), fives, rtol=1e-6, atol=0)


def test_all_zero_activation_float_scale(tmp_path, net):
    zeros = torch.zeros(2, 3, 8, 8)
    r = Run(tmp_path, net, zeros, config=CPU_CONFIG)
    assert r.all_finite()
    assert r.entry("Net::input_0")[1] == 0.0          # stored as the original does; used as 2^-18
    assert torch.isfinite(r.qt.quant_model(torch.randn(2, 3, 8, 8))).all()


# ------------------------------------------------------------------ NaN / Inf in calibration
def _poisoned(x: torch.Tensor) -> torch.Tensor:
    """``x`` with NaN, +inf and -inf at positions that are not the extremes of ``x``."""
    p = x.clone()
    for idx, v in (((0, 0, 3, 3), float("nan")), ((1, 1, 1, 1), float("inf")),
                   ((2, 2, 2, 2), -float("inf"))):
        assert abs(float(x[idx])) < float(x.abs().max())
        p[idx] = v
    return p


@pytest.mark.parametrize("config", [None, CPU_CONFIG], ids=["dpu", "cpu_float"])
def test_nan_inf_never_enter_a_scale_and_are_reported_by_node(tmp_path, net, x, config, logged):
    clean = Run(tmp_path, net, x, config=config, name="clean")
    logged.clear()
    dirty = Run(tmp_path, net, _poisoned(x), config=config, name="dirty")
    assert dirty.all_finite()
    assert "NaN" not in dirty.text and "Infinity" not in dirty.text
    # the model input's statistic ignores exactly the non-finite values
    assert dirty.entry("Net::input_0") == clean.entry("Net::input_0")
    # weights do not see calibration data
    for k in clean.info["param"]:
        if k.endswith(".weight"):
            assert dirty.entry(k) == clean.entry(k), k
    reports = [m for m in logged if "QUANTIZER_TORCH_TENSOR_VALUE_INVALID" in m]
    assert any("Net::input_0" in m for m in reports), logged
    for m in reports:
        assert "Net::" in m and "NaN/Inf" in m
    y = dirty.qt.quant_model(x)
    assert torch.isfinite(y).all()


def test_nan_report_is_given_once_per_node(tmp_path, net, x, logged):
    q = torch_quantizer("calib", net, (x[:1],), output_dir=str(tmp_path / "r"))
    q.quant_model(_poisoned(x))
    q.quant_model(_poisoned(x))
    q.export_quant_config()
    q.export_quant_config()
    reports = [m for m in logged if "QUANTIZER_TORCH_TENSOR_VALUE_INVALID" in m and
               "Net::input_0 " in m]
    assert len(reports) == 1 and "2 calibration batch" in reports[0]


def test_node_without_any_finite_value_blocks_deploy(tmp_path, net, x, logged):
    d = tmp_path / "allnan"
    q = torch_quantizer("calib", net, (x[:1],), output_dir=str(d))
    q.quant_model(torch.full((2, 3, 8, 8), float("nan")))
    try:
        q.export_quant_config()
    except CalibrationError as exc:
        assert "Net::input_0" in str(exc) and exc.hint
        return
    assert any("Net::input_0" in m for m in logged)
    qt = torch_quantizer("test", net, (x[:1],), output_dir=str(d))
    qt.quant_model(x)
    with pytest.raises(ExportError) as err:
        qt.export_xmodel(output_dir=str(d))
    assert "Net::input_0" in str(err.value) and err.value.hint


# ------------------------------------------------------------------ tiny and huge magnitudes
def test_tiny_magnitudes_quantize_to_zero_with_the_cap(tmp_path, net, x):
    tiny = x * 1e-30
    r = Run(tmp_path, net, tiny)
    assert r.fix_pos("Net::input_0") == 12
    assert r.all_finite()
    assert torch.equal(r.quantized("Net::input_0", tiny), torch.zeros_like(tiny))
    assert torch.isfinite(r.qt.quant_model(tiny)).all()


def test_subnormal_magnitudes_are_calibrated_like_zero(tmp_path, net, x):
    sub = x * 1e-40                                     # max|x| below ~3.7e-37 (numerics.md)
    r = Run(tmp_path, net, sub)
    assert r.fix_pos("Net::input_0") == 12 and r.all_finite()
    assert torch.isfinite(r.qt.quant_model(sub)).all()


def test_subnormal_magnitudes_float_scale(tmp_path, net, x):
    sub = x * 1e-40
    r = Run(tmp_path, net, sub, config=CPU_CONFIG)
    assert r.all_finite()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        y = r.qt.quant_model(sub)
    assert torch.isfinite(y).all()
    out = r.qt.export_onnx_model(output_dir=str(r.dir))
    assert Path(out).is_file()


@pytest.mark.parametrize("config", [None, CPU_CONFIG], ids=["dpu", "cpu_float"])
def test_huge_magnitudes(tmp_path, net, x, config):
    huge = x * 1e30
    r = Run(tmp_path, net, huge, config=config)
    assert r.all_finite()
    if config is None:
        fp = r.fix_pos("Net::input_0")
        assert -100 <= fp <= -90
    q = r.quantized("Net::input_0", huge)
    assert torch.isfinite(q).all()
    step = float(huge.abs().max()) / 64
    assert float((q - huge).abs().max()) <= step
    assert torch.isfinite(r.qt.quant_model(huge)).all()


def test_near_float32_max_is_quantized_within_a_step(tmp_path):
    """3e38 fits the 8-bit grid at fix position -121 (113 * 2^121): finite and within half a
    step, not clipped to a coarser grid."""
    x = torch.ones(1, 3, 4, 4)
    x[0, 0, 0, 0] = 3.0e38
    r = Run(tmp_path, Tiny().eval(), x)
    fp = r.fix_pos("Tiny::input_0")
    q = r.quantized("Tiny::input_0", x)
    assert torch.isfinite(q).all()
    assert abs(float(q[0, 0, 0, 0]) - 3.0e38) <= 2.0 ** (-fp) / 2


@pytest.mark.parametrize("v", [FLT_MAX, -FLT_MAX], ids=["plus", "minus"])
def test_float32_max_never_becomes_inf(tmp_path, v):
    x = torch.ones(1, 3, 4, 4)
    x[0, 0, 0, 0] = v
    r = Run(tmp_path, Tiny().eval(), x)
    assert torch.isfinite(r.quantized("Tiny::input_0", x)).all()


# ------------------------------------------------------------------ bit widths 2 and 16
@pytest.mark.parametrize("bw", [2, 16])
def test_extreme_bit_widths_end_to_end(tmp_path, net, x, bw):
    r = Run(tmp_path, net, x, bitwidth=bw)
    assert r.all_finite()
    for section in ("param", "output"):
        for k, (entry,) in r.info[section].items():
            assert entry[0] == bw, k
            if entry[1] is not None:
                assert entry[1] <= (12 if bw <= 8 else 15)
    qin = r.quantized("Net::input_0", x)
    fp = r.fix_pos("Net::input_0")
    codes = qin * 2.0 ** fp
    assert torch.equal(codes, codes.round())
    lo, hi = -(2 ** (bw - 1)), 2 ** (bw - 1) - 1
    assert float(codes.min()) >= lo and float(codes.max()) <= hi
    if bw == 2:
        assert len(torch.unique(qin)) <= 4
        assert len(torch.unique(r.qweight("Net::conv1.weight"))) <= 4
    y = r.qt.quant_model(x)
    assert torch.isfinite(y).all()
    xm = r.qt.export_xmodel(output_dir=str(r.dir))
    assert Path(xm).is_file()


def test_sixteen_bits_is_closer_to_float_than_eight(tmp_path, net, x):
    with torch.no_grad():
        ref = net(x)
    err = {}
    for bw in (8, 16):
        r = Run(tmp_path, net, x, bitwidth=bw, name=f"bw{bw}")
        with torch.no_grad():
            err[bw] = float((r.qt.quant_model(x) - ref).abs().max())
    assert err[16] < err[8] / 20
