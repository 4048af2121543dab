"""Checks an :class:`~.model.XGraph` against the op registry (:mod:`.ops`) before it is written.

:func:`validate_graph` raises :class:`~nndct_lite.errors.ExportError` naming the op and the
attribute: a wrong attribute type would make XIR fail with ``bad any_cast`` or abort while loading.
Attributes that are not registered are allowed with any type, as XIR allows them.
"""
from __future__ import annotations

import re

import numpy as np

from nndct_lite.errors import ExportError

from .model import Attr, XGraph, XOp, XSubGraph, numpy_dtype_of, parse_data_type
from .ops import EXTRA_ATTR_TYPES, REGISTRY, ROUND_MODES

__all__ = ["validate_op", "validate_graph"]


def _err(op: XOp, msg: str, attr: str | None = None, hint: str | None = None) -> ExportError:
    where = f"op {op.name!r} ({op.type})" + (f", attribute {attr!r}" if attr else "")
    return ExportError(f"{where}: {msg}", where=op.name if attr is None else f"{op.name}.{attr}",
                       hint=hint)


_NAME_OK = re.compile(r"^\S.*$", re.S)


def validate_op(op: XOp, shapes: dict[str, tuple[int, ...]] | None = None, *,
                allow_unregistered: bool = False) -> None:
    """Check one op against the registry; ``shapes`` (producer name -> output dims) enables the
    shape constraints XIR enforces with an abort (conv channels, pad lengths, concat dims)."""
    if not op.name or not _NAME_OK.match(op.name):
        raise _err(op, "op names must be non-empty")
    if op.output is None:
        raise _err(op, "has no output tensor")
    if any(d < 0 or d > 0xFFFFFFFF for d in op.output.shape):
        raise _err(op, f"output shape {list(op.output.shape)} has a dimension outside uint32")
    if op.output.bit_width <= 0:
        raise _err(op, f"output tensor bit width {op.output.bit_width} must be positive")
    for k, a in list(op.attrs.items()) + list(op.output.attrs.items()):
        if not isinstance(a, Attr):
            raise _err(op, f"value {a!r} is not an Attr", k)
    spec = REGISTRY.get(op.type)
    if spec is None:
        if allow_unregistered:
            return
        raise _err(op, f"op type {op.type!r} is not in nndct_lite's XIR op registry",
                   hint="XIR would register it as a custom op; pass allow_unregistered=True to "
                        "write it anyway (it then needs 'shape' int32_vec and 'data_type' string)")
    # inputs
    for arg, names in op.inputs.items():
        if spec.arg(arg) is None:
            raise _err(op, f"has an input argument {arg!r}; {op.type} takes "
                           f"{[a.name for a in spec.args] or 'no inputs'}")
        if not all(isinstance(n, str) and n for n in names):
            raise _err(op, f"input argument {arg!r} has an invalid producer name in {names!r}")
    for a_spec in spec.args:
        n = len(op.inputs.get(a_spec.name, []))
        if not a_spec.occur.accepts(n):
            raise _err(op, f"input argument {a_spec.name!r} has {n} op(s); {a_spec.occur.name} "
                           f"needs {a_spec.occur.rule}")
    # attributes
    for s in spec.attrs:
        v = op.attrs.get(s.name)
        if v is None:
            if s.required:
                raise _err(op, f"required attribute is missing (type {s.type.short})", s.name)
            continue
        if v.type is not s.type:
            raise _err(op, f"must be {s.type.short} ({s.type.member}), got {v.type.short}", s.name,
                       hint=f"use Attr({s.type}, ...) or XOp.set_attr with a plain value")
        if s.list_length and s.type.container == "vec" and len(v.value) != s.list_length:
            raise _err(op, f"needs {s.list_length} values, got {len(v.value)}: {list(v.value)}", s.name)
    for (op_type, name), t in EXTRA_ATTR_TYPES.items():
        if op_type == op.type and name in op.attrs and op.attrs[name].type is not t:
            raise _err(op, f"should be {t.short} like the original quantizer writes it, got "
                           f"{op.attrs[name].type.short}", name)
    _check_semantics(op, shapes or {})


