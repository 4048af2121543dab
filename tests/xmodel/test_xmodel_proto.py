"""Message classes: field numbers on the wire, every AttrValue member, round trips."""
import numpy as np
import pytest

from nndct_lite.xmodel import Attr, AttrType, XGraph, XOp, XTensor, parse_xmodel, serialize
from nndct_lite.xmodel import proto
from nndct_lite.xmodel.reader import attr_from_proto
from nndct_lite.xmodel.writer import attr_to_proto


def _tag(field, wire):
    n = (field << 3) | wire
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_graph_field_numbers_on_the_wire():
    g = proto.Graph()
    g.graph_name = "g"
    assert g.SerializeToString() == _tag(1, 2) + b"\x01g"
    g = proto.Graph()
    g.op_node.add().op_name = "a"
    assert g.SerializeToString().startswith(_tag(5, 2))
    g = proto.Graph()
    g.subg_root.subgraph_name = "r"
    assert g.SerializeToString().startswith(_tag(10, 2))
    g = proto.Graph()
    g.graph_attr["k"].int32_value = 1
    assert g.SerializeToString().startswith(_tag(11, 2))
    g = proto.Graph()
    g.op_defs.add().name = "x"
    assert g.SerializeToString().startswith(_tag(101, 2)) and _tag(101, 2) == b"\xaa\x06"


def test_opnode_tensor_subgraph_field_numbers():
    op = proto.OPNode()
    op.op_name, op.op_type = "n", "t"
    assert op.SerializeToString() == _tag(1, 2) + b"\x01n" + _tag(2, 2) + b"\x01t"
    op = proto.OPNode()
    op.op_attr["a"].bool_value = True
    assert op.SerializeToString().startswith(_tag(3, 2))
    op = proto.OPNode()
    op.args.add().arg_name = "input"
    assert op.SerializeToString().startswith(_tag(4, 2))
    op = proto.OPNode()
    op.output_tensor.tensor_name = "n"
    assert op.SerializeToString().startswith(_tag(5, 2))
    arg = proto.OpArg(arg_name="i", arg_ops=["p"])
    assert arg.SerializeToString() == _tag(1, 2) + b"\x01i" + _tag(2, 2) + b"\x01p"
    t = proto.Tensor(tensor_dim=[1, 2], data_type=4, tensor_bit_width=32)
    # packed uint32 dims (field 2), data_type 5, bit width 6
    assert t.SerializeToString() == _tag(2, 2) + b"\x02\x01\x02" + _tag(5, 0) + b"\x04" + _tag(6, 0) + b"\x20"
    t = proto.Tensor()
    t.tensor_attr["k"].int32_value = 0
    assert t.SerializeToString().startswith(_tag(10, 2))
    sg = proto.SubGraph(subgraph_name="s", op_name=["a"])
    assert sg.SerializeToString() == _tag(1, 2) + b"\x01s" + _tag(3, 2) + b"\x01a"
    sg = proto.SubGraph()
    sg.subg_attr["device"].string_value = "DPU"
    sg.subg_child.add()
    raw = sg.SerializeToString()
    assert _tag(5, 2) in raw and _tag(10, 2) in raw


def test_opdef_field_numbers():
    d = proto.OpDef(name="x", annotation="y")
    a = d.input_args.add(name="input", occur_type=3, data_type=4, annotation="z")
    assert a.SerializeToString() == (_tag(1, 2) + b"\x05input" + _tag(2, 0) + b"\x03" + _tag(3, 0)
                                     + b"\x04" + _tag(4, 2) + b"\x01z")
    ad = d.attrs.add(name="k", occur_type=1, list_length=2, annotation="w")
    ad.default_value.int32_value = 7
    raw = ad.SerializeToString()
    assert raw == (_tag(1, 2) + b"\x01k" + _tag(3, 0) + b"\x01" + _tag(4, 2) + b"\x02" + _tag(5, 0)
                   + b"\x07" + _tag(6, 0) + b"\x02" + _tag(7, 2) + b"\x01w")
    assert d.SerializeToString().startswith(_tag(1, 2))


@pytest.mark.parametrize("member,number", [(m, n) for m, n, _ in proto.ATTR_VALUE_MEMBERS])
def test_attr_value_member_numbers(member, number):
    av = proto.AttrValue()
    field = av.DESCRIPTOR.fields_by_name[member]
    assert field.number == number
    assert field.containing_oneof.name == "value"


