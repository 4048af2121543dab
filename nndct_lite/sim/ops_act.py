"""Activations computed exactly on integer codes (DPU ops), and the fused ``nonlinear`` of the
compiled ``*-fix`` ops.

Semantics are XIR's op definitions:

* ``hard-sigmoid`` = relu6(x + 3) / 6 and ``hard-swish`` = x * relu6(x + 3) / 6, exact (the
  division by 6 stays a pending divisor). The original quantizer writes the DPU's 2731 / 2^14
  as ``hard-sigmoid`` followed by a ``mul`` with the const 8193/8192 (= 2731 * 6 / 2^14), which
  cancels the divisor exactly; its hard-swish is that product re-quantized to fp 7 and
  multiplied by x (numerics.md 7.1, 7.2).
* ``hard-sigmoid-fix`` = relu6(x + 3) * 2731 / 2^14, the DPU form itself.
* ``leaky-relu`` with the stored alpha (26/256 for the quantizer: ``x * 26 >> 8``), ``prelu``
  with its slope tensor, ``relu``, ``relu6``, ``hard-tanh``.
"""
from __future__ import annotations

import numpy as np

from .ophelp import at_nonneg_fp, exact_fixed, exact_ints, finish_fix, float_result, int_const, one
from .registry import register
from .values import Fixed, Floating, SimError, dyadic, requantize

__all__ = ["apply_nonlinear", "hsig_dpu_codes", "HSIG_MUL", "HSIG_SHIFT"]

HSIG_MUL, HSIG_SHIFT = 2731, 14  # the DPU's 1/6: 2731 / 2^14


@register("relu")
def _relu(ctx, op, ins):
    v = one(ins)
    if isinstance(v, Fixed):
        return Fixed(np.maximum(v.codes, 0), v.fp, v.denom)
    return Floating(np.maximum(v.data, 0.0), v.inexact)


def _clip(op, v, lo, hi):
    f = exact_fixed(v)
    if f is not None:
        f = at_nonneg_fp(f, op)
        return Fixed(np.clip(f.codes, int_const(f, lo), int_const(f, hi)), f.fp, f.denom)
    return Floating(np.clip(v.data, lo, hi), v.inexact)


@register("relu6", "hard-tanh")
def _clip_act(ctx, op, ins):
    lo, hi = (0, 6) if op.type == "relu6" else (-1, 1)
    return _clip(op, one(ins), lo, hi)


def _leaky_codes(v: Fixed, alpha: float) -> Fixed | None:
    d = dyadic(np.array([alpha]))
    if d is None or d[1] < 0:
        return None
    ka, ta = int(d[0][0]), d[1]
    c = v.codes
    return Fixed(np.where(c >= 0, c << np.int64(ta), c * ka), v.fp + ta, v.denom)


@register("leaky-relu")
def _leaky(ctx, op, ins):
    alpha = float(op.attr("alpha"))
    v = one(ins)
    f = exact_fixed(v)
    r = _leaky_codes(f, alpha) if f is not None else None
    if r is not None:
        return r
    x = v.values()
    return float_result(op, np.where(x >= 0, x, x * alpha), v)


def _prelu_exact(vf: Fixed, wf: Fixed) -> Fixed:
    wc = wf.codes.reshape(-1)
    if wf.fp < 0:
        wc, wfp = wc << np.int64(-wf.fp), 0
    else:
        wfp = wf.fp
    c = vf.codes
    return Fixed(np.where(c >= 0, c << np.int64(wfp), c * wc), vf.fp + wfp)


@register("prelu")
def _prelu(ctx, op, ins):
    v, w = one(ins), one(ins, "weight")
    ex = exact_ints(v, w)
    if ex is not None:
        return _prelu_exact(*ex)
    x = v.values()
    return float_result(op, np.where(x >= 0, x, x * w.values().reshape(-1)), v, w)


def _relu6_plus3(v: Fixed, op) -> Fixed:
    """relu6(x + 3) exactly, at fp >= 0."""
    v = at_nonneg_fp(v, op)
    t = np.clip(v.codes + int_const(v, 3), 0, int_const(v, 6))
    return Fixed(t, v.fp, v.denom)


def hsig_dpu_codes(v: Fixed, op) -> Fixed:
    """relu6(x + 3) * 2731 / 2^14, exact (the DPU's hard-sigmoid)."""
    t = _relu6_plus3(v, op)
    return Fixed(t.codes * HSIG_MUL, t.fp + HSIG_SHIFT, t.denom)


