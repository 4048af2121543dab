"""Sources, quantization and the multiply-accumulate ops (DPU ops, exact on integer codes).

Convolutions accumulate exactly in int64 at ``fi + fw``; the bias is aligned to the
accumulator (or the accumulator raised to a finer bias); the following ``fix`` is the DPU's
output shift. ``*-fix`` variants (compiled xmodels) additionally apply their ``nonlinear`` and
quantize to their output tensor's ``fix_point``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nndct_lite.xmodel.model import XOp, const_data

from . import kernels as K
from .ops_act import apply_nonlinear
from .ophelp import exact_ints, finish_fix, float_result, hw, need, one, pad4
from .registry import register
from .values import Fixed, Floating, SimError, align, requantize, to_fixed


@register("const", "const-fix")
def _const(ctx, op, ins):
    a = const_data(op)
    if np.issubdtype(a.dtype, np.integer):
        fp = 0
        fpa = op.output.attrs.get("fix_point") if op.output is not None else None
        if op.type == "const-fix" and fpa is not None:
            fp = int(fpa.value)
        return Fixed(a.astype(np.int64), fp)
    f = Floating(a.astype(np.float64))
    return to_fixed(f) or f


def _fix_params(op):
    try:
        fp = int(op.attr("fix_point"))
        bw = int(op.attr("bit_width"))
    except (TypeError, ValueError):
        raise SimError(f"op {op.name!r} ({op.type}) needs integer fix_point and bit_width") from None
    return fp, bw, bool(op.attr("if_signed", True)), op.attr("round_mode", "DPU_ROUND")


@register("fix", "float2fix", "fix2float")
def _fix(ctx, op, ins):
    fp, bw, signed, mode = _fix_params(op)
    codes = requantize(one(ins), fp, bw, signed, mode)
    return Fixed(codes, fp, 1, (bw, signed))


def add_bias(acc: np.ndarray, fp: int, b: Fixed | None, op: XOp) -> Fixed:
    if b is None:
        return Fixed(acc, fp)
    bc = b.codes.reshape(-1)
    if b.fp <= fp:
        bc = align(b, fp, f"op {op.name!r} bias").reshape(-1)
    else:  # bias finer than the accumulator: raise the accumulator (exact)
        acc = align(Fixed(acc, fp), b.fp, f"op {op.name!r} accumulator")
        fp = b.fp
    if bc.shape[0] != acc.shape[-1]:
        raise SimError(f"op {op.name!r}: bias has {bc.shape[0]} values for {acc.shape[-1]} channels")
    return Fixed(acc + bc, fp)


# -- convolutions -----------------------------------------------------------------------------

def _conv1d(fn):
    def run(x, w, stride, dilation, pad, mode="FLOOR", **kw):
        y = fn(x[:, None], w[:, None], (1, stride[0]), (1, dilation[0]), (pad[0], pad[1], 0, 0),
               mode, **kw)
        return y[:, 0]
    return run


def _dw3(x, w, stride, dilation, pad, mode="FLOOR"):
    return K.conv3d(x, w, stride, dilation, pad, mode, depthwise=True)


def _tdw3(x, w, stride, dilation, pad, mode="FLOOR"):
    return K.transposed_conv3d(x, w, stride, dilation, pad, mode, depthwise=True)


# type (without -fix) -> (kernel, spatial rank, takes group)
_CONVS = {
    "conv1d": (_conv1d(K.conv2d), 1, False),
    "conv2d": (K.conv2d, 2, True),
    "depthwise-conv2d": (K.depthwise_conv2d, 2, False),
    "transposed-conv2d": (K.transposed_conv2d, 2, False),
    "transposed-depthwise-conv2d": (K.transposed_depthwise_conv2d, 2, False),
    "conv3d": (K.conv3d, 3, False),
    "depthwise-conv3d": (_dw3, 3, False),
    "transposed-conv3d": (K.transposed_conv3d, 3, False),
    "transposed-depthwise-conv3d": (_tdw3, 3, False),
}
_FIX_CONVS = ("conv2d", "depthwise-conv2d", "transposed-conv2d", "transposed-depthwise-conv2d",
              "conv3d", "depthwise-conv3d", "transposed-conv3d", "transposed-depthwise-conv3d")


def _conv_value(op, ins, base: str, mode: str):
    x, w, b = need(op, ins), need(op, ins, "weights"), one(ins, "bias")
    fn, n, grouped = _CONVS[base]
    if len(x.shape) != n + 2:
        raise SimError(f"op {op.name!r} ({op.type}): input must be {n + 2}-D "
                       f"({'NLC' if n == 1 else 'NHWC' if n == 2 else 'NHWDC'}), got {list(x.shape)}")
    kw: dict[str, Any] = dict(stride=hw(op, "stride", (1,) * n, n),
                              dilation=hw(op, "dilation", (1,) * n, n), pad=pad4(op, 2 * n), mode=mode)
    if grouped:
        kw["group"] = int(op.attr("group", 1))
    ex = exact_ints(x, w, b)
    if ex is not None:
        xf, wf, bf = ex
        assert xf is not None and wf is not None    # exact_ints keeps only the Nones it got
        acc = fn(xf.codes, wf.codes, **kw)
        return add_bias(acc, xf.fp + wf.fp, bf, op)
    y = fn(x.values(), w.values(), **kw)
    if b is not None:
        y = y + b.values().reshape(-1)
    return float_result(op, y, x, w, *([b] if b is not None else []))


@register(*_CONVS)
def _conv(ctx, op, ins):
    return _conv_value(op, ins, op.type, op.attr("pad_mode", "FLOOR"))


@register(*(t + "-fix" for t in _FIX_CONVS))
def _conv_fix(ctx, op, ins):
    """Compiled DPU conv: no pad_mode (the FLOOR formula), fused nonlinear, output fix."""
    v = _conv_value(op, ins, op.type[:-4], "FLOOR")
    if isinstance(v, Fixed):
        v = apply_nonlinear(op, v)
    return finish_fix(op, v)


# -- dense ------------------------------------------------------------------------------------

@register("matmul")
def _matmul(ctx, op, ins):
    vals = ins.get("input", [])
    if len(vals) != 2:
        raise SimError(f"op {op.name!r}: matmul needs 2 inputs, got {len(vals)}")
    a, bm = vals
    bias = one(ins, "bias")
    ta, tb = bool(op.attr("transpose_a", False)), bool(op.attr("transpose_b", False))

    def prep(arr, t):
        return np.swapaxes(arr, -1, -2) if t and arr.ndim >= 2 else arr

    ex = exact_ints(a, bm, bias)
    if ex is not None:
        af, bf, cf = ex
        acc = K.exact_matmul(prep(af.codes, ta), prep(bf.codes, tb))
        return add_bias(acc, af.fp + bf.fp, cf, op)
    y = np.matmul(prep(a.values(), ta), prep(bm.values(), tb))
    if bias is not None:
        y = y + bias.values().reshape(-1)
    return float_result(op, y, a, bm)


@register("inner-product")
def _inner(ctx, op, ins):
    x, w, b = one(ins), one(ins, "weights"), one(ins, "bias")
    axis = int(op.attr("axis", 1)) % len(x.shape)
    lead = x.shape[:axis]

    def flat(arr):
        return arr.reshape(lead + (-1,))
    ex = exact_ints(x, w, b)
    if ex is not None:
        xf, wf, bf = ex
        wc = wf.codes.reshape(wf.codes.shape[0], -1)
        acc = K.exact_matmul(flat(xf.codes), np.ascontiguousarray(wc.T))
        return add_bias(acc, xf.fp + wf.fp, bf, op)
    wv = w.values().reshape(w.shape[0], -1)
    y = flat(x.values()) @ wv.T
    if b is not None:
        y = y + b.values().reshape(-1)
    return float_result(op, y, x, w)


@register("scale")
def _scale(ctx, op, ins):
    """output = input * scale[c] + bias[c] along ``axis`` (exact on codes)."""
    x, s, b = one(ins), one(ins, "scale"), one(ins, "bias")
    rank = len(x.shape)
    axis = int(op.attr("axis", -1)) % rank
    shape = [1] * rank
    shape[axis] = -1
    ex = exact_ints(x, s, b)
    if ex is not None:
        xf, sf, bf = ex
        acc = xf.codes * sf.codes.reshape(shape)
        fp = xf.fp + sf.fp
        if bf is None:
            return Fixed(acc, fp)
        if axis != rank - 1:
            acc = np.moveaxis(acc, axis, -1)
            r = add_bias(acc, fp, bf, op)
            return Fixed(np.moveaxis(r.codes, -1, axis), r.fp)
        return add_bias(acc, fp, bf, op)
    y = x.values() * s.values().reshape(shape)
    if b is not None:
        y = y + b.values().reshape(shape)
    return float_result(op, y, x, s)
