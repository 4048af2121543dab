"""Per-op-type implementations of the integer simulator.

Every implementation takes ``(ctx, op, ins)`` where ``ins`` maps argument name to the list of
input values (:class:`~.values.Fixed` / :class:`~.values.Floating`) and returns one value.
Fixed-point ops compute exactly on integer codes; the ops in :data:`FLOAT_OPS` compute in float64
and mark their result inexact.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from nndct_lite.xmodel.model import XOp, const_data

from . import kernels as K
from .values import (Fixed, Floating, SimError, Value, align, common_fp, dyadic, requantize,
                     to_fixed)

__all__ = ["IMPLS", "FLOAT_OPS", "EXACT_OPS", "supported_op_types"]

Impl = Callable[["object", XOp, dict[str, list[Value]]], Value]
IMPLS: dict[str, Impl] = {}


def _reg(*names):
    def deco(fn):
        for n in names:
            IMPLS[n] = fn
        return fn
    return deco


def _one(ins, arg="input"):
    vals = ins.get(arg) or []
    return vals[0] if vals else None


def _float_result(op: XOp, data: np.ndarray, *srcs: Value) -> Floating:
    inexact = tuple(dict.fromkeys([n for s in srcs if isinstance(s, Floating) for n in s.inexact]
                                  + [op.name]))
    return Floating(data, inexact)


def _exact(*vals: Value | None) -> list[Fixed] | None:
    """All values as Fixed with denom 1 when that is exact, else None."""
    out = []
    for v in vals:
        if v is None:
            out.append(None)
            continue
        f = to_fixed(v)
        if f is None or not (isinstance(f.denom, int) and f.denom == 1):
            return None
        out.append(f)
    return out


def _hw(op: XOp, name: str, default=(1, 1)):
    """XIR stores 2-D kernel/stride/dilation as {w, h}: return (h, w)."""
    v = op.attr(name)
    if v is None:
        return tuple(default)
    if len(v) != 2:
        raise SimError(f"op {op.name!r}: {name} must have 2 values, got {list(v)}")
    return int(v[1]), int(v[0])


def _pad4(op: XOp):
    p = op.attr("pad", (0, 0, 0, 0))
    if len(p) != 4:
        raise SimError(f"op {op.name!r}: pad must have 4 values (l, r, t, b), got {list(p)}")
    return tuple(int(x) for x in p)


def _movement(v: Value, fn) -> Value:
    """Apply a data-movement function to the codes (and a non-scalar divisor) or the floats."""
    if isinstance(v, Floating):
        return Floating(fn(v.data), v.inexact)
    if isinstance(v.denom, np.ndarray):
        return Fixed(fn(v.codes), v.fp, fn(np.ascontiguousarray(v.denom_full())))
    return Fixed(fn(v.codes), v.fp, v.denom, v.qtype)


# -- sources and quantization -----------------------------------------------------------------

@_reg("const", "const-fix")
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


@_reg("fix", "float2fix", "fix2float")
def _fix(ctx, op, ins):
    fp, bw, signed, mode = _fix_params(op)
    codes = requantize(_one(ins), fp, bw, signed, mode)
    return Fixed(codes, fp, 1, (bw, signed))


# -- convolutions / dense ---------------------------------------------------------------------

def _add_bias(acc: np.ndarray, fp: int, b: Fixed | None, op: XOp) -> Fixed:
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


_CONV_KERNELS = {
    "conv2d": K.conv2d, "depthwise-conv2d": K.depthwise_conv2d,
    "transposed-conv2d": K.transposed_conv2d,
    "transposed-depthwise-conv2d": K.transposed_depthwise_conv2d,
}


@_reg(*_CONV_KERNELS)
def _conv(ctx, op, ins):
    x, w, b = _one(ins), _one(ins, "weights"), _one(ins, "bias")
    if len(x.shape) != 4:
        raise SimError(f"op {op.name!r} ({op.type}): input must be 4-D NHWC, got {list(x.shape)}")
    fn = _CONV_KERNELS[op.type]
    kw = dict(stride=_hw(op, "stride"), dilation=_hw(op, "dilation"), pad=_pad4(op),
              mode=op.attr("pad_mode", "FLOOR"))
    if op.type == "conv2d":
        kw["group"] = int(op.attr("group", 1))
    ex = _exact(x, w, b)
    if ex is not None:
        xf, wf, bf = ex
        acc = fn(xf.codes, wf.codes, **kw)
        return _add_bias(acc, xf.fp + wf.fp, bf, op)
    y = fn(x.values(), w.values(), **kw)
    if b is not None:
        y = y + b.values().reshape(-1)
    return _float_result(op, y, x, w, *([b] if b is not None else []))


@_reg("matmul")
def _matmul(ctx, op, ins):
    vals = ins.get("input", [])
    if len(vals) != 2:
        raise SimError(f"op {op.name!r}: matmul needs 2 inputs, got {len(vals)}")
    a, bm = vals
    bias = _one(ins, "bias")
    ta, tb = bool(op.attr("transpose_a", False)), bool(op.attr("transpose_b", False))

    def prep(arr, t):
        return np.swapaxes(arr, -1, -2) if t and arr.ndim >= 2 else arr

    ex = _exact(a, bm, bias)
    if ex is not None:
        af, bf, cf = ex
        acc = K.exact_matmul(prep(af.codes, ta), prep(bf.codes, tb))
        return _add_bias(acc, af.fp + bf.fp, cf, op)
    y = np.matmul(prep(a.values(), ta), prep(bm.values(), tb))
    if bias is not None:
        y = y + bias.values().reshape(-1)
    return _float_result(op, y, a, bm)


@_reg("inner-product")
def _inner(ctx, op, ins):
    x, w, b = _one(ins), _one(ins, "weights"), _one(ins, "bias")
    axis = int(op.attr("axis", 1))
    axis %= len(x.shape)
    lead = x.shape[:axis]

    def flat(arr):
        return arr.reshape(lead + (-1,))
    ex = _exact(x, w, b)
    if ex is not None:
        xf, wf, bf = ex
        wc = wf.codes.reshape(wf.codes.shape[0], -1)
        acc = K.exact_matmul(flat(xf.codes), np.ascontiguousarray(wc.T))
        return _add_bias(acc, xf.fp + wf.fp, bf, op)
    wv = w.values().reshape(w.shape[0], -1)
    y = flat(x.values()) @ wv.T
    if b is not None:
        y = y + b.values().reshape(-1)
    return _float_result(op, y, x, w)


# -- activations ------------------------------------------------------------------------------

def _at_nonneg_fp(v: Fixed, op) -> Fixed:
    """``v`` with fp >= 0 so that small integers (3, 6) have integer codes."""
    if v.fp >= 0:
        return v
    if isinstance(v.denom, int) and v.denom == 1:
        return Fixed(align(v, 0, f"op {op.name!r}"), 0)
    return Fixed(v.codes << np.int64(-v.fp), 0, v.denom)


def _int_const(v: Fixed, x: float) -> np.ndarray | int:
    """The code of the constant ``x`` (an integer) at ``v``'s fp and divisor (fp >= 0)."""
    c = int(x) << v.fp
    return c * v.denom if not (isinstance(v.denom, int) and v.denom == 1) else c


