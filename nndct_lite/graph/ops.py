"""Operator kinds of the graph IR and how torch callables map onto them."""
from __future__ import annotations

import enum
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["OpKind", "kind_of_module", "kind_of_function", "kind_of_method", "kind_of_call",
           "QUANTIZABLE", "FOLLOWERS", "MEMORY_ONLY", "CONV_LIKE", "NNDCT_TYPE"]


class OpKind(enum.Enum):
    INPUT = "input"
    CONST = "const"
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    DEPTHWISE_CONV2D = "depthwise_conv2d"
    CONV3D = "conv3d"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    RELU = "relu"
    RELU6 = "relu6"
    LEAKY_RELU = "leaky_relu"
    HARDTANH = "hardtanh"
    HARDSIGMOID = "hardsigmoid"
    HARDSWISH = "hardswish"
    SIGMOID = "sigmoid"
    TANH = "tanh"
    SOFTMAX = "softmax"
    GELU = "gelu"
    SILU = "silu"
    MISH = "mish"
    PRELU = "prelu"
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    CAT = "cat"
    MAXPOOL2D = "maxpool2d"
    AVGPOOL2D = "avgpool2d"
    ADAPTIVE_AVGPOOL2D = "adaptive_avgpool2d"
    MEAN = "mean"
    FLATTEN = "flatten"
    RESHAPE = "reshape"
    PERMUTE = "permute"
    TRANSPOSE = "transpose"
    CONTIGUOUS = "contiguous"
    SQUEEZE = "squeeze"
    UNSQUEEZE = "unsqueeze"
    STRIDED_SLICE = "strided_slice"
    CHUNK = "chunk"
    SPLIT = "split"
    PAD = "pad"
    INTERPOLATE = "interpolate"
    DROPOUT = "dropout"
    IDENTITY = "identity"
    SIZE = "size"
    PYOP = "pyop"          # python-level op on non-tensors (getitem of a tuple, int arithmetic)
    OTHER = "other"        # anything else: runs in float


CONV_LIKE = frozenset({OpKind.CONV1D, OpKind.CONV2D, OpKind.DEPTHWISE_CONV2D, OpKind.CONV3D,
                       OpKind.CONV_TRANSPOSE2D, OpKind.LINEAR})

#: ops that get an output quantizer when they end a group (numerics.md 5.1)
QUANTIZABLE = CONV_LIKE | frozenset({
    OpKind.INPUT, OpKind.BATCHNORM, OpKind.ADD, OpKind.SUB, OpKind.MUL, OpKind.DIV, OpKind.MEAN,
    OpKind.MAXPOOL2D, OpKind.AVGPOOL2D, OpKind.ADAPTIVE_AVGPOOL2D, OpKind.CAT, OpKind.INTERPOLATE,
    OpKind.PAD, OpKind.HARDSWISH, OpKind.HARDSIGMOID, OpKind.SOFTMAX, OpKind.PRELU, OpKind.GELU,
})

#: ops glued to their single parent's group (numerics.md 5.2)
FOLLOWERS = frozenset({
    OpKind.RELU, OpKind.RELU6, OpKind.LEAKY_RELU, OpKind.HARDTANH, OpKind.FLATTEN,
    OpKind.SQUEEZE, OpKind.UNSQUEEZE, OpKind.STRIDED_SLICE, OpKind.TRANSPOSE, OpKind.PERMUTE,
    OpKind.DROPOUT, OpKind.CONTIGUOUS, OpKind.CHUNK, OpKind.IDENTITY, OpKind.SPLIT,
})

#: ops that only move data: the quantizer sits on their producer
MEMORY_ONLY = frozenset({
    OpKind.CHUNK, OpKind.STRIDED_SLICE, OpKind.PERMUTE, OpKind.FLATTEN, OpKind.RESHAPE,
    OpKind.CONTIGUOUS, OpKind.SQUEEZE, OpKind.UNSQUEEZE, OpKind.TRANSPOSE, OpKind.DROPOUT,
    OpKind.IDENTITY, OpKind.SPLIT,
})

