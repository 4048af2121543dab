"""CPU ops named after the framework op, computed in float64 on the dequantized inputs.

The original vai_q_pytorch writes ops it does not map to XIR as custom ops typed with the aten
name (``aten::mean``, ``aten::silu_``); ours are ``aten::<name>`` or ``custom_<name>``. The
registry strips the prefix and an in-place ``_`` (:func:`.registry.cpu_name`). These ops see the
tensors in the framework's layout (the exporter transposes NHWC -> NCHW around them), and carry
only ``shape`` and ``data_type``, so:

* element-wise ops need nothing else;
* reductions (``mean``, ``sum``, ``amax``) take their axes from the stored input and output
  dims (the axes that became 1, or that disappeared); a ``dim`` (+ ``keepdim``) attribute wins;
* ops with parameters read optional attributes named like the torch arguments, with torch's
  defaults: ``softmax``/``log_softmax`` ``dim`` (required for rank > 1), ``hardtanh``
  ``min_val``/``max_val``, ``leaky_relu`` ``negative_slope``, ``elu`` ``alpha``;
  ``avg_pool2d``/``max_pool2d`` ``kernel_size`` (required), ``stride``, ``padding``,
  ``dilation``, ``ceil_mode``, ``count_include_pad``; ``upsample``/``interpolate`` ``mode``,
  ``align_corners`` (size from the stored output); ``pad`` ``pad`` (required), ``mode``,
  ``value``; ``conv1d``/``conv2d``/``conv3d`` with inputs (x, weight[, bias]) and ``stride``,
  ``padding``, ``dilation``, ``groups``; ``batch_norm`` with inputs (x, running_mean,
  running_var[, weight[, bias]]) and ``eps``;
* ``adaptive_avg_pool2d`` / ``adaptive_max_pool2d``, ``reshape``/``view``/``flatten``/
  ``squeeze``/``unsqueeze``/``view_as``/``reshape_as`` and ``expand``/``expand_as`` (broadcast)
  take their output size from the stored output dims.
"""
from __future__ import annotations

import numpy as np

from .ophelp import float_result, one
from .ops_cpu import UNARY, erf, softmax_axis
from .registry import register_cpu
from .values import SimError

__all__ = ["reduced_axes"]


def _torch():
    import torch
    return torch


def _t(v):
    return _torch().from_numpy(np.ascontiguousarray(v.values(), dtype=np.float64))


def _attr(op, name, default=None, required=False):
    v = op.attr(name)
    if v is None:
        if required:
            raise SimError(f"op {op.name!r} ({op.type}): the CPU op needs a {name!r} attribute "
                           "(named like the torch argument)")
        return default
    if isinstance(v, (tuple, list)):
        return [int(x) if float(x).is_integer() else float(x) for x in v]
    return v


def _unary(fn):
    def impl(ctx, op, ins):
        v = one(ins)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float_result(op, fn(op, v.values()), v)
    return impl


def _softmax_dim(op, x):
    d = _attr(op, "dim", _attr(op, "axis"))
    if d is None:
        if x.ndim > 1:
            raise SimError(f"op {op.name!r} ({op.type}): a CPU softmax needs a 'dim' attribute")
        d = -1
    return int(d[0] if isinstance(d, list) else d)


