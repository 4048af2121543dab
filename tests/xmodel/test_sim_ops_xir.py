"""Issue 21: one small XGraph per op type the exporter may write. Each is written with our writer,
loaded by the real XIR library (``../shared/xir/check_xmodel.py``: loads, and XIR's own shape
inference agrees with every stored shape, which pins down the attribute orders {w, h, d} and
pads), and run by the simulator (whose shape check compares every result with the stored dims).
The XIR part skips when ../shared is absent; the simulator part always runs."""
from __future__ import annotations


import numpy as np
import pytest

from nndct_lite.xmodel import Attr, DataType, XOp, XTensor, const_op, data_op, write_xmodel

from _sim_builder import GraphBuilder
from _xmodel_testlib import run_xir_check

X4 = [1, 4, 6, 4]  # NHWC input of the 4-D cases


def _param(b, name, shape, fp=4, seed=0):
    codes = np.random.default_rng(seed).integers(-8, 8, shape)
    return b.param(name, codes, fp)


def _unary(type_, in_shape=X4, out=None, **attrs):
    def build(b):
        shape = in_shape
        x = b.input("x", shape, 4)
        b.op("op", type_, x, out or shape, **attrs)
        return {"x": shape}
    return build


def _conv(type_, w_shape, out, **attrs):
    def build(b):
        a = dict(attrs)
        x = b.input("x", a.pop("in_shape", X4), 4)
        w = _param(b, "w", w_shape)
        bias = _param(b, "b", [out[-1]], 6, seed=1)
        b.op("op", type_, {"input": [x], "weights": [w], "bias": [bias]}, out, **a)
        return {"x": b.g.op("x").output.shape}
    return build


def _binary(type_, y_shape, out=X4):
    def build(b):
        x = b.input("x", X4, 4)
        y = b.input("y", y_shape, 3)
        b.op("op", type_, [x, y], out)
        return {"x": X4, "y": y_shape}
    return build


def _div(b):
    x = b.input("x", X4, 4)
    b.const("k", [3.0])
    b.op("op", "div", [x, "k"], X4)
    return {"x": X4}


def _matmul(b):
    x = b.input("x", [1, 8], 4)
    w = _param(b, "w", [3, 8])
    bias = _param(b, "b", [3], 6)
    b.op("op", "matmul", {"input": [x, w], "bias": [bias]}, [1, 3], transpose_a=False,
         transpose_b=True)
    return {"x": [1, 8]}


def _prelu(b):
    x = b.input("x", X4, 4)
    w = _param(b, "w", [4], 3)
    b.op("op", "prelu", {"input": [x], "weight": [w]}, X4)
    return {"x": X4}


def _scale(b):
    x = b.input("x", X4, 4)
    s = _param(b, "s", [4], 3)
    b.op("op", "scale", {"input": [x], "scale": [s]}, X4, axis=-1)
    return {"x": X4}


def _concat(b):
    x = b.input("x", X4, 4)
    y = b.input("y", [1, 4, 6, 2], 3)
    b.op("op", "concat", [x, y], [1, 4, 6, 6], axis=3)
    return {"x": X4, "y": [1, 4, 6, 2]}


def _cpu_mean(b):
    x = b.input("x", X4, 4)
    b.op("t", "transpose", x, [1, 4, 4, 6], order=[0, 3, 1, 2])
    b.op("op", "aten::mean", "t", [1, 4, 1, 1], shape=[1, 4, 1, 1], data_type="FLOAT32")
    return {"x": X4}


def _fix_t(shape, fp):
    return XTensor("", tuple(shape), DataType.XINT, 8, {"fix_point": Attr.int32(fp)})