#: op-type word used in normalized names, ``<Graph>::nndct_<type>_<index>`` (vai_q_pytorch.md 4.2)
NNDCT_TYPE = {
    OpKind.INPUT: "nndct_input", OpKind.CONST: "nndct_const", OpKind.CONV1D: "nndct_conv1d",
    OpKind.CONV2D: "nndct_conv2d", OpKind.DEPTHWISE_CONV2D: "nndct_depthwise_conv2d",
    OpKind.CONV3D: "nndct_conv3d", OpKind.CONV_TRANSPOSE2D: "nndct_conv_transpose_2d",
    OpKind.LINEAR: "nndct_dense", OpKind.BATCHNORM: "nndct_batch_norm", OpKind.RELU: "nndct_relu",
    OpKind.RELU6: "nndct_relu6", OpKind.LEAKY_RELU: "nndct_leaky_relu",
    OpKind.HARDTANH: "nndct_hardtanh", OpKind.HARDSIGMOID: "nndct_hsigmoid",
    OpKind.HARDSWISH: "nndct_hswish", OpKind.SIGMOID: "nndct_sigmoid", OpKind.TANH: "nndct_tanh",
    OpKind.SOFTMAX: "nndct_softmax", OpKind.GELU: "nndct_gelu", OpKind.SILU: "nndct_silu",
    OpKind.MISH: "nndct_mish",
    OpKind.PRELU: "nndct_prelu", OpKind.ADD: "nndct_elemwise_add", OpKind.SUB: "nndct_sub",
    OpKind.MUL: "nndct_elemwise_mul", OpKind.DIV: "nndct_elemwise_div", OpKind.CAT: "nndct_concat",
    OpKind.MAXPOOL2D: "nndct_maxpool", OpKind.AVGPOOL2D: "nndct_avgpool",
    OpKind.ADAPTIVE_AVGPOOL2D: "nndct_adaptive_avg_pool2d", OpKind.MEAN: "nndct_mean",
    OpKind.FLATTEN: "nndct_flatten", OpKind.RESHAPE: "nndct_reshape",
    OpKind.PERMUTE: "nndct_permute", OpKind.TRANSPOSE: "nndct_transpose",
    OpKind.CONTIGUOUS: "nndct_contiguous", OpKind.SQUEEZE: "nndct_squeeze",
    OpKind.UNSQUEEZE: "nndct_unsqueeze", OpKind.STRIDED_SLICE: "nndct_strided_slice",
    OpKind.CHUNK: "nndct_chunk", OpKind.SPLIT: "nndct_split", OpKind.PAD: "nndct_pad_nd",
    OpKind.INTERPOLATE: "nndct_resize", OpKind.DROPOUT: "nndct_dropout",
    OpKind.IDENTITY: "nndct_identity", OpKind.SIZE: "nndct_shape", OpKind.PYOP: "nndct_pyop",
    OpKind.OTHER: "nndct_other",
}

_MODULES = [
    (nn.Conv1d, OpKind.CONV1D), (nn.Conv3d, OpKind.CONV3D),
    (nn.ConvTranspose2d, OpKind.CONV_TRANSPOSE2D), (nn.Linear, OpKind.LINEAR),
    (nn.modules.batchnorm._BatchNorm, OpKind.BATCHNORM), (nn.ReLU, OpKind.RELU),
    (nn.ReLU6, OpKind.RELU6), (nn.LeakyReLU, OpKind.LEAKY_RELU), (nn.Hardtanh, OpKind.HARDTANH),
    (nn.Hardsigmoid, OpKind.HARDSIGMOID), (nn.Hardswish, OpKind.HARDSWISH),
    (nn.Sigmoid, OpKind.SIGMOID), (nn.Tanh, OpKind.TANH), (nn.Softmax, OpKind.SOFTMAX),
    (nn.GELU, OpKind.GELU), (nn.SiLU, OpKind.SILU), (nn.Mish, OpKind.MISH),
    (nn.PReLU, OpKind.PRELU),
    (nn.MaxPool2d, OpKind.MAXPOOL2D), (nn.AvgPool2d, OpKind.AVGPOOL2D),
    (nn.AdaptiveAvgPool2d, OpKind.ADAPTIVE_AVGPOOL2D), (nn.Flatten, OpKind.FLATTEN),
    (nn.Dropout, OpKind.DROPOUT), (nn.Identity, OpKind.IDENTITY), (nn.Upsample, OpKind.INTERPOLATE),
]


