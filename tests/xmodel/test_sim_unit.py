"""The integer simulator on tiny hand-built graphs, with hand-computed integer results."""
import numpy as np
import pytest

from nndct_lite.xmodel import XGraph, XOp, XTensor, const_op, data_op, fix_op
from nndct_lite.sim import Fixed, SimError, Simulator


class B:
    """Tiny graph builder: shapes are given explicitly, as an exporter knows them."""

    def __init__(self):
        self.g = XGraph("t")

    def data(self, name, shape):
        self.g.add(data_op(name, shape))
        return name

    def fix(self, name, src, fp, bw=8, mode="DPU_ROUND", signed=True):
        self.g.add(fix_op(name, src, self.g.op(src).shape, fp, bw, round_mode=mode, if_signed=signed))
        return name

    def param(self, name, codes, fp):
        a = np.asarray(codes, dtype=np.float64) * 2.0 ** -fp
        self.g.add(const_op(name, a.astype(np.float32)))
        return self.fix(name + "_fix", name, fp)

    def const(self, name, values):
        self.g.add(const_op(name, np.asarray(values, dtype=np.float32)))
        return name

    def op(self, name, type_, inputs, out_shape, **attrs):
        if isinstance(inputs, str):
            inputs = {"input": [inputs]}
        elif isinstance(inputs, list):
            inputs = {"input": inputs}
        self.g.add(XOp(name, type_, attrs, inputs, XTensor(name, tuple(out_shape))))
        return name

    def run(self, x, outputs=None, **kw):
        sim = Simulator(self.g)
        return sim, sim.run_values(x, outputs=outputs, **kw)


def _conv1x1(b, x, w, bias=None, name="conv", shape=None):
    ins = {"input": [x], "weights": [w]}
    if bias:
        ins["bias"] = [bias]
    return b.op(name, "conv2d", ins, shape, kernel=[1, 1], stride=[1, 1], pad=[0, 0, 0, 0],
                pad_mode="FLOOR")


def test_conv_shift_cut_bias_alignment_and_dpu_round():
    # fi = 2, fw = 3, fb = 4, fo = 3  ->  accumulator fp 5, bias << 1, shift_cut = 2
    b = B()
    b.fix("x_fix", b.data("x", [1, 1, 1, 2]), 2)
    w = b.param("w", np.array([[3, 1], [2, 1], [-3, -2], [-2, 1]]).reshape(4, 1, 1, 2), 3)
    bias = b.param("b", [3, 1, -1, 1], 4)
    _conv1x1(b, "x_fix", w, bias, shape=[1, 1, 1, 4])
    b.fix("out", "conv", 3)
    x = np.array([1.25, -0.5]).reshape(1, 1, 1, 2)  # codes 5, -2 at fp 2
    sim, v = b.run(x, outputs=["conv", "out"])
    acc = v["conv"]
    # o0: 5*3-2*1=13, +3<<1 -> 19 ; o1: 10-2=8, +2 -> 10 ; o2: -15+4=-11, -2 -> -13 ; o3: -10-2=-12, +2 -> -10
    assert isinstance(acc, Fixed) and acc.fp == 5
    assert acc.codes.reshape(-1).tolist() == [19, 10, -13, -10]
    out = v["out"]
    # 19/4=4.75 -> 5 ; 10/4=2.5 -> 3 (tie up) ; -13/4=-3.25 -> -3 ; -10/4=-2.5 -> -2 (tie toward +inf)
    assert out.fp == 3 and out.codes.reshape(-1).tolist() == [5, 3, -3, -2]
    assert sim(x).reshape(-1).tolist() == [0.625, 0.375, -0.375, -0.25]


def test_conv_bias_finer_than_accumulator_stays_exact():
    b = B()
    b.fix("x_fix", b.data("x", [1, 1, 1, 1]), 0)
    w = b.param("w", np.ones((1, 1, 1, 1)), 0)
    bias = b.param("b", [1], 2)  # 0.25 at fp 2 > fi + fw = 0
    _conv1x1(b, "x_fix", w, bias, shape=[1, 1, 1, 1])
    b.fix("out", "conv", 1)
    sim, v = b.run(np.full((1, 1, 1, 1), 3.0), outputs=["conv", "out"])
    assert v["conv"].fp == 2 and v["conv"].codes.item() == 13  # 3.25
    assert v["out"].codes.item() == 7  # 6.5 -> 7