_CPU_UNARY = {
    "silu": UNARY["swish"], "swish": UNARY["swish"], "sigmoid": UNARY["sigmoid"],
    "tanh": UNARY["tanh"], "exp": UNARY["exp"], "mish": UNARY["mish"], "gelu": UNARY["gelu"],
    "elu": UNARY["elu"], "celu": UNARY["celu"], "selu": UNARY["selu"],
    "relu": lambda op, x: np.maximum(x, 0.0),
    "relu6": lambda op, x: np.clip(x, 0.0, 6.0),
    "hardtanh": lambda op, x: np.clip(x, float(_attr(op, "min_val", -1.0)),
                                      float(_attr(op, "max_val", 1.0))),
    "hardsigmoid": lambda op, x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hardswish": lambda op, x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "leaky_relu": lambda op, x: np.where(x >= 0, x, x * float(_attr(op, "negative_slope", 0.01))),
    "softplus": lambda op, x: np.logaddexp(0.0, x),
    "log": lambda op, x: np.log(x), "sqrt": lambda op, x: np.sqrt(x),
    "rsqrt": lambda op, x: 1.0 / np.sqrt(x), "abs": lambda op, x: np.abs(x),
    "neg": lambda op, x: -x, "square": lambda op, x: x * x, "erf": lambda op, x: erf(x),
    "clone": lambda op, x: x, "contiguous": lambda op, x: x, "dropout": lambda op, x: x,
    "softmax": lambda op, x: softmax_axis(x, _softmax_dim(op, x)),
    "log_softmax": lambda op, x: np.log(softmax_axis(x, _softmax_dim(op, x))),
}
for _n, _f in _CPU_UNARY.items():
    register_cpu(_n)(_unary(_f))

_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "pow": np.power, "maximum": np.maximum, "minimum": np.minimum,
           "matmul": np.matmul, "bmm": np.matmul}


def _binary(fn):
    def impl(ctx, op, ins):
        vals = ins.get("input", [])
        if len(vals) != 2:
            raise SimError(f"op {op.name!r} ({op.type}): needs 2 inputs, got {len(vals)}")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float_result(op, fn(vals[0].values(), vals[1].values()), *vals)
    return impl


for _n, _f in _BINARY.items():
    register_cpu(_n)(_binary(_f))


# -- reductions -------------------------------------------------------------------------------

def reduced_axes(in_shape, out_shape) -> tuple[tuple[int, ...], bool]:
    """Axes a reduction removed, from the stored dims: ``(axes, keep_dims)``. Same rank: the
    axes that became 1; lower rank: the input axes left unmatched (matched left to right)."""
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    if len(in_shape) == len(out_shape):
        return tuple(i for i, (a, b) in enumerate(zip(in_shape, out_shape)) if b == 1 and a != 1), True
    if len(out_shape) > len(in_shape):
        raise SimError(f"reduction output {list(out_shape)} has more axes than its input {list(in_shape)}")
    axes, j = [], 0
    for i, a in enumerate(in_shape):
        if j < len(out_shape) and a == out_shape[j]:
            j += 1
        elif len(in_shape) - i - 1 < len(out_shape) - j:
            raise SimError(f"cannot tell the reduced axes of {list(in_shape)} -> {list(out_shape)}")
        else:
            axes.append(i)
    return tuple(axes), False


def _reduce(kind):
    def impl(ctx, op, ins):
        v = one(ins)
        x = v.values()
        d = _attr(op, "dim", _attr(op, "axis"))
        if d is not None:
            axes = tuple(sorted({int(a) % x.ndim for a in (d if isinstance(d, list) else [d])}))
            keep = bool(_attr(op, "keepdim", _attr(op, "keep_dims", False)))
        else:
            stored_in = ctx.stored_input_shape(op) or x.shape
            axes, keep = reduced_axes(stored_in, op.output.shape if op.output is not None else x.shape)
        r = kind(x, axis=axes, keepdims=keep) if axes else x
        return float_result(op, r, v)
    return impl


register_cpu("mean")(_reduce(np.mean))
register_cpu("sum")(_reduce(np.sum))
register_cpu("amax")(_reduce(np.max))


# -- ops with parameters, through torch.nn.functional (framework layout, float64) -------------

def _out_spatial(ctx, op, x):
    if op.output is None:
        raise SimError(f"op {op.name!r} ({op.type}): needs stored output dims")
    return tuple(op.output.shape[2:])


@register_cpu("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptiveavgpool2d",
              "adaptivemaxpool2d")
def _adaptive(ctx, op, ins):
    F = _torch().nn.functional
    v = one(ins)
    size = _out_spatial(ctx, op, v)
    fn = F.adaptive_max_pool2d if "max" in op.type.lower() else F.adaptive_avg_pool2d
    return float_result(op, fn(_t(v), size).numpy(), v)


