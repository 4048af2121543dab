"""Ops with no DPU equivalent: written, as the original does, as XIR custom ops named after the
torch op (``aten::silu_``, ``aten::mean``, ``aten::sin``), with the ``shape`` (NCHW dims) and
``data_type`` attributes XIR needs, plus the torch call's other arguments as attributes and a
module's parameters as inputs (``cpu_args``). They read and write torch's NCHW order; the builder
adds the layout conversions at their borders. A DPU correction factor (a mean over a count that
is not a power of two) follows as ``<name>_i0`` times the const ``<name>_i1``."""
from __future__ import annotations

import numpy as np

from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import Attr, XOp
from .cpu_args import CallArgs, call_args
from .layout import stored_shape

__all__ = ["cpu_type", "emit_cpu"]

_BY_KIND = {OpKind.SILU: "silu", OpKind.MEAN: "mean", OpKind.HARDTANH: "hardtanh",
            OpKind.CONV1D: "conv1d", OpKind.CONV3D: "conv3d", OpKind.BATCHNORM: "batch_norm",
            OpKind.MAXPOOL2D: "max_pool2d", OpKind.AVGPOOL2D: "avg_pool2d",
            OpKind.ADAPTIVE_AVGPOOL2D: "adaptive_avg_pool2d", OpKind.INTERPOLATE: "upsample",
            OpKind.PAD: "pad", OpKind.GELU: "gelu", OpKind.SOFTMAX: "softmax"}


def _inplace(node: Node) -> bool:
    if node.module is not None and getattr(node.module, "inplace", False):
        return True
    if node.kwargs.get("inplace") is True:
        return True
    return isinstance(node.target, str) and node.target.endswith("_") \
        and not node.target.startswith("_")


def cpu_type(node: Node) -> str:
    """``aten::<op>`` (``_`` appended for an in-place op), the original's CPU op type."""
    if node.kind in _BY_KIND:
        base = _BY_KIND[node.kind]
    elif node.op == "call_module" and node.module is not None:
        base = type(node.module).__name__.lower()
    elif isinstance(node.target, str):
        base = node.target.rstrip("_")
    else:
        base = getattr(node.target, "__name__", str(node.target)).rstrip("_")
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in base) or "op"
    return f"aten::{base}" + ("_" if _inplace(node) else "")


def _inputs(b, node: Node, args: CallArgs) -> list[str]:
    """The op names of the call's tensors (torch layout) and of a module's parameters."""
    out = []
    for _, v in args.inputs:
        if isinstance(v, Node):
            out.append(b.get(v, False))
        else:
            arr = node.params[v].detach().cpu().float().numpy()
            out.append(b.param(node, v, arr, None, None))
    return out


def emit_cpu(b, node: Node) -> None:
    xtype = cpu_type(node)
    name = b.name(node)
    args = call_args(node)
    ins = _inputs(b, node, args)
    shape = stored_shape(node.shape or (), False)
    factor = b.result_of(node).output_factor
    core = name + "_i0" if factor != 1.0 else name
    attrs = {"shape": Attr.int32_vec(shape), "data_type": Attr.string("FLOAT32")}
    attrs.update(args.attrs)
    if ins:
        attrs["input_args"] = Attr.string_vec([k for k, _ in args.inputs])
    op = XOp(core, xtype, attrs=attrs, inputs={"input": ins})
    b.cpu(node, xtype)
    if factor == 1.0:
        b.finish(node, op, cl=False)
        return
    b.add(op, shape)
    b.const(name + "_i1", np.array([factor], np.float32))
    b.finish(node, XOp(name, "mul", inputs={"input": [core, name + "_i1"]}), cl=False)