def test_fix_rounding_modes_and_negative_ties():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -0.49999997, 0.49999997, -1.4, 1.6])
    expect = {"DPU_ROUND": [-2, -1, 0, 1, 2, 3, 0, 0, -1, 2],
              "STD_ROUND": [-3, -2, -1, 1, 2, 3, 0, 0, -1, 2],
              "PY3_ROUND": [-2, -2, 0, 0, 2, 2, 0, 0, -1, 2]}
    for mode, codes in expect.items():
        b = B()
        b.fix("q", b.data("x", [1, 10]), 0, mode=mode)
        _, v = b.run(x[None])
        assert v["q"].codes.reshape(-1).tolist() == codes, mode
    # numerics T2: -1.5/128 at fp 7 -> -1/128 with DPU_ROUND
    b = B()
    b.fix("q", b.data("x", [1, 1]), 7)
    sim, _ = b.run(np.zeros((1, 1)))
    assert sim(np.array([[-0.01171875]])).item() == -0.0078125


def test_requantize_negative_tie_from_accumulator():
    # accumulator codes at fp 1 shifted to fp 0: -5/2 = -2.5 -> -2, 5/2 -> 3, -3/2 -> -1
    b = B()
    b.fix("x_fix", b.data("x", [1, 1, 1, 3]), 1)
    w = b.param("w", np.eye(3).reshape(3, 1, 1, 3), 0)
    _conv1x1(b, "x_fix", w, shape=[1, 1, 1, 3])
    b.fix("out", "conv", 0)
    _, v = b.run(np.array([-2.5, 2.5, -1.5]).reshape(1, 1, 1, 3))
    assert v["out"].codes.reshape(-1).tolist() == [-2, 3, -1]


def test_saturation_signed_unsigned_and_negative_fp():
    b = B()
    b.fix("q", b.data("x", [1, 5]), 7)
    sim, v = b.run(np.array([[1.0, -1.0, 2.0, -2.0, 0.99]]))
    assert v["q"].codes.reshape(-1).tolist() == [127, -128, 127, -128, 127]
    assert sim(np.array([[1.0, -1.0, 2.0, -2.0, 0.99]])).reshape(-1).tolist() == \
        [0.9921875, -1.0, 0.9921875, -1.0, 0.9921875]
    b = B()
    b.fix("q", b.data("x", [1, 3]), 0, signed=False)
    _, v = b.run(np.array([[-0.5, 300.0, 254.5]]))
    assert v["q"].codes.reshape(-1).tolist() == [0, 255, 255]
    b = B()
    b.fix("q", b.data("x", [1, 3]), -1)  # numerics T4
    sim, _ = b.run(np.zeros((1, 3)))
    assert sim(np.array([[200.0, 201.0, 1000.0]])).reshape(-1).tolist() == [200.0, 202.0, 254.0]
    # a large accumulator saturates at the output fix
    b = B()
    b.fix("x_fix", b.data("x", [1, 1, 1, 2]), 0)
    w = b.param("w", np.full((1, 1, 1, 2), 127), 0)
    _conv1x1(b, "x_fix", w, shape=[1, 1, 1, 1])
    b.fix("out", "conv", 4)
    _, v = b.run(np.array([127.0, -128.0]).reshape(1, 1, 1, 2) * np.array([1, 0]).reshape(1, 1, 1, 2))
    assert v["out"].codes.item() == 127


def test_add_sub_concat_with_different_fps():
    b = B()
    b.fix("a", b.data("x", [1, 2]), 3)
    b.fix("c", b.data("y", [1, 2]), 1)
    b.op("add", "add", ["a", "c"], [1, 2])
    b.fix("add_fix", "add", 2)
    b.op("sub", "sub", ["a", "c"], [1, 2])
    b.fix("sub_fix", "sub", 2)
    b.op("cat", "concat", ["a", "c"], [1, 4], axis=1)
    b.fix("cat_fix", "cat", 2)
    x = np.array([[0.625, -0.625]])   # codes 5, -5 at fp 3
    y = np.array([[1.5, -1.5]])       # codes 3, -3 at fp 1
    _, v = b.run({"x": x, "y": y}, outputs=["add", "add_fix", "sub_fix", "cat", "cat_fix"])
    assert v["add"].fp == 3 and v["add"].codes.reshape(-1).tolist() == [17, -17]  # 2.125, -2.125
    # 2.125*4 = 8.5 -> 9 ; -8.5 -> -8 (tie toward +inf)
    assert v["add_fix"].codes.reshape(-1).tolist() == [9, -8]
    # 0.625-1.5 = -0.875 -> -3.5 -> -3 ; -0.625+1.5 = 0.875 -> 3.5 -> 4
    assert v["sub_fix"].codes.reshape(-1).tolist() == [-3, 4]
    assert v["cat"].fp == 3 and v["cat"].codes.reshape(-1).tolist() == [5, -5, 12, -12]
    # 0.625*4 = 2.5 -> 3 ; -2.5 -> -2 ; 6 ; -6
    assert v["cat_fix"].codes.reshape(-1).tolist() == [3, -2, 6, -6]


