"""Which emitter writes a graph node: the DPU op families, or a CPU op (``emit_cpu``)."""
from __future__ import annotations

import operator
from typing import Callable

from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import data_op
from . import emit_act, emit_conv, emit_cpu, emit_eltwise, emit_pool, emit_shape
from .args import arg
from .layout import stored_shape

__all__ = ["handler_for", "runs_on_cpu", "DPU_KINDS"]

Handler = Callable[[object, Node], None]


def _input(b, node: Node) -> None:
    shape = stored_shape(node.shape or (), True)
    b.finish(node, data_op(b.name(node), shape, "FLOAT32"), cl=True)


def _alias(b, node: Node) -> None:
    b.alias(node, b.val(node.inputs[0]))


_FIXED: dict[OpKind, Handler] = {
    OpKind.INPUT: _input,
    OpKind.CONV2D: emit_conv.emit_conv, OpKind.DEPTHWISE_CONV2D: emit_conv.emit_conv,
    OpKind.CONV_TRANSPOSE2D: emit_conv.emit_conv, OpKind.LINEAR: emit_conv.emit_linear,
    OpKind.BATCHNORM: emit_conv.emit_batchnorm,
    OpKind.RELU: emit_act.emit_unary, OpKind.RELU6: emit_act.emit_unary,
    OpKind.SIGMOID: emit_act.emit_unary, OpKind.TANH: emit_act.emit_unary,
    OpKind.GELU: emit_act.emit_unary, OpKind.LEAKY_RELU: emit_act.emit_leaky_relu,
    OpKind.PRELU: emit_act.emit_prelu, OpKind.HARDSIGMOID: emit_act.emit_hardsigmoid,
    OpKind.HARDSWISH: emit_act.emit_hardswish, OpKind.SOFTMAX: emit_act.emit_softmax,
    OpKind.ADD: emit_eltwise.emit_binary, OpKind.SUB: emit_eltwise.emit_binary,
    OpKind.MUL: emit_eltwise.emit_binary, OpKind.DIV: emit_eltwise.emit_binary,
    OpKind.CAT: emit_eltwise.emit_concat,
    OpKind.RESHAPE: emit_shape.emit_reshape, OpKind.FLATTEN: emit_shape.emit_reshape,
    OpKind.SQUEEZE: emit_shape.emit_reshape, OpKind.UNSQUEEZE: emit_shape.emit_reshape,
    OpKind.PERMUTE: emit_shape.emit_permute, OpKind.TRANSPOSE: emit_shape.emit_permute,
    OpKind.DROPOUT: _alias, OpKind.IDENTITY: _alias, OpKind.CONTIGUOUS: _alias,
}

#: node kinds written as DPU (XIR built-in) ops when their arguments allow it
DPU_KINDS = frozenset(_FIXED) | {OpKind.MAXPOOL2D, OpKind.AVGPOOL2D, OpKind.ADAPTIVE_AVGPOOL2D,
                                 OpKind.MEAN, OpKind.STRIDED_SLICE, OpKind.PAD,
                                 OpKind.INTERPOLATE, OpKind.HARDTANH}

_CLAMPS = ("clamp", "clamp_", "clip", "clip_", "hardtanh", "hardtanh_")


def _target_name(node: Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", "")


def _pad_ok(node: Node) -> bool:
    return arg(node, 2, "mode", "constant") in ("constant", "reflect")


def _resize_ok(node: Node) -> bool:
    return len(node.shape or ()) == 4 and str(arg(node, 3, "mode", "nearest")) in \
        ("nearest", "bilinear")


def handler_for(node: Node) -> Handler | None:
    """The emitter of ``node``, or None for nodes that write nothing (Python values, sizes,
    constants, which are written where they are used)."""
    k = node.kind
    if k is OpKind.INPUT:
        return _input
    if not node.is_tensor or k in (OpKind.SIZE, OpKind.CONST):
        return None
    if k in (OpKind.MAXPOOL2D, OpKind.AVGPOOL2D, OpKind.ADAPTIVE_AVGPOOL2D):
        return emit_pool.emit_pool if emit_pool.pool_is_exportable(node) else emit_cpu.emit_cpu
    if k is OpKind.MEAN:
        return emit_cpu.emit_cpu if emit_pool.mean_on_cpu(node) else emit_pool.emit_mean
    if k is OpKind.STRIDED_SLICE:
        return emit_shape.emit_getitem
    if k is OpKind.PYOP and emit_shape.is_split_item(node):
        return emit_shape.emit_split_item
    if k is OpKind.PAD:
        return emit_shape.emit_pad if _pad_ok(node) else emit_cpu.emit_cpu
    if k is OpKind.INTERPOLATE:
        return emit_shape.emit_resize if _resize_ok(node) else emit_cpu.emit_cpu
    if k is OpKind.HARDTANH or (k is OpKind.OTHER and _target_name(node) in _CLAMPS):
        return emit_act.emit_unary if emit_act.relu_like(node) else emit_cpu.emit_cpu
    if k is OpKind.PYOP and node.target is operator.getitem:
        return None if not node.inputs or not node.inputs[0].is_tensor else emit_cpu.emit_cpu
    return _FIXED.get(k, emit_cpu.emit_cpu)


def runs_on_cpu(node: Node) -> bool:
    """True when the exporter writes ``node`` as a CPU op (``aten::<op>``): what an inspector
    should report as falling back to the CPU."""
    return handler_for(node) is emit_cpu.emit_cpu
