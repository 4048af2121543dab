"""The torch-side type name of a node that ``layer_type`` config rules match."""
from __future__ import annotations

from .ir import Node
from .ops import OpKind

__all__ = ["layer_type_of"]


def layer_type_of(node: Node) -> str:
    """The torch-side type name ``layer_type`` rules match (``Conv2d``, ``add``, ``cat`` ...)."""
    if node.kind is OpKind.INPUT:
        return "input"
    if node.op == "call_module":
        return type(node.module).__name__
    if node.op == "call_method":
        return str(node.target)
    name = getattr(node.target, "__name__", str(node.target))
    return {"getitem": "strided_slice", "truediv": "div", "concat": "cat"}.get(name, name)

