"""Protocol Buffers message classes of the XModel (XIR ``serial_v2``) format.

There is no protoc step: the schema is described here as a ``FileDescriptorProto`` built in Python,
added to a private :class:`~google.protobuf.descriptor_pool.DescriptorPool` (so it can never clash
with another copy of the same package name in the default pool) and turned into classes with
:func:`google.protobuf.message_factory.GetMessageClass`.

Field numbers follow ``docs/xmodel.md`` / the format notes exactly; only numbers and wire types
matter on disk. Exposed classes: :data:`Graph`, :data:`OPNode`, :data:`OpArg`, :data:`Tensor`,
:data:`SubGraph`, :data:`AttrValue`, :data:`OpDef`, :data:`OpArgDef`, :data:`AttrDef`, every
vector/map wrapper (``Int32Vec``, ``MapString2String`` ...) and :data:`ATTR_VALUE_MEMBERS`, the
``(oneof member name, field number, wrapper message name or None)`` table of ``AttrValue``.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "PACKAGE", "ATTR_VALUE_MEMBERS", "message_class", "Graph", "OPNode", "OpArg", "Tensor",
    "SubGraph", "AttrValue", "OpDef", "OpArgDef", "AttrDef", "Bytes",
]

PACKAGE = "serial_v2"
_FILE_NAME = "nndct_lite/xmodel_serial_v2.proto"

_F = descriptor_pb2.FieldDescriptorProto
_T_BOOL, _T_INT32, _T_UINT32 = _F.TYPE_BOOL, _F.TYPE_INT32, _F.TYPE_UINT32
_T_INT64, _T_UINT64 = _F.TYPE_INT64, _F.TYPE_UINT64
_T_FLOAT, _T_DOUBLE = _F.TYPE_FLOAT, _F.TYPE_DOUBLE
_T_STRING, _T_BYTES, _T_MSG, _T_ENUM = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE, _F.TYPE_ENUM
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# (member name, field number, scalar type or wrapper message name)
_ATTR_MEMBERS = [
    ("bool_value", 4, _T_BOOL),
    ("int32_value", 5, _T_INT32),
    ("uint32_value", 6, _T_UINT32),
    ("int64_value", 7, _T_INT64),
    ("uint64_value", 8, _T_UINT64),
    ("float_value", 9, _T_FLOAT),
    ("double_value", 10, _T_DOUBLE),
    ("string_value", 11, _T_STRING),
    ("bytes_value", 12, "Bytes"),
    ("bool_vec_value", 13, "BoolVec"),
    ("int32_vec_value", 14, "Int32Vec"),
    ("uint32_vec_value", 15, "Uint32Vec"),
    ("int64_vec_value", 16, "Int64Vec"),
    ("uint64_vec_value", 17, "Uint64Vec"),
    ("float_vec_value", 18, "FloatVec"),
    ("double_vec_value", 19, "DoubleVec"),
    ("string_vec_value", 20, "StringVec"),
    ("bytes_vec_value", 21, "BytesVec"),
    ("map_string_2_int32_value", 22, "MapString2Int32"),
    ("map_string_2_uint32_value", 23, "MapString2Uint32"),
    ("map_string_2_int64_value", 24, "MapString2Int64"),
    ("map_string_2_uint64_value", 25, "MapString2Uint64"),
    ("map_string_2_string_value", 26, "MapString2String"),
    ("map_string_2_bytes_value", 27, "MapString2Bytes"),
    ("map_string_2_int32_vec_value", 28, "MapString2Int32Vec"),
    ("map_string_2_uint32_vec_value", 29, "MapString2Uint32Vec"),
    ("map_string_2_int64_vec_value", 30, "MapString2Int64Vec"),
    ("map_string_2_uint64_vec_value", 31, "MapString2Uint64Vec"),
    ("map_string_2_string_vec_value", 32, "MapString2StringVec"),
]

#: ``(member, number, wrapper message name or None)`` for every ``AttrValue`` oneof member
ATTR_VALUE_MEMBERS = tuple((m, n, t if isinstance(t, str) else None) for m, n, t in _ATTR_MEMBERS)

# wrapper messages: name -> element scalar type, or wrapper message name (``repeated <msg>``)
_VEC_WRAPPERS = {
    "BoolVec": _T_BOOL, "Int32Vec": _T_INT32, "Uint32Vec": _T_UINT32, "Int64Vec": _T_INT64,
    "Uint64Vec": _T_UINT64, "FloatVec": _T_FLOAT, "DoubleVec": _T_DOUBLE,
    "StringVec": _T_STRING, "BytesVec": "Bytes",
}
# map wrappers: name -> value scalar type or message name; key is always string
_MAP_WRAPPERS = {
    "MapString2Int32": _T_INT32, "MapString2Uint32": _T_UINT32, "MapString2Int64": _T_INT64,
    "MapString2Uint64": _T_UINT64, "MapString2String": _T_STRING, "MapString2Bytes": "Bytes",
    "MapString2Int32Vec": "Int32Vec", "MapString2Uint32Vec": "Uint32Vec",
    "MapString2Int64Vec": "Int64Vec", "MapString2Uint64Vec": "Uint64Vec",
    "MapString2StringVec": "StringVec",
}


def _qual(name: str) -> str:
    return f".{PACKAGE}.{name}"


def _field(msg, name: str, number: int, ftype, label=_OPT, oneof_index: int | None = None):
    f = msg.field.add()
    f.name = name
    f.number = number
    f.label = label
    if isinstance(ftype, str):
        if ftype.startswith("enum:"):
            f.type = _T_ENUM
            f.type_name = ftype[5:]
        else:
            f.type = _T_MSG
            f.type_name = ftype if ftype.startswith(".") else _qual(ftype)
    else:
        f.type = ftype
    if oneof_index is not None:
        f.oneof_index = oneof_index
    return f


def _map_field(msg, name: str, number: int, value_type, parent_qual: str):
    """A ``map<string, value_type>`` field: a nested ``<Name>Entry`` message with map_entry set."""
    entry_name = "".join(p.capitalize() for p in name.split("_")) + "Entry"
    entry = msg.nested_type.add()
    entry.name = entry_name
    entry.options.map_entry = True
    _field(entry, "key", 1, _T_STRING)
    _field(entry, "value", 2, value_type)
    _field(msg, name, number, f"{parent_qual}.{entry_name}", _REP)


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    fd.name = _FILE_NAME
    fd.package = PACKAGE
    fd.syntax = "proto3"

    def message(name):
        m = fd.message_type.add()
        m.name = name
        return m

    b = message("Bytes")
    _field(b, "value", 1, _T_BYTES)
    for name, elem in _VEC_WRAPPERS.items():
        _field(message(name), "value", 1, elem, _REP)
    for name, val in _MAP_WRAPPERS.items():
        _map_field(message(name), "value", 1, val, _qual(name))

    av = message("AttrValue")
    av.oneof_decl.add().name = "value"
    for member, number, t in _ATTR_MEMBERS:
        _field(av, member, number, t, oneof_index=0)

    arg = message("OpArg")
    _field(arg, "arg_name", 1, _T_STRING)
    _field(arg, "arg_ops", 2, _T_STRING, _REP)

    ten = message("Tensor")
    _field(ten, "tensor_name", 1, _T_STRING)
    _field(ten, "tensor_dim", 2, _T_UINT32, _REP)
    _field(ten, "data_type", 5, _T_INT32)
    _field(ten, "tensor_bit_width", 6, _T_INT32)
    _map_field(ten, "tensor_attr", 10, "AttrValue", _qual("Tensor"))

    op = message("OPNode")
    _field(op, "op_name", 1, _T_STRING)
    _field(op, "op_type", 2, _T_STRING)
    _map_field(op, "op_attr", 3, "AttrValue", _qual("OPNode"))
    _field(op, "args", 4, "OpArg", _REP)
    _field(op, "output_tensor", 5, "Tensor")

    sg = message("SubGraph")
    _field(sg, "subgraph_name", 1, _T_STRING)
    _field(sg, "op_name", 3, _T_STRING, _REP)
    _map_field(sg, "subg_attr", 5, "AttrValue", _qual("SubGraph"))
    _field(sg, "subg_child", 10, "SubGraph", _REP)

    oad = message("OpArgDef")
    e = oad.enum_type.add()
    e.name = "OccurType"
    for i, n in enumerate(("REQUIRED", "OPTIONAL", "REPEATED", "REQUIRED_AND_REPEATED")):
        v = e.value.add()
        v.name, v.number = n, i
    _field(oad, "name", 1, _T_STRING)
    _field(oad, "occur_type", 2, "enum:" + _qual("OpArgDef.OccurType"))
    _field(oad, "data_type", 3, _T_INT32)
    _field(oad, "annotation", 4, _T_STRING)

    ad = message("AttrDef")
    e = ad.enum_type.add()
    e.name = "OccurType"
    for i, n in enumerate(("REQUIRED", "OPTIONAL")):
        v = e.value.add()
        v.name, v.number = n, i
    _field(ad, "name", 1, _T_STRING)
    _field(ad, "occur_type", 3, "enum:" + _qual("AttrDef.OccurType"))
    _field(ad, "default_value", 4, "AttrValue")
    _field(ad, "list_length", 6, _T_INT32)
    _field(ad, "annotation", 7, _T_STRING)

    od = message("OpDef")
    _field(od, "name", 1, _T_STRING)
    _field(od, "input_args", 2, "OpArgDef", _REP)
    _field(od, "attrs", 3, "AttrDef", _REP)
    _field(od, "annotation", 4, _T_STRING)

    g = message("Graph")
    _field(g, "graph_name", 1, _T_STRING)
    _field(g, "op_node", 5, "OPNode", _REP)
    _field(g, "subg_root", 10, "SubGraph")
    _map_field(g, "graph_attr", 11, "AttrValue", _qual("Graph"))
    _field(g, "op_defs", 101, "OpDef", _REP)
    return fd


_POOL = descriptor_pool.DescriptorPool()
_FILE = _POOL.Add(_build_file())
_CLASSES: dict[str, type] = {}


def message_class(name: str) -> type:
    """The generated class of message ``name`` (e.g. ``"Graph"``, ``"Int32Vec"``)."""
    cls = _CLASSES.get(name)
    if cls is None:
        desc = _POOL.FindMessageTypeByName(f"{PACKAGE}.{name}")
        cls = message_factory.GetMessageClass(desc)
        _CLASSES[name] = cls
    return cls


Graph = message_class("Graph")
OPNode = message_class("OPNode")
OpArg = message_class("OpArg")
Tensor = message_class("Tensor")
SubGraph = message_class("SubGraph")
AttrValue = message_class("AttrValue")
OpDef = message_class("OpDef")
OpArgDef = message_class("OpArgDef")
AttrDef = message_class("AttrDef")
Bytes = message_class("Bytes")

for _name in list(_VEC_WRAPPERS) + list(_MAP_WRAPPERS):
    globals()[_name] = message_class(_name)
    __all__.append(_name)
del _name
