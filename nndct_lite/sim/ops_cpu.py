"""Ops that are not fixed-point: computed in float64 on the dequantized inputs and marked
inexact (listed in ``Simulator.float_ops``); a following ``fix`` re-quantizes them.

These are XIR's float ops: sigmoid, tanh, exp, swish, mish, gelu, elu, celu, selu, softmax,
hard-softmax, l2_normalize, batchnorm, instancenorm, groupnorm. The framework-named CPU ops
(``aten::mean``, ``aten::silu_``, ``custom_*``) are in ``ops_aten``.
"""
from __future__ import annotations

import math

import numpy as np

from .ophelp import axes_attr, float_result, one
from .registry import register
from .values import SimError

__all__ = ["UNARY", "erf", "sigmoid", "softmax_axis"]


def erf(x):
    import torch
    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def softmax_axis(x, ax):
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
UNARY = {
    "sigmoid": lambda op, x: sigmoid(x),
    "tanh": lambda op, x: np.tanh(x),
    "exp": lambda op, x: np.exp(x),
    "swish": lambda op, x: x * sigmoid(x),
    "mish": lambda op, x: x * np.tanh(np.logaddexp(0.0, x)),
    "gelu": lambda op, x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))),
    "elu": lambda op, x: np.where(x > 0, x, _alpha(op) * np.expm1(np.minimum(x, 0))),
    "celu": lambda op, x: np.where(x > 0, x, _alpha(op) * np.expm1(np.minimum(x, 0) / _alpha(op))),
    "selu": lambda op, x: _SELU_S * np.where(x > 0, x, _SELU_A * np.expm1(np.minimum(x, 0))),
    "softmax": lambda op, x: softmax_axis(x, int(op.attr("axis", -1))),
    "hard-softmax": lambda op, x: softmax_axis(x, int(op.attr("axis", -1))),
    "l2_normalize": _l2n,
}


def _unary(fn):
    def impl(ctx, op, ins):
        v = one(ins)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float_result(op, fn(op, v.values()), v)
    return impl


for _n, _f in UNARY.items():
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
