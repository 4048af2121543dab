"""Data movement (exact: codes move unchanged) and resizing.

``resize`` / ``upsample-fix`` / ``downsample-fix`` follow XIR's definition: NEAREST picks
``floor(scaler)`` (``round`` with align_corners), BILINEAR interpolates between ``floor(scaler)``
and the next row/column. The bilinear weights are exact fractions (denominator ``out - 1``,
``out`` or ``2 * out``), so bilinear stays exact on codes with a pending divisor and the next
``fix`` rounds the true interpolated value once. half_pixel_centers clamps a negative source
coordinate to 0 (as torch and TensorFlow do).
"""
from __future__ import annotations

import numpy as np

from nndct_lite.xmodel.model import XOp, numpy_dtype_of

from .ophelp import exact_fixed, finish_fix, float_result, movement, need, one
from .registry import register
from .values import Fixed, Floating, SimError, Value, align, dyadic, to_fixed

# -- data movement ----------------------------------------------------------------------------

def _shape_from_value(v: Value) -> list[int]:
    if isinstance(v, Fixed):
        vals = v.values()
    else:
        vals = v.data
    return [int(round(float(x))) for x in np.asarray(vals).reshape(-1)]


@register("reshape", "reshape-fix")
def _reshape(ctx, op, ins):
    v = one(ins)
    sv = one(ins, "shape")
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
        return finish_fix(op, movement(v, lambda a: a.reshape(target)))
    except ValueError:
        raise SimError(f"op {op.name!r}: cannot reshape {in_shape} to {target}") from None


@register("flatten")
def _flatten(ctx, op, ins):
    v = one(ins)
    r = len(v.shape)
    s, e = int(op.attr("start_axis")) % r, int(op.attr("end_axis")) % r
    shp = list(v.shape)
    target = shp[:s] + [int(np.prod(shp[s:e + 1]))] + shp[e + 1:]
    return movement(v, lambda a: a.reshape(target))


@register("squeeze")
def _squeeze(ctx, op, ins):
    v = one(ins)
    r = len(v.shape)
    axes = op.attr("axis") or ()
    if axes:
        ax = tuple(sorted(int(a) % r for a in axes))
    else:
        # decide on the stored shape (XIR's view); never drop a real batch axis
        ref = ctx.stored_input_shape(op) or v.shape
        ax = tuple(i for i, d in enumerate(ref) if d == 1 and v.shape[i] == 1)
    return movement(v, lambda a: np.squeeze(a, axis=ax) if ax else a)


@register("transpose")
def _transpose(ctx, op, ins):
    order = [int(i) for i in op.attr("order")]
    return movement(one(ins), lambda a: np.ascontiguousarray(np.transpose(a, order)))


@register("strided_slice", "strided_slice-fix")
def _slice(ctx, op: XOp, ins: dict[str, list[Value]]) -> Value:
    v = need(op, ins)
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
        if i == 0 and ctx.batch != ctx.graph_batch and st == 1 and (b or 0) == 0 and \
                (e is None or e >= ctx.graph_batch):
            b = e = None  # the whole stored batch: keep every sample of a larger batch
        idx.append(slice(b, e, st))
    key = tuple(idx)

    def fn(a):
        r = a[key]
        return np.squeeze(r, axis=tuple(squeeze_axes)) if squeeze_axes else np.ascontiguousarray(r)
    return finish_fix(op, movement(v, fn))


@register("pad", "pad-fix")
def _pad(ctx, op, ins):
    return finish_fix(op, _pad_value(op, one(ins)))


def _pad_value(op, v):
    p = [int(x) for x in op.attr("paddings")]
    rank = len(v.shape)
    if len(p) != 2 * rank:
        raise SimError(f"op {op.name!r}: paddings needs {2 * rank} values, got {len(p)}")
    widths = [(p[2 * i], p[2 * i + 1]) for i in range(rank)]
    mode = op.attr("mode", "CONSTANT")
    if mode in ("REFLECT", "SYMMETRIC"):
        m = mode.lower()
        return movement(v, lambda a: np.pad(a, widths, mode=m))
    if mode != "CONSTANT":
        raise SimError(f"op {op.name!r}: pad mode {mode!r} is not supported")
    cv = op.attr("constant_values", ())
    if op.type == "pad-fix":  # int8 codes at the input's fix position
        raw = bytes(cv) if isinstance(cv, (bytes, bytearray)) else b""
        scale = 2.0 ** -v.fp if isinstance(v, Fixed) else 1.0
        cv = tuple(np.frombuffer(raw, dtype=np.int8).astype(float) * scale) if raw else ()
    cvals = np.zeros((rank, 2)) if not cv else (
        np.full((rank, 2), float(cv[0])) if len(cv) == 1 else np.asarray(cv, dtype=float).reshape(rank, 2))
    if not np.any(cvals):
        return movement(v, lambda a: np.pad(a, widths))
    fx = exact_fixed(v)
    dc = dyadic(cvals)
    if fx is not None and dc is not None and isinstance(fx.denom, int):
        ccodes, cfp = dc
        fp = max(fx.fp, cfp)
        codes = align(Fixed(fx.codes, fx.fp), fp) if fx.denom == 1 else fx.codes << np.int64(fp - fx.fp)
        cc = (ccodes << np.int64(fp - cfp)) * fx.denom
        return Fixed(np.pad(codes, widths, constant_values=tuple(map(tuple, cc.tolist()))), fp, fx.denom)
    return float_result(op, np.pad(v.values(), widths, constant_values=tuple(map(tuple, cvals))), v)