def _check_semantics(op: XOp, shapes: dict[str, tuple[int, ...]]) -> None:
    t = op.type
    if t in ("data", "data-fix", "const", "const-fix", "cast") or (t == "custom"):
        try:
            parse_data_type(op.attr("data_type"))
        except ValueError as e:
            raise _err(op, str(e), "data_type") from None
    if t in ("data", "data-fix", "const", "const-fix"):
        shape = op.attr("shape")
        if t.startswith("data") and any(d <= 0 for d in shape):
            raise _err(op, f"all dims must be > 0, got {list(shape)}", "shape")
        if tuple(shape) != tuple(op.shape):
            raise _err(op, f"{list(shape)} differs from the output tensor dims {list(op.shape)}",
                       "shape")
    if t in ("const", "const-fix"):
        dt = numpy_dtype_of(op.attr("data_type"))
        n = int(np.prod(op.attr("shape"), dtype=np.int64))
        if dt is not None and len(op.attr("data")) != n * dt.itemsize:
            raise _err(op, f"{len(op.attr('data'))} bytes, but shape {list(op.attr('shape'))} of "
                           f"{op.attr('data_type')} needs {n * dt.itemsize}", "data")
    if t in ("fix", "float2fix", "fix2float"):
        if op.attr("round_mode") not in ROUND_MODES:
            raise _err(op, f"{op.attr('round_mode')!r} is not one of {ROUND_MODES}", "round_mode")
        if not 1 <= op.attr("bit_width") <= 32:
            raise _err(op, f"{op.attr('bit_width')} is not in 1..32", "bit_width")
    if t in ("conv2d", "depthwise-conv2d", "transposed-conv2d", "transposed-depthwise-conv2d",
             "maxpool2d", "avgpool2d") and "pad_mode" in op.attrs:
        if op.attr("pad_mode") not in ("FLOOR", "CEIL", "SAME", "VALID"):
            raise _err(op, f"{op.attr('pad_mode')!r} is not FLOOR, CEIL, SAME or VALID", "pad_mode")
    if t in ("pad", "pad-fix") and op.attr("mode") not in ("CONSTANT", "REFLECT", "SYMMETRIC"):
        raise _err(op, f"{op.attr('mode')!r} is not CONSTANT, REFLECT or SYMMETRIC", "mode")
    if t == "resize" and op.attr("mode") not in ("NEAREST", "BILINEAR", "TRILINEAR"):
        raise _err(op, f"{op.attr('mode')!r} is not NEAREST, BILINEAR or TRILINEAR", "mode")
    if t in ("pool-fix",) and op.attr("type") not in ("MAX", "AVG"):
        raise _err(op, f"{op.attr('type')!r} is not MAX or AVG", "type")

    def shape_of(arg, i=0):
        names = op.inputs.get(arg, [])
        return shapes.get(names[i]) if len(names) > i else None

    xs = shape_of("input")
    if t in ("conv2d", "depthwise-conv2d", "conv2d-fix", "depthwise-conv2d-fix"):
        ws = shape_of("weights")
        if ws is not None and len(ws) != 4:
            raise _err(op, f"weights must be 4-D (OHWI), got {list(ws)}")
        if ws is not None and xs is not None and len(xs) == 4:
            cin = xs[-1]
            if t.startswith("conv2d"):
                g = op.attr("group", 1)
                if g <= 0 or cin % g or ws[0] % g or ws[-1] * g != cin:
                    raise _err(op, f"input channels {cin}, group {g} and weights {list(ws)} do not "
                                   "agree (need weights[-1] = in_channels / group, both divisible)")
            elif ws[-1] != cin:
                raise _err(op, f"depthwise weights {list(ws)} need last dim = input channels {cin}")
        if ws is not None and "kernel" in op.attrs and tuple(op.attr("kernel")) != (ws[2], ws[1]):
            raise _err(op, f"{list(op.attr('kernel'))} (w, h) differs from weights {list(ws)} "
                           "(OHWI)", "kernel")
    if t in ("pad", "pad-fix") and xs is not None and len(op.attr("paddings")) != 2 * len(xs):
        raise _err(op, f"needs {2 * len(xs)} values for a rank-{len(xs)} input, got "
                       f"{len(op.attr('paddings'))}", "paddings")
    if t in ("concat", "concat-fix"):
        in_names = op.inputs.get("input", [])
        if in_names and all(n in shapes for n in in_names):
            ins = [shapes[n] for n in in_names]
            rank = len(ins[0])
            ax = op.attr("axis")
            if not -rank <= ax < rank or any(len(s) != rank for s in ins):
                raise _err(op, f"axis {ax} / input ranks {[len(s) for s in ins]} do not agree", "axis")
            ax %= rank
            for s in ins[1:]:
                if any(a != b for i, (a, b) in enumerate(zip(s, ins[0])) if i != ax):
                    raise _err(op, f"input shapes {[list(s) for s in ins]} differ outside axis {ax}")
    if t in ("flatten",) and xs is not None:
        r = len(xs)
        sa, ea = op.attr("start_axis"), op.attr("end_axis")
        if not (-r <= sa < r and -r <= ea < r and sa % r <= ea % r):
            raise _err(op, f"start_axis {sa} / end_axis {ea} invalid for rank {r}")
    if t == "matmul" and len(op.inputs.get("input", [])) != 2:
        raise _err(op, "needs exactly 2 inputs")


def validate_graph(graph: XGraph, *, allow_unregistered: bool = False) -> None:
    """Validate names, order, subgraphs and every op; raises ExportError on the first problem."""
    if not isinstance(graph.name, str) or not graph.name:
        raise ExportError("the graph needs a non-empty name")
    graph.check_topological()
    shapes = {op.name: op.output.shape for op in graph.ops if op.output is not None}
    for op in graph.ops:
        validate_op(op, shapes, allow_unregistered=allow_unregistered)
    if graph.root is not None:
        _validate_subgraphs(graph, graph.root)


def _validate_subgraphs(graph: XGraph, root: XSubGraph) -> None:
    names = set(op.name for op in graph.ops)
    seen_sub: set[str] = set()

    def visit(sg: XSubGraph, is_root: bool) -> None:
        if sg.name in seen_sub:
            raise ExportError(f"subgraph name {sg.name!r} is used twice", where=sg.name)
        seen_sub.add(sg.name)
        if is_root:
            pass  # the root's op list is ignored by XIR; its children make the tree
        elif sg.ops and sg.children:
            raise ExportError(f"subgraph {sg.name!r} has both ops and children", where=sg.name)
        elif not sg.ops and not sg.children:
            raise ExportError(f"subgraph {sg.name!r} has neither ops nor children", where=sg.name)
        for n in sg.ops:
            if n not in names:
                raise ExportError(f"subgraph {sg.name!r} lists unknown op {n!r}", where=sg.name)
        covered: list[str] = []
        for c in sg.children:
            visit(c, False)
            covered.extend(c.all_ops())
        if len(covered) != len(set(covered)):
            dup = next(n for n in covered if covered.count(n) > 1)
            raise ExportError(f"op {dup!r} is in two children of subgraph {sg.name!r}", where=sg.name)

    visit(root, True)
