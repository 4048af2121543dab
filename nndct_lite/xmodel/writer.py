"""XGraph -> XModel bytes / file.

* ``ops`` must be in topological order (every op after its producers); otherwise ExportError.
* Attributes are written with exactly the member their :class:`~.model.Attr` names. Keys starting
  with ``__`` are private and left out, as XIR's own writer does.
* Every input argument of the op's registry definition is written in definition order (empty
  ``arg_ops`` for absent optional ones, like XIR's writer); arguments the registry does not know
  follow in the op's own order.
* Output is deterministic: maps are serialized with sorted keys, so the same graph always gives
  the same bytes. ``op_defs`` are only written when the graph carries them (a graph read from a
  file) and ``include_op_defs`` is true; XIR does not need them.
* :func:`write_xmodel` writes atomically: a temporary file in the target folder, fsync, then
  ``os.replace``.
"""
from __future__ import annotations

import os
from pathlib import Path

from nndct_lite.errors import ExportError

from . import proto
from .model import Attr, XGraph, XSubGraph, XTensor
from .ops import REGISTRY
from .validate import validate_graph

__all__ = ["attr_to_proto", "to_proto", "serialize", "write_xmodel"]


def attr_to_proto(attr: Attr, out=None):
    """Fill (or create) a ``proto.AttrValue`` from ``attr``."""
    av = proto.AttrValue() if out is None else out
    t = attr.type
    member, kind, c = t.member, t.element, t.container
    v = attr.value
    if c == "scalar":
        if kind == "bytes":
            av.bytes_value.value = v
        else:
            setattr(av, member, v)
        return av
    wrapper = getattr(av, member)
    wrapper.SetInParent()  # an empty vector/map still records its type
    if c == "vec":
        if kind == "bytes":
            for b in v:
                wrapper.value.add().value = b
        else:
            wrapper.value.extend(v)
    elif c == "map":
        for k, x in v.items():
            if kind == "bytes":
                wrapper.value[k].value = x
            else:
                wrapper.value[k] = x
    else:  # map of vectors
        for k, x in v.items():
            wrapper.value[k].value.extend(x)
    return av


def _fill_attrs(pmap, attrs: dict[str, Attr], where: str) -> None:
    for k, a in attrs.items():
        if k.startswith("__"):
            continue
        if not isinstance(a, Attr):
            raise ExportError(f"{where}: attribute {k!r} is {type(a).__name__}, not an Attr",
                              where=where)
        attr_to_proto(a, pmap[k])


def _tensor(t: XTensor, msg, where: str) -> None:
    msg.tensor_name = t.name
    msg.tensor_dim.extend(t.shape)
    msg.data_type = int(t.data_type)
    msg.tensor_bit_width = t.bit_width
    _fill_attrs(msg.tensor_attr, t.attrs, where + " output tensor")


def _subgraph(sg: XSubGraph, msg) -> None:
    msg.subgraph_name = sg.name
    msg.op_name.extend(sg.ops)
    _fill_attrs(msg.subg_attr, sg.attrs, f"subgraph {sg.name!r}")
    for c in sg.children:
        _subgraph(c, msg.subg_child.add())


def to_proto(graph: XGraph, *, validate: bool = True, include_op_defs: bool = True,
             allow_unregistered: bool = False):
    """The ``proto.Graph`` message of ``graph`` (validated against the op registry first)."""
    graph.check_topological()
    if validate:
        validate_graph(graph, allow_unregistered=allow_unregistered)
    g = proto.Graph()
    g.graph_name = graph.name
    for op in graph.ops:
        if op.output is None:
            raise ExportError(f"op {op.name!r} ({op.type}) has no output tensor", where=op.name)
        node = g.op_node.add()
        node.op_name = op.name
        node.op_type = op.type
        _fill_attrs(node.op_attr, op.attrs, f"op {op.name!r} ({op.type})")
        spec = REGISTRY.get(op.type)
        order = [a.name for a in spec.args] if spec else []
        order += [a for a in op.inputs if a not in order]
        for arg in order:
            a = node.args.add()
            a.arg_name = arg
            a.arg_ops.extend(op.inputs.get(arg, []))
        _tensor(op.output, node.output_tensor, f"op {op.name!r}")
    if graph.root is not None:
        _subgraph(graph.root, g.subg_root)
    _fill_attrs(g.graph_attr, graph.attrs, "graph")
    if include_op_defs:
        for raw in graph.op_defs:
            g.op_defs.add().ParseFromString(raw)
    return g


def serialize(graph: XGraph, *, validate: bool = True, include_op_defs: bool = True,
              allow_unregistered: bool = False) -> bytes:
    """The .xmodel bytes of ``graph`` (deterministic)."""
    msg = to_proto(graph, validate=validate, include_op_defs=include_op_defs,
                   allow_unregistered=allow_unregistered)
    return msg.SerializeToString(deterministic=True)


def write_xmodel(graph: XGraph, path: str | os.PathLike, *, validate: bool = True,
                 include_op_defs: bool = True, allow_unregistered: bool = False) -> Path:
    """Serialize ``graph`` and write it atomically to ``path`` (parent folders are created).
    Returns the path. Nothing is written when validation fails."""
    data = serialize(graph, validate=validate, include_op_defs=include_op_defs,
                     allow_unregistered=allow_unregistered)
    from ..state.files import atomic_write_bytes
    path = atomic_write_bytes(path, data)
    return path
