"""Element-wise ``add`` / ``sub`` / ``mul`` / ``div`` (two operands, numpy broadcasting, e.g.
squeeze-excite's N×H×W×C × N×1×1×C; Python numbers and tensor constants become ``const`` ops)
and ``concat``."""
from __future__ import annotations

import numbers

import numpy as np
import torch

from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import Attr, XOp
from .args import arg
from .layout import TO_CL, Val, is_trivial_perm, stored_axis

__all__ = ["emit_binary", "emit_concat", "BINARY"]

BINARY = {OpKind.ADD: "add", OpKind.SUB: "sub", OpKind.MUL: "mul", OpKind.DIV: "div"}


def _operands(node: Node) -> list:
    a = node.args[0] if node.args else node.kwargs.get("input")
    o = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    return [a, o]


def _const_operand(b, name: str, value, out_rank: int) -> str:
    arr = np.asarray(value.detach().cpu().float().numpy() if isinstance(value, torch.Tensor)
                     else value, dtype=np.float32)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if out_rank == 4 and arr.ndim > 1:
        arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape).transpose(TO_CL)
    elif out_rank == 4 and arr.ndim == 1 and arr.shape[0] != 1:
        raise ExportError(f"a 1-D constant of {arr.shape[0]} values broadcasts over W in torch; "
                          "no NHWC equivalent", where=name)
    return b.const(name, arr, param=True)


def _tensor_operand(b, src: Node, out_rank: int, name: str) -> str:
    r = len(src.shape or ())
    if out_rank != 4:
        return b.get(src, False)
    if r == 4:
        return b.get(src, True)
    # a lower-rank tensor broadcasting against a 4-D one: make it 4-D (torch order), then NHWC
    padded = [1] * (4 - r) + list(src.dims)
    x = b.get(src, False, for_reshape=True)
    nhwc = [padded[p] for p in TO_CL]
    if is_trivial_perm(padded, list(TO_CL)):
        b.add(b.reshape(name, x, nhwc), nhwc)
        return name
    b.add(b.reshape(name, x, padded), padded)
    return b.convert(Val(name, name, False, 4), padded, True)


def emit_binary(b, node: Node) -> None:
    xtype = BINARY[node.kind]
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        raise ExportError(f"{xtype} with alpha={alpha} has no XIR form", where=node.name)
    name = b.name(node)
    out_rank = len(node.dims)
    names = []
    for i, a in enumerate(_operands(node)):
        if isinstance(a, Node) and a.kind is not OpKind.CONST:
            names.append(_tensor_operand(b, a, out_rank, f"{name}_i{i}_reshape"))
        elif isinstance(a, Node):
            names.append(_const_operand(b, f"{name}_i{i}", a.params.get("value"), out_rank))
        elif isinstance(a, (numbers.Number, torch.Tensor)) and not isinstance(a, bool):
            names.append(_const_operand(b, f"{name}_i{i}", a, out_rank))
        else:
            raise ExportError(f"operand {i} of {xtype} is {type(a).__name__}, not a tensor or a "
                              "number", where=node.name)
    b.finish(node, XOp(name, xtype, inputs={"input": names}), cl=True)


def emit_concat(b, node: Node) -> None:
    seq = node.args[0] if node.args else node.kwargs["tensors"]
    dim = arg(node, 1, "dim", 0)
    rank = len(node.dims)
    ins = [b.get(t, True) for t in seq]
    op = XOp(b.name(node), "concat", attrs={"axis": Attr.int32(stored_axis(int(dim), rank, True))},
             inputs={"input": ins})
    b.finish(node, op, cl=True)