def kind_of_module(m: nn.Module) -> OpKind:
    if type(m) is nn.Conv2d:
        if m.groups > 1 and m.groups == m.in_channels and m.out_channels % m.in_channels == 0:
            return OpKind.DEPTHWISE_CONV2D
        return OpKind.CONV2D
    for cls, kind in _MODULES:
        if isinstance(m, cls):
            return kind
    return OpKind.OTHER


_FUNCTIONS = {
    F.relu: OpKind.RELU, torch.relu: OpKind.RELU, F.relu6: OpKind.RELU6,
    F.leaky_relu: OpKind.LEAKY_RELU, F.hardtanh: OpKind.HARDTANH,
    F.hardsigmoid: OpKind.HARDSIGMOID, F.hardswish: OpKind.HARDSWISH,
    torch.sigmoid: OpKind.SIGMOID, F.sigmoid: OpKind.SIGMOID, torch.tanh: OpKind.TANH,
    F.tanh: OpKind.TANH, F.softmax: OpKind.SOFTMAX, torch.softmax: OpKind.SOFTMAX,
    F.gelu: OpKind.GELU, F.silu: OpKind.SILU, F.mish: OpKind.MISH,
    torch.relu_: OpKind.RELU, F.relu_: OpKind.RELU, torch.sigmoid_: OpKind.SIGMOID,
    torch.tanh_: OpKind.TANH, F.leaky_relu_: OpKind.LEAKY_RELU, F.hardtanh_: OpKind.HARDTANH,
    F.prelu: OpKind.PRELU,
    operator.iadd: OpKind.ADD, operator.isub: OpKind.SUB, operator.imul: OpKind.MUL,
    operator.itruediv: OpKind.DIV, torch.true_divide: OpKind.DIV,
    operator.add: OpKind.ADD, torch.add: OpKind.ADD, operator.sub: OpKind.SUB, torch.sub: OpKind.SUB,
    operator.mul: OpKind.MUL, torch.mul: OpKind.MUL, operator.truediv: OpKind.DIV,
    torch.div: OpKind.DIV, torch.cat: OpKind.CAT, torch.concat: OpKind.CAT,
    F.max_pool2d: OpKind.MAXPOOL2D, F.avg_pool2d: OpKind.AVGPOOL2D,
    F.adaptive_avg_pool2d: OpKind.ADAPTIVE_AVGPOOL2D, torch.mean: OpKind.MEAN,
    torch.flatten: OpKind.FLATTEN, torch.reshape: OpKind.RESHAPE, torch.permute: OpKind.PERMUTE,
    torch.transpose: OpKind.TRANSPOSE, torch.squeeze: OpKind.SQUEEZE,
    torch.unsqueeze: OpKind.UNSQUEEZE, torch.chunk: OpKind.CHUNK, torch.split: OpKind.SPLIT,
    F.pad: OpKind.PAD, F.interpolate: OpKind.INTERPOLATE, F.dropout: OpKind.DROPOUT,
    operator.getitem: OpKind.STRIDED_SLICE,
}