@_reg("relu")
def _relu(ctx, op, ins):
    v = _one(ins)
    if isinstance(v, Fixed):
        return Fixed(np.maximum(v.codes, 0), v.fp, v.denom)
    return Floating(np.maximum(v.data, 0.0), v.inexact)


@_reg("relu6", "hard-tanh")
def _clip_act(ctx, op, ins):
    lo, hi = (0, 6) if op.type == "relu6" else (-1, 1)
    v = to_fixed(_one(ins)) or _one(ins)
    if isinstance(v, Fixed):
        v = _at_nonneg_fp(v, op)
        return Fixed(np.clip(v.codes, _int_const(v, lo), _int_const(v, hi)), v.fp, v.denom)
    return Floating(np.clip(v.data, lo, hi), v.inexact)


@_reg("leaky-relu")
def _leaky(ctx, op, ins):
    alpha = float(op.attr("alpha"))
    v = to_fixed(_one(ins)) or _one(ins)
    d = dyadic(np.array([alpha]))
    if isinstance(v, Fixed) and d is not None and d[1] >= 0:
        ka, ta = int(d[0][0]), d[1]
        c = v.codes
        return Fixed(np.where(c >= 0, c << np.int64(ta), c * ka), v.fp + ta, v.denom)
    x = v.values()
    return _float_result(op, np.where(x >= 0, x, x * alpha), v)


