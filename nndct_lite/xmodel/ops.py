"""The op types and attribute types our writer may emit (XIR 3.5 built-in definitions).

Each :class:`OpSpec` lists the input arguments (with their occurrence rule) and the registered
attributes with their exact :class:`~.model.AttrType`, whether they are required, their default
and, for vectors, the fixed length (0 = any). :func:`validate_graph` checks an :class:`XGraph`
against it before writing and raises :class:`~nndct_lite.errors.ExportError` naming the op and the
attribute: a wrong attribute type would make XIR fail with ``bad any_cast`` or abort while loading.

Attributes that are not registered (e.g. ``bias_term``, ``in_dim`` on ``conv2d``, which the Vitis AI
quantizer adds) are allowed with any type, as XIR allows them.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from nndct_lite.errors import ExportError

from .model import Attr, AttrType, XGraph, XOp, XSubGraph, numpy_dtype_of, parse_data_type

__all__ = ["Occur", "ArgSpec", "AttrSpec", "OpSpec", "REGISTRY", "get_spec", "attr_type",
           "validate_op", "validate_graph", "ROUND_MODES"]

T = AttrType
ROUND_MODES = ("DPU_ROUND", "STD_ROUND", "PY3_ROUND")


class Occur(enum.IntEnum):
    """Occurrence rule of an input argument (``OpArgDef.occur_type``)."""

    REQUIRED = 0
    OPTIONAL = 1
    REPEATED = 2
    REQUIRED_AND_REPEATED = 3

    def accepts(self, n: int) -> bool:
        return {Occur.REQUIRED: n == 1, Occur.OPTIONAL: n <= 1, Occur.REPEATED: True,
                Occur.REQUIRED_AND_REPEATED: n >= 1}[self]

    @property
    def rule(self) -> str:
        return {Occur.REQUIRED: "exactly 1", Occur.OPTIONAL: "at most 1", Occur.REPEATED: "any number",
                Occur.REQUIRED_AND_REPEATED: "at least 1"}[self]


@dataclass(frozen=True)
class ArgSpec:
    name: str
    occur: Occur


@dataclass(frozen=True)
class AttrSpec:
    name: str
    type: AttrType
    required: bool
    default: Attr | None = None
    list_length: int = 0  # vectors only: 0 = any length


@dataclass(frozen=True)
class OpSpec:
    name: str
    args: tuple[ArgSpec, ...]
    attrs: tuple[AttrSpec, ...]

    def arg(self, name: str) -> ArgSpec | None:
        return next((a for a in self.args if a.name == name), None)

    def attr(self, name: str) -> AttrSpec | None:
        return next((a for a in self.attrs if a.name == name), None)


# -- small constructors for the table ---------------------------------------------------------
R, O, REP, RR = Occur.REQUIRED, Occur.OPTIONAL, Occur.REPEATED, Occur.REQUIRED_AND_REPEATED


def _req(name, t, n=0):
    return AttrSpec(name, t, True, None, n)


def _opt(name, t, default, n=0):
    return AttrSpec(name, t, False, Attr(t, default), n)


def _args(*pairs):
    return tuple(ArgSpec(n, o) for n, o in pairs)


REGISTRY: dict[str, OpSpec] = {}


def _def(names: str | Iterable[str], args, attrs=()):
    for n in ([names] if isinstance(names, str) else names):
        REGISTRY[n] = OpSpec(n, tuple(args), tuple(attrs))


_SRC = (_req("shape", T.INT32_VEC), _req("data_type", T.STRING))
_def(["data", "data-fix"], (), _SRC)
_def(["const", "const-fix"], (), _SRC + (_req("data", T.BYTES),))

_FIX = (_req("fix_point", T.INT32), _req("bit_width", T.INT32), _req("round_mode", T.STRING),
        _req("if_signed", T.BOOL))
_def(["fix", "float2fix", "fix2float"], _args(("input", R)), _FIX)

_CONV_ARGS = _args(("input", R), ("weights", R), ("bias", O))


def _conv_attrs(n):  # n = spatial rank
    return (_req("kernel", T.INT32_VEC, n), _req("stride", T.INT32_VEC, n),
            _opt("dilation", T.INT32_VEC, [1] * n, n), _req("pad_mode", T.STRING),
            _opt("pad", T.INT32_VEC, [0] * (2 * n), 2 * n))


_def("conv2d", _CONV_ARGS, _conv_attrs(2) + (_opt("group", T.INT32, 1),))
_def(["depthwise-conv2d", "transposed-conv2d", "transposed-depthwise-conv2d"], _CONV_ARGS,
     _conv_attrs(2))
_def("conv1d", _CONV_ARGS, _conv_attrs(1))
_def(["conv3d", "depthwise-conv3d", "transposed-conv3d", "transposed-depthwise-conv3d"],
     _CONV_ARGS, _conv_attrs(3))


def _conv_fix_attrs(n):
    return (_req("kernel", T.INT32_VEC, n), _req("stride", T.INT32_VEC, n),
            _opt("dilation", T.INT32_VEC, [1] * n, n), _opt("pad", T.INT32_VEC, [0] * (2 * n), 2 * n),
            _opt("nonlinear", T.STRING, ""), _opt("hsigmoid_in", T.INT32, -128),
            _opt("shift_hsigmoid", T.INT32, -128), _opt("shift_hswish", T.INT32, -128))


_def("conv2d-fix", _CONV_ARGS, _conv_fix_attrs(2) + (_opt("group", T.INT32, 1),))
_def(["depthwise-conv2d-fix", "transposed-conv2d-fix", "transposed-depthwise-conv2d-fix"],
     _CONV_ARGS, _conv_fix_attrs(2))
_def(["conv3d-fix", "depthwise-conv3d-fix", "transposed-conv3d-fix",
      "transposed-depthwise-conv3d-fix"], _CONV_ARGS, _conv_fix_attrs(3))

_POOL = (_req("kernel", T.INT32_VEC, 2), _req("stride", T.INT32_VEC, 2), _req("pad_mode", T.STRING),
         _opt("pad", T.INT32_VEC, [0, 0, 0, 0], 4), _opt("global", T.BOOL, False))
_def("maxpool2d", _args(("input", R)), _POOL)
_def("avgpool2d", _args(("input", R)), _POOL + (_opt("count_include_pad", T.BOOL, True),
                                                _opt("count_include_invalid", T.BOOL, True)))
_def("maxpool1d", _args(("input", R)),
     (_req("kernel", T.INT32_VEC, 1), _req("stride", T.INT32_VEC, 1), _req("pad_mode", T.STRING),
      _opt("pad", T.INT32_VEC, [0, 0], 2), _opt("global", T.BOOL, False)))
_def("pool-fix", _args(("input", R)),
     (_req("kernel", T.INT32_VEC, 2), _req("stride", T.INT32_VEC, 2),
      _opt("pad", T.INT32_VEC, [0, 0, 0, 0], 4), _req("type", T.STRING)))

_def(["add", "sub", "mul", "div", "min", "max"], _args(("input", RR)))
_def("eltwise-fix", _args(("input", RR)), (_opt("nonlinear", T.STRING, "NONE"),
                                            _opt("type", T.STRING, "ADD")))
_def("depthwise-fix", _args(("input", RR)), (_opt("type", T.STRING, "MUL"),))
_def("scale", _args(("input", R), ("scale", R), ("bias", O)), (_opt("axis", T.INT32, -1),))
_def(["neg", "exp"], _args(("input", R)))

_def(["relu", "relu6", "sigmoid", "tanh", "gelu", "mish", "selu", "swish", "hard-sigmoid",
      "hard-swish", "hard-tanh", "hard-sigmoid-fix"], _args(("input", R)))
_def("leaky-relu", _args(("input", R)), (_req("alpha", T.FLOAT),))
_def("prelu", _args(("input", R), ("weight", R)))
_def(["elu", "celu"], _args(("input", R)), (_opt("alpha", T.FLOAT, 1.0),))

_def("reshape", _args(("input", R), ("shape", O)), (_opt("shape", T.INT32_VEC, [0]),))
_def("reshape-fix", _args(("input", R)), (_req("shape", T.INT32_VEC),))
_def("flatten", _args(("input", R)), (_req("start_axis", T.INT32), _req("end_axis", T.INT32)))
_def(["concat", "concat-fix"], _args(("input", RR)), (_req("axis", T.INT32),))
_def("transpose", _args(("input", R)), (_req("order", T.INT32_VEC),))
_def("squeeze", _args(("input", R)), (_opt("axis", T.INT32_VEC, []),))
_def(["strided_slice", "strided_slice-fix"], _args(("input", R)),
     (_req("begin", T.INT32_VEC), _req("end", T.INT32_VEC), _req("strides", T.INT32_VEC)))
_def("pad", _args(("input", R)), (_req("paddings", T.INT32_VEC), _req("mode", T.STRING),
                                   _opt("constant_values", T.FLOAT_VEC, [])))
_def("pad-fix", _args(("input", R)), (_req("paddings", T.INT32_VEC), _req("mode", T.STRING),
                                       _opt("constant_values", T.BYTES, b"")))
_RESIZE_COMMON = (_req("mode", T.STRING), _opt("align_corners", T.BOOL, False),
                  _opt("half_pixel_centers", T.BOOL, False))
_def("resize", _args(("input", R), ("size", O)), _RESIZE_COMMON + (_opt("scale", T.FLOAT_VEC, []),))
_def(["upsample-fix", "downsample-fix"], _args(("input", R), ("size", O)),
     _RESIZE_COMMON + (_req("scale", T.FLOAT_VEC, 2),))
_def(["identity", "placeholder", "upload", "download"], _args(("input", R)))
_def(["reorg", "reorg-fix", "pixel-shuffle-fix"], _args(("input", R)),
     (_req("scale", T.INT32), _req("reverse", T.BOOL)))
_def("pixel-shuffle", _args(("input", R)), (_req("scale", T.INT32), _req("upscale", T.BOOL)))
_def("stack", _args(("input", RR)), (_req("axis", T.INT32),))
_def("shape", _args(("input", R)))
_def("cast", _args(("input", R)), (_req("data_type", T.STRING),))

_def("inner-product", _CONV_ARGS, (_req("axis", T.INT32),))
_def("matmul", _args(("input", RR), ("bias", O)),
     (_req("transpose_a", T.BOOL), _req("transpose_b", T.BOOL)))
_def(["reduction_mean", "reduction_sum", "reduction_product", "reduction_max",
      "reduction_max-fix"], _args(("input", R)),
     (_req("axis", T.INT32_VEC), _req("keep_dims", T.BOOL)))
_def("softmax", _args(("input", R)), (_req("axis", T.INT32),))
_def("hard-softmax", _args(("input", R)), (_req("axis", T.INT32), _req("type", T.STRING)))
_def(["argmax", "argmax-fix"], _args(("input", R)), (_req("axis", T.INT32),))
_def("l2_normalize", _args(("input", R)), (_opt("axis", T.INT32_VEC, []),
                                            _opt("epsilon", T.DOUBLE, 1e-12)))
_def("batchnorm", _args(("input", R), ("gamma", R), ("beta", R), ("moving_mean", R),
                        ("moving_var", R)), (_req("axis", T.INT32), _req("epsilon", T.FLOAT)))
_def("instancenorm", _args(("input", R), ("weight", O), ("bias", O)),
     (_req("eps", T.FLOAT), _req("affine", T.BOOL)))
_def("groupnorm", _args(("input", R), ("weight", O), ("bias", O)),
     (_req("num_groups", T.INT32), _req("num_channels", T.INT32), _req("eps", T.FLOAT),
      _req("affine", T.BOOL)))
_def("threshold", _args(("input", R), ("threshold", R)))

# Attributes the Vitis AI quantizer adds beyond the registry, with the types its files use
# (seen in a file written by the original quantizer). Not required, but typed when set from a
# plain value through XOp.set_attr.
EXTRA_ATTR_TYPES: dict[tuple[str, str], AttrType] = {
    ("conv2d", "bias_term"): T.BOOL, ("conv2d", "in_dim"): T.INT32, ("conv2d", "out_dim"): T.INT32,
    ("depthwise-conv2d", "bias_term"): T.BOOL, ("depthwise-conv2d", "in_dim"): T.INT32,
    ("depthwise-conv2d", "out_dim"): T.INT32, ("transposed-conv2d", "bias_term"): T.BOOL,
    ("transposed-conv2d", "in_dim"): T.INT32, ("transposed-conv2d", "out_dim"): T.INT32,
    ("strided_slice", "begin_mask"): T.INT32, ("strided_slice", "end_mask"): T.INT32,
    ("strided_slice", "ellipsis_mask"): T.INT32, ("strided_slice", "new_axis_mask"): T.INT32,
    ("strided_slice", "shrink_axis_mask"): T.INT32,
}


def get_spec(op_type: str) -> OpSpec | None:
    return REGISTRY.get(op_type)


def attr_type(op_type: str, name: str) -> AttrType | None:
    """Registered type of attribute ``name`` of ``op_type`` (None when not registered)."""
    spec = REGISTRY.get(op_type)
    a = spec.attr(name) if spec else None
    if a is not None:
        return a.type
    return EXTRA_ATTR_TYPES.get((op_type, name))


# -- validation -------------------------------------------------------------------------------

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
