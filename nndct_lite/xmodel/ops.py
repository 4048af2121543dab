"""The op types and attribute types our writer may emit (XIR 3.5 built-in definitions).

Each :class:`OpSpec` lists the input arguments (with their occurrence rule) and the registered
attributes with their exact :class:`~.model.AttrType`, whether they are required, their default
and, for vectors, the fixed length (0 = any). :func:`~.validate.validate_graph` checks an
:class:`XGraph` against it before writing.

Attributes that are not registered (e.g. ``bias_term``, ``in_dim`` on ``conv2d``, which the Vitis AI
quantizer adds) are allowed with any type, as XIR allows them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable

from .attrs import Attr, AttrType

__all__ = ["Occur", "ArgSpec", "AttrSpec", "OpSpec", "REGISTRY", "EXTRA_ATTR_TYPES", "get_spec",
           "attr_type", "ROUND_MODES"]

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
