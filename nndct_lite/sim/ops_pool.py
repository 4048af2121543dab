"""Pooling and reductions, exact on codes.

An average keeps the exact window sum with a pending integer divisor (a power-of-two divisor
folds into the fix position). The quantizer's correction ``mul`` by ``area * m / 2^s`` then
cancels the divisor exactly, so ``avgpool2d -> mul -> fix`` is the DPU's ``sum * m / 2^s``
rounded once. ``pool-fix`` AVG (compiled) applies the DPU multiplier ``m / 2^s`` itself.
"""
from __future__ import annotations

import math

import numpy as np

from . import kernels as K
from .ophelp import axes_attr, finish_fix, float_result, hw, one, pad4
from .registry import register
from .values import Fixed, Floating, SimError

__all__ = ["dpu_avg_multiplier"]

_AVG_TABLE = {(3, 3): (7, 6), (5, 5): (10, 8), (6, 6): (7, 8), (3, 6): (7, 7), (6, 3): (7, 7),
              (7, 7): (21, 10), (14, 14): (21, 12)}


def dpu_avg_multiplier(kh: int, kw: int) -> tuple[int, int]:
    """``(m, s)``: the DPU divides an average-pool window sum by multiplying by ``m / 2^s``
    (numerics.md 7.4: fixed table, else the first best ``round(2^s / n)``)."""
    if (kh, kw) in _AVG_TABLE:
        return _AVG_TABLE[(kh, kw)]
    n = kh * kw
    if n & (n - 1) == 0:
        return 1, n.bit_length() - 1
    best, best_err = (1, 0), math.inf
    for s in range(math.ceil(math.log2(128 * n))):
        m = round(2 ** s / n)
        err = abs(m / 2 ** s - 1 / n)
        if err < best_err:
            best, best_err = (m, s), err
    return best


def _pool_geometry(op, shape):
    if op.attr("global", False):
        h, w = shape[1], shape[2]
        return (h, w), (h, w), (0, 0, 0, 0), "FLOOR"
    mode = "FLOOR" if op.type == "pool-fix" else op.attr("pad_mode", "FLOOR")
    return hw(op, "kernel"), hw(op, "stride"), pad4(op), mode


def _pool_value(op, v, kind):
    kernel, stride, pad, mode = _pool_geometry(op, v.shape)
    inc_pad = bool(op.attr("count_include_pad", True))
    inc_inv = bool(op.attr("count_include_invalid", True))
    if isinstance(v, Fixed) and isinstance(v.denom, int):
        r, div = K.pool2d(v.codes, kind, kernel, stride, pad, mode, inc_pad, inc_inv)
        if kind == "MAX":
            return Fixed(r, v.fp, v.denom)
        if op.type == "pool-fix":
            m, s = dpu_avg_multiplier(*kernel)
            return Fixed(r * m, v.fp + s, v.denom)
        d = div * v.denom if isinstance(div, int) else div * np.int64(v.denom)
        return Fixed(r, v.fp, d)
    r, div = K.pool2d(v.values(), kind, kernel, stride, pad, mode, inc_pad, inc_inv)
    if kind == "MAX":
        return Floating(r, v.inexact) if isinstance(v, Floating) else float_result(op, r, v)
    return float_result(op, r / div, v)


@register("maxpool2d", "avgpool2d", "pool-fix")
def _pool(ctx, op, ins):
    v = one(ins)
    if len(v.shape) != 4:
        raise SimError(f"op {op.name!r}: pooling needs a 4-D NHWC input, got {list(v.shape)}")
    kind = "MAX" if op.type == "maxpool2d" else "AVG" if op.type == "avgpool2d" else \
        str(op.attr("type", "MAX")).upper()
    if kind not in ("MAX", "AVG"):
        raise SimError(f"op {op.name!r}: pool type {kind!r} is not MAX or AVG")
    return finish_fix(op, _pool_value(op, v, kind))


@register("maxpool1d")
def _maxpool1d(ctx, op, ins):
    v = one(ins)
    if len(v.shape) != 3:
        raise SimError(f"op {op.name!r}: maxpool1d needs a 3-D NLC input, got {list(v.shape)}")
    if op.attr("global", False):
        k, s, p, mode = (v.shape[1],), (v.shape[1],), (0, 0), "FLOOR"
    else:
        k, s, p, mode = hw(op, "kernel", n=1), hw(op, "stride", n=1), pad4(op, 2), \
            op.attr("pad_mode", "FLOOR")

    def run(a):
        fill = np.iinfo(np.int64).min if np.issubdtype(a.dtype, np.integer) else -np.inf
        x4 = a[:, None]
        view, _, _ = K._prepare(x4, (1, k[0]), (1, s[0]), (1, 1), (p[0], p[1], 0, 0), mode,
                                pad_value=fill)
        return view.max(axis=(3, 4))[:, 0]
    if isinstance(v, Fixed) and isinstance(v.denom, int):
        return Fixed(run(v.codes), v.fp, v.denom)
    return Floating(run(v.values()), getattr(v, "inexact", ()))


@register("reduction_mean", "reduction_sum", "reduction_max", "reduction_max-fix",
          "reduction_product")
def _reduce(ctx, op, ins):
    v = one(ins)
    rank = len(v.shape)
    axes = axes_attr(op, rank)
    keep = bool(op.attr("keep_dims", False))
    return finish_fix(op, reduce_value(op, v, op.type.replace("-fix", ""), axes, keep))


def reduce_value(op, v, kind: str, axes, keep: bool):
    """``kind`` in reduction_mean / _sum / _max / _product over ``axes``; exact on codes
    (a mean keeps its element count as a pending divisor)."""
    count = int(np.prod([v.shape[a] for a in axes])) if axes else 1
    if isinstance(v, Fixed) and isinstance(v.denom, int):
        if kind == "reduction_max":
            return Fixed(np.max(v.codes, axis=axes, keepdims=keep), v.fp, v.denom)
        if kind == "reduction_product":
            x = v.values()
            return float_result(op, np.prod(x, axis=axes, keepdims=keep), v)
        s = np.sum(v.codes, axis=axes, keepdims=keep, dtype=np.int64)
        d = v.denom * (count if kind == "reduction_mean" else 1)
        return Fixed(np.asarray(s), v.fp, d)
    x = v.values()
    if kind == "reduction_max":
        return Floating(np.max(x, axis=axes, keepdims=keep), getattr(v, "inexact", ()))
    if kind == "reduction_product":
        return float_result(op, np.prod(x, axis=axes, keepdims=keep), v)
    r = np.sum(x, axis=axes, keepdims=keep)
    if kind == "reduction_mean":
        r = r / count
    return float_result(op, r, v)


@register("argmax", "argmax-fix")
def _argmax(ctx, op, ins):
    v = one(ins)
    ax = int(op.attr("axis", -1)) % len(v.shape)
    data = v.codes * 1 if isinstance(v, Fixed) and isinstance(v.denom, int) else v.values()
    idx = np.argmax(data, axis=ax).astype(np.int64)
    if op.output is None or len(op.output.shape) == len(v.shape):
        idx = np.expand_dims(idx, ax)
    return Fixed(idx, 0)
