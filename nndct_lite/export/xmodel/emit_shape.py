"""Data movement: reshape / flatten / squeeze / unsqueeze (``reshape`` with the original's stacked
shape operand), permute / transpose (``transpose``), slicing (``strided_slice``; a chunk or split
is one ``strided_slice`` per output used through getitem), ``pad`` and ``resize``.

Reshapes work in torch's order: a 4-D NHWC input is first brought to NCHW unless only size-1
dims move, and a 4-D result stays NCHW until a DPU op asks for NHWC."""
from __future__ import annotations

import operator

from ...errors import ExportError
from ...graph.ir import Node
from ...graph.ops import OpKind
from ...xmodel.model import INT32_MAX, Attr, XOp
from .args import arg, input_node
from .layout import TO_CL, Val, compose_order, is_trivial_perm, stored_perm, stored_shape

__all__ = ["emit_reshape", "emit_permute", "emit_getitem", "emit_split_item", "emit_pad",
           "emit_resize", "is_split_item"]


def emit_reshape(b, node: Node) -> None:
    src = input_node(node)
    x = b.get(src, False, for_reshape=True)
    dims = stored_shape(node.dims, False)
    cl = len(dims) == 4 and is_trivial_perm(dims, list(TO_CL))
    b.finish(node, b.reshape(b.name(node), x, stored_shape(node.dims, cl)), cl=cl)


def _perm(node: Node) -> list[int]:
    rank = len(node.dims)
    if node.kind is OpKind.TRANSPOSE:
        d0, d1 = int(arg(node, 1, "dim0")) % rank, int(arg(node, 2, "dim1")) % rank
        p = list(range(rank))
        p[d0], p[d1] = p[d1], p[d0]
        return p
    dims = node.args[1:] if len(node.args) > 1 else [node.kwargs["dims"]]
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = dims[0]
    return [int(d) % rank for d in dims]


def emit_permute(b, node: Node) -> None:
    src = input_node(node)
    v = b.val(src)
    perm = _perm(node)
    rank = len(perm)
    in_cl = v.cl and rank == 4
    choices = [False, True] if rank == 4 else [False]
    for out_cl in choices:
        if compose_order(perm, in_cl, out_cl) == list(range(rank)):
            b.alias(node, type(v)(v.name, v.base, out_cl, rank))      # nothing moves in memory
            return
    to_dpu = any(u.kind not in (OpKind.RESHAPE, OpKind.FLATTEN, OpKind.SQUEEZE,
                                OpKind.UNSQUEEZE, OpKind.PERMUTE, OpKind.TRANSPOSE)
                 for u in node.users)
    out_cl = rank == 4 and to_dpu
    order = compose_order(perm, in_cl, out_cl)
    op = XOp(b.name(node), "transpose", attrs={"order": Attr.int32_vec(order)},
             inputs={"input": [v.name]})
    b.finish(node, op, cl=out_cl)


def _slice_op(b, node: Node, src: Node, begin, end, strides, bmask, emask, name=None):
    """``strided_slice`` of ``src`` (torch-order vectors and masks) in src's stored layout."""
    rank = len(src.dims)
    cl = rank == 4                  # slices of feature maps run on the DPU, in NHWC
    x = b.get(src, cl)
    p = stored_perm(rank, cl)
    begin, end, strides = ([vec[i] for i in p] for vec in (begin, end, strides))
    bm = sum(((bmask >> d) & 1) << i for i, d in enumerate(p))
    em = sum(((emask >> d) & 1) << i for i, d in enumerate(p))
    op = XOp(name or b.name(node), "strided_slice", attrs={
        "begin": Attr.int32_vec(begin), "end": Attr.int32_vec(end),
        "strides": Attr.int32_vec(strides), "begin_mask": Attr.int32(bm),
        "end_mask": Attr.int32(em), "ellipsis_mask": Attr.int32(0),
        "new_axis_mask": Attr.int32(0), "shrink_axis_mask": Attr.int32(0)},
        inputs={"input": [x]})
    return op, cl


def emit_getitem(b, node: Node) -> None:
    """``x[...]`` with slices (and Ellipsis) on a tensor."""
    src = input_node(node)
    shape = list(src.dims)
    rank = len(shape)
    idx = node.args[1]
    idx = list(idx) if isinstance(idx, tuple) else [idx]
    if any(i is Ellipsis for i in idx):
        k = idx.index(Ellipsis)
        idx = idx[:k] + [slice(None)] * (rank - len(idx) + 1) + idx[k + 1:]
    begin, end, strides = [0] * rank, [INT32_MAX] * rank, [1] * rank
    bmask = emask = 0
    for d in range(rank):
        s = idx[d] if d < len(idx) else slice(None)
        if not isinstance(s, slice) or any(isinstance(v, Node) for v in (s.start, s.stop, s.step)):
            raise ExportError(f"index {s!r} on dim {d} is not a constant slice; only slicing is "
                              "exported as strided_slice", where=node.name)
        n = shape[d]
        if s.step is not None and s.step <= 0:
            raise ExportError(f"slice step {s.step} is not positive", where=node.name)
        strides[d] = s.step or 1
        if s.start is None:
            bmask |= 1 << d
        else:
            begin[d] = s.start + n if s.start < 0 else s.start
        if s.stop is None:
            emask |= 1 << d
        else:
            end[d] = min(s.stop + n if s.stop < 0 else s.stop, INT32_MAX)
    op, cl = _slice_op(b, node, src, begin, end, strides, bmask, emask)
    b.finish(node, op, cl=cl)