def test_avgpool_with_dpu_correction_factor_is_exact():
    # 3x3 window, codes at fp 0; the correction mul 63/64 turns sum/9 into sum*7/64 exactly
    def graph(fo, with_mul=True):
        b = B()
        b.fix("xf", b.data("x", [1, 3, 3, 1]), 0)
        b.op("ap_i0", "avgpool2d", "xf", [1, 1, 1, 1], kernel=[3, 3], stride=[1, 1],
             pad=[0, 0, 0, 0], pad_mode="FLOOR", count_include_pad=True)
        if with_mul:
            b.const("ap_i1", [63 / 64])
            b.op("ap", "mul", ["ap_i0", "ap_i1"], [1, 1, 1, 1])
            b.fix("out", "ap", fo)
        else:
            b.fix("out", "ap_i0", fo)
        return b

    def run(b, codes):
        return b.run(np.asarray(codes, float).reshape(1, 3, 3, 1), outputs=["ap_i0", "out"])[1]

    ones13 = [1] * 8 + [5]   # sum 13
    v = run(graph(5), ones13)
    assert v["ap_i0"].denom == 9 and v["ap_i0"].codes.item() == 13  # exact 13/9 kept
    # 13 * 7 / 64 * 2^5 = 45.5 -> 46 (tie up)
    assert v["out"].codes.item() == 46
    v = run(graph(5), [1] * 9)   # 9*7/2 = 31.5 -> 32
    assert v["out"].codes.item() == 32
    v = run(graph(7), [1, 2, 3, 4, 5, 6, 7, 8, 9][::-1])  # 45*7/64*128 = 630 -> saturates
    assert v["out"].codes.item() == 127
    v = run(graph(2), [1, 2, 3, 4, 5, 6, 7, 8, 9])  # 45*7/64*4 = 19.6875 -> 20
    assert v["out"].codes.item() == 20
    # without a correction the exact average 13/9 is rounded: 13/9*32 = 46.22 -> 46; at fp 3: 11.56 -> 12
    assert run(graph(3, with_mul=False), ones13)["out"].codes.item() == 12


def test_mean_with_correction_factor():
    # mean over 9 elements: the quantizer multiplies by 1.001953125 = 513/512 = 9 * 57/512,
    # so the DPU value is sum * 57 / 512 exactly
    b = B()
    b.fix("xf", b.data("x", [1, 3, 3, 2]), 2)
    b.op("m_i0", "reduction_mean", "xf", [1, 1, 1, 2], axis=[1, 2], keep_dims=True)
    b.const("m_i1", [1.001953125])
    b.op("m", "mul", ["m_i0", "m_i1"], [1, 1, 1, 2])
    b.fix("out", "m", 6)
    x = np.zeros((1, 3, 3, 2))
    x[..., 0] = 0.25          # codes 1 -> sum 9
    x[0, 0, 0, 1] = 1.75      # code 7 -> sum 7
    _, v = b.run(x, outputs=["m", "out"])
    assert v["m"].denom == 1 and v["m"].fp == 2 + 9
    assert v["m"].codes.reshape(-1).tolist() == [9 * 57, 7 * 57]
    # 9*57/512/4*64 = 16.03 -> 16 ; 7*57/512/4*64 = 12.47 -> 12
    assert v["out"].codes.reshape(-1).tolist() == [16, 12]


