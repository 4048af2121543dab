"""Convolutions (conv2d, depthwise-conv2d, transposed-conv2d, transposed-depthwise-conv2d),
linear layers (``matmul``) and unfolded batch norms (``batchnorm``)."""
from __future__ import annotations

import numpy as np
import torch.nn as nn

from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import Attr, XOp
from .args import input_node, pair

__all__ = ["emit_conv", "emit_linear", "emit_batchnorm"]


def _array(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() + np.float32(0.0)   # -0.0 -> +0.0, like XIR


def _weights(b, node: Node, key: str, layout):
    """The deployed parameter ``key`` (quantized, folded) as a const + fix, ``layout`` applied."""
    nr = b.result_of(node)
    t = nr.weight if key == "weight" else nr.bias
    if t is None:
        t = node.params.get(key)
        qp = qkey = None
    else:
        qp = nr.weight_params if key == "weight" else nr.bias_params
        qkey = nr.weight_key if key == "weight" else nr.bias_key
    if t is None:
        return None
    return b.param(node, key, layout(_array(t)), qkey, qp)


def _same_pads(k: int, d: int) -> tuple[int, int]:
    total = d * (k - 1)
    return total // 2, total - total // 2


def emit_conv(b, node: Node) -> None:
    m = node.module
    if not isinstance(m, nn.modules.conv._ConvNd):
        raise ExportError("functional convolutions are not exported; use an nn.Conv2d module",
                          where=node.name)
    if getattr(m, "padding_mode", "zeros") != "zeros":
        raise ExportError(f"padding_mode {m.padding_mode!r} is not exportable to an XModel",
                          where=node.name, hint="use zero padding or an explicit F.pad")
    kh, kw = pair(m.kernel_size, "kernel_size")
    sh, sw = pair(m.stride, "stride")
    dh, dw = pair(m.dilation, "dilation")
    transposed = node.kind is OpKind.CONV_TRANSPOSE2D
    groups = int(m.groups)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            pads = [0, 0, 0, 0]
        else:
            (pt, pb), (pl, pr) = _same_pads(kh, dh), _same_pads(kw, dw)
            pads = [pl, pr, pt, pb]
    else:
        ph, pw = pair(m.padding, "padding")
        pads = [pw, pw, ph, ph]
    if transposed:
        oh, ow = pair(m.output_padding, "output_padding")
        pads = [pads[0], pads[1] - ow, pads[2], pads[3] - oh]   # XIR crops (left, right, top, bottom)
        depthwise = groups > 1 and groups == m.in_channels and groups == m.out_channels
        if groups > 1 and not depthwise:
            raise ExportError(f"grouped transposed convolution (groups={groups}) has no XIR op",
                              where=node.name)
        xtype = "transposed-depthwise-conv2d" if depthwise else "transposed-conv2d"
        layout = lambda a: a.transpose(1, 2, 3, 0)       # (in, out, kh, kw) -> (out, kh, kw, in)
    elif node.kind is OpKind.DEPTHWISE_CONV2D:
        xtype = "depthwise-conv2d"
        cin = int(m.in_channels)
        layout = lambda a: a.reshape(cin, -1, *a.shape[2:]).transpose(1, 2, 3, 0)
    else:
        xtype = "conv2d"
        layout = lambda a: a.transpose(0, 2, 3, 1)       # OIHW -> OHWI
    if min(pads) < 0:
        raise ExportError(f"padding {pads} is negative after output_padding", where=node.name)
    attrs = {"kernel": Attr.int32_vec([kw, kh]), "stride": Attr.int32_vec([sw, sh]),
             "dilation": Attr.int32_vec([dw, dh]), "pad": Attr.int32_vec(pads),
             "pad_mode": Attr.string("FLOOR"), "bias_term": Attr.bool("bias" in node.params),
             "in_dim": Attr.int32(int(m.in_channels)), "out_dim": Attr.int32(int(m.out_channels))}
    if xtype in ("conv2d", "depthwise-conv2d"):
        attrs["group"] = Attr.int32(groups)
    x = b.get(input_node(node), True)
    w = _weights(b, node, "weight", layout)
    bias = _weights(b, node, "bias", lambda a: a)
    inputs = {"input": [x], "weights": [w]}
    if bias:
        inputs["bias"] = [bias]
    b.finish(node, XOp(b.name(node), xtype, attrs=attrs, inputs=inputs), cl=True)


def emit_linear(b, node: Node) -> None:
    src = input_node(node)
    x = b.get(src, False)
    w = _weights(b, node, "weight", lambda a: a)
    bias = _weights(b, node, "bias", lambda a: a)
    inputs = {"input": [x, w]}
    if bias:
        inputs["bias"] = [bias]
    op = XOp(b.name(node), "matmul", attrs={"transpose_a": Attr.bool(False),
                                            "transpose_b": Attr.bool(True)}, inputs=inputs)
    b.finish(node, op, cl=False)


def emit_batchnorm(b, node: Node) -> None:
    """A batch norm that was not folded into a convolution: XIR ``batchnorm`` on the channel
    axis with its running statistics (gamma/beta as deployed)."""
    m = node.module
    src = input_node(node)
    rank = len(node.shape or ())
    if not isinstance(m, nn.modules.batchnorm._BatchNorm) or "running_mean" not in node.params:
        raise ExportError("a batch norm without running statistics is not exportable",
                          where=node.name)
    x = b.get(src, True)
    n = int(node.params["running_mean"].numel())
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    gamma = _weights(b, node, "weight", lambda a: a) if "weight" in node.params else \
        b.const(b.prefix + b.name(node) + "_gamma", ones, param=True)
    beta = _weights(b, node, "bias", lambda a: a) if "bias" in node.params else \
        b.const(b.prefix + b.name(node) + "_beta", zeros, param=True)
    mean = b.param(node, "running_mean", _array(node.params["running_mean"]), None, None)
    var = b.param(node, "running_var", _array(node.params["running_var"]), None, None)
    op = XOp(b.name(node), "batchnorm",
             attrs={"axis": Attr.int32(3 if rank == 4 else 1), "epsilon": Attr.float(float(m.eps))},
             inputs={"input": [x], "gamma": [gamma], "beta": [beta], "moving_mean": [mean],
                     "moving_var": [var]})
    b.finish(node, op, cl=True)
