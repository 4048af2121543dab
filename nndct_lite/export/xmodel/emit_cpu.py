"""Ops with no DPU equivalent: written, as the original does, as XIR custom ops named after the
torch op (``aten::silu_``, ``aten::mean``, ``aten::sin``), with the ``shape`` (NCHW dims) and
``data_type`` attributes XIR needs. They read and write torch's NCHW order; the builder adds the
layout conversions at their borders. A DPU correction factor (a mean over a count that is not a
power of two) follows as ``<name>_i0`` times the const ``<name>_i1``."""
from __future__ import annotations

import numpy as np

from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import Attr, XOp
from .args import tensor_args
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


def emit_cpu(b, node: Node) -> None:
    xtype = cpu_type(node)
    name = b.name(node)
    ins = [b.get(t, False) for t in tensor_args(node)]
    shape = stored_shape(node.shape or (), False)
    factor = b.result_of(node).output_factor
    core = name + "_i0" if factor != 1.0 else name
    op = XOp(core, xtype, attrs={"shape": Attr.int32_vec(shape),
                                 "data_type": Attr.string("FLOAT32")}, inputs={"input": ins})
    b.cpu(node, xtype)
    if factor == 1.0:
        b.finish(node, op, cl=False)
        return
    b.add(op, shape)
    b.const(name + "_i1", np.array([factor], np.float32))
    b.finish(node, XOp(name, "mul", inputs={"input": [core, name + "_i1"]}), cl=False)
