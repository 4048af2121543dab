"""Convolution / pooling kernels of the simulator against torch (exact on integer codes), through
real xmodel ops, so the {w, h} attribute order and pad semantics are covered; XIR's own shape
inference must agree with the stored shapes."""

import numpy as np
import pytest

from nndct_lite.xmodel import XGraph, XOp, XTensor, const_op, data_op, fix_op, write_xmodel
from nndct_lite.sim import Fixed, Simulator
from nndct_lite.sim.kernels import conv_out_size

from _xmodel_testlib import run_xir_check

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):  # NHWC int -> NCHW float64 tensor
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)).astype(np.float64))


def _n(t):  # NCHW tensor -> NHWC int64
    return t.numpy().transpose(0, 2, 3, 1).round().astype(np.int64)


CASES = [
    # name, op type, in (h, w, c), weights shape, kernel (h, w), stride (h, w), dilation (h, w), pad (l, r, t, b), group
    ("c_plain", "conv2d", (7, 9, 4), (6, 3, 3, 4), (1, 1), (1, 1), (1, 1, 1, 1), 1),
    ("c_odd", "conv2d", (7, 9, 4), (6, 3, 2, 2), (2, 1), (1, 2), (1, 0, 2, 1), 2),
    ("c_1x5", "conv2d", (6, 10, 3), (5, 1, 5, 3), (1, 3), (1, 1), (2, 2, 0, 0), 1),
    ("dw_m1", "depthwise-conv2d", (8, 8, 5), (1, 3, 3, 5), (2, 2), (1, 1), (1, 1, 1, 1), 1),
    ("dw_m2", "depthwise-conv2d", (6, 7, 3), (2, 3, 2, 3), (1, 2), (2, 1), (0, 1, 2, 2), 1),
    ("tc_s2", "transposed-conv2d", (4, 5, 3), (4, 3, 3, 3), (2, 2), (1, 1), (1, 0, 1, 0), 1),
    ("tc_odd", "transposed-conv2d", (3, 4, 2), (3, 2, 3, 2), (2, 3), (1, 1), (0, 0, 1, 1), 1),
    ("tdw", "transposed-depthwise-conv2d", (4, 4, 3), (1, 3, 3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),
]


def _out_hw(kind, h, w, wshape, stride, dil, pad):
    kh, kw = wshape[1], wshape[2]
    l, r, t, b = pad
    if kind.startswith("transposed"):
        return ((h - 1) * stride[0] + (kh - 1) * dil[0] + 1 - t - b,
                (w - 1) * stride[1] + (kw - 1) * dil[1] + 1 - l - r)
    return (conv_out_size(h, kh, stride[0], dil[0], t, b, "FLOOR"),
            conv_out_size(w, kw, stride[1], dil[1], l, r, "FLOOR"))


def _out_c(kind, wshape):
    if kind in ("depthwise-conv2d", "transposed-depthwise-conv2d"):
        return wshape[0] * wshape[3]
    return wshape[0]


def _build(cases, rng):
    g = XGraph("kernels")
    data = {}
    for name, kind, (h, w, c), ws, stride, dil, pad, group in cases:
        xs = [1, h, w, c]
        g.add(data_op(f"{name}_x", xs))
        g.add(fix_op(f"{name}_xf", f"{name}_x", xs, 0))
        wc = rng.integers(-128, 128, size=ws)
        g.add(const_op(f"{name}_w", wc.astype(np.float32)))
        g.add(fix_op(f"{name}_wf", f"{name}_w", list(ws), 0))
        oc = _out_c(kind, ws)
        bc = rng.integers(-128, 128, size=oc)
        g.add(const_op(f"{name}_b", bc.astype(np.float32)))
        g.add(fix_op(f"{name}_bf", f"{name}_b", [oc], 0))
        oh, ow = _out_hw(kind, h, w, ws, stride, dil, pad)
        attrs = {"kernel": [ws[2], ws[1]], "stride": [stride[1], stride[0]],
                 "dilation": [dil[1], dil[0]], "pad": list(pad), "pad_mode": "FLOOR"}
        if kind == "conv2d":
            attrs["group"] = group
        g.add(XOp(name, kind, attrs, {"input": [f"{name}_xf"], "weights": [f"{name}_wf"],
                                      "bias": [f"{name}_bf"]}, XTensor(name, (1, oh, ow, oc))))
        data[name] = (wc, bc)
    return g, data


def _torch_ref(kind, x, wc, bc, stride, dil, pad, group):
    l, r, t, b = pad
    xt = _t(x)
    if kind in ("conv2d", "depthwise-conv2d"):
        xt = F.pad(xt, (l, r, t, b))
        if kind == "conv2d":
            wt = torch.from_numpy(wc.transpose(0, 3, 1, 2).astype(np.float64))
            y = F.conv2d(xt, wt, None, stride, 0, dil, group)
        else:  # weights (M, kh, kw, C) -> torch (C*M, 1, kh, kw), output channel c*M + m
            m, kh, kw, c = wc.shape
            wt = torch.from_numpy(wc.transpose(3, 0, 1, 2).reshape(c * m, 1, kh, kw).astype(np.float64))
            y = F.conv2d(xt, wt, None, stride, 0, dil, c)
    else:
        if kind == "transposed-conv2d":  # (O, kh, kw, I) -> torch (I, O, kh, kw)
            wt = torch.from_numpy(wc.transpose(3, 0, 1, 2).astype(np.float64))
            groups = 1
        else:
            m, kh, kw, c = wc.shape
            wt = torch.from_numpy(wc.transpose(3, 0, 1, 2).reshape(c, m, kh, kw).astype(np.float64))
            groups = c
        y = F.conv_transpose2d(xt, wt, None, stride, 0, 0, groups, dil)
        y = y[:, :, t:y.shape[2] - b, l:y.shape[3] - r]
    return _n(y) + bc.reshape(1, 1, 1, -1)


def test_conv_kernels_match_torch():
    rng = np.random.default_rng(1)
    g, data = _build(CASES, rng)
    sim = Simulator(g)  # also checks every simulated shape against the stored one
    feeds = {}
    for name, kind, (h, w, c), *_ in CASES:
        feeds[f"{name}_x"] = rng.integers(-128, 128, size=(2, h, w, c)).astype(np.float64)
    vals = sim.run_values(feeds, layout="NHWC", outputs=[c[0] for c in CASES])
    for name, kind, _, ws, stride, dil, pad, group in CASES:
        v = vals[name]
        assert isinstance(v, Fixed) and v.fp == 0, name
        wc, bc = data[name]
        ref = _torch_ref(kind, feeds[f"{name}_x"].astype(np.int64), wc, bc, stride, dil, pad, group)
        assert np.array_equal(v.codes, ref), name


def test_conv_shapes_agree_with_xir(tmp_path):
    g, _ = _build(CASES, np.random.default_rng(1))
    r = run_xir_check(write_xmodel(g, tmp_path / "kernels.xmodel"), brief=True)
    assert r.returncode == 0 and "0 mismatch(es)" in r.stdout, r.stdout[-3000:]


def test_large_accumulators_switch_to_exact_dtypes():
    from nndct_lite.sim.kernels import conv2d, exact_matmul
    rng = np.random.default_rng(2)
    x = rng.integers(-(1 << 15), 1 << 15, size=(1, 5, 5, 64))
    w = rng.integers(-(1 << 15), 1 << 15, size=(3, 3, 3, 64))
    y = conv2d(x, w, (1, 1), (1, 1), (1, 1, 1, 1))
    ref = _n(F.conv2d(F.pad(_t(x), (1, 1, 1, 1)), torch.from_numpy(w.transpose(0, 3, 1, 2).astype(np.float64))))
    assert np.array_equal(y, ref)  # float64 path (bound < 2^53)
    a = rng.integers(-(1 << 28), 1 << 28, size=(4, 8))
    b = rng.integers(-(1 << 28), 1 << 28, size=(8, 3))
    assert np.array_equal(exact_matmul(a, b), (a.astype(object) @ b.astype(object)).astype(np.int64))
    from nndct_lite.sim import SimError
    with pytest.raises(SimError, match="overflow"):
        exact_matmul(a << 4, b << 4)


def test_pool_kernels_match_torch():
    from nndct_lite.sim.kernels import pool2d
    rng = np.random.default_rng(3)
    x = rng.integers(-50, 50, size=(2, 7, 6, 3))
    m, _ = pool2d(x, "MAX", (3, 2), (2, 2), (0, 1, 1, 1))
    ref = F.max_pool2d(F.pad(_t(x), (0, 1, 1, 1), value=-1e9), (3, 2), (2, 2))
    assert np.array_equal(m, _n(ref))
    s, div = pool2d(x, "AVG", (3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=False)
    ref = F.avg_pool2d(_t(x), 3, 2, 1, count_include_pad=False).numpy().transpose(0, 2, 3, 1)
    assert np.allclose(s / div, ref)
    s, div = pool2d(x, "AVG", (2, 2), (2, 2), (0, 0, 0, 0), mode="CEIL")
    ref = F.avg_pool2d(_t(x), 2, 2, 0, ceil_mode=True, divisor_override=4).numpy().transpose(0, 2, 3, 1)
    assert div == 4 and np.allclose(s / div, ref)
