"""Ops that are not fixed-point: computed in float64 on the dequantized inputs and marked
inexact (listed in ``Simulator.float_ops``); a following ``fix`` re-quantizes them.

Two groups:

* XIR float ops: sigmoid, tanh, exp, swish, mish, gelu, elu, celu, selu, softmax, hard-softmax,
  l2_normalize, batchnorm, instancenorm, groupnorm.
* CPU ops named after the framework op: the original vai_q_pytorch writes ``aten::mean``,
  ``aten::silu_`` ...; our exporter writes ``custom_<name>``. They carry only ``shape`` and
  ``data_type``, so a reduction's axes come from the stored input and output dims (the reduced
  axes are the ones that became 1 or disappeared); a ``dim``/``axis`` attribute wins when present.
"""
from __future__ import annotations

import math

import numpy as np

from .ophelp import axes_attr, float_result, one
from .registry import register, register_cpu
from .values import SimError


def _erf(x):
    import torch
    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def _softmax_axis(x, ax):
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return e / np.sum(e, axis=ax, keepdims=True)


def _alpha(op, default=1.0):
    return float(op.attr("alpha", default))


def _l2n(op, x):
    axes = axes_attr(op, x.ndim)
    eps = float(op.attr("epsilon", 1e-12))
    return x / np.sqrt(np.maximum(np.sum(x * x, axis=axes, keepdims=True), eps))


_SELU_A, _SELU_S = 1.6732632423543772, 1.0507009873554805

#: element-wise float functions (op, x) -> y, shared by XIR types and CPU names
_UNARY = {
    "sigmoid": lambda op, x: _sigmoid(x),
    "tanh": lambda op, x: np.tanh(x),
    "exp": lambda op, x: np.exp(x),
    "swish": lambda op, x: x * _sigmoid(x),
    "mish": lambda op, x: x * np.tanh(np.logaddexp(0.0, x)),
    "gelu": lambda op, x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "elu": lambda op, x: np.where(x > 0, x, _alpha(op) * np.expm1(np.minimum(x, 0))),
    "celu": lambda op, x: np.where(x > 0, x, _alpha(op) * np.expm1(np.minimum(x, 0) / _alpha(op))),
    "selu": lambda op, x: _SELU_S * np.where(x > 0, x, _SELU_A * np.expm1(np.minimum(x, 0))),
    "softmax": lambda op, x: _softmax_axis(x, int(op.attr("axis", -1))),
    "hard-softmax": lambda op, x: _softmax_axis(x, int(op.attr("axis", -1))),
    "l2_normalize": _l2n,
}


def _unary(fn):
    def impl(ctx, op, ins):
        v = one(ins)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float_result(op, fn(op, v.values()), v)
    return impl


for _n, _f in _UNARY.items():
    register(_n, float_op=True)(_unary(_f))


@register("batchnorm", float_op=True)
def _batchnorm(ctx, op, ins):
    x = one(ins)
    g, b, m, var = (one(ins, k).values().reshape(-1)
                    for k in ("gamma", "beta", "moving_mean", "moving_var"))
    eps = float(op.attr("epsilon", 1e-5))
    return float_result(op, (x.values() - m) / np.sqrt(var + eps) * g + b, x)


def _norm(x, axes, eps):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _affine(op, ins, y):
    w, b = one(ins, "weight"), one(ins, "bias")
    if w is not None:
        y = y * w.values().reshape(-1)
    if b is not None:
        y = y + b.values().reshape(-1)
    return y


@register("instancenorm", float_op=True)
def _instancenorm(ctx, op, ins):
    """Normalizes each sample and channel (last axis) over the spatial axes."""
    x = one(ins)
    a = x.values()
    y = _norm(a, tuple(range(1, a.ndim - 1)), float(op.attr("eps", 1e-5)))
    return float_result(op, _affine(op, ins, y), x)