@_reg("prelu")
def _prelu(ctx, op, ins):
    v, w = _one(ins), _one(ins, "weight")
    ex = _exact(v, w)
    if ex is not None:
        vf, wf = ex
        wc = wf.codes.reshape(-1)
        if wf.fp < 0:
            wc, wfp = wc << np.int64(-wf.fp), 0
        else:
            wfp = wf.fp
        c = vf.codes
        return Fixed(np.where(c >= 0, c << np.int64(wfp), c * wc), vf.fp + wfp)
    x = v.values()
    return _float_result(op, np.where(x >= 0, x, x * w.values().reshape(-1)), v, w)


_HSIG_MUL, _HSIG_SHIFT = 2731, 14  # DPU's 1/6: 2731 / 2^14


def _hsig_codes(v: Fixed) -> tuple[np.ndarray, int]:
    """relu6(x + 3) * 2731 / 2^14 as exact codes at fp + 14 (the DPU's hard-sigmoid)."""
    t = np.clip(v.codes + _int_const(v, 3), 0, _int_const(v, 6))
    return t * _HSIG_MUL, v.fp + _HSIG_SHIFT


@_reg("hard-sigmoid", "hard-sigmoid-fix")
def _hsigmoid(ctx, op, ins):
    v = to_fixed(_one(ins))
    if v is None:
        x = _one(ins).values()
        return _float_result(op, np.clip(x + 3, 0, 6) * (_HSIG_MUL / 2 ** _HSIG_SHIFT), _one(ins))
    v = _at_nonneg_fp(v, op)
    c, fp = _hsig_codes(v)
    return Fixed(c, fp, v.denom)


@_reg("hard-swish")
def _hswish(ctx, op, ins):
    v = to_fixed(_one(ins))
    if v is None:
        x = _one(ins).values()
        h = np.clip(x + 3, 0, 6) * (_HSIG_MUL / 2 ** _HSIG_SHIFT)
        return _float_result(op, x * h, _one(ins))
    v = _at_nonneg_fp(v, op)
    c, fp = _hsig_codes(v)
    h7 = requantize(Fixed(c, fp, v.denom), 7, 8, True, "DPU_ROUND")  # h on the fixed 8-bit fp 7 grid
    return Fixed(v.codes * h7, v.fp + 7, v.denom)


def _float_unary(fn):
    def impl(ctx, op, ins):
        v = _one(ins)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return _float_result(op, fn(op, v.values()), v)
    return impl


def _erf(x):
    import torch
    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(x))).numpy()


def _softmax(op, x):
    ax = int(op.attr("axis", -1))
    e = np.exp(x - np.max(x, axis=ax, keepdims=True))
    return e / np.sum(e, axis=ax, keepdims=True)


def _l2n(op, x):
    axes = op.attr("axis") or tuple(range(x.ndim))
    eps = float(op.attr("epsilon", 1e-12))
    n = np.sqrt(np.maximum(np.sum(x * x, axis=tuple(axes), keepdims=True), eps))
    return x / n


_FLOAT_UNARY = {
    "sigmoid": lambda op, x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": lambda op, x: np.tanh(x),
    "exp": lambda op, x: np.exp(x),
    "swish": lambda op, x: x / (1.0 + np.exp(-x)),
    "mish": lambda op, x: x * np.tanh(np.logaddexp(0.0, x)),
    "gelu": lambda op, x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "elu": lambda op, x: np.where(x > 0, x, float(op.attr("alpha", 1.0)) * np.expm1(x)),
    "celu": lambda op, x: np.where(x > 0, x, float(op.attr("alpha", 1.0))
                                   * np.expm1(x / float(op.attr("alpha", 1.0)))),
    "selu": lambda op, x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
    "softmax": _softmax,
    "l2_normalize": _l2n,
}
for _n, _f in _FLOAT_UNARY.items():
    IMPLS[_n] = _float_unary(_f)


# -- element-wise -----------------------------------------------------------------------------

def _all_fixed(vals):
    out = [to_fixed(v) for v in vals]
    return None if any(f is None for f in out) else out


def _reduce_denom(codes: np.ndarray, fp: int, d) -> Fixed:
    if isinstance(d, int) and d > 1 and codes.size:
        g = math.gcd(d, int(np.gcd.reduce(np.abs(codes).reshape(-1))))
        if g > 1:
            codes, d = codes // g, d // g
    return Fixed(codes, fp, d)


