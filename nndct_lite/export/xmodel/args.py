"""Reading a graph node's torch call arguments (positional or keyword, module attributes)."""
from __future__ import annotations

from typing import Any

from ...errors import ExportError
from ...graph.ir import Node

__all__ = ["arg", "pair", "tensor_args", "input_node"]

_MISSING = object()


def arg(node: Node, pos: int, name: str, default: Any = _MISSING) -> Any:
    """Argument ``name`` of the call (``pos`` counts the tensor input as 0 for functions and
    methods); for a module call, the module's attribute of that name."""
    if node.op == "call_module" and node.module is not None and hasattr(node.module, name):
        return getattr(node.module, name)
    if name in node.kwargs:
        return node.kwargs[name]
    if pos < len(node.args):
        return node.args[pos]
    if default is _MISSING:
        raise ExportError(f"argument {name!r} of {node.name!r} is missing", where=node.name)
    return default


def pair(v, what: str = "value") -> tuple[int, int]:
    """An int or a pair -> (h, w)."""
    if isinstance(v, int):
        return v, v
    v = tuple(v)
    if len(v) == 1:
        return int(v[0]), int(v[0])
    if len(v) != 2:
        raise ExportError(f"{what} {v!r} is not an int or a pair")
    return int(v[0]), int(v[1])


def tensor_args(node: Node) -> list[Node]:
    """The tensor nodes the op reads, in argument order."""
    return [i for i in node.inputs if i.is_tensor]


def input_node(node: Node) -> Node:
    ins = tensor_args(node)
    if not ins:
        raise ExportError(f"{node.name!r} has no tensor input", where=node.name)
    return ins[0]