def test_avgpool_count_include_pad_and_global():
    for inc, fo, code in ((False, 0, 3), (True, 3, 9)):
        b = B()
        b.fix("xf", b.data("x", [1, 2, 2, 1]), 0)
        b.op("ap", "avgpool2d", "xf", [1, 2, 2, 1], kernel=[3, 3], stride=[1, 1],
             pad=[1, 1, 1, 1], pad_mode="FLOOR", count_include_pad=inc)
        b.fix("out", "ap", fo)
        _, v = b.run(np.array([1.0, 2, 3, 4]).reshape(1, 2, 2, 1))
        # every window holds all 4 inputs: sum 10; /4 = 2.5 -> 3 ; /9 * 8 = 8.89 -> 9
        assert v["out"].codes.reshape(-1).tolist() == [code] * 4
    b = B()
    b.fix("xf", b.data("x", [1, 8, 8, 1]), 1)
    b.op("gap", "avgpool2d", "xf", [1, 1, 1, 1], kernel=[8, 8], stride=[8, 8], pad_mode="FLOOR",
         **{"global": True})
    _, v = b.run(np.arange(64, dtype=float).reshape(1, 8, 8, 1) / 2, outputs=["gap"])
    g = v["gap"]
    assert g.denom == 1 and g.fp == 7 and g.codes.item() == sum(range(64))  # /64 folded into fp


def test_hard_sigmoid_hard_swish_leaky_relu6():
    def act(type_, x, fi, fo, **attrs):
        b = B()
        b.fix("xf", b.data("x", [1, len(x)]), fi)
        b.op("a", type_, "xf", [1, len(x)], **attrs)
        b.fix("out", "a", fo)
        sim, _ = b.run(np.zeros((1, len(x))))
        return sim(np.asarray(x, float)[None]).reshape(-1).tolist()
    # XIR's definitions: hard-sigmoid = relu6(x+3)/6, hard-swish = x*relu6(x+3)/6 (exact)
    # 1 -> 4/6 = 0.666.. -> fp 7: 85.33 -> 85; 0 -> 0.5 -> 64; 3 -> 1 -> 128 clamps 127
    assert act("hard-sigmoid", [1.0, 0.0, 3.0, -3.0], 4, 7) == [85 / 128, 0.5, 127 / 128, 0.0]
    # 1 * 4/6 -> fp 7: 85.33 -> 85; -1 * 2/6 = -0.333 -> fp 6: -21.33 -> -21
    assert act("hard-swish", [1.0], 4, 7) == [85 / 128]
    assert act("hard-swish", [-1.0], 4, 6) == [-21 / 64]
    # the DPU form (numerics T14 / Example 19): hard-sigmoid-fix = relu6(x+3)*2731/2^14
    assert act("hard-sigmoid-fix", [1.0, 0.0, 3.0, -3.0], 4, 7) == [0.6640625, 0.5, 0.9921875, 0.0]
    # T16: slope 26/256, -2.5 -> -0.25390625 -> fp 7: -32.5 -> -32
    assert act("leaky-relu", [-2.5, 1.5], 1, 7, alpha=26 / 256) == [-0.25, 0.9921875]
    assert act("relu6", [7.5, -1.0, 5.25], 2, 2) == [6.0, 0.0, 5.25]
    assert act("relu", [-0.75, 0.75], 2, 2) == [0.0, 0.75]


def test_dpu_hard_swish_as_the_original_writes_it():
    """hard-sigmoid -> mul(const 8193/8192) -> fix fp 7 -> mul(x, h) -> fix: the DPU's
    relu6(x+3)*2731/2^14 exactly (the const cancels the 6), numerics T15 / T28 / Example 20."""
    def hswish(x, fi, fo):
        b = B()
        b.fix("xf", b.data("x", [1, len(x)]), fi)
        b.op("hs", "hard-sigmoid", "xf", [1, len(x)])
        b.const("k", [8193 / 8192])
        b.op("hsm", "mul", ["hs", "k"], [1, len(x)])
        b.fix("h", "hsm", 7)
        b.op("y", "mul", ["xf", "h"], [1, len(x)])
        b.fix("out", "y", fo)
        sim, _ = b.run(np.zeros((1, len(x))))
        return sim(np.asarray(x, float)[None]).reshape(-1).tolist()
    assert hswish([3.0], 4, 5) == [2.96875]
    assert hswish([-1.0], 4, 6) == [-0.328125]
    assert hswish([1.0, 4.0], 4, 7) == [0.6640625, 0.9921875]