@_reg("add", "sub")
def _addsub(ctx, op, ins):
    vals = ins.get("input", [])
    fx = _all_fixed(vals)
    if fx is not None:
        codes, fp, d = common_fp(fx, f"op {op.name!r}")
        acc = codes[0]
        for c in codes[1:]:
            acc = acc + c if op.type == "add" else acc - c
        return Fixed(acc, fp, d)
    acc = vals[0].values()
    for v in vals[1:]:
        acc = acc + v.values() if op.type == "add" else acc - v.values()
    return _float_result(op, acc, *vals)


@_reg("mul")
def _mul(ctx, op, ins):
    vals = ins.get("input", [])
    fx = _all_fixed(vals)
    if fx is not None:
        # reduce a pending divisor against the integer factors first (keeps numbers small and
        # turns avgpool-sum * (area * m / 2^s) into an exact sum * m / 2^s)
        acc = fx[0]
        for f in fx[1:]:
            a, b = acc, f
            da = a.denom if isinstance(a.denom, int) else None
            db = b.denom if isinstance(b.denom, int) else None
            if da is not None and da > 1 and db == 1 and b.codes.size:
                g = math.gcd(da, int(np.gcd.reduce(np.abs(b.codes).reshape(-1))))
                b = Fixed(b.codes // g, b.fp, 1)
                a = Fixed(a.codes, a.fp, da // g)
            elif db is not None and db > 1 and da == 1 and a.codes.size:
                g = math.gcd(db, int(np.gcd.reduce(np.abs(a.codes).reshape(-1))))
                a = Fixed(a.codes // g, a.fp, 1)
                b = Fixed(b.codes, b.fp, db // g)
            ba = int(np.max(np.abs(a.codes))) if a.codes.size else 0
            bb = int(np.max(np.abs(b.codes))) if b.codes.size else 0
            if ba and bb and ba.bit_length() + bb.bit_length() > 62:
                raise SimError(f"op {op.name!r}: product overflows int64")
            d = np.asarray(a.denom, dtype=np.int64) * np.asarray(b.denom, dtype=np.int64)
            d = int(d) if d.ndim == 0 else d
            acc = _reduce_denom(a.codes * b.codes, a.fp + b.fp, d)
        return acc
    acc = vals[0].values()
    for v in vals[1:]:
        acc = acc * v.values()
    return _float_result(op, acc, *vals)


@_reg("div")
def _div(ctx, op, ins):
    vals = ins.get("input", [])
    acc = vals[0].values()
    with np.errstate(divide="ignore", invalid="ignore"):
        for v in vals[1:]:
            acc = acc / v.values()
    return _float_result(op, acc, *vals)


@_reg("min", "max")
def _minmax(ctx, op, ins):
    vals = ins.get("input", [])
    fn = np.minimum if op.type == "min" else np.maximum
    fx = _all_fixed(vals)
    if fx is not None:
        codes, fp, d = common_fp(fx, f"op {op.name!r}")
        acc = codes[0]
        for c in codes[1:]:
            acc = fn(acc, c)
        return Fixed(acc, fp, d)
    acc = vals[0].values()
    for v in vals[1:]:
        acc = fn(acc, v.values())
    return _float_result(op, acc, *vals)


@_reg("neg")
def _neg(ctx, op, ins):
    v = _one(ins)
    if isinstance(v, Fixed):
        return Fixed(-v.codes, v.fp, v.denom)
    return Floating(-v.data, v.inexact)


@_reg("concat", "concat-fix", "stack")
def _concat(ctx, op, ins):
    vals = ins.get("input", [])
    ax = int(op.attr("axis", 0))
    join = np.stack if op.type == "stack" else np.concatenate
    fx = _all_fixed(vals)
    if fx is not None:
        codes, fp, d = common_fp(fx, f"op {op.name!r}")
        if isinstance(d, np.ndarray):
            return _float_result(op, join([v.values() for v in vals], axis=ax), *vals)
        return Fixed(join(codes, axis=ax), fp, d)
    return _float_result(op, join([v.values() for v in vals], axis=ax), *vals)


# -- pooling / reductions ---------------------------------------------------------------------

def _pool_geometry(op, shape):
    if op.attr("global", False):
        h, w = shape[1], shape[2]
        return (h, w), (h, w), (0, 0, 0, 0), "FLOOR"
    return _hw(op, "kernel"), _hw(op, "stride"), _pad4(op), op.attr("pad_mode", "FLOOR")


@_reg("maxpool2d", "avgpool2d", "pool-fix")
def _pool(ctx, op, ins):
    v = _one(ins)
    if len(v.shape) != 4:
        raise SimError(f"op {op.name!r}: pooling needs a 4-D NHWC input, got {list(v.shape)}")
    kind = "MAX" if op.type == "maxpool2d" else "AVG" if op.type == "avgpool2d" else op.attr("type")
    kernel, stride, pad, mode = _pool_geometry(op, v.shape)
    inc_pad = bool(op.attr("count_include_pad", True))
    inc_inv = bool(op.attr("count_include_invalid", True))
    if isinstance(v, Fixed) and isinstance(v.denom, int):
        r, div = K.pool2d(v.codes, kind, kernel, stride, pad, mode, inc_pad, inc_inv)
        if kind == "MAX":
            return Fixed(r, v.fp, v.denom)
        d = div * v.denom if isinstance(div, int) else div * np.int64(v.denom)
        return Fixed(r, v.fp, d)
    r, div = K.pool2d(v.values(), kind, kernel, stride, pad, mode, inc_pad, inc_inv)
    if kind == "MAX":
        return Floating(r, v.inexact) if isinstance(v, Floating) else _float_result(op, r, v)
    return _float_result(op, r / div, v)


@_reg("reduction_mean", "reduction_sum", "reduction_max", "reduction_max-fix")
def _reduce(ctx, op, ins):
    v = _one(ins)
    rank = len(v.shape)
    axes = tuple(sorted({int(a) % rank for a in (op.attr("axis") or range(rank))}))
    keep = bool(op.attr("keep_dims", False))
    count = int(np.prod([v.shape[a] for a in axes])) if axes else 1
    if isinstance(v, Fixed) and isinstance(v.denom, int):
        if op.type.startswith("reduction_max"):
            return Fixed(np.max(v.codes, axis=axes, keepdims=keep), v.fp, v.denom)
        s = np.sum(v.codes, axis=axes, keepdims=keep, dtype=np.int64)
        d = v.denom * (count if op.type == "reduction_mean" else 1)
        return Fixed(s, v.fp, d)
    x = v.values()
    if op.type.startswith("reduction_max"):
        return Floating(np.max(x, axis=axes, keepdims=keep), getattr(v, "inexact", ()))
    r = np.sum(x, axis=axes, keepdims=keep)
    if op.type == "reduction_mean":
        r = r / count
    return _float_result(op, r, v)


# -- data movement ----------------------------------------------------------------------------

def _shape_from_value(v: Value) -> list[int]:
    if isinstance(v, Fixed):
        vals = v.values()
    else:
        vals = v.data
    return [int(round(float(x))) for x in np.asarray(vals).reshape(-1)]


@_reg("reshape", "reshape-fix")
def _reshape(ctx, op, ins):
    v = _one(ins)
    sv = _one(ins, "shape")
    if sv is not None:
        target = _shape_from_value(sv)
    else:
        target = list(op.attr("shape", [0]))
        if op.type == "reshape" and target == [0]:
            target = list(op.output.shape)
    in_shape = list(v.shape)
    target = [in_shape[i] if t == 0 and i < len(in_shape) else t for i, t in enumerate(target)]
    target = ctx.batch_fix(target)
    try:
        return _movement(v, lambda a: a.reshape(target))
    except ValueError:
        raise SimError(f"op {op.name!r}: cannot reshape {in_shape} to {target}") from None


@_reg("flatten")
def _flatten(ctx, op, ins):
    v = _one(ins)
    r = len(v.shape)
    s, e = int(op.attr("start_axis")) % r, int(op.attr("end_axis")) % r
    shp = list(v.shape)
    target = shp[:s] + [int(np.prod(shp[s:e + 1]))] + shp[e + 1:]
    return _movement(v, lambda a: a.reshape(target))


@_reg("squeeze")
def _squeeze(ctx, op, ins):
    v = _one(ins)
    r = len(v.shape)
    axes = op.attr("axis") or ()
    if axes:
        ax = tuple(sorted(int(a) % r for a in axes))
    else:
        # decide on the stored shape (XIR's view); never drop a real batch axis
        ref = ctx.stored_input_shape(op) or v.shape
        ax = tuple(i for i, d in enumerate(ref) if d == 1 and v.shape[i] == 1)
    return _movement(v, lambda a: np.squeeze(a, axis=ax) if ax else a)


@_reg("transpose")
def _transpose(ctx, op, ins):
    order = [int(i) for i in op.attr("order")]
    return _movement(_one(ins), lambda a: np.ascontiguousarray(np.transpose(a, order)))


@_reg("strided_slice", "strided_slice-fix")
def _slice(ctx, op, ins):
    v = _one(ins)
    rank = len(v.shape)
    begin, end, strides = (list(op.attr(k, [])) for k in ("begin", "end", "strides"))
    bm, em = int(op.attr("begin_mask", 0)), int(op.attr("end_mask", 0))
    if int(op.attr("ellipsis_mask", 0)) or int(op.attr("new_axis_mask", 0)):
        raise SimError(f"op {op.name!r}: ellipsis_mask / new_axis_mask are not supported")
    sm = int(op.attr("shrink_axis_mask", 0))
    idx: list = []
    squeeze_axes = []
    for i in range(rank):
        if i >= len(begin):
            idx.append(slice(None))
            continue
        st = strides[i] if i < len(strides) else 1
        if sm >> i & 1:
            idx.append(slice(begin[i], begin[i] + 1 if begin[i] != -1 else None, 1))
            squeeze_axes.append(i)
            continue
        b = None if bm >> i & 1 else begin[i]
        e = None if em >> i & 1 else end[i]
        if i == 0 and st == 1 and (b or 0) == 0 and (e is None or e >= ctx.graph_batch):
            b = e = None  # the whole stored batch: keep every sample of a larger batch
        idx.append(slice(b, e, st))
    key = tuple(idx)

    def fn(a):
        r = a[key]
        return np.squeeze(r, axis=tuple(squeeze_axes)) if squeeze_axes else np.ascontiguousarray(r)
    return _movement(v, fn)


@_reg("pad", "pad-fix")
def _pad(ctx, op, ins):
    v = _one(ins)
    p = [int(x) for x in op.attr("paddings")]
    rank = len(v.shape)
    if len(p) != 2 * rank:
        raise SimError(f"op {op.name!r}: paddings needs {2 * rank} values, got {len(p)}")
    widths = [(p[2 * i], p[2 * i + 1]) for i in range(rank)]
    mode = op.attr("mode", "CONSTANT")
    if mode in ("REFLECT", "SYMMETRIC"):
        m = mode.lower()
        return _movement(v, lambda a: np.pad(a, widths, mode=m))
    if mode != "CONSTANT":
        raise SimError(f"op {op.name!r}: pad mode {mode!r} is not supported")
    cv = op.attr("constant_values", ())
    if op.type == "pad-fix":
        raw = cv if isinstance(cv, bytes) else b""
        cv = tuple(np.frombuffer(raw, dtype=np.int8).astype(float)) if raw else ()
    cvals = np.zeros((rank, 2)) if not cv else (
        np.full((rank, 2), float(cv[0])) if len(cv) == 1 else np.asarray(cv, dtype=float).reshape(rank, 2))
    if not np.any(cvals):
        return _movement(v, lambda a: np.pad(a, widths))
    fx = to_fixed(v)
    dc = dyadic(cvals)
    if fx is not None and dc is not None and isinstance(fx.denom, int):
        ccodes, cfp = dc
        fp = max(fx.fp, cfp)
        codes = align(Fixed(fx.codes, fx.fp), fp) if fx.denom == 1 else fx.codes << np.int64(fp - fx.fp)
        cc = (ccodes << np.int64(fp - cfp)) * fx.denom
        return Fixed(np.pad(codes, widths, constant_values=tuple(map(tuple, cc.tolist()))), fp, fx.denom)
    return _float_result(op, np.pad(v.values(), widths, constant_values=tuple(map(tuple, cvals))), v)


def _nearest_index(out: int, inp: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    d = np.arange(out, dtype=np.float64)
    if align_corners and out > 1:
        src = np.floor(d * (inp - 1) / (out - 1) + 0.5)
    elif half_pixel:
        src = np.floor((d + 0.5) * inp / out)
    else:
        src = np.floor(d * inp / out)
    return np.clip(src.astype(np.int64), 0, inp - 1)


@_reg("resize", "upsample-fix", "downsample-fix")
def _resize(ctx, op, ins):
    v = _one(ins)
    if len(v.shape) != 4:
        raise SimError(f"op {op.name!r}: resize supports 4-D NHWC inputs, got {list(v.shape)}")
    n, h, w, c = v.shape
    oh, ow = ctx.out_hw(op, v.shape)
    ac, hp = bool(op.attr("align_corners", False)), bool(op.attr("half_pixel_centers", False))
    mode = op.attr("mode", "NEAREST")
    if mode == "NEAREST":
        ri, ci = _nearest_index(oh, h, ac, hp), _nearest_index(ow, w, ac, hp)
        return _movement(v, lambda a: np.ascontiguousarray(a[:, ri][:, :, ci]))
    if mode != "BILINEAR":
        raise SimError(f"op {op.name!r}: resize mode {mode!r} is not supported")
    x = v.values()

    def coords(out, inp):
        d = np.arange(out, dtype=np.float64)
        if ac and out > 1:
            s = d * (inp - 1) / (out - 1)
        elif hp:
            s = np.maximum((d + 0.5) * inp / out - 0.5, 0.0)
        else:
            s = d * inp / out
        i0 = np.clip(np.floor(s).astype(np.int64), 0, inp - 1)
        i1 = np.minimum(i0 + 1, inp - 1)
        return i0, i1, s - i0
    r0, r1, fr = coords(oh, h)
    c0, c1, fc = coords(ow, w)
    top = x[:, r0][:, :, c0] * (1 - fc)[None, None, :, None] + x[:, r0][:, :, c1] * fc[None, None, :, None]
    bot = x[:, r1][:, :, c0] * (1 - fc)[None, None, :, None] + x[:, r1][:, :, c1] * fc[None, None, :, None]
    y = top * (1 - fr)[None, :, None, None] + bot * fr[None, :, None, None]
    return _float_result(op, y, v)


@_reg("pixel-shuffle", "pixel-shuffle-fix")
def _pixel_shuffle(ctx, op, ins):
    v = _one(ins)
    r = int(op.attr("scale"))
    up = bool(op.attr("upscale", not op.attr("reverse", False)))
    n, h, w, c = v.shape
    if up:  # channel index = c * r * r + i * r + j (torch's pixel_shuffle order)
        def fn(a):
            return np.ascontiguousarray(a.reshape(n, h, w, c // (r * r), r, r)
                                        .transpose(0, 1, 4, 2, 5, 3).reshape(n, h * r, w * r, c // (r * r)))
    else:
        def fn(a):
            return np.ascontiguousarray(a.reshape(n, h // r, r, w // r, r, c)
                                        .transpose(0, 1, 3, 5, 2, 4).reshape(n, h // r, w // r, c * r * r))
    return _movement(v, fn)


@_reg("identity", "placeholder", "upload", "download")
def _identity(ctx, op, ins):
    return _one(ins)


@_reg("shape")
def _shape(ctx, op, ins):
    return Fixed(np.asarray(_one(ins).shape, dtype=np.int64), 0)


@_reg("cast")
def _cast(ctx, op, ins):
    from nndct_lite.xmodel.model import numpy_dtype_of
    v = _one(ins)
    dt = numpy_dtype_of(op.attr("data_type", "float32"))
    if dt is None:
        raise SimError(f"op {op.name!r}: cannot cast to {op.attr('data_type')!r}")
    data = v.values().astype(dt).astype(np.float64)
    return to_fixed(Floating(data)) or _float_result(op, data, v)


@_reg("batchnorm")
def _batchnorm(ctx, op, ins):
    x = _one(ins)
    g, b, m, var = (_one(ins, k).values().reshape(-1) for k in ("gamma", "beta", "moving_mean", "moving_var"))
    eps = float(op.attr("epsilon", 1e-5))
    y = (x.values() - m) / np.sqrt(var + eps) * g + b
    return _float_result(op, y, x)


FLOAT_OPS = frozenset(list(_FLOAT_UNARY) + ["div", "batchnorm"])
EXACT_OPS = frozenset(set(IMPLS) - FLOAT_OPS)


def supported_op_types() -> list[str]:
    return sorted(IMPLS)
