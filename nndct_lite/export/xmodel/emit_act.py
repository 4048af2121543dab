"""Activations: relu, relu6 (ReLU6, hardtanh/clamp to [0, 6]), leaky-relu, prelu, sigmoid, tanh,
gelu, softmax, and the DPU forms of hard-sigmoid and hard-swish.

The original writes hard-sigmoid as ``<name>_i0`` (``hard-sigmoid``) times the const
``<name>_i1`` = 6·2731/2^14 (the DPU's 2731/2^14 in place of 1/6), and hard-swish as that
product (``<node>_mul``, fixed at position 7, 8 bits) times the input."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import Attr, XOp
from .args import arg, input_node
from .layout import stored_axis, stored_shape

__all__ = ["emit_unary", "emit_leaky_relu", "emit_prelu", "emit_hardsigmoid", "emit_hardswish",
           "emit_softmax", "clamp_bounds", "HSIGMOID_SCALE"]

#: relu6(x + 3) * 2731 / 2^14 == hard-sigmoid(x) * HSIGMOID_SCALE
HSIGMOID_SCALE = 2731.0 * 6.0 / 16384.0
LEAKY_ALPHA = 26.0 / 256.0
_UNARY = {OpKind.RELU: "relu", OpKind.RELU6: "relu6", OpKind.SIGMOID: "sigmoid",
          OpKind.TANH: "tanh", OpKind.GELU: "gelu"}


def clamp_bounds(node: Node) -> tuple[float | None, float | None]:
    """(min, max) of a hardtanh / clamp node."""
    if node.kind is OpKind.HARDTANH or getattr(node.target, "__name__", "") == "hardtanh":
        return float(arg(node, 1, "min_val", -1.0)), float(arg(node, 2, "max_val", 1.0))
    lo = arg(node, 1, "min", None)
    hi = arg(node, 2, "max", None)
    return (None if lo is None else float(lo)), (None if hi is None else float(hi))


def relu_like(node: Node) -> str | None:
    """``relu`` / ``relu6`` when a clamp or hardtanh node is one, else None."""
    lo, hi = clamp_bounds(node)
    if lo == 0.0 and hi == 6.0:
        return "relu6"
    if lo == 0.0 and (hi is None or math.isinf(hi)):
        return "relu"
    return None


def emit_unary(b, node: Node, xtype: str | None = None) -> None:
    xtype = xtype or _UNARY.get(node.kind) or relu_like(node)
    if xtype is None:
        raise ExportError(f"{node.kind.value} has no XIR activation", where=node.name)
    x = b.get(input_node(node), True)
    b.finish(node, XOp(b.name(node), xtype, inputs={"input": [x]}), cl=True)


def emit_leaky_relu(b, node: Node) -> None:
    x = b.get(input_node(node), True)
    b.finish(node, XOp(b.name(node), "leaky-relu", attrs={"alpha": Attr.float(LEAKY_ALPHA)},
                       inputs={"input": [x]}), cl=True)


def emit_prelu(b, node: Node) -> None:
    x = b.get(input_node(node), True)
    w = node.params["weight"].detach().cpu().float().numpy().reshape(-1)
    wname = b.param(node, "weight", w, None, None)
    b.finish(node, XOp(b.name(node), "prelu", inputs={"input": [x], "weight": [wname]}), cl=True)


def emit_hardsigmoid(b, node: Node) -> None:
    x = b.get(input_node(node), True)
    name = b.name(node)
    b.add(XOp(name + "_i0", "hard-sigmoid", inputs={"input": [x]}), stored_shape(node.dims, True))
    b.const(name + "_i1", np.array([HSIGMOID_SCALE], np.float32))
    b.finish(node, XOp(name, "mul", inputs={"input": [name + "_i0", name + "_i1"]}), cl=True)


def emit_hardswish(b, node: Node) -> None:
    x = b.get(input_node(node), True)
    name = b.name(node)
    shape = stored_shape(node.dims, True)
    b.add(XOp(name + "_i0", "hard-sigmoid", inputs={"input": [x]}), shape)
    raw = node.name                      # the original names these two with the raw node name
    b.const(raw + "_i1", np.array([HSIGMOID_SCALE], np.float32))
    b.add(XOp(raw + "_mul", "mul", inputs={"input": [name + "_i0", raw + "_i1"]}), shape)
    h = b.fixed(raw + "_mul", shape, 7, 8)
    b.finish(node, XOp(name, "mul", inputs={"input": [h, x]}), cl=True)


def emit_softmax(b, node: Node) -> None:
    src = input_node(node)
    rank = len(node.dims)
    dim = arg(node, 1, "dim", None)
    if dim is None:
        dim = rank - 1
    x = b.get(src, True)
    op = XOp(b.name(node), "softmax",
             attrs={"axis": Attr.int32(stored_axis(int(dim), rank, True))}, inputs={"input": [x]})
    b.finish(node, op, cl=True)
