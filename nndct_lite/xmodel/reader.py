"""XModel bytes / file -> XGraph, for our files and for files written by XIR or Vitis AI.

Attributes come back with the member they were stored in (an ``int64`` stays ``int64``).
``AttrValue`` entries with no member set are skipped with a warning (XIR logs an error and keeps
an empty value). Empty input arguments (XIR writes one per registered argument) are dropped.
The ``op_defs`` registry copy is kept as serialized bytes in ``XGraph.op_defs``.
No op-registry validation happens on read.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from google.protobuf.message import DecodeError

from nndct_lite.errors import ExportError

from . import proto
from .model import Attr, AttrType, DataType, XGraph, XOp, XSubGraph, XTensor

__all__ = ["attr_from_proto", "from_proto", "parse_xmodel", "read_xmodel"]

_log = logging.getLogger(__name__)


def attr_from_proto(av) -> Attr | None:
    """``proto.AttrValue`` -> :class:`Attr` (None when no member is set)."""
    member = av.WhichOneof("value")
    if member is None:
        return None
    t = AttrType.from_member(member)
    kind, c = t.element, t.container
    w = getattr(av, member)
    if c == "scalar":
        return Attr(t, w.value if kind == "bytes" else w)
    if c == "vec":
        vals = [b.value for b in w.value] if kind == "bytes" else list(w.value)
        return Attr(t, vals)
    if c == "map":
        return Attr(t, {k: (x.value if kind == "bytes" else x) for k, x in sorted(w.value.items())})
    return Attr(t, {k: list(x.value) for k, x in sorted(w.value.items())})


def _attrs(pmap, where: str) -> dict[str, Attr]:
    out = {}
    for k in pmap:  # keep file order
        a = attr_from_proto(pmap[k])
        if a is None:
            _log.warning("%s: attribute %r has no value set; skipped", where, k)
            continue
        out[k] = a
    return out


def _dtype(v: int) -> DataType:
    try:
        return DataType(v)
    except ValueError:
        return DataType.UNKNOWN


def _subgraph(msg) -> XSubGraph:
    return XSubGraph(msg.subgraph_name, list(msg.op_name), [_subgraph(c) for c in msg.subg_child],
                     _attrs(msg.subg_attr, f"subgraph {msg.subgraph_name!r}"))


def from_proto(msg) -> XGraph:
    """``proto.Graph`` -> :class:`XGraph` (op order = file order)."""
    g = XGraph(msg.graph_name)
    for node in msg.op_node:
        inputs: dict[str, list[str]] = {}
        for a in node.args:
            if a.arg_ops:
                inputs.setdefault(a.arg_name, []).extend(a.arg_ops)
        t = node.output_tensor
        where = f"op {node.op_name!r}"
        out = XTensor(t.tensor_name or node.op_name, tuple(t.tensor_dim), _dtype(t.data_type),
                      t.tensor_bit_width, _attrs(t.tensor_attr, where + " tensor"))
        op = XOp(node.op_name, node.op_type, _attrs(node.op_attr, where), inputs, out)
        if op.name in g:
            raise ExportError(f"the file has two ops named {op.name!r}", where=op.name)
        g.add(op, check_inputs=False)
    if msg.HasField("subg_root"):
        g.root = _subgraph(msg.subg_root)
    g.attrs = _attrs(msg.graph_attr, "graph")
    g.op_defs = tuple(d.SerializeToString(deterministic=True) for d in msg.op_defs)
    return g


def parse_xmodel(data: bytes) -> XGraph:
    """Parse .xmodel bytes. Raises ExportError when they are not a Graph message."""
    msg = proto.Graph()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError as e:
        raise ExportError(f"not an XModel file: {e}", hint="is it an .xmodel (XIR serial_v2)?") from None
    return from_proto(msg)


def read_xmodel(path: str | os.PathLike) -> XGraph:
    """Read an .xmodel file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ExportError(f"cannot read {p}: {e}", where=str(p)) from None
    try:
        return parse_xmodel(data)
    except ExportError as e:
        raise ExportError(e.message, where=str(p), hint=e.hint) from None
