"""Writer: XIR loads what we write; bad graphs are rejected before anything is written."""

import numpy as np
import pytest

from nndct_lite.errors import ExportError
from nndct_lite.xmodel import (Attr, XGraph, XOp, XSubGraph, XTensor, const_op, data_op,
                                      fix_op, read_xmodel, serialize, validate_graph, write_xmodel)

from _xmodel_testlib import run_xir_check, sample_graph


def test_sample_graph_loads_in_xir(tmp_path):
    g = sample_graph()
    p = write_xmodel(g, tmp_path / "sample.xmodel")
    r = run_xir_check(p)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 mismatch(es)" in r.stdout
    assert "op count:  45" in r.stdout


def test_simulator_agrees_with_xir_shapes_on_sample_graph():
    """Every stored shape of the sample graph passes XIR's shape inference (test above); the
    simulator re-derives the same shapes (it raises on a mismatch) for any batch size."""
    from nndct_lite.sim import Simulator
    sim = Simulator(sample_graph())
    x = np.random.default_rng(0).normal(size=(3, 4, 8, 8))
    vals = sim.run_values(x)
    assert sim.float_ops == []
    out = vals["fc_fix"]
    assert out.codes.shape == (3, 3) and out.fp == 4
    assert np.all(np.abs(out.codes) <= 128)


def test_subgraphs_and_graph_attrs_load_in_xir(tmp_path):
    g = sample_graph()
    names = [op.name for op in g.ops]
    g.root = XSubGraph("root", children=[
        XSubGraph("subgraph_a", ops=names[:20], attrs={"device": Attr.string("CPU")}),
        XSubGraph("subgraph_b", ops=names[20:], attrs={"device": Attr.string("USER")}),
    ])
    g.attrs["origin"] = Attr.string("nndct_lite")
    p = write_xmodel(g, tmp_path / "sub.xmodel")
    back = read_xmodel(p)
    assert [c.name for c in back.root.children] == ["subgraph_a", "subgraph_b"]
    assert back.root.children[0].attrs["device"] == Attr.string("CPU")
    assert back.attrs == {"origin": Attr.string("nndct_lite")}
    r = run_xir_check(p)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "subgraph_a" in r.stdout and "subgraph_b" in r.stdout


def test_every_attr_type_loads_in_xir(tmp_path):
    from test_xmodel_proto import _SAMPLES
    g = sample_graph()
    for t, v in _SAMPLES.items():
        g.attrs["a_" + t.name.lower()] = Attr(t, v)
        g.op("conv1").attrs["x_" + t.name.lower()] = Attr(t, v)
    p = write_xmodel(g, tmp_path / "types.xmodel")
    back = read_xmodel(p)
    assert back.attrs == g.attrs and back.op("conv1").attrs == g.op("conv1").attrs
    r = run_xir_check(p, brief=True)
    assert r.returncode == 0 and "round trip: OK" in r.stdout, r.stdout[-3000:]


def test_write_is_deterministic_and_atomic(tmp_path):
    g = sample_graph()
    a = serialize(g)
    assert serialize(sample_graph()) == a
    p = tmp_path / "out" / "m.xmodel"
    write_xmodel(g, p)
    assert p.read_bytes() == a
    assert [f.name for f in p.parent.iterdir()] == ["m.xmodel"]  # no temp files left
    # a failing write leaves the previous file untouched
    g.op("conv1").attrs["kernel"] = Attr.int64_vec([3, 3])
    with pytest.raises(ExportError):
        write_xmodel(g, p)
    assert p.read_bytes() == a


def test_round_trip_through_reader(tmp_path):
    g = sample_graph()
    data = serialize(g)
    g2 = read_xmodel(write_xmodel(g, tmp_path / "a.xmodel"))
    assert [op.name for op in g2.ops] == [op.name for op in g.ops]
    for a, b in zip(g.ops, g2.ops):
        assert a.type == b.type and a.attrs == b.attrs and a.inputs == b.inputs
        assert a.output.shape == b.output.shape and a.output.data_type == b.output.data_type
    assert serialize(g2) == data


def _conv_graph():
    g = XGraph("c")
    g.add(data_op("x", [1, 4, 4, 2]))
    g.add(fix_op("x_fix", "x", [1, 4, 4, 2], 6))
    g.add(const_op("w", np.zeros((3, 3, 3, 2), np.float32)))
    g.add(fix_op("w_fix", "w", [3, 3, 3, 2], 7))
    g.add(XOp("conv", "conv2d", {"kernel": [3, 3], "stride": [1, 1], "pad": [1, 1, 1, 1],
                                 "pad_mode": "FLOOR"}, {"input": ["x_fix"], "weights": ["w_fix"]},
              XTensor("conv", (1, 4, 4, 3))))
    return g


