"""The golden ResNet-20 xmodel written by the original quantizer: reader, re-write, registry,
and the integer simulator against the original's test-mode logits."""

import collections
import time

import numpy as np
import pytest

from nndct_lite.xmodel import (REGISTRY, AttrType, DataType, parse_xmodel, proto,
                                      read_xmodel, serialize, write_xmodel)
from nndct_lite.xmodel.reader import attr_from_proto

from _xmodel_testlib import CIFAR_TEST, GOLDEN, GOLDEN_XMODEL, need, op_lines, run_xir_check

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def golden():
    need(GOLDEN_XMODEL)
    return read_xmodel(GOLDEN_XMODEL)


def test_reader_parses_golden(golden):
    assert golden.name == "CifarResNet"
    assert len(golden) == 173
    counts = collections.Counter(op.type for op in golden)
    assert counts == {"fix": 73, "const": 43, "conv2d": 19, "relu": 19, "add": 9, "data": 1,
                      "strided_slice": 2, "pad": 2, "avgpool2d": 1, "mul": 1, "stack": 1,
                      "reshape": 1, "matmul": 1}
    assert len(golden.op_defs) == 106
    assert golden.root is not None and golden.root.name == "root" and golden.root.is_leaf
    golden.check_topological()
    assert [o.name for o in golden.output_ops()] == ["CifarResNet__CifarResNet_Linear_linear__ret_fix"]


def test_golden_attribute_types(golden):
    """The exact AttrValue members the original quantizer uses, per op type."""
    seen = collections.defaultdict(dict)
    for op in golden:
        for k, a in op.attrs.items():
            seen[op.type].setdefault(k, set()).add(a.type)
        assert op.output.data_type is DataType.FLOAT and op.output.bit_width == 32
        assert op.output.name == op.name
    one = {t: {k: next(iter(v)) for k, v in d.items()} for t, d in seen.items()}
    assert all(len(v) == 1 for d in seen.values() for v in d.values())
    T = AttrType
    assert one["fix"] == {"fix_point": T.INT32, "bit_width": T.INT32, "round_mode": T.STRING,
                          "if_signed": T.BOOL}
    assert one["const"] == {"shape": T.INT32_VEC, "data_type": T.STRING, "data": T.BYTES}
    assert one["data"] == {"shape": T.INT32_VEC, "data_type": T.STRING}
    assert one["conv2d"] == {"kernel": T.INT32_VEC, "stride": T.INT32_VEC, "dilation": T.INT32_VEC,
                             "pad": T.INT32_VEC, "pad_mode": T.STRING, "group": T.INT32,
                             "bias_term": T.BOOL, "in_dim": T.INT32, "out_dim": T.INT32}
    assert one["avgpool2d"] == {"kernel": T.INT32_VEC, "stride": T.INT32_VEC, "pad": T.INT32_VEC,
                                "pad_mode": T.STRING, "global": T.BOOL,
                                "count_include_pad": T.BOOL, "count_include_invalid": T.BOOL}
    assert one["pad"] == {"paddings": T.INT32_VEC, "mode": T.STRING, "constant_values": T.FLOAT_VEC}
    assert one["strided_slice"] == {"begin": T.INT32_VEC, "end": T.INT32_VEC, "strides": T.INT32_VEC,
                                    "begin_mask": T.INT32, "end_mask": T.INT32,
                                    "ellipsis_mask": T.INT32, "new_axis_mask": T.INT32,
                                    "shrink_axis_mask": T.INT32}
    assert one["matmul"] == {"transpose_a": T.BOOL, "transpose_b": T.BOOL}
    assert one["reshape"] == {"shape": T.INT32_VEC}
    assert one["stack"] == {"axis": T.INT32}
    assert golden.op("CifarResNet__input_0").attr("data_type") == "FLOAT32"
    stack = [op for op in golden if op.type == "stack"][0]
    assert stack.output.attrs["shape_info"].type is T.INT32_VEC