_METHODS = {
    "relu": OpKind.RELU, "sigmoid": OpKind.SIGMOID, "tanh": OpKind.TANH, "add": OpKind.ADD,
    "sub": OpKind.SUB, "mul": OpKind.MUL, "div": OpKind.DIV, "mean": OpKind.MEAN,
    "flatten": OpKind.FLATTEN, "view": OpKind.RESHAPE, "reshape": OpKind.RESHAPE,
    "permute": OpKind.PERMUTE, "transpose": OpKind.TRANSPOSE, "contiguous": OpKind.CONTIGUOUS,
    "squeeze": OpKind.SQUEEZE, "unsqueeze": OpKind.UNSQUEEZE, "chunk": OpKind.CHUNK,
    "split": OpKind.SPLIT, "size": OpKind.SIZE, "softmax": OpKind.SOFTMAX,
    "relu_": OpKind.RELU, "sigmoid_": OpKind.SIGMOID, "tanh_": OpKind.TANH, "add_": OpKind.ADD,
    "sub_": OpKind.SUB, "mul_": OpKind.MUL, "div_": OpKind.DIV, "true_divide": OpKind.DIV,
    "true_divide_": OpKind.DIV,
}

_CLAMPS = {torch.clamp, torch.clip, torch.clamp_, torch.clip_, F.hardtanh, F.hardtanh_}
_CLAMP_METHODS = {"clamp", "clip", "clamp_", "clip_"}
_RELU_CLAMPS = {torch.clamp_min, torch.clamp_min_}
_RELU_CLAMP_METHODS = {"clamp_min", "clamp_min_"}


def _bounds(args, kwargs, lo="min", hi="max"):
    lower = args[1] if len(args) > 1 else kwargs.get(lo)
    upper = args[2] if len(args) > 2 else kwargs.get(hi)
    return lower, upper


def _clamp_kind(lower, upper) -> OpKind:
    """``clamp(x, 0, 6)`` is ReLU6, ``clamp(x, min=0)`` is ReLU, other constant bounds clip."""
    def num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if num(lower) and float(lower) == 0.0 and upper is None:
        return OpKind.RELU
    if num(lower) and num(upper) and float(lower) == 0.0 and float(upper) == 6.0:
        return OpKind.RELU6
    if (lower is None or num(lower)) and (upper is None or num(upper)) and \
            (lower is not None or upper is not None):
        return OpKind.HARDTANH
    return OpKind.OTHER


def kind_of_call(op: str, target, args=(), kwargs=None) -> OpKind:
    """Kind of a ``call_function``/``call_method`` node, looking at its arguments where the
    callable alone does not say it (``clamp(x, 0, 6)`` is ReLU6)."""
    kwargs = kwargs or {}
    if op == "call_method":
        if target in _CLAMP_METHODS:
            return _clamp_kind(*_bounds(args, kwargs))
        if target in _RELU_CLAMP_METHODS:
            lower = args[1] if len(args) > 1 else kwargs.get("min")
            return _clamp_kind(lower, None)
        return kind_of_method(target)
    try:
        if target in _CLAMPS:
            if target in (F.hardtanh, F.hardtanh_):
                lower, upper = _bounds(args, kwargs, "min_val", "max_val")
                lower = -1.0 if lower is None else lower
                upper = 1.0 if upper is None else upper
                kind = _clamp_kind(lower, upper)
                return OpKind.HARDTANH if kind is OpKind.RELU else kind
            return _clamp_kind(*_bounds(args, kwargs))
        if target in _RELU_CLAMPS:
            lower = args[1] if len(args) > 1 else kwargs.get("min")
            return _clamp_kind(lower, None)
    except TypeError:        # unhashable callable
        return OpKind.OTHER
    return kind_of_function(target)


def kind_of_function(fn) -> OpKind:
    try:
        return _FUNCTIONS.get(fn, OpKind.OTHER)
    except TypeError:  # unhashable callable
        return OpKind.OTHER


def kind_of_method(name: str) -> OpKind:
    return _METHODS.get(name, OpKind.OTHER)
