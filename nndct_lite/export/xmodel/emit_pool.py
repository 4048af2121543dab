"""Pooling (``maxpool2d``, ``avgpool2d`` incl. ceil mode, global and adaptive) and means.

Average pools and means carry the DPU's correction factor as the original writes it:
``<name>_i0`` (the pool / ``reduction_mean``) times the const ``<name>_i1``, then the fix.
Squeeze-excite's ``x.mean((2, 3), keepdim=True)`` is written as the original writes it: the CPU
op ``aten::mean`` (in NCHW)."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import Attr, XOp
from .args import arg, input_node, pair
from .layout import stored_axis, stored_shape

__all__ = ["emit_pool", "emit_mean", "pool_is_exportable", "mean_on_cpu"]


def _torch_out(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    v = (n + 2 * p - k) / s
    out = (math.ceil(v) if ceil else math.floor(v)) + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def _window(b, node: Node):
    """kernel, stride, pads [l, r, t, b], pad_mode and whether it is global, from the node."""
    src = input_node(node)
    ih, iw = src.dims[2], src.dims[3]
    oh, ow = node.dims[2], node.dims[3]
    if node.kind is OpKind.ADAPTIVE_AVGPOOL2D:
        kh, kw = ih // oh, iw // ow
        return (kh, kw), (kh, kw), [0, 0, 0, 0], "FLOOR", oh == 1 and ow == 1
    ks = pair(arg(node, 1, "kernel_size"), "kernel_size")
    st = arg(node, 2, "stride", None)
    st = ks if st is None or st == [] or st == () else pair(st, "stride")
    ph, pw = pair(arg(node, 3, "padding", 0), "padding")
    ceil = bool(arg(node, 5 if node.kind is OpKind.MAXPOOL2D else 4, "ceil_mode", False))
    pads, mode = [pw, pw, ph, ph], "FLOOR"
    if ceil:
        mode = "CEIL"
        for n, k, s, p, o in ((iw, ks[1], st[1], pw, ow), (ih, ks[0], st[0], ph, oh)):
            xir = math.ceil((n + 2 * p - k) / s) + 1
            if xir != o:     # torch drops a last window that starts in the padding: pad less
                mode = "FLOOR"
        if mode == "FLOOR":
            pads = [pw, (ow - 1) * st[1] + ks[1] - iw - pw, ph, (oh - 1) * st[0] + ks[0] - ih - ph]
    return ks, st, pads, mode, False


def pool_is_exportable(node: Node) -> bool:
    """False for what XIR pools cannot express (dilated max pools, adaptive pools whose input
    is not a multiple of the output, divisor_override): those run on the CPU."""
    if node.kind is OpKind.ADAPTIVE_AVGPOOL2D:
        src = input_node(node)
        return src.dims[2] % node.dims[2] == 0 and src.dims[3] % node.dims[3] == 0
    if node.kind is OpKind.MAXPOOL2D:
        return pair(arg(node, 4, "dilation", 1), "dilation") == (1, 1) \
            and not arg(node, 6, "return_indices", False)
    return arg(node, 6, "divisor_override", None) is None


def emit_pool(b, node: Node) -> None:
    x = b.get(input_node(node), True)
    (kh, kw), (sh, sw), pads, mode, glob = _window(b, node)
    name = b.name(node)
    shape = stored_shape(node.dims, True)
    attrs = {"kernel": Attr.int32_vec([kw, kh]), "stride": Attr.int32_vec([sw, sh]),
             "pad": Attr.int32_vec(pads), "pad_mode": Attr.string(mode), "global": Attr.bool(glob)}
    if node.kind is OpKind.MAXPOOL2D:
        b.finish(node, XOp(name, "maxpool2d", attrs=attrs, inputs={"input": [x]}), cl=True)
        return
    include = True if node.kind is OpKind.ADAPTIVE_AVGPOOL2D else \
        bool(arg(node, 5, "count_include_pad", True))
    attrs["count_include_pad"] = Attr.bool(include)
    attrs["count_include_invalid"] = Attr.bool(True)
    b.add(XOp(name + "_i0", "avgpool2d", attrs=attrs, inputs={"input": [x]}), shape)
    factor = b.result_of(node).output_factor
    b.const(name + "_i1", np.array([factor], np.float32))
    b.finish(node, XOp(name, "mul", inputs={"input": [name + "_i0", name + "_i1"]}), cl=True)


def _dims(node: Node) -> tuple[list[int], bool]:
    src = input_node(node)
    rank = len(src.dims)
    dim = arg(node, 1, "dim", None)
    if dim is None:
        dims = list(range(rank))
    else:
        dims = [int(dim)] if isinstance(dim, int) else [int(d) for d in dim]
    return sorted(d % rank for d in dims), bool(arg(node, 2, "keepdim", False))


def mean_on_cpu(node: Node) -> bool:
    """The original writes squeeze-excite's spatial mean with keepdim as ``aten::mean``."""
    dims, keep = _dims(node)
    return len(input_node(node).dims) == 4 and dims == [2, 3] and keep


def emit_mean(b, node: Node) -> None:
    """``reduction_mean`` over the reduced axes (DPU), times the correction factor if any."""
    src = input_node(node)
    rank = len(src.dims)
    dims, keep = _dims(node)
    if arg(node, 3, "dtype", None) is not None:
        raise ExportError("mean with a dtype is not exportable", where=node.name)
    cl = rank == 4
    if cl and not keep:
        rest_cl = [d for d in (0, 2, 3, 1) if d not in dims]
        cl = rest_cl == sorted(rest_cl)          # NHWC order of what is left = torch order
    x = b.get(src, cl)
    axes = sorted(stored_axis(d, rank, cl) for d in dims)
    name = b.name(node)
    out_cl = cl and keep
    shape = stored_shape(node.dims, out_cl)
    factor = b.result_of(node).output_factor
    attrs = {"axis": Attr.int32_vec(axes), "keep_dims": Attr.bool(keep)}
    if factor == 1.0:
        b.finish(node, XOp(name, "reduction_mean", attrs=attrs, inputs={"input": [x]}), cl=out_cl)
        return
    b.add(XOp(name + "_i0", "reduction_mean", attrs=attrs, inputs={"input": [x]}), shape)
    b.const(name + "_i1", np.array([factor], np.float32))
    b.finish(node, XOp(name, "mul", inputs={"input": [name + "_i0", name + "_i1"]}), cl=out_cl)