@register_cpu("avg_pool2d", "max_pool2d", "avgpool2d", "maxpool2d")
def _pool(ctx, op, ins):
    F = _torch().nn.functional
    v = one(ins)
    k = _attr(op, "kernel_size", required=True)
    kw = dict(kernel_size=k, stride=_attr(op, "stride", None) or k,
              padding=_attr(op, "padding", 0), ceil_mode=bool(_attr(op, "ceil_mode", False)))
    if "max" in op.type.lower():
        y = F.max_pool2d(_t(v), dilation=_attr(op, "dilation", 1), **kw)
    else:
        y = F.avg_pool2d(_t(v), count_include_pad=bool(_attr(op, "count_include_pad", True)), **kw)
    return float_result(op, y.numpy(), v)


@register_cpu("upsample", "interpolate", "upsample_nearest2d", "upsample_bilinear2d")
def _upsample(ctx, op, ins):
    F = _torch().nn.functional
    v = one(ins)
    base = op.type.lower()
    mode = str(_attr(op, "mode", "bilinear" if "bilinear" in base else "nearest"))
    ac = _attr(op, "align_corners", None)
    kw = {"align_corners": bool(ac)} if mode in ("linear", "bilinear", "bicubic", "trilinear") \
        and ac is not None else {}
    y = F.interpolate(_t(v), size=_out_spatial(ctx, op, v), mode=mode, **kw)
    return float_result(op, y.numpy(), v)


@register_cpu("pad", "constant_pad_nd")
def _pad(ctx, op, ins):
    F = _torch().nn.functional
    v = one(ins)
    y = F.pad(_t(v), list(_attr(op, "pad", required=True)), mode=str(_attr(op, "mode", "constant")),
              value=float(_attr(op, "value", 0.0)))
    return float_result(op, y.numpy(), v)


@register_cpu("conv1d", "conv2d", "conv3d", "_convolution", "convolution")
def _conv(ctx, op, ins):
    F = _torch().nn.functional
    vals = ins.get("input", [])
    if len(vals) < 2:
        raise SimError(f"op {op.name!r} ({op.type}): a CPU conv needs inputs (x, weight[, bias])")
    x, w = vals[0], vals[1]
    b = _t(vals[2]).reshape(-1) if len(vals) > 2 else None
    fn = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}.get(len(x.shape))
    if fn is None:
        raise SimError(f"op {op.name!r}: CPU conv input rank {len(x.shape)} is not 3, 4 or 5")
    y = fn(_t(x), _t(w), b, stride=_attr(op, "stride", 1), padding=_attr(op, "padding", 0),
           dilation=_attr(op, "dilation", 1), groups=int(_attr(op, "groups", 1)))
    return float_result(op, y.numpy(), *vals)


@register_cpu("batch_norm", "batchnorm2d", "batchnorm1d", "batchnorm3d")
def _batch_norm(ctx, op, ins):
    F = _torch().nn.functional
    vals = ins.get("input", [])
    if len(vals) < 3:
        raise SimError(f"op {op.name!r} ({op.type}): a CPU batch_norm needs inputs (x, "
                       "running_mean, running_var[, weight[, bias]])")
    ts = [_t(v).reshape(-1) for v in vals[1:5]]
    y = F.batch_norm(_t(vals[0]), ts[0], ts[1], ts[2] if len(ts) > 2 else None,
                     ts[3] if len(ts) > 3 else None, False, 0.0, float(_attr(op, "eps", 1e-5)))
    return float_result(op, y.numpy(), *vals)


@register_cpu("reshape", "view", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as",
              "expand", "expand_as")
def _reshape(ctx, op, ins):
    v = one(ins)
    if op.output is None:
        raise SimError(f"op {op.name!r} ({op.type}): needs stored output dims")
    target = ctx.batch_fix(list(op.output.shape))
    x = v.values()
    if "expand" in op.type:
        return float_result(op, np.ascontiguousarray(np.broadcast_to(x, target)), v)
    return float_result(op, x.reshape(target), v)
