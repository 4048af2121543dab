"""Element-wise arithmetic and concatenation, exact on codes (numpy broadcasting, e.g. the
squeeze-excite ``mul`` of N x H x W x C by N x 1 x 1 x C).

Inputs with different fix positions are aligned exactly to the finest one; ``mul`` multiplies
codes and adds fps, cancelling a pending divisor (average, hard-sigmoid's 6) against the other
factor's codes where it can. ``div`` is exact when the divisor is a scalar (x / k keeps k as a
pending divisor), else a float CPU op.
"""
from __future__ import annotations

import math

import numpy as np

from .ops_act import apply_nonlinear
from .ophelp import all_fixed, finish_fix, float_result, one, reduce_denom
from .registry import register
from .values import Fixed, SimError, common_fp


def _add_codes(op, fx, kind: str) -> Fixed:
    codes, fp, d = common_fp(fx, f"op {op.name!r}")
    acc = codes[0]
    for c in codes[1:]:
        acc = acc + c if kind == "ADD" else acc - c
    return Fixed(acc, fp, d)


@register("add", "sub")
def _addsub(ctx, op, ins):
    vals = ins.get("input", [])
    kind = "ADD" if op.type == "add" else "SUB"
    fx = all_fixed(vals)
    if fx is not None:
        return _add_codes(op, fx, kind)
    acc = vals[0].values()
    for v in vals[1:]:
        acc = acc + v.values() if kind == "ADD" else acc - v.values()
    return float_result(op, acc, *vals)


def _cancel(a: Fixed, b: Fixed) -> tuple[Fixed, Fixed]:
    """Cancel a scalar pending divisor of one factor against the other factor's codes."""
    da = a.denom if isinstance(a.denom, int) else None
    db = b.denom if isinstance(b.denom, int) else None
    if da is not None and da > 1 and db == 1 and b.codes.size:
        g = math.gcd(da, int(np.gcd.reduce(np.abs(b.codes).reshape(-1))))
        return Fixed(a.codes, a.fp, da // g), Fixed(b.codes // g, b.fp, 1)
    if db is not None and db > 1 and da == 1 and a.codes.size:
        g = math.gcd(db, int(np.gcd.reduce(np.abs(a.codes).reshape(-1))))
        return Fixed(a.codes // g, a.fp, 1), Fixed(b.codes, b.fp, db // g)
    return a, b


def mul_fixed(op, fx: list[Fixed]) -> Fixed:
    acc = fx[0]
    for f in fx[1:]:
        a, b = _cancel(acc, f)
        ba = int(np.max(np.abs(a.codes))) if a.codes.size else 0
        bb = int(np.max(np.abs(b.codes))) if b.codes.size else 0
        if ba and bb and ba.bit_length() + bb.bit_length() > 62:
            raise SimError(f"op {op.name!r}: product overflows int64")
        d = np.asarray(a.denom, dtype=np.int64) * np.asarray(b.denom, dtype=np.int64)
        den: int | np.ndarray = int(d) if d.ndim == 0 else d
        acc = reduce_denom(a.codes * b.codes, a.fp + b.fp, den)
    return acc


@register("mul")
def _mul(ctx, op, ins):
    vals = ins.get("input", [])
    fx = all_fixed(vals)
    if fx is not None:
        return mul_fixed(op, fx)
    acc = vals[0].values()
    for v in vals[1:]:
        acc = acc * v.values()
    return float_result(op, acc, *vals)


def _scalar_divisor(v) -> tuple[int, int] | None:
    """(k, f) when ``v`` is one non-zero integer code k at fp f with no pending divisor."""
    if not isinstance(v, Fixed) or v.codes.size != 1:
        return None
    if not (isinstance(v.denom, int) and v.denom == 1):
        return None
    k = int(v.codes.reshape(-1)[0])
    return (k, v.fp) if k != 0 else None


@register("div")
def _div(ctx, op, ins):
    vals = ins.get("input", [])
    fx = all_fixed(vals[:1])
    if fx is not None and len(vals) == 2:
        dv = all_fixed(vals[1:2])
        sd = _scalar_divisor(dv[0]) if dv else None
        if sd is not None:
            k, f = sd
            x = fx[0]
            codes = -x.codes if k < 0 else x.codes
            d = np.asarray(x.denom, dtype=np.int64) * abs(k)
            # x / (k * 2^-f) = codes / (denom * k) * 2^-(fp - f)
            return Fixed(codes, x.fp - f, int(d) if d.ndim == 0 else d)
    acc = vals[0].values()
    with np.errstate(divide="ignore", invalid="ignore"):
        for v in vals[1:]:
            acc = acc / v.values()
    return float_result(op, acc, *vals)


@register("min", "max")
def _minmax(ctx, op, ins):
    vals = ins.get("input", [])
    fn = np.minimum if op.type == "min" else np.maximum
    fx = all_fixed(vals)
    if fx is not None:
        codes, fp, d = common_fp(fx, f"op {op.name!r}")
        acc = codes[0]
        for c in codes[1:]:
            acc = fn(acc, c)
        return Fixed(acc, fp, d)
    acc = vals[0].values()
    for v in vals[1:]:
        acc = fn(acc, v.values())
    return float_result(op, acc, *vals)


@register("neg")
def _neg(ctx, op, ins):
    v = one(ins)
    if isinstance(v, Fixed):
        return Fixed(-v.codes, v.fp, v.denom)
    return type(v)(-v.data, v.inexact)


@register("eltwise-fix", "depthwise-fix")
def _eltwise_fix(ctx, op, ins):
    """Compiled DPU eltwise (ADD / MUL, fused nonlinear) and channel-wise depthwise-fix
    (its second input broadcast over the channel axis), then the output fix."""
    vals = ins.get("input", [])
    fx = all_fixed(vals)
    if fx is None:
        raise SimError(f"op {op.name!r} ({op.type}): inputs must be fixed-point")
    kind = str(op.attr("type", "ADD" if op.type == "eltwise-fix" else "MUL")).upper()
    if kind == "ADD":
        r = _add_codes(op, fx, "ADD")
    elif kind == "MUL":
        r = mul_fixed(op, fx)
    else:
        raise SimError(f"op {op.name!r} ({op.type}): type {kind!r} is not ADD or MUL")
    if op.type == "eltwise-fix":
        r = apply_nonlinear(op, r)
    return finish_fix(op, r)


@register("concat", "concat-fix", "stack")
def _concat(ctx, op, ins):
    vals = ins.get("input", [])
    ax = int(op.attr("axis", 0))
    join = np.stack if op.type == "stack" else np.concatenate
    fx = all_fixed(vals)
    if fx is not None:
        codes, fp, d = common_fp(fx, f"op {op.name!r}")
        if not isinstance(d, np.ndarray):
            return finish_fix(op, Fixed(join(codes, axis=ax), fp, d))
    return float_result(op, join([v.values() for v in vals], axis=ax), *vals)