def test_golden_weights_are_on_their_grid(golden):
    cons = golden.consumers()
    for op in golden:
        if op.type != "const":
            continue
        users = [golden.op(c) for c in cons[op.name]]
        if users and users[0].type == "fix":
            codes = golden.const_array(op.name).astype(np.float64) * 2.0 ** users[0].attr("fix_point")
            assert np.array_equal(codes, np.round(codes)), op.name
            assert codes.min() >= -128 and codes.max() <= 127


def test_registry_matches_golden_op_defs(golden):
    """Our hand-written registry against the op definitions XIR itself stored in the file."""
    defs = {}
    for raw in golden.op_defs:
        d = proto.OpDef()
        d.ParseFromString(raw)
        defs[d.name] = d
    assert set(REGISTRY) <= set(defs)
    for name, spec in REGISTRY.items():
        d = defs[name]
        assert [(a.name, a.occur_type) for a in d.input_args] == [(a.name, int(a.occur)) for a in spec.args], name
        xattrs = {a.name: (a.default_value.WhichOneof("value"), a.occur_type == 0) for a in d.attrs}
        ours = {a.name: (a.type.member, a.required) for a in spec.attrs}
        assert xattrs == ours, name
        for a in d.attrs:
            s = spec.attr(a.name)
            if s.type.container == "vec" and a.list_length:
                assert s.list_length == a.list_length, (name, a.name)
            if not s.required:
                assert attr_from_proto(a.default_value) == s.default, (name, a.name)


def test_rewrite_golden_loads_in_xir_with_same_ops(golden, tmp_path):
    ref = run_xir_check(GOLDEN_XMODEL)
    assert ref.returncode == 0, ref.stdout[-2000:]
    p = write_xmodel(golden, tmp_path / "golden_rewritten.xmodel")
    r = run_xir_check(p)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert op_lines(r.stdout) == op_lines(ref.stdout)
    assert parse_xmodel(p.read_bytes()).op_defs == golden.op_defs
    # without the registry copy (what our exporter writes) XIR loads the same ops too
    golden2 = read_xmodel(GOLDEN_XMODEL)
    golden2.op_defs = ()
    p2 = write_xmodel(golden2, tmp_path / "golden_nodefs.xmodel")
    r2 = run_xir_check(p2)
    assert r2.returncode == 0, r2.stdout[-2000:]
    assert op_lines(r2.stdout) == op_lines(ref.stdout)
    assert serialize(read_xmodel(p2)) == p2.read_bytes()


def _cifar_first(n):
    """Exactly model.py's cifar('test', n) preprocessing, in numpy float32."""
    z = np.load(CIFAR_TEST)
    x = z["images"][:n].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def test_preprocessing_matches_model_py():
    need(CIFAR_TEST)
    torch = pytest.importorskip("torch")
    z = np.load(CIFAR_TEST)
    x = torch.from_numpy(z["images"][:20]).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert np.array_equal(((x - mean) / std).numpy(), _cifar_first(20))


@pytest.mark.slow
def test_simulator_matches_golden_logits(golden):
    need(CIFAR_TEST, GOLDEN / "test_logits_first500.npy")
    from nndct_lite.sim import Simulator
    ref = np.load(GOLDEN / "test_logits_first500.npy").astype(np.float64)
    x = _cifar_first(500)
    sim = Simulator(golden)
    t0 = time.perf_counter()
    out = sim(x)  # NCHW input, detected from the stored NHWC shape
    dt = time.perf_counter() - t0
    assert out.shape == (500, 10)
    assert sim.float_ops == []  # everything ran in fixed point
    bw, fp = sim.output_fix()
    step = 2.0 ** -fp
    diff = np.abs(out - ref)
    match = float(np.mean(diff == 0))
    print(f"\nsimulator vs golden: {match:.4%} of {ref.size} logits identical, "
          f"max diff {diff.max() / step:g} step(s), {dt:.2f} s for 500 images")
    assert match >= 0.999
    assert diff.max() <= step
    assert dt < 60
    # NHWC input gives the same result; batch size does not matter
    out2 = sim.run(x[:37].transpose(0, 2, 3, 1), batch_size=5)[sim.outputs[0]]
    assert np.array_equal(out2, out[:37])