def _fixed(type_, **attrs):
    """Compiled DPU ops: data-fix / const-fix inputs, xint8 tensors with a fix_point attr."""
    def build(b):
        d = data_op("x", X4, "xint8", fixed=True)
        d.output = XTensor("x", tuple(X4), DataType.XINT, 8, {"fix_point": Attr.int32(4)})
        b.g.add(d)
        if type_ == "conv2d-fix":
            w = const_op("w", np.random.default_rng(0).integers(-8, 8, (3, 1, 3, 4)).astype(np.int8),
                         fixed=True, data_type="xint8")
            w.output.attrs["fix_point"] = Attr.int32(5)
            b.g.add(w)
            ins, out = {"input": ["x"], "weights": ["w"]}, [1, 4, 4, 3]
        elif type_ == "eltwise-fix":
            ins, out = {"input": ["x", "x"]}, X4
        else:
            ins, out = {"input": ["x"]}, [1, 2, 3, 4]
        t = _fix_t(out, 3)
        b.g.add(XOp("op", type_, dict(attrs), ins,
                    XTensor("op", tuple(out), t.data_type, 8, t.attrs)))
        return {"x": X4}
    return build


CASES = {
    "conv2d": _conv("conv2d", [6, 3, 2, 2], [1, 3, 3, 6], kernel=[2, 3], stride=[2, 1],
                    dilation=[1, 1], pad=[1, 0, 1, 0], pad_mode="FLOOR", group=2),
    "conv2d-same": _conv("conv2d", [4, 3, 3, 4], [1, 2, 3, 4], kernel=[3, 3], stride=[2, 2],
                         pad=[0, 0, 0, 0], pad_mode="SAME"),
    "depthwise-conv2d": _conv("depthwise-conv2d", [1, 3, 3, 4], [1, 4, 6, 4], kernel=[3, 3],
                              stride=[1, 1], pad=[1, 1, 1, 1], pad_mode="FLOOR"),
    "transposed-conv2d": _conv("transposed-conv2d", [3, 3, 2, 4], [1, 7, 10, 3], kernel=[2, 3],
                               stride=[2, 2], pad=[1, 1, 1, 1], pad_mode="FLOOR"),
    "conv3d": _conv("conv3d", [3, 2, 3, 2, 2], [1, 3, 2, 4, 3], in_shape=[1, 4, 6, 5, 2],
                    kernel=[3, 2, 2], stride=[2, 1, 1], pad=[0, 0, 0, 0, 0, 0], pad_mode="FLOOR"),
    "depthwise-conv3d": _conv("depthwise-conv3d", [1, 2, 2, 3, 2], [1, 3, 5, 3, 2],
                              in_shape=[1, 4, 6, 5, 2], kernel=[2, 2, 3], stride=[1, 1, 1],
                              pad=[0, 0, 0, 0, 0, 0], pad_mode="FLOOR"),
    "transposed-conv3d": _conv("transposed-conv3d", [3, 2, 2, 2, 2], [1, 8, 12, 6, 3],
                               in_shape=[1, 4, 6, 5, 2], kernel=[2, 2, 2], stride=[2, 2, 1],
                               pad=[0, 0, 0, 0, 0, 0], pad_mode="FLOOR"),
    "conv1d": _conv("conv1d", [3, 3, 4], [1, 3, 3], in_shape=[1, 6, 4], kernel=[3], stride=[2],
                    pad=[1, 0], pad_mode="FLOOR"),
    "maxpool2d-ceil": _unary("maxpool2d", out=[1, 2, 3, 4], kernel=[3, 3], stride=[2, 2],
                             pad=[0, 0, 0, 0], pad_mode="CEIL"),
    "avgpool2d-pad": _unary("avgpool2d", out=[1, 4, 6, 4], kernel=[3, 3], stride=[1, 1],
                            pad=[1, 1, 1, 1], pad_mode="FLOOR", count_include_pad=False),
    "avgpool2d-global": _unary("avgpool2d", out=[1, 1, 1, 4], kernel=[6, 4], stride=[6, 4],
                               pad_mode="FLOOR", **{"global": True}),
    "add": _binary("add", X4), "sub": _binary("sub", [1, 1, 1, 4]),
    "mul-se": _binary("mul", [1, 1, 1, 4]), "max": _binary("max", X4), "min": _binary("min", X4),
    "div": _div, "concat": _concat, "matmul": _matmul, "prelu": _prelu, "scale": _scale,
    "reshape": _unary("reshape", out=[1, 24, 4], **{"shape": [1, 24, 4]}),
    "flatten": _unary("flatten", out=[1, 96], start_axis=1, end_axis=-1),
    "transpose": _unary("transpose", out=[1, 4, 4, 6], order=[0, 3, 1, 2]),
    "squeeze": _unary("squeeze", in_shape=[1, 1, 1, 4], out=[1, 4], axis=[1, 2]),
    "strided_slice": _unary("strided_slice", out=[1, 2, 3, 2], begin=[0, 1, 0, 0],
                            end=[1, 4, 6, 4], strides=[1, 2, 2, 2]),
    "pad-constant": _unary("pad", out=[1, 5, 8, 4], paddings=[0, 0, 1, 0, 1, 1, 0, 0],
                           mode="CONSTANT", constant_values=[0.0] * 8),
    "pad-reflect": _unary("pad", out=[1, 6, 7, 4], paddings=[0, 0, 1, 1, 0, 1, 0, 0], mode="REFLECT"),
    "pad-symmetric": _unary("pad", out=[1, 6, 7, 4], paddings=[0, 0, 1, 1, 0, 1, 0, 0],
                            mode="SYMMETRIC"),
    "resize-nearest": _unary("resize", out=[1, 8, 12, 4], mode="NEAREST", scale=[2.0, 2.0]),
    "resize-bilinear-ac": _unary("resize", out=[1, 8, 12, 4], mode="BILINEAR", align_corners=True,
                                 scale=[2.0, 2.0]),
    "resize-bilinear-hp": _unary("resize", out=[1, 8, 12, 4], mode="BILINEAR",
                                 half_pixel_centers=True, scale=[2.0, 2.0]),
    "upsample-fix": _unary("upsample-fix", out=[1, 8, 12, 4], mode="NEAREST", scale=[2.0, 2.0]),
    "reduction_mean-keep": _unary("reduction_mean", out=[1, 1, 1, 4], axis=[1, 2], keep_dims=True),
    "reduction_mean": _unary("reduction_mean", out=[1, 4], axis=[1, 2], keep_dims=False),
    "reduction_max": _unary("reduction_max", out=[1, 1, 1, 4], axis=[1, 2], keep_dims=True),
    "softmax": _unary("softmax", axis=-1),
    "leaky-relu": _unary("leaky-relu", alpha=26 / 256),
    **{t: _unary(t) for t in ("relu", "relu6", "hard-sigmoid", "hard-swish", "hard-sigmoid-fix",
                              "hard-tanh", "sigmoid", "tanh", "gelu", "swish", "mish", "elu",
                              "selu", "celu", "exp", "neg", "identity")},
    "aten::mean": _cpu_mean,
    "conv2d-fix": _fixed("conv2d-fix", kernel=[3, 1], stride=[1, 1], pad=[0, 0, 0, 0],
                         nonlinear="RELU"),
    "eltwise-fix": _fixed("eltwise-fix", type="ADD", nonlinear="RELU"),
    "pool-fix": _fixed("pool-fix", kernel=[2, 2], stride=[2, 2], type="AVG"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_loads_in_xir_and_runs_in_the_simulator(case, tmp_path):
    b = GraphBuilder("op_" + "".join(c if c.isalnum() else "_" for c in case))
    ins = CASES[case](b)
    g = np.random.default_rng(7)
    feeds = {k: g.integers(-16, 16, (2,) + tuple(s[1:])) / 8.0 for k, s in ins.items()}
    sim = b.sim()                             # checks every simulated shape against the stored one
    out = sim.run(feeds, outputs=["op"])["op"]
    assert out.shape[0] == 2 and np.all(np.isfinite(out))
    path = write_xmodel(b.g, tmp_path / "op.xmodel", allow_unregistered=case.startswith("aten::"))
    r = run_xir_check(path, brief=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