def _div6(t: Fixed) -> Fixed:
    d = np.asarray(t.denom, dtype=np.int64) * 6
    return Fixed(t.codes, t.fp, int(d) if d.ndim == 0 else d)


@register("hard-sigmoid")
def _hsigmoid(ctx, op, ins):
    v = one(ins)
    f = exact_fixed(v)
    if f is None:
        x = v.values()
        return float_result(op, np.clip(x + 3, 0, 6) / 6.0, v)
    return _div6(_relu6_plus3(f, op))


@register("hard-swish")
def _hswish(ctx, op, ins):
    v = one(ins)
    f = exact_fixed(v)
    if f is None:
        x = v.values()
        return float_result(op, x * np.clip(x + 3, 0, 6) / 6.0, v)
    f = at_nonneg_fp(f, op)
    t = _relu6_plus3(f, op)
    d = np.asarray(f.denom, dtype=np.int64) * np.asarray(t.denom, dtype=np.int64) * 6
    return Fixed(f.codes * t.codes, f.fp + t.fp, int(d) if d.ndim == 0 else d)


@register("hard-sigmoid-fix")
def _hsigmoid_fix(ctx, op, ins):
    v = one(ins)
    f = exact_fixed(v)
    if f is None:
        x = v.values()
        return float_result(op, np.clip(x + 3, 0, 6) * (HSIG_MUL / 2 ** HSIG_SHIFT), v)
    return finish_fix(op, hsig_dpu_codes(f, op))


# -- fused nonlinear of conv2d-fix / eltwise-fix ------------------------------------------------

def _hsig_in(op, acc: Fixed) -> tuple[Fixed, int]:
    fp_in = int(op.attr("hsigmoid_in", -128))
    sh = int(op.attr("shift_hsigmoid", -128))
    if fp_in == -128 or sh == -128:
        raise SimError(f"op {op.name!r} ({op.type}): nonlinear {op.attr('nonlinear')} needs "
                       "hsigmoid_in and shift_hsigmoid")
    bw = op.output.bit_width if op.output is not None and op.output.bit_width < 32 else 8
    x = Fixed(requantize(acc, fp_in, bw, True, "DPU_ROUND"), fp_in)
    return x, fp_in + HSIG_SHIFT - sh


def apply_nonlinear(op, acc: Fixed) -> Fixed:
    """The ``nonlinear`` attribute of a ``*-fix`` op applied to its exact result.

    RELU / RELU6 / LEAKYRELU (26/256) act on the exact accumulator. HSIGMOID quantizes the
    accumulator to ``hsigmoid_in`` first, applies relu6(x+3)*2731/2^14 and (for the output fix)
    is shifted by ``shift_hsigmoid``; HSWISH re-quantizes that hard-sigmoid to fp
    ``hsigmoid_in + 14 - shift_hsigmoid`` and multiplies it by x (shift ``shift_hswish``)."""
    kind = str(op.attr("nonlinear", "") or "NONE").upper()
    if kind == "NONE":
        return acc
    if kind == "RELU":
        return Fixed(np.maximum(acc.codes, 0), acc.fp, acc.denom)
    if kind == "RELU6":
        return _clip(op, acc, 0, 6)
    if kind == "LEAKYRELU":
        y = _leaky_codes(acc, 26.0 / 256.0)
        assert y is not None            # 26/256 is dyadic: the codes are always exact
        return y
    if kind in ("HSIGMOID", "HSWISH"):
        x, h_fp = _hsig_in(op, acc)
        h = hsig_dpu_codes(x, op)
        if kind == "HSIGMOID":
            return h if op.output is not None and "fix_point" in op.output.attrs else \
                Fixed(requantize(h, h_fp, 8, True, "DPU_ROUND"), h_fp)
        hq = requantize(h, h_fp, 8, True, "DPU_ROUND")
        y = Fixed(x.codes * hq, x.fp + h_fp)
        if op.output is not None and "fix_point" in op.output.attrs:
            return y
        sw = int(op.attr("shift_hswish", -128))
        if sw == -128:
            raise SimError(f"op {op.name!r}: nonlinear HSWISH needs shift_hswish")
        return Fixed(requantize(y, y.fp - sw, 8, True, "DPU_ROUND"), y.fp - sw)
    raise SimError(f"op {op.name!r} ({op.type}): nonlinear {kind!r} is not supported "
                   "(NONE, RELU, RELU6, LEAKYRELU, HSIGMOID, HSWISH)")