def test_data_movement_keeps_codes():
    b = B()
    b.fix("xf", b.data("x", [1, 2, 2, 3]), 4)
    b.op("tr", "transpose", "xf", [1, 3, 2, 2], order=[0, 3, 1, 2])
    b.op("sl", "strided_slice", "tr", [1, 3, 1, 2], begin=[0, 0, 1, 0], end=[1, 3, 2, 2],
         strides=[1, 1, 1, 1])
    b.op("pd", "pad", "sl", [1, 3, 2, 3], paddings=[0, 0, 0, 0, 1, 0, 0, 1], mode="CONSTANT",
         constant_values=[0.0] * 8)
    b.op("fl", "flatten", "pd", [1, 18], start_axis=1, end_axis=-1)
    b.op("rs", "reshape", "fl", [1, 3, 6], shape=[1, 3, 6])
    x = (np.arange(12, dtype=float) - 6).reshape(1, 2, 2, 3) / 16
    sim, v = b.run(x, outputs=["xf", "rs"])
    assert v["rs"].fp == 4
    ref = np.pad(v["xf"].codes.transpose(0, 3, 1, 2)[:, :, 1:2, :], ((0, 0), (0, 0), (1, 0), (0, 1)))
    assert np.array_equal(v["rs"].codes, ref.reshape(1, 3, 6))


def test_resize_nearest_and_maxpool():
    b = B()
    b.fix("xf", b.data("x", [1, 2, 2, 1]), 0)
    b.op("up", "resize", "xf", [1, 4, 4, 1], mode="NEAREST", scale=[2.0, 2.0])
    b.op("mp", "maxpool2d", "up", [1, 2, 2, 1], kernel=[3, 3], stride=[2, 2], pad=[1, 1, 1, 1],
         pad_mode="FLOOR")
    _, v = b.run(np.array([1.0, -2, 3, 4]).reshape(1, 2, 2, 1), outputs=["up", "mp"])
    assert v["up"].codes[0, :, :, 0].tolist() == [[1, 1, -2, -2], [1, 1, -2, -2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert v["mp"].codes[0, :, :, 0].tolist() == [[1, 1], [3, 4]]


def test_matmul_with_transposed_weights_and_bias():
    b = B()
    b.fix("xf", b.data("x", [1, 3]), 2)
    w = b.param("w", [[1, 2, 3], [-1, 0, 1]], 1)
    bias = b.param("b", [1, -1], 0)
    b.op("mm", "matmul", {"input": ["xf", w], "bias": [bias]}, [1, 2],
         transpose_a=False, transpose_b=True)
    b.fix("out", "mm", 1)
    _, v = b.run(np.array([[0.25, 0.5, -0.75]]), outputs=["mm", "out"])
    # codes x [1, 2, -3] (fp2), w (fp1): acc fp 3: [1+4-9, -1-3] = [-4, -4]; bias <<3: [8, -8] -> [4, -12]
    assert v["mm"].fp == 3 and v["mm"].codes.reshape(-1).tolist() == [4, -12]
    assert v["out"].codes.reshape(-1).tolist() == [1, -3]  # 0.5, -1.5


def test_float_ops_are_reported():
    b = B()
    b.fix("xf", b.data("x", [1, 4]), 4)
    b.op("sg", "sigmoid", "xf", [1, 4])
    b.fix("out", "sg", 7)
    sim, v = b.run(np.array([[0.0, 1.0, -1.0, 2.0]]))
    assert sim.float_ops == ["sg"]
    assert v["out"].codes.reshape(-1).tolist() == [64, 94, 34, 113]


def test_batches_and_layouts():
    b = B()
    b.fix("xf", b.data("x", [1, 2, 3, 4]), 3)
    sim, _ = b.run(np.zeros((1, 2, 3, 4)))
    x = np.random.default_rng(0).normal(size=(5, 4, 2, 3))  # NCHW
    out_nchw = sim.run(x, batch_size=2, output_layout="NCHW")["xf"]
    out_nhwc = sim.run(x.transpose(0, 2, 3, 1), layout="NHWC")["xf"]
    assert np.array_equal(out_nchw.transpose(0, 2, 3, 1), out_nhwc)
    assert np.array_equal(sim(x[0]), out_nhwc[:1])  # a single sample without batch axis
    with pytest.raises(SimError):
        sim.run(np.zeros((1, 5, 5, 5)))


def test_unsupported_op_and_bad_shapes_raise():
    b = B()
    b.fix("xf", b.data("x", [1, 4]), 4)
    b.op("u", "priorbox", "xf", [1, 4])
    with pytest.raises(SimError, match="priorbox"):
        Simulator(b.g)
    b = B()
    b.fix("xf", b.data("x", [1, 4]), 4)
    b.op("r", "relu", "xf", [1, 5])
    sim = Simulator(b.g)
    with pytest.raises(SimError, match="differs"):
        sim(np.zeros((1, 4)))
    assert Simulator(b.g, check_shapes=False)(np.zeros((1, 4))).shape == (1, 4)
