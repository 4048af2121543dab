"""XModel (XIR ``serial_v2``) export without XIR: in-memory graph, writer, reader, op registry.

>>> from nndct_lite.xmodel import read_xmodel, write_xmodel
>>> g = read_xmodel("model.xmodel")          # doctest: +SKIP
>>> write_xmodel(g, "copy.xmodel")           # doctest: +SKIP
"""
from .model import (Attr, AttrType, DataType, XGraph, XOp, XSubGraph, XTensor, const_data,
                    const_op, data_op, data_type_name, fix_op, numpy_dtype_of, parse_data_type)
from .ops import REGISTRY, AttrSpec, ArgSpec, Occur, OpSpec, attr_type, get_spec
from .validate import validate_graph, validate_op
from .reader import from_proto, parse_xmodel, read_xmodel
from .writer import serialize, to_proto, write_xmodel

__all__ = [
    "Attr", "AttrType", "DataType", "XGraph", "XOp", "XSubGraph", "XTensor", "const_data",
    "const_op", "data_op", "fix_op", "data_type_name", "numpy_dtype_of", "parse_data_type",
    "REGISTRY", "AttrSpec", "ArgSpec", "Occur", "OpSpec", "attr_type", "get_spec",
    "validate_graph", "validate_op", "from_proto", "parse_xmodel", "read_xmodel", "serialize",
    "to_proto", "write_xmodel",
]