def is_split_item(node: Node) -> bool:
    """getitem on the tuple of a chunk / split."""
    if node.target is not operator.getitem or not node.args or not isinstance(node.args[0], Node):
        return False
    parent = node.args[0]
    name = parent.target if isinstance(parent.target, str) else getattr(parent.target, "__name__", "")
    return parent.kind in (OpKind.CHUNK, OpKind.SPLIT) or name in ("chunk", "split", "unbind")


def _sections(parent: Node, size: int) -> list[int]:
    name = _target(parent)
    if name == "unbind":
        return [1] * size
    if name == "chunk":
        n = int(arg(parent, 1, "chunks"))
        step = -(-size // n)
        return [min(step, size - i) for i in range(0, size, step)]
    s = arg(parent, 1, "split_size_or_sections")
    if isinstance(s, int):
        return [min(s, size - i) for i in range(0, size, s)]
    return [int(v) for v in s]


def emit_split_item(b, node: Node) -> None:
    parent = node.args[0]
    src = input_node(parent)
    rank = len(src.dims)
    unbind = _target(parent) == "unbind"
    dim = int(arg(parent, 1 if unbind else 2, "dim", 0)) % rank
    secs = _sections(parent, src.dims[dim])
    k = int(node.args[1])
    if not -len(secs) <= k < len(secs):
        raise ExportError(f"item {k} of a split into {len(secs)} parts", where=node.name)
    k %= len(secs)                  # parts[-1] is the last part
    begin, end, strides = [0] * rank, [INT32_MAX] * rank, [1] * rank
    begin[dim], end[dim] = sum(secs[:k]), sum(secs[:k + 1])
    full = (1 << rank) - 1 - (1 << dim)
    if not unbind:
        op, cl = _slice_op(b, node, src, begin, end, strides, full, full)
        b.finish(node, op, cl=cl)
        return
    # unbind: the slice keeps the dim (size 1); a reshape drops it, in torch order
    name = b.name(node) + "_i0"
    op, cl = _slice_op(b, node, src, begin, end, strides, full, full, name=name)
    kept = list(src.dims)
    kept[dim] = 1
    b.add(op, stored_shape(kept, cl))
    x = b.convert(Val(name, name, True, 4), kept, False, for_reshape=True) if cl else name
    dims = stored_shape(node.dims, False)
    out_cl = len(dims) == 4 and is_trivial_perm(dims, list(TO_CL))
    b.finish(node, b.reshape(b.name(node), x, stored_shape(node.dims, out_cl)), cl=out_cl)


def _target(node: Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")


_PAD_MODES = {"constant": "CONSTANT", "reflect": "REFLECT"}


def emit_pad(b, node: Node) -> None:
    src = input_node(node)
    rank = len(src.dims)
    pads = list(arg(node, 1, "pad"))
    mode = arg(node, 2, "mode", "constant")
    value = arg(node, 3, "value", None) or 0.0
    if mode not in _PAD_MODES or len(pads) % 2 or len(pads) > 2 * rank:
        raise ExportError(f"pad mode {mode!r} / pads {pads} have no XIR pad", where=node.name)
    per_dim = [[0, 0] for _ in range(rank)]
    for i in range(len(pads) // 2):
        per_dim[rank - 1 - i] = [int(pads[2 * i]), int(pads[2 * i + 1])]
    if any(p < 0 for pd in per_dim for p in pd):
        raise ExportError(f"negative pads {pads} (cropping) are not exported", where=node.name)
    cl = rank == 4
    x = b.get(src, cl)
    paddings = [p for d in stored_perm(rank, cl) for p in per_dim[d]]
    op = XOp(b.name(node), "pad", attrs={"paddings": Attr.int32_vec(paddings),
                                         "mode": Attr.string(_PAD_MODES[mode]),
                                         "constant_values": Attr.float_vec([float(value)] * 2 * rank)},
             inputs={"input": [x]})
    b.finish(node, op, cl=cl)


def emit_resize(b, node: Node) -> None:
    src = input_node(node)
    if len(src.dims) != 4:
        raise ExportError("only 4-D (N, C, H, W) resizes are exported", where=node.name)
    mode = str(arg(node, 3, "mode", "nearest"))
    if mode not in ("nearest", "bilinear"):
        raise ExportError(f"interpolation mode {mode!r} is not exported (nearest, bilinear)",
                          where=node.name)
    align = bool(arg(node, 4, "align_corners", None) or False)
    (ih, iw), (oh, ow) = src.dims[2:], node.dims[2:]
    attrs = {"mode": Attr.string(mode.upper()), "align_corners": Attr.bool(align),
             "half_pixel_centers": Attr.bool(mode == "bilinear" and not align),
             "scale": Attr.float_vec([ow / iw, oh / ih])}
    x = b.get(src, True)
    b.finish(node, XOp(b.name(node), "resize", attrs=attrs, inputs={"input": [x]}), cl=True)