def _nearest_index(out: int, inp: int, align_corners: bool, half_pixel: bool) -> np.ndarray:
    d = np.arange(out, dtype=np.float64)
    if align_corners and out > 1:
        src = np.floor(d * (inp - 1) / (out - 1) + 0.5)
    elif half_pixel:
        src = np.floor((d + 0.5) * inp / out)
    else:
        src = np.floor(d * inp / out)
    return np.clip(src.astype(np.int64), 0, inp - 1)


def _ratio_coords(out: int, inp: int, ac: bool, hp: bool):
    """Source rows of each output row as exact fractions: (i0, i1, frac numerator, den)."""
    d = np.arange(out, dtype=np.int64)
    if ac and out > 1:
        num, den = d * (inp - 1), out - 1
    elif hp:
        num, den = np.maximum((2 * d + 1) * inp - out, 0), 2 * out
    else:
        num, den = d * inp, out
    i0 = np.minimum(num // den, inp - 1)
    i1 = np.minimum(i0 + 1, inp - 1)
    fr = np.where(i0 == inp - 1, 0, num - i0 * den)
    return i0, i1, fr, den


def _bilinear(a, oh, ow, ac, hp):
    n, h, w, c = a.shape
    r0, r1, fr, dh = _ratio_coords(oh, h, ac, hp)
    c0, c1, fc, dw = _ratio_coords(ow, w, ac, hp)
    fcb, frb = fc[None, None, :, None], fr[None, :, None, None]
    top = a[:, r0][:, :, c0] * (dw - fcb) + a[:, r0][:, :, c1] * fcb
    bot = a[:, r1][:, :, c0] * (dw - fcb) + a[:, r1][:, :, c1] * fcb
    return top * (dh - frb) + bot * frb, dh * dw


@register("resize", "upsample-fix", "downsample-fix")
def _resize(ctx, op, ins):
    v = one(ins)
    if len(v.shape) != 4:
        raise SimError(f"op {op.name!r}: resize supports 4-D NHWC inputs, got {list(v.shape)}")
    n, h, w, c = v.shape
    oh, ow = ctx.out_hw(op, v.shape)
    ac, hp = bool(op.attr("align_corners", False)), bool(op.attr("half_pixel_centers", False))
    mode = str(op.attr("mode", "NEAREST")).upper()
    if mode == "NEAREST":
        ri, ci = _nearest_index(oh, h, ac, hp), _nearest_index(ow, w, ac, hp)
        return finish_fix(op, movement(v, lambda a: np.ascontiguousarray(a[:, ri][:, :, ci])))
    if mode != "BILINEAR":
        raise SimError(f"op {op.name!r}: resize mode {mode!r} is not supported (NEAREST, BILINEAR)")
    f = exact_fixed(v)
    if f is not None and isinstance(f.denom, int):
        y, den = _bilinear(f.codes, oh, ow, ac, hp)
        return finish_fix(op, Fixed(y, f.fp, den * f.denom))
    y, den = _bilinear(v.values(), oh, ow, ac, hp)
    return float_result(op, y / den, v)


@register("pixel-shuffle", "pixel-shuffle-fix")
def _pixel_shuffle(ctx, op, ins):
    v = one(ins)
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
    return finish_fix(op, movement(v, fn))


@register("identity", "placeholder", "upload", "download")
def _identity(ctx, op, ins):
    return one(ins)


@register("shape")
def _shape(ctx, op, ins):
    return Fixed(np.asarray(one(ins).shape, dtype=np.int64), 0)


@register("cast")
def _cast(ctx, op, ins):
    v = one(ins)
    dt = numpy_dtype_of(op.attr("data_type", "float32"))
    if dt is None:
        raise SimError(f"op {op.name!r}: cannot cast to {op.attr('data_type')!r}")
    data = v.values().astype(dt).astype(np.float64)
    return to_fixed(Floating(data)) or float_result(op, data, v)