def _expect(g, *words):
    with pytest.raises(ExportError) as ei:
        serialize(g)
    msg = str(ei.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_valid_small_graph_passes():
    validate_graph(_conv_graph())


def test_rejects_int64_kernel():
    g = _conv_graph()
    g.op("conv").attrs["kernel"] = Attr.int64_vec([3, 3])
    _expect(g, "'conv'", "kernel", "int32_vec", "int64_vec")


def test_rejects_float_fix_point():
    g = _conv_graph()
    g.op("x_fix").attrs["fix_point"] = Attr.float(6.0)
    _expect(g, "'x_fix'", "fix_point", "int32")


def test_rejects_int64_data_shape_and_missing_required():
    g = _conv_graph()
    g.op("x").attrs["shape"] = Attr.int64_vec([1, 4, 4, 2])
    _expect(g, "'x'", "shape", "int32_vec")
    g = _conv_graph()
    del g.op("conv").attrs["pad_mode"]
    _expect(g, "'conv'", "pad_mode", "missing")


def test_rejects_double_leaky_alpha_and_wrong_lengths():
    g = _conv_graph()
    g.add(XOp("lr", "leaky-relu", {"alpha": Attr.double(0.1)}, {"input": ["conv"]},
              XTensor("lr", (1, 4, 4, 3))))
    _expect(g, "'lr'", "alpha", "float")
    g = _conv_graph()
    g.op("conv").attrs["pad"] = Attr.int32_vec([1, 1])
    _expect(g, "'conv'", "pad", "4 values")


def test_rejects_bad_inputs_and_types():
    g = _conv_graph()
    g.op("conv").inputs["weights"] = []
    _expect(g, "'conv'", "weights", "exactly 1")
    g = _conv_graph()
    g.add(XOp("u", "my-op", {}, {"input": ["conv"]}, XTensor("u", (1,))))
    _expect(g, "'u'", "my-op", "registry")
    g = _conv_graph()
    g.op("conv").inputs["filter"] = ["w_fix"]
    _expect(g, "'conv'", "filter")
    g = _conv_graph()
    g.op("x_fix").attrs["round_mode"] = Attr.string("HALF_UP")
    _expect(g, "'x_fix'", "round_mode")


def test_rejects_channel_mismatch_and_const_size():
    g = _conv_graph()
    g.op("w").attrs["data"] = Attr.bytes(b"\x00" * 12)
    _expect(g, "'w'", "data", "bytes")
    g = XGraph("c")
    g.add(data_op("x", [1, 4, 4, 5]))
    g.add(const_op("w", np.zeros((3, 3, 3, 2), np.float32)))
    g.add(XOp("conv", "conv2d", {"kernel": [3, 3], "stride": [1, 1], "pad_mode": "FLOOR"},
              {"input": ["x"], "weights": ["w"]}, XTensor("conv", (1, 2, 2, 3))))
    _expect(g, "'conv'", "channels")


def test_rejects_non_topological_order():
    g = _conv_graph()
    conv = g.remove("conv")
    g.ops.insert(1, conv)
    g._reindex()
    _expect(g, "topological", "'conv'")
    g.toposort()
    serialize(g)  # fixed by toposort
    with pytest.raises(ExportError):
        XGraph("g").add(XOp("a", "relu", {}, {"input": ["missing"]}, XTensor("a", (1,))))


def test_rejects_bad_subgraphs():
    g = _conv_graph()
    g.root = XSubGraph("root", children=[XSubGraph("s", ops=["x", "nope"])])
    _expect(g, "nope")
    g.root = XSubGraph("root", children=[XSubGraph("s")])
    _expect(g, "neither")


def test_private_attributes_are_not_written():
    g = _conv_graph()
    g.op("conv").attrs["__private"] = Attr.int32(1)
    back = read_xmodel_bytes(serialize(g))
    assert "__private" not in back.op("conv").attrs


def read_xmodel_bytes(b):
    from nndct_lite.xmodel import parse_xmodel
    return parse_xmodel(b)


def test_empty_optional_args_are_written_like_xir():
    from nndct_lite.xmodel import to_proto
    msg = to_proto(_conv_graph())
    node = [n for n in msg.op_node if n.op_name == "conv"][0]
    assert [(a.arg_name, list(a.arg_ops)) for a in node.args] == [
        ("input", ["x_fix"]), ("weights", ["w_fix"]), ("bias", [])]
    back = read_xmodel_bytes(msg.SerializeToString())
    assert "bias" not in back.op("conv").inputs


def test_reader_rejects_garbage(tmp_path):
    p = tmp_path / "bad.xmodel"
    p.write_bytes(b"\xff\xff\xff\xff")
    with pytest.raises(ExportError):
        read_xmodel(p)
