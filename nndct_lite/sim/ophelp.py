"""Small helpers shared by the op families: argument access, exactness tests, XIR attribute
layouts ({w, h} vectors, {l, r, t, b} pads), output fix of ``*-fix`` ops."""
from __future__ import annotations

import math

import numpy as np

from nndct_lite.xmodel.model import DataType, XOp

from .values import Fixed, Floating, SimError, Value, align, requantize, to_fixed

__all__ = ["one", "need", "float_result", "exact_fixed", "exact_ints", "all_fixed", "hw", "pad4", "movement",
           "out_fix", "finish_fix", "at_nonneg_fp", "int_const", "reduce_denom", "axes_attr"]


def one(ins, arg="input") -> Value | None:
    vals = ins.get(arg) or []
    return vals[0] if vals else None


def need(op: XOp, ins, arg="input") -> Value:
    """The first value of a required argument; SimError naming the op when it has none."""
    v = one(ins, arg)
    if v is None:
        raise SimError(f"op {op.name!r} ({op.type}) has no {arg!r} input", where=op.name)
    return v


def float_result(op: XOp, data: np.ndarray, *srcs: Value) -> Floating:
    """A float64 result of ``op``, marked inexact (with the inexact ops of its sources)."""
    inexact = tuple(dict.fromkeys([n for s in srcs if isinstance(s, Floating) for n in s.inexact]
                                  + [op.name]))
    return Floating(data, inexact)


def exact_fixed(v: Value | None) -> Fixed | None:
    """``v`` as a Fixed when it is exact: a Fixed, or a Floating that no float op produced
    (a graph input) whose values are dyadic. Results of float ops stay in float."""
    if v is None or (isinstance(v, Floating) and v.inexact):
        return None
    return to_fixed(v)


def exact_ints(*vals: Value | None) -> list[Fixed | None] | None:
    """All values as Fixed with denom 1 when that is exact, else None (None entries pass)."""
    out: list[Fixed | None] = []
    for v in vals:
        if v is None:
            out.append(None)
            continue
        f = exact_fixed(v)
        if f is None or not (isinstance(f.denom, int) and f.denom == 1):
            return None
        out.append(f)
    return out


def all_fixed(vals) -> list[Fixed] | None:
    out = [exact_fixed(v) for v in vals]
    fixed = [f for f in out if f is not None]
    return fixed if len(fixed) == len(out) else None


def hw(op: XOp, name: str, default=(1, 1), n: int = 2) -> tuple[int, ...]:
    """XIR stores kernel/stride/dilation as {w, h} (2-D) or {w, h, d} (3-D): return (h, w[, d])."""
    v = op.attr(name)
    if v is None:
        return tuple(default)
    if len(v) != n:
        raise SimError(f"op {op.name!r}: {name} must have {n} values, got {list(v)}")
    v = [int(x) for x in v]
    if n == 1:
        return (v[0],)
    return (v[1], v[0]) + tuple(v[2:])


def pad4(op: XOp, n: int = 4) -> tuple[int, ...]:
    """``pad`` as stored: {l, r, t, b} (2-D), {l, r, t, b, near, far} (3-D), {l, r} (1-D)."""
    p = op.attr("pad", (0,) * n)
    if len(p) != n:
        raise SimError(f"op {op.name!r}: pad must have {n} values, got {list(p)}")
    return tuple(int(x) for x in p)


def movement(v: Value, fn) -> Value:
    """Apply a data-movement function to the codes (and a non-scalar divisor) or the floats."""
    if isinstance(v, Floating):
        return Floating(fn(v.data), v.inexact)
    if isinstance(v.denom, np.ndarray):
        return Fixed(fn(v.codes), v.fp, fn(np.ascontiguousarray(v.denom_full())))
    return Fixed(fn(v.codes), v.fp, v.denom, v.qtype)


def out_fix(op: XOp) -> tuple[int, int, bool] | None:
    """``(fix_point, bit_width, signed)`` of a ``*-fix`` op's output tensor (compiled xmodels
    carry ``fix_point`` as a tensor attribute), or None when it has none."""
    t = op.output
    if t is None or "fix_point" not in t.attrs:
        return None
    signed = t.data_type not in (DataType.XUINT, DataType.UINT)
    return int(t.attrs["fix_point"].value), int(t.bit_width), signed


def finish_fix(op: XOp, v: Value) -> Value:
    """Quantize a ``*-fix`` op's exact result to its output tensor's fix point (DPU_ROUND, the
    DPU's output shift); unchanged when the tensor carries no fix point."""
    f = out_fix(op)
    if f is None:
        return v
    fp, bw, signed = f
    return Fixed(requantize(v, fp, bw, signed, "DPU_ROUND"), fp, 1, (bw, signed))


def at_nonneg_fp(v: Fixed, op) -> Fixed:
    """``v`` with fp >= 0 so that small integers (3, 6) have integer codes."""
    if v.fp >= 0:
        return v
    if isinstance(v.denom, int) and v.denom == 1:
        return Fixed(align(v, 0, f"op {op.name!r}"), 0)
    return Fixed(v.codes << np.int64(-v.fp), 0, v.denom)


def int_const(v: Fixed, x: int):
    """The code of the integer constant ``x`` at ``v``'s fp (>= 0) and divisor."""
    c = int(x) << v.fp
    return c * v.denom if not (isinstance(v.denom, int) and v.denom == 1) else c


def reduce_denom(codes: np.ndarray, fp: int, d) -> Fixed:
    """Fixed(codes, fp, d) with the common factor of the codes and a scalar ``d`` cancelled."""
    if isinstance(d, int) and d > 1 and codes.size:
        g = math.gcd(d, int(np.gcd.reduce(np.abs(codes).reshape(-1))))
        if g > 1:
            codes, d = codes // g, d // g
    return Fixed(codes, fp, d)


def axes_attr(op: XOp, rank: int, name: str = "axis") -> tuple[int, ...]:
    """Sorted, non-negative axes of an int32_vec attribute (all axes when empty)."""
    ax = op.attr(name)
    if ax is None or (hasattr(ax, "__len__") and len(ax) == 0):
        return tuple(range(rank))
    if isinstance(ax, (int, np.integer)):
        ax = [ax]
    return tuple(sorted({int(a) % rank for a in ax}))