_SAMPLES = {
    AttrType.BOOL: False, AttrType.INT32: -5, AttrType.UINT32: 7, AttrType.INT64: -(1 << 40),
    AttrType.UINT64: (1 << 63) + 1, AttrType.FLOAT: 0.1015625, AttrType.DOUBLE: 1e-12,
    AttrType.STRING: "", AttrType.BYTES: b"\x00\x01", AttrType.BOOL_VEC: [True, False],
    AttrType.INT32_VEC: [], AttrType.UINT32_VEC: [1, 2], AttrType.INT64_VEC: [-1, 1 << 40],
    AttrType.UINT64_VEC: [3], AttrType.FLOAT_VEC: [0.5, -2.0], AttrType.DOUBLE_VEC: [0.1],
    AttrType.STRING_VEC: ["a", "b"], AttrType.BYTES_VEC: [b"x", b""],
    AttrType.MAP_STR_INT32: {"a": 1}, AttrType.MAP_STR_UINT32: {"a": 2},
    AttrType.MAP_STR_INT64: {"a": -3}, AttrType.MAP_STR_UINT64: {"b": 4},
    AttrType.MAP_STR_STRING: {"k": "v"}, AttrType.MAP_STR_BYTES: {"k": b"\x01"},
    AttrType.MAP_STR_INT32_VEC: {"k": [1, 2]}, AttrType.MAP_STR_UINT32_VEC: {"k": [1]},
    AttrType.MAP_STR_INT64_VEC: {"k": [-1]}, AttrType.MAP_STR_UINT64_VEC: {"k": []},
    AttrType.MAP_STR_STRING_VEC: {"k": ["x"]},
}


def test_samples_cover_every_attr_type():
    assert set(_SAMPLES) == set(AttrType)


@pytest.mark.parametrize("t", list(AttrType), ids=lambda t: t.name)
def test_attr_value_round_trip_keeps_type(t):
    a = Attr(t, _SAMPLES[t])
    av = attr_to_proto(a)
    assert av.WhichOneof("value") == t.member  # zero / empty values still record the type
    back = proto.AttrValue()
    back.ParseFromString(av.SerializeToString())
    assert attr_from_proto(back) == a


def test_graph_round_trip_and_determinism():
    attrs = {f"a_{t.name.lower()}": Attr(t, v) for t, v in _SAMPLES.items()}
    op = XOp("x", "data", {"shape": Attr.int32_vec([1, 2]), "data_type": Attr.string("float32"),
                           **attrs}, {}, XTensor("x", (1, 2), attrs={"t": Attr.int64(3)}))
    g = XGraph("g", [op], attrs={"ga": Attr.string("v")})
    b1 = serialize(g)
    g2 = parse_xmodel(b1)
    assert serialize(g2) == b1
    assert g2.op("x").attrs == op.attrs
    assert g2.op("x").output.attrs == {"t": Attr.int64(3)}
    assert g2.attrs == {"ga": Attr.string("v")}
    # the same graph built with attributes inserted in another order gives the same bytes
    op_rev = XOp("x", "data", dict(reversed(list(op.attrs.items()))), {}, XTensor("x", (1, 2), attrs={"t": Attr.int64(3)}))
    assert serialize(XGraph("g", [op_rev], attrs={"ga": Attr.string("v")})) == b1


def test_attr_normalisation_and_inference():
    assert Attr.float(0.1).value == float(np.float32(0.1))
    assert Attr.int32_vec(np.array([1, 2])).value == (1, 2)
    with pytest.raises(ValueError):
        Attr.int32(1 << 31)
    with pytest.raises(TypeError):
        Attr.int32(1.0)
    with pytest.raises(TypeError):
        Attr.int32(True)
    with pytest.raises(TypeError):
        Attr.bool(1)
    assert Attr.infer(3).type is AttrType.INT32
    assert Attr.infer(3.0).type is AttrType.DOUBLE
    assert Attr.infer([1, 2]).type is AttrType.INT32_VEC
    assert Attr.infer([1.0, 2]).type is AttrType.DOUBLE_VEC
    assert Attr.infer(True).type is AttrType.BOOL
    assert Attr.infer({"a": "b"}).type is AttrType.MAP_STR_STRING
    assert Attr.int32(1) != Attr.int64(1)


def test_set_attr_uses_registry_types():
    op = XOp("c", "conv2d", {"kernel": [3, 3], "stride": [1, 1], "pad_mode": "FLOOR",
                             "group": 1, "bias_term": True, "in_dim": 3})
    assert op.attrs["kernel"].type is AttrType.INT32_VEC
    assert op.attrs["group"].type is AttrType.INT32
    assert op.attrs["bias_term"].type is AttrType.BOOL
    assert op.attrs["in_dim"].type is AttrType.INT32
    lr = XOp("l", "leaky-relu", {"alpha": 0.1015625})
    assert lr.attrs["alpha"].type is AttrType.FLOAT
    l2 = XOp("n", "l2_normalize", {"epsilon": 1e-12})
    assert l2.attrs["epsilon"].type is AttrType.DOUBLE
