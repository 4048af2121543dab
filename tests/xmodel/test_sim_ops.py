"""Issue 21: every op type the exporter may write, on tiny arrays with hand-computed results.

Inputs are chosen on the grid of their fix so the quantized input equals the given value; the
expected outputs are worked out by hand in the comments (DPU rules: numerics.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nndct_lite.sim import SimError, Simulator, supported_op_types
from nndct_lite.sim.ops_pool import dpu_avg_multiplier
from nndct_lite.xmodel import Attr

from _sim_builder import GraphBuilder

torch = pytest.importorskip("torch")


def _act(type_, xs, fi, fo, **attrs):
    b = GraphBuilder()
    x = b.input("x", [1, len(xs)], fi)
    b.op("a", type_, x, [1, len(xs)], **attrs)
    b.fix("out", "a", fo)
    return b.run(np.asarray(xs, float)[None]).reshape(-1).tolist()


# -- activations ------------------------------------------------------------------------------

def test_hard_sigmoid_xir_and_dpu_forms():
    # relu6(x+3)/6: -4 -> 0; -1.5 -> 0.25; 0.5 -> 3.5/6 = .5833 -> fp 7: 74.67 -> 75
    assert _act("hard-sigmoid", [-4.0, -1.5, 0.5], 1, 7) == [0.0, 0.25, 75 / 128]
    # DPU form relu6(x+3)*2731/2^14: 0.5 -> 3.5*2731/16384 = 0.58340 -> 74.68 -> 75; -1.5 -> 0.25003 -> 32
    assert _act("hard-sigmoid-fix", [-4.0, -1.5, 0.5], 1, 7) == [0.0, 0.25, 75 / 128]
    # 2.0 -> 5/6 = .8333 -> 106.67 -> 107 (/6) ; 5*2731/16384 = .83344 -> 106.68 -> 107
    assert _act("hard-sigmoid", [2.0], 1, 7) == _act("hard-sigmoid-fix", [2.0], 1, 7) == [107 / 128]


def test_hard_swish_relu_family_prelu():
    # x*relu6(x+3)/6: 2 -> 10/6 = 1.667 -> fp 5: 53.33 -> 53; -2 -> -2/6 -> -10.67 -> -11; 4 -> 4
    assert _act("hard-swish", [2.0, -2.0, 4.0, -3.5], 1, 5) == [53 / 32, -11 / 32, 3.96875, 0.0]
    assert _act("relu6", [7.0, -0.5, 2.5], 1, 1) == [6.0, 0.0, 2.5]
    assert _act("relu", [-0.5, 2.5], 1, 1) == [0.0, 2.5]
    assert _act("hard-tanh", [1.5, -2.0, 0.5], 1, 1) == [1.0, -1.0, 0.5]
    # leaky 26/256: -1.5 -> -0.15234375 -> fp 7: -19.5 -> ties up -> -19
    assert _act("leaky-relu", [-1.5, 1.5], 1, 7, alpha=26 / 256) == [-19 / 128, 127 / 128]
    b = GraphBuilder()
    x = b.input("x", [1, 1, 1, 2], 2)
    w = b.param("w", [1, -2], 2)  # slopes 0.25, -0.5
    b.op("p", "prelu", {"input": [x], "weight": [w]}, [1, 1, 1, 2])
    b.fix("out", "p", 3)
    # -2 * 0.25 = -0.5 ; -1 * -0.5 = 0.5
    assert b.run(np.array([-2.0, -1.0]).reshape(1, 1, 1, 2)).reshape(-1).tolist() == [-0.5, 0.5]


@pytest.mark.parametrize("type_,fn", [
    ("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("swish", torch.nn.functional.silu),
    ("gelu", torch.nn.functional.gelu), ("mish", torch.nn.functional.mish),
    ("elu", torch.nn.functional.elu), ("selu", torch.selu), ("celu", torch.celu)])
def test_float_activations_match_torch_then_fix(type_, fn):
    xs = np.arange(-16, 17, dtype=np.float64) / 4
    got = _act(type_, xs.tolist(), 2, 6)
    ref = fn(torch.from_numpy(xs)).numpy()
    # the fix rounds the float64 result: equal to rounding torch's float64 value (DPU_ROUND)
    exp = np.clip(np.floor(ref * 64 + 0.5), -128, 127) / 64
    assert got == exp.tolist()


def test_softmax_and_float_ops_are_reported():
    b = GraphBuilder()
    x = b.input("x", [1, 3], 2)
    b.op("s", "softmax", x, [1, 3], axis=-1)
    b.fix("out", "s", 7)
    sim = b.sim()
    out = sim(np.array([[0.0, 0.0, np.log(2) // 0.25 * 0.25]]))
    e = np.exp([0.0, 0.0, 0.5])
    assert out.reshape(-1).tolist() == (np.floor(e / e.sum() * 128 + 0.5) / 128).tolist()
    assert sim.float_ops == ["s"]


# -- convolutions -----------------------------------------------------------------------------

def test_conv3d_depth_taps_by_hand():
    # NHWDC input 1x1x1x3x1 codes [1, 2, 3] (fp 0), kernel {w,h,d} = {1,1,2}, weights [1, 2]:
    # out[d] = x[d] + 2 x[d+1] = [5, 8]; stride d 1, no pad
    b = GraphBuilder()
    x = b.input("x", [1, 1, 1, 3, 1], 0)
    w = b.param("w", np.array([1, 2]).reshape(1, 1, 1, 2, 1), 0)
    b.op("c", "conv3d", {"input": [x], "weights": [w]}, [1, 1, 1, 2, 1], kernel=[1, 1, 2],
         stride=[1, 1, 1], pad=[0] * 6, pad_mode="FLOOR")
    b.fix("out", "c", 0)
    assert b.run(np.array([1.0, 2, 3]).reshape(1, 1, 1, 3, 1)).reshape(-1).tolist() == [5, 8]


@pytest.mark.parametrize("kind", ["conv3d", "depthwise-conv3d", "transposed-conv3d", "conv1d"])
def test_conv_variants_equal_torch_on_integers(kind):
    g = np.random.default_rng(3)
    b = GraphBuilder()
    if kind == "conv1d":
        xt = g.integers(-8, 8, (2, 3, 7))                   # torch NCL
        wt = g.integers(-4, 4, (4, 3, 3))
        ref = torch.nn.functional.conv1d(torch.tensor(xt.astype(float)), torch.tensor(wt.astype(float)),
                                         stride=2, padding=1).numpy()
        x_st, w_st, ref_st = xt.transpose(0, 2, 1), wt.transpose(0, 2, 1), ref.transpose(0, 2, 1)
        attrs = dict(kernel=[3], stride=[2], pad=[1, 1], pad_mode="FLOOR")
    else:
        xt = g.integers(-8, 8, (2, 2, 3, 4, 5))              # torch NCDHW
        tr = kind.startswith("transposed")
        dw = kind.startswith("depthwise")
        wshape = (2, 1, 2, 3, 2) if dw else ((2, 3, 2, 3, 2) if tr else (3, 2, 2, 3, 2))
        wt = g.integers(-4, 4, wshape)
        F = torch.nn.functional
        if tr:
            ref = F.conv_transpose3d(torch.tensor(xt.astype(float)), torch.tensor(wt.astype(float)),
                                     stride=(2, 1, 2), padding=(1, 0, 1)).numpy()
            w_st = wt.transpose(1, 3, 4, 2, 0)                # (I, O, kd, kh, kw) -> (O, kh, kw, kd, I)
        else:
            ref = F.conv3d(torch.tensor(xt.astype(float)), torch.tensor(wt.astype(float)),
                           stride=(2, 1, 2), padding=(1, 0, 1), groups=2 if dw else 1).numpy()
            w_st = wt.transpose(1, 3, 4, 2, 0) if dw else wt.transpose(0, 3, 4, 2, 1)
        x_st, ref_st = xt.transpose(0, 3, 4, 2, 1), ref.transpose(0, 3, 4, 2, 1)  # -> N H W D C
        attrs = dict(kernel=[2, 3, 2], stride=[2, 1, 2], pad=[1, 1, 0, 0, 1, 1], pad_mode="FLOOR")
    x = b.input("x", [1] + list(x_st.shape[1:]), 0)
    w = b.param("w", w_st, 0)
    b.op("c", kind, {"input": [x], "weights": [w]}, [1] + list(ref_st.shape[1:]), **attrs)
    v = b.values(x_st.astype(float), "c")
    assert v.fp == 0 and np.array_equal(v.codes, ref_st.astype(np.int64))


def test_conv2d_fix_nonlinear_and_output_fix():
    # compiled form: const-fix int8 codes, output tensor fix_point 1, nonlinear RELU
    b = GraphBuilder()
    x = b.input("x", [1, 1, 1, 2], 1)                      # x = [1.5, -2.0] -> codes [3, -4]
    b.g.add(_const_fix("w", np.array([[1, 1], [1, -1]], np.int8).reshape(2, 1, 1, 2), 1))
    b.g.add(_const_fix("b", np.array([1, 0], np.int8), 2))
    b.op("c", "conv2d-fix", {"input": [x], "weights": ["w"], "bias": ["b"]}, [1, 1, 1, 2],
         tensor_attrs={"fix_point": Attr.int32(1)}, kernel=[1, 1], stride=[1, 1], nonlinear="RELU")
    # acc at fp 2: [3 - 4, 3 + 4] = [-1, 7]; bias codes [1, 0] at fp 2 -> [0, 7] -> relu [0, 7]
    # -> fp 1: 7/2 = 3.5 -> 4 -> 2.0
    v = b.values(np.array([1.5, -2.0]).reshape(1, 1, 1, 2), "c")
    assert v.fp == 1 and v.codes.reshape(-1).tolist() == [0, 4]


def _const_fix(name, codes, fp):
    from nndct_lite.xmodel import const_op
    op = const_op(name, codes, fixed=True, data_type="int8")
    op.output.attrs["fix_point"] = Attr.int32(fp)
    return op


def test_scale_and_inner_product():
    b = GraphBuilder()
    x = b.input("x", [1, 2, 2], 1)
    s = b.param("s", [2, -1], 0)
    bias = b.param("bias", [1, 1], 1)
    b.op("sc", "scale", {"input": [x], "scale": [s], "bias": [bias]}, [1, 2, 2], axis=-1)
    b.fix("out", "sc", 1)
    # [[1, 2], [-1, .5]] * [2, -1] + 0.5 = [[2.5, -1.5], [-1.5, 0]]
    out = b.run(np.array([[1.0, 2.0], [-1.0, 0.5]])[None])
    assert out.reshape(-1).tolist() == [2.5, -1.5, -1.5, 0.0]


# -- element-wise -----------------------------------------------------------------------------

def test_se_mul_broadcast_and_sub_div():
    b = GraphBuilder()
    x = b.input("x", [1, 2, 2, 2], 2)
    gte = b.input("g", [1, 1, 1, 2], 2)
    b.op("m", "mul", [x, gte], [1, 2, 2, 2])
    b.fix("out", "m", 3)
    xv = np.array([1.0, 2.0, -1.0, 0.5, 1.0, 0.25, 2.0, -2.0]).reshape(1, 2, 2, 2)
    gv = np.array([0.5, -0.25]).reshape(1, 1, 1, 2)
    out = b.sim().run({"x": xv, "g": gv}, outputs=["out"])["out"]
    # 0.25 * -0.25 = -0.0625 -> fp 3: -0.5 -> ties up -> 0 ; 0.5*0.5 = 0.25
    exp = np.floor(xv * gv * 8 + 0.5) / 8
    assert np.array_equal(out, exp) and out[0, 1, 0, 1] == 0.0
    b = GraphBuilder()
    x = b.input("x", [1, 3], 2)
    y = b.input("y", [1, 1], 1)
    b.op("s", "sub", [x, y], [1, 3])
    b.const("three", [3.0])
    b.op("d", "div", ["s", "three"], [1, 3])
    b.fix("out", "d", 4)
    sim = b.sim()
    out = sim.run({"x": np.array([[1.0, 0.25, -1.0]]), "y": np.array([[0.5]])})["out"]
    # (x - 0.5) / 3 = [1/6, -1/12, -1/2] -> fp 4: [2.67 -> 3, -1.33 -> -1, -8]
    assert out.reshape(-1).tolist() == [3 / 16, -1 / 16, -0.5]
    assert sim.float_ops == []  # a scalar divisor stays exact


def test_eltwise_fix_and_depthwise_fix():
    b = GraphBuilder()
    x = b.input("x", [1, 3], 2)
    y = b.input("y", [1, 3], 3)
    b.op("e", "eltwise-fix", [x, y], [1, 3], tensor_attrs={"fix_point": Attr.int32(2)},
         type="ADD", nonlinear="RELU")
    # x + y = [0.75 + 0.125, -1 + 0.25, 0.5 + 0.375] = [.875, -.75, .875] -> relu -> fp 2: 3.5 -> 4
    out = b.sim().run({"x": np.array([[0.75, -1, 0.5]]), "y": np.array([[0.125, 0.25, 0.375]])},
                      outputs=["e"])["e"]
    assert out.reshape(-1).tolist() == [1.0, 0.0, 1.0]
    b = GraphBuilder()
    x = b.input("x", [1, 1, 2, 2], 1)
    s = b.param("s", [3, -1], 1)
    b.op("dw", "depthwise-fix", [x, s], [1, 1, 2, 2], tensor_attrs={"fix_point": Attr.int32(0)},
         type="MUL")
    # [1.5, 1, -.5, 2] * [1.5, -.5] = [2.25, -.5, -.75, -1] -> fp 0: [2, 0, -1, -1]
    out = b.run(np.array([1.5, 1.0, -0.5, 2.0]).reshape(1, 1, 2, 2), out="dw")
    assert out.reshape(-1).tolist() == [2.0, 0.0, -1.0, -1.0]


def test_concat_and_stack():
    b = GraphBuilder()
    x = b.input("x", [1, 1, 1, 2], 1)
    y = b.input("y", [1, 1, 1, 1], 3)
    b.op("c", "concat", [x, y], [1, 1, 1, 3], axis=3)
    v = b.sim().run_values({"x": np.array([0.5, -1]).reshape(1, 1, 1, 2),
                            "y": np.array([0.125]).reshape(1, 1, 1, 1)}, outputs=["c"])["c"]
    assert v.fp == 3 and v.codes.reshape(-1).tolist() == [4, -8, 1]


# -- pooling and reductions -------------------------------------------------------------------

def test_avgpool_ceil_mode_and_pad_counts():
    # 3x3 input 1..9, kernel 2, stride 2, CEIL: windows [1,2,4,5], [3,6], [7,8], [9]
    x = np.arange(1, 10, dtype=float).reshape(1, 3, 3, 1)
    for inc_pad, exp in ((True, [3.0, 9 / 4, 15 / 4, 9 / 4]), (False, [3.0, 4.5, 7.5, 9.0])):
        b = GraphBuilder()
        xi = b.input("x", [1, 3, 3, 1], 0)
        b.op("p", "avgpool2d", xi, [1, 2, 2, 1], kernel=[2, 2], stride=[2, 2], pad=[0, 0, 0, 0],
             pad_mode="CEIL", count_include_pad=True, count_include_invalid=inc_pad)
        b.fix("out", "p", 2)
        assert b.run(x).reshape(-1).tolist() == exp
    b = GraphBuilder()
    xi = b.input("x", [1, 3, 3, 1], 0)
    b.op("p", "maxpool2d", xi, [1, 2, 2, 1], kernel=[2, 2], stride=[2, 2], pad_mode="CEIL")
    assert b.run(x, out="p").reshape(-1).tolist() == [5, 6, 8, 9]


def test_pool_fix_avg_uses_the_dpu_multiplier():
    # Example 22: 3x3 window of 1.0 -> 9 * 7/64 = 0.984375 -> fp 7: 126/128
    assert dpu_avg_multiplier(3, 3) == (7, 6) and dpu_avg_multiplier(2, 3) == (85, 9)
    b = GraphBuilder()
    xi = b.input("x", [1, 3, 3, 1], 6)
    b.op("p", "pool-fix", xi, [1, 1, 1, 1], tensor_attrs={"fix_point": Attr.int32(7)},
         kernel=[3, 3], stride=[1, 1], type="AVG")
    assert b.run(np.ones((1, 3, 3, 1)), out="p").item() == 126 / 128


def test_maxpool1d_and_global_avgpool():
    b = GraphBuilder()
    xi = b.input("x", [1, 5, 1], 0)
    b.op("p", "maxpool1d", xi, [1, 2, 1], kernel=[2], stride=[2], pad_mode="FLOOR")
    assert b.run(np.array([1.0, 5, -2, 3, 9]).reshape(1, 5, 1), out="p").reshape(-1).tolist() == [5, 3]


@pytest.mark.parametrize("keep", [True, False])
def test_reduction_mean_over_hw_and_max(keep):
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 3, 2], 1)
    shape = [1, 1, 1, 2] if keep else [1, 2]
    b.op("m", "reduction_mean", xi, shape, axis=[1, 2], keep_dims=keep)
    b.fix("out", "m", 4)
    b.op("mx", "reduction_max", xi, shape, axis=[1, 2], keep_dims=keep)
    x = np.array([1, 0, 2, 0, 3, 0, 0.5, 1, 0, 1, 0, 1.5]).reshape(1, 2, 3, 2)
    sim = b.sim()
    r = sim.run(x, outputs=["out", "mx"])
    # channel 0: (1+2+3+0.5+0+0)/6 = 1.0833 -> fp 4: 17.33 -> 17; channel 1: 3.5/6 = .5833 -> 9.33 -> 9
    assert r["out"].reshape(-1).tolist() == [17 / 16, 9 / 16]
    assert r["mx"].reshape(-1).tolist() == [3.0, 1.5] and r["out"].ndim == (4 if keep else 2)


# -- data movement ----------------------------------------------------------------------------

def test_transpose_channel_shuffle_and_strided_slice():
    b = GraphBuilder()
    xi = b.input("x", [1, 1, 1, 6], 0)
    b.op("r", "reshape", xi, [1, 1, 1, 2, 3], shape=[1, 1, 1, 2, 3])
    b.op("t", "transpose", "r", [1, 1, 1, 3, 2], order=[0, 1, 2, 4, 3])
    b.op("f", "reshape", "t", [1, 1, 1, 6], shape=[1, 1, 1, 6])
    b.op("s", "strided_slice", "f", [1, 1, 1, 2], begin=[0, 0, 0, 1], end=[1, 1, 1, 6],
         strides=[1, 1, 1, 3])
    x = np.arange(6, dtype=float).reshape(1, 1, 1, 6)
    sim = b.sim()
    r = sim.run(x, outputs=["f", "s"])
    assert r["f"].reshape(-1).tolist() == [0, 3, 1, 4, 2, 5]
    assert r["s"].reshape(-1).tolist() == [3, 2]   # elements 1 and 4 of the shuffle


@pytest.mark.parametrize("mode,exp", [
    ("CONSTANT", [[0, 1, 2], [0, 3, 4], [0, 0, 0]]),
    ("REFLECT", [[2, 1, 2], [4, 3, 4], [2, 1, 2]]),
    ("SYMMETRIC", [[1, 1, 2], [3, 3, 4], [3, 3, 4]])])
def test_pad_modes_as_xir_defines_them(mode, exp):
    # the examples of XIR's pad definition: paddings [0, 1, 1, 0]
    b = GraphBuilder()
    xi = b.input("x", [2, 2], 0)
    b.op("p", "pad", xi, [3, 3], paddings=[0, 1, 1, 0], mode=mode)
    assert b.run(np.array([[1.0, 2], [3, 4]]), out="p").tolist() == exp


@pytest.mark.parametrize("ac,hp,exp", [
    (True, False, [0, 5, 11, 16]),    # 0, 4/3, 8/3, 4 -> fp 2: 5.33 -> 5, 10.67 -> 11
    (False, True, [0, 4, 12, 16]),    # src -0.25 -> 0, 0.25, 0.75, 1.25 -> [0, 1, 3, 4]
    (False, False, [0, 8, 16, 16])])  # src 0, 0.5, 1, 1.5 -> [0, 2, 4, 4]
def test_bilinear_resize_is_exact(ac, hp, exp):
    b = GraphBuilder()
    xi = b.input("x", [1, 1, 2, 1], 0)
    b.op("r", "resize", xi, [1, 1, 4, 1], mode="BILINEAR", align_corners=ac, half_pixel_centers=hp)
    b.fix("out", "r", 2)
    out = b.run(np.array([0.0, 4.0]).reshape(1, 1, 2, 1))
    assert (out.reshape(-1) * 4).tolist() == exp
    if not ac:
        t = torch.nn.functional.interpolate(torch.tensor([[[[0.0, 4.0]]]]), size=(1, 4),
                                            mode="bilinear", align_corners=False)
        if hp:
            assert (t.numpy().reshape(-1) * 4).tolist() == exp


def test_nearest_resize_and_upsample_fix():
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 2, 1], 0)
    b.op("r", "resize", xi, [1, 4, 4, 1], mode="NEAREST")
    b.op("u", "upsample-fix", xi, [1, 4, 4, 1], mode="NEAREST", scale=[2.0, 2.0])
    x = np.array([1.0, 2, 3, 4]).reshape(1, 2, 2, 1)
    r = b.sim().run(x, outputs=["r", "u"])
    exp = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    assert np.array_equal(r["r"], exp) and np.array_equal(r["u"], exp)


# -- CPU ops by framework name ----------------------------------------------------------------

def test_aten_mean_silu_and_custom_ops():
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 2, 2], 2)
    b.op("nchw", "transpose", xi, [1, 2, 2, 2], order=[0, 3, 1, 2])
    b.op("m", "aten::mean", "nchw", [1, 2, 1, 1], shape=[1, 2, 1, 1], data_type="FLOAT32")
    b.fix("mf", "m", 4)
    b.op("s", "aten::silu_", "mf", [1, 2, 1, 1], shape=[1, 2, 1, 1], data_type="FLOAT32")
    b.fix("sf", "s", 6)
    b.op("c", "custom_Sigmoid", "sf", [1, 2, 1, 1], shape=[1, 2, 1, 1], data_type="FLOAT32")
    x = np.array([1.0, 0.5, 2.0, 0.0, -1.0, 0.25, 0.0, 0.75]).reshape(1, 2, 2, 2)
    sim = b.sim()
    r = sim.run(x, outputs=["mf", "sf", "c"])
    # NHWC channel means: c0 (1 + 2 - 1 + 0)/4 = 0.5, c1 (.5 + 0 + .25 + .75)/4 = 0.375
    assert r["mf"].reshape(-1).tolist() == [0.5, 0.375]
    silu = np.array([0.5, 0.375]) / (1 + np.exp(-np.array([0.5, 0.375])))
    assert r["sf"].reshape(-1).tolist() == (np.floor(silu * 64 + 0.5) / 64).tolist()
    assert np.allclose(r["c"].reshape(-1), 1 / (1 + np.exp(-r["sf"].reshape(-1))))
    assert set(sim.float_ops) == {"m", "s", "c"}


def test_aten_adaptive_pool_and_attribute_contract():
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 3, 3], 0)
    b.op("a", "aten::adaptive_avg_pool2d", xi, [1, 2, 2, 2], shape=[1, 2, 2, 2], data_type="FLOAT32")
    x = np.arange(18, dtype=float).reshape(1, 2, 3, 3)
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), (2, 2)).numpy()
    assert np.allclose(b.run(x, out="a"), ref)
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 3, 3], 0)
    b.op("s", "aten::softmax", xi, [1, 2, 3, 3], shape=[1, 2, 3, 3], data_type="FLOAT32")
    with pytest.raises(SimError, match="dim"):
        b.run(x, out="s")


def test_unknown_op_error_names_op_type_and_supported():
    b = GraphBuilder()
    xi = b.input("x", [1, 2], 0)
    b.op("weird", "priorbox", xi, [1, 2])
    with pytest.raises(SimError) as e:
        Simulator(b.g)
    msg = str(e.value)
    assert "'weird' (priorbox)" in msg and "conv2d" in msg and "hard-sigmoid" in msg
    b = GraphBuilder()
    xi = b.input("x", [1, 2], 0)
    b.op("w2", "aten::frobnicate", xi, [1, 2], shape=[1, 2], data_type="FLOAT32")
    with pytest.raises(SimError, match="'w2' .aten::frobnicate.*silu"):
        Simulator(b.g)
    assert {"conv3d", "hard-sigmoid-fix", "eltwise-fix", "resize"} <= set(supported_op_types())


@pytest.mark.parametrize("size,ac", [((5, 7), False), ((8, 6), True), ((5, 7), True)])
def test_bilinear_resize_equals_torch(size, ac):
    g = np.random.default_rng(5)
    xt = g.integers(-64, 64, (1, 3, 3, 4)).astype(np.float64) / 16
    ref = torch.nn.functional.interpolate(torch.tensor(xt), size=size, mode="bilinear",
                                          align_corners=ac).numpy().transpose(0, 2, 3, 1)
    b = GraphBuilder()
    xi = b.input("x", [1, 3, 4, 3], 4)
    b.op("r", "resize", xi, [1, size[0], size[1], 3], mode="BILINEAR", align_corners=ac,
         half_pixel_centers=not ac)
    v = b.values(xt.transpose(0, 2, 3, 1), "r")
    assert np.allclose(v.values(), ref, atol=1e-12)


def test_simulator_does_not_import_the_exporter():
    import nndct_lite.sim as sim_pkg
    for f in Path(sim_pkg.__file__).parent.glob("*.py"):
        for line in f.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")):
                assert "export" not in s.split("#")[0], f"{f.name}: {s}"


def test_results_of_float_ops_stay_float_downstream():
    # an unquantized CPU op output (adaptive pool 5 -> 3, thirds and halves) feeding exact ops:
    # computed in float, no int64 blow-up from representing float64 values as huge codes
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 5, 5], 3)
    b.op("a", "aten::adaptive_avg_pool2d", xi, [1, 2, 3, 3], shape=[1, 2, 3, 3], data_type="FLOAT32")
    b.op("m", "reduction_mean", "a", [1, 2], axis=[2, 3], keep_dims=False)
    b.const("k", [1.0019531])
    b.op("p", "mul", ["m", "k"], [1, 2])
    b.fix("out", "p", 6)
    x = np.random.default_rng(0).integers(-64, 64, (1, 2, 5, 5)) / 8
    sim = b.sim()
    out = sim(x, layout="NHWC")
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), 3).numpy().mean((2, 3))
    ref = ref * np.float32(1.0019531)
    assert np.array_equal(out, np.floor(ref * 64 + 0.5) / 64)
    assert sim.float_ops == ["a", "m", "p"]


@pytest.mark.parametrize("nl,x,exp", [("HSIGMOID", 1.0, 85 / 128), ("HSWISH", 1.0, 85 / 128),
                                      ("HSWISH", -1.0, -43 / 128), ("LEAKYRELU", -2.0, -26 / 128),
                                      ("RELU6", 7.0, 6.0)])
def test_conv2d_fix_fused_nonlinear(nl, x, exp):
    # 1x1 conv with weight 1: the accumulator is x (fp 0 codes -> fp 5 after the weight fp 5).
    # HSIGMOID: x rounded to hsigmoid_in 4 (16), relu6(x+3)*2731/2^14 -> fp 7: 85.34 -> 85 (T14);
    # HSWISH: that hard-sigmoid at fp 4 + 14 - shift_hsigmoid 11 = 7 (85, or 43 for x = -1) times x
    b = GraphBuilder()
    xi = b.input("x", [1, 1, 1, 1], 0)
    b.g.add(_const_fix("w", np.array([32], np.int8).reshape(1, 1, 1, 1), 5))
    b.op("c", "conv2d-fix", {"input": [xi], "weights": ["w"]}, [1, 1, 1, 1],
         tensor_attrs={"fix_point": Attr.int32(7 if nl != "RELU6" else 4)},
         kernel=[1, 1], stride=[1, 1], nonlinear=nl, hsigmoid_in=4, shift_hsigmoid=11,
         shift_hswish=4)
    assert b.run(np.array([x]).reshape(1, 1, 1, 1), out="c").item() == exp


def test_aten_shape_ops_take_the_stored_output_dims():
    b = GraphBuilder()
    xi = b.input("x", [1, 2, 1, 1], 2)
    b.op("e", "aten::expand", xi, [1, 2, 2, 3], shape=[1, 2, 2, 3], data_type="FLOAT32")
    b.op("v", "aten::view_as", "e", [1, 12], shape=[1, 12], data_type="FLOAT32")
    out = b.run(np.array([0.5, -1.0]).reshape(1, 2, 1, 1), out="v")
    assert out.reshape(-1).tolist() == [0.5] * 6 + [-1.0] * 6
    two = b.sim().run(np.array([0.5, -1.0, 1, 2]).reshape(2, 2, 1, 1), outputs=["v"])["v"]
    assert two.shape == (2, 12)