@register("groupnorm", float_op=True)
def _groupnorm(ctx, op, ins):
    x = one(ins)
    a = x.values()
    g = int(op.attr("num_groups"))
    c = a.shape[-1]
    if c % g:
        raise SimError(f"op {op.name!r}: {c} channels are not divisible into {g} groups")
    r = a.reshape(a.shape[:-1] + (g, c // g))
    y = _norm(r, tuple(range(1, r.ndim - 2)) + (r.ndim - 1,), float(op.attr("eps", 1e-5)))
    return float_result(op, _affine(op, ins, y.reshape(a.shape)), x)


# -- CPU ops by framework name (aten::<name>, custom_<name>) ------------------------------------

def _cpu_unary(fn):
    def impl(ctx, op, ins):
        v = one(ins)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float_result(op, fn(op, v.values()), v)
    return impl


_CPU_UNARY = {
    "silu": _UNARY["swish"], "swish": _UNARY["swish"], "sigmoid": _UNARY["sigmoid"],
    "tanh": _UNARY["tanh"], "exp": _UNARY["exp"], "mish": _UNARY["mish"], "gelu": _UNARY["gelu"],
    "elu": _UNARY["elu"], "celu": _UNARY["celu"], "selu": _UNARY["selu"],
    "relu": lambda op, x: np.maximum(x, 0.0),
    "relu6": lambda op, x: np.clip(x, 0.0, 6.0),
    "hardtanh": lambda op, x: np.clip(x, float(op.attr("min_val", -1.0)), float(op.attr("max_val", 1.0))),
    "hardsigmoid": lambda op, x: np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "hardswish": lambda op, x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0,
    "leaky_relu": lambda op, x: np.where(x >= 0, x, x * float(op.attr("negative_slope", 0.01))),
    "softplus": lambda op, x: np.logaddexp(0.0, x),
    "log": lambda op, x: np.log(x), "sqrt": lambda op, x: np.sqrt(x),
    "rsqrt": lambda op, x: 1.0 / np.sqrt(x), "abs": lambda op, x: np.abs(x),
    "neg": lambda op, x: -x, "square": lambda op, x: x * x, "erf": lambda op, x: _erf(x),
    "clone": lambda op, x: x, "contiguous": lambda op, x: x, "dropout": lambda op, x: x,
    "softmax": lambda op, x: _softmax_axis(x, _dim(op, -1)),
    "log_softmax": lambda op, x: np.log(_softmax_axis(x, _dim(op, -1))),
}
for _n, _f in _CPU_UNARY.items():
    register_cpu(_n)(_cpu_unary(_f))


def _dim(op, default):
    for k in ("dim", "axis"):
        v = op.attr(k)
        if v is not None:
            return int(v[0]) if hasattr(v, "__len__") else int(v)
    return default


_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "pow": np.power, "maximum": np.maximum, "minimum": np.minimum}


def _cpu_binary(fn):
    def impl(ctx, op, ins):
        vals = ins.get("input", [])
        if len(vals) != 2:
            raise SimError(f"op {op.name!r} ({op.type}): needs 2 inputs, got {len(vals)}")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float_result(op, fn(vals[0].values(), vals[1].values()), *vals)
    return impl


for _n, _f in _BINARY.items():
    register_cpu(_n)(_cpu_binary(_f))


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


def _cpu_reduce(kind):
    def impl(ctx, op, ins):
        v = one(ins)
        x = v.values()
        d = op.attr("dim", op.attr("axis"))
        if d is not None:
            axes = tuple(sorted({int(a) % x.ndim for a in (d if hasattr(d, "__len__") else [d])}))
            keep = bool(op.attr("keepdim", op.attr("keep_dims", False)))
        else:
            stored_in = ctx.stored_input_shape(op) or x.shape
            axes, keep = reduced_axes(stored_in, op.output.shape if op.output is not None else x.shape)
        r = kind(x, axis=axes, keepdims=keep) if axes else x
        return float_result(op, r, v)
    return impl


register_cpu("mean")(_cpu_reduce(np.mean))
register_cpu("sum")(_cpu_reduce(np.sum))
register_cpu("amax")(_cpu_reduce(np.max))
