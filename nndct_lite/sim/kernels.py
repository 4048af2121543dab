"""Vectorised NHWC kernels on integer codes (exact) or float64 values.

Integer inputs are int64 codes; products are accumulated exactly: a matmul runs in float32 or
float64 only when ``max|a| * max|b| * K`` is below the mantissa limit (then every partial sum is
an exactly representable integer, whatever order BLAS sums in), else in int64.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .values import SimError, ceil_div, exact_int_matmul_dtype

__all__ = ["pad_spatial", "windows", "conv_out_size", "conv2d", "depthwise_conv2d", "conv3d",
           "transposed_conv3d",
           "transposed_conv2d", "transposed_depthwise_conv2d", "exact_matmul", "pool2d"]


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer)


def exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``: exact int64 result for integer inputs (fast float path when provably exact),
    float64 for float inputs."""
    if not (_is_int(a) and _is_int(b)):
        return np.matmul(a.astype(np.float64), b.astype(np.float64))
    ma = int(np.max(np.abs(a))) if a.size else 0
    mb = int(np.max(np.abs(b))) if b.size else 0
    dt = exact_int_matmul_dtype(ma, mb, a.shape[-1])
    if dt is None:
        raise SimError(f"integer matmul would overflow int64 (max |a| {ma}, max |b| {mb}, "
                       f"K {a.shape[-1]})")
    if dt is np.int64:
        return np.matmul(a, b)
    r = np.matmul(a.astype(dt), b.astype(dt))
    return r.astype(np.int64)


def pad_spatial(x: np.ndarray, top: int, bottom: int, left: int, right: int,
                value=0) -> np.ndarray:
    """Pad (or crop, for negative amounts) the H and W axes of an NHWC array."""
    if top < 0 or bottom < 0 or left < 0 or right < 0:
        h, w = x.shape[1], x.shape[2]
        x = x[:, max(-top, 0):h - max(-bottom, 0), max(-left, 0):w - max(-right, 0), :]
        top, bottom, left, right = max(top, 0), max(bottom, 0), max(left, 0), max(right, 0)
    if top == bottom == left == right == 0:
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int,
            oh: int, ow: int) -> np.ndarray:
    """Strided view (N, oh, ow, kh, kw, C) of an already padded NHWC array (no copy)."""
    n, h, w, c = x.shape
    need_h, need_w = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    if need_h > h or need_w > w:
        raise SimError(f"internal: window extent {need_h}x{need_w} exceeds padded input {h}x{w}")
    s0, s1, s2, s3 = x.strides
    return as_strided(x, shape=(n, oh, ow, kh, kw, c),
                      strides=(s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False)


def conv_out_size(size: int, k: int, s: int, d: int, p0: int, p1: int, mode: str) -> int:
    """XIR's conv2d/pool output size for one spatial axis (FLOOR, CEIL, SAME, VALID)."""
    eff = (k - 1) * d + 1
    if mode == "FLOOR":
        return (size + p0 + p1 - eff) // s + 1
    if mode == "CEIL":
        return ceil_div(size + p0 + p1 - eff, s) + 1
    if mode == "SAME":
        return ceil_div(size + p0 + p1, s)
    if mode == "VALID":
        return ceil_div(size + p0 + p1 - (k - 1) * d, s)
    raise SimError(f"unknown pad_mode {mode!r}")


def _pads_for(size, k, s, d, p0, p1, out, mode):
    """Leading / trailing padding that makes exactly ``out`` windows (extra padding of CEIL/SAME
    goes to the end; SAME splits the needed total, the larger half at the end)."""
    eff = (k - 1) * d + 1
    need = (out - 1) * s + eff
    if mode == "SAME":
        total = max(need - size, 0)
        lead = total // 2
        return lead, max(need - size - lead, 0)
    extra = need - (size + p0 + p1)
    return p0, p1 + max(extra, 0)


def _prepare(x, kernel_hw, stride_hw, dil_hw, pad, mode, pad_value=0, out_hw=None):
    kh, kw = kernel_hw
    sh, sw = stride_hw
    dh, dw = dil_hw
    pl, pr, pt, pb = pad
    n, h, w, c = x.shape
    oh = conv_out_size(h, kh, sh, dh, pt, pb, mode) if out_hw is None else out_hw[0]
    ow = conv_out_size(w, kw, sw, dw, pl, pr, mode) if out_hw is None else out_hw[1]
    if oh <= 0 or ow <= 0:
        raise SimError(f"output size {oh}x{ow} is not positive")
    t, b = _pads_for(h, kh, sh, dh, pt, pb, oh, mode)
    l, r = _pads_for(w, kw, sw, dw, pl, pr, ow, mode)
    xp = pad_spatial(x, t, b, l, r, pad_value)
    return windows(xp, kh, kw, sh, sw, dh, dw, oh, ow), (oh, ow), (t, b, l, r)


def _matmul_dtype(x: np.ndarray, wt: np.ndarray, k: int):
    """Compute dtype for an exact product of these operands (see exact_int_matmul_dtype)."""
    if not (_is_int(x) and _is_int(wt)):
        return np.float64
    mx = int(np.max(np.abs(x))) if x.size else 0
    mw = int(np.max(np.abs(wt))) if wt.size else 0
    dt = exact_int_matmul_dtype(mx, mw, k)
    if dt is None:
        raise SimError(f"integer conv would overflow int64 (max |x| {mx}, max |w| {mw}, K {k})")
    return dt


def conv2d(x, wt, stride, dilation, pad, mode="FLOOR", group=1):
    """NHWC conv with OHWI weights (kernel/stride/dilation as (h, w), pad = (l, r, t, b)).
    Exact for integer inputs: im2col in the narrowest provably exact dtype, then one matmul."""
    o, kh, kw, ig = wt.shape
    n, c = x.shape[0], x.shape[3]
    if c != ig * group or o % group:
        raise SimError(f"conv channels: input {c}, weights {list(wt.shape)}, group {group}")
    is_int = _is_int(x) and _is_int(wt)
    dt = _matmul_dtype(x, wt, kh * kw * ig)
    view, (oh, ow), _ = _prepare(x.astype(dt, copy=False), (kh, kw), stride, dilation, pad, mode)
    og = o // group
    rows = n * oh * ow
    wd = wt.astype(dt, copy=False)
    out = np.empty((rows, o), dtype=np.int64 if is_int else np.float64)
    for g in range(group):
        vg = view[..., g * ig:(g + 1) * ig] if group > 1 else view
        cols = np.ascontiguousarray(vg).reshape(rows, kh * kw * ig)
        wg = np.ascontiguousarray(wd[g * og:(g + 1) * og].reshape(og, kh * kw * ig).T)
        out[:, g * og:(g + 1) * og] = np.matmul(cols, wg)
    return out.reshape(n, oh, ow, o)


def depthwise_conv2d(x, wt, stride, dilation, pad, mode="FLOOR"):
    """Depthwise conv, weights (M, kh, kw, C); output channel ``c * M + m`` (torch's order)."""
    m, kh, kw, c = wt.shape
    if x.shape[3] != c:
        raise SimError(f"depthwise channels: input {x.shape[3]}, weights {list(wt.shape)}")
    view, (oh, ow), _ = _prepare(x, (kh, kw), stride, dilation, pad, mode)
    n = x.shape[0]
    acc_dtype = np.int64 if (_is_int(x) and _is_int(wt)) else np.float64
    out = np.zeros((n, oh, ow, c, m), dtype=acc_dtype)
    xv = view.astype(acc_dtype, copy=False)
    w = wt.astype(acc_dtype, copy=False)
    for i in range(kh):
        for j in range(kw):
            out += xv[:, :, :, i, j, :, None] * w[:, i, j, :].T[None, None, None]
    return out.reshape(n, oh, ow, c * m)


def _transposed_full(x, wt, stride, dilation, per_channel: bool):
    n, h, w, ci = x.shape
    sh, sw = stride
    dh, dw = dilation
    if per_channel:
        m, kh, kw, c = wt.shape
        oc = c * m
    else:
        oc, kh, kw, _ = wt.shape
    fh, fw = (h - 1) * sh + (kh - 1) * dh + 1, (w - 1) * sw + (kw - 1) * dw + 1
    exact = _is_int(x) and _is_int(wt)
    acc = np.zeros((n, fh, fw, oc), dtype=np.int64 if exact else np.float64)
    flat = x.reshape(n * h * w, ci)
    for i in range(kh):
        for j in range(kw):
            if per_channel:
                contrib = (x[..., :, None] * wt[:, i, j, :].T).reshape(n, h, w, oc)
            else:
                contrib = exact_matmul(flat, np.ascontiguousarray(wt[:, i, j, :].T)).reshape(n, h, w, oc)
            acc[:, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (w - 1) * sw + 1:sw, :] += contrib
    return acc


def _crop(full, pad, out_hw):
    pl, pr, pt, pb = pad
    n, fh, fw, c = full.shape
    oh, ow = out_hw
    # output index i reads full index i + pad_top; beyond the full extent contributes zero
    res = pad_spatial(full, -pt, oh + pt - fh, -pl, ow + pl - fw)
    return res[:, :oh, :ow, :]


def transposed_out_size(size, k, s, d, p0, p1, mode):
    """XIR's transposed-conv2d output size (checked against XIR's shape inference)."""
    full = (size - 1) * s + (k - 1) * d + 1
    if mode == "SAME":
        return size * s
    if mode == "VALID":
        return full
    return full - p0 - p1


def transposed_conv2d(x, wt, stride, dilation, pad, mode="FLOOR"):
    """Transposed conv (weights (O, kh, kw, I)): every input pixel scatters ``x * w`` into the
    output at ``y*stride + ky*dilation``; then ``pad`` crops (l, r, t, b) like torch's padding."""
    oc, kh, kw, ic = wt.shape
    if x.shape[3] != ic:
        raise SimError(f"transposed conv channels: input {x.shape[3]}, weights {list(wt.shape)}")
    full = _transposed_full(x, wt, stride, dilation, per_channel=False)
    return _crop(full, _transposed_pad(x, kh, kw, stride, dilation, pad, mode),
                 _transposed_hw(x, kh, kw, stride, dilation, pad, mode))


def transposed_depthwise_conv2d(x, wt, stride, dilation, pad, mode="FLOOR"):
    m, kh, kw, c = wt.shape
    if x.shape[3] != c:
        raise SimError(f"transposed depthwise channels: input {x.shape[3]}, weights {list(wt.shape)}")
    full = _transposed_full(x, wt, stride, dilation, per_channel=True)
    return _crop(full, _transposed_pad(x, kh, kw, stride, dilation, pad, mode),
                 _transposed_hw(x, kh, kw, stride, dilation, pad, mode))


def _transposed_hw(x, kh, kw, stride, dilation, pad, mode):
    pl, pr, pt, pb = pad
    return (transposed_out_size(x.shape[1], kh, stride[0], dilation[0], pt, pb, mode),
            transposed_out_size(x.shape[2], kw, stride[1], dilation[1], pl, pr, mode))


def _transposed_pad(x, kh, kw, stride, dilation, pad, mode):
    if mode in ("SAME", "VALID"):
        oh, ow = _transposed_hw(x, kh, kw, stride, dilation, pad, mode)
        fh = (x.shape[1] - 1) * stride[0] + (kh - 1) * dilation[0] + 1
        fw = (x.shape[2] - 1) * stride[1] + (kw - 1) * dilation[1] + 1
        t, l = max(fh - oh, 0) // 2, max(fw - ow, 0) // 2
        return (l, 0, t, 0)
    return pad


def pool2d(x, kind, kernel, stride, pad, mode="FLOOR", count_include_pad=True,
           count_include_invalid=True):
    """Max or average-sum pooling on NHWC. Returns ``(result, divisor)``: for MAX the maxima
    (divisor None); for AVG the exact window sums and the divisor (int or int64 array (oh, ow))."""
    kh, kw = kernel
    n, h, w, c = x.shape
    pl, pr, pt, pb = pad
    if kind == "MAX":
        fill = np.iinfo(np.int64).min if _is_int(x) else -np.inf
        view, (oh, ow), _ = _prepare(x, kernel, stride, (1, 1), pad, mode, pad_value=fill)
        return view.max(axis=(3, 4)), None
    view, (oh, ow), (t, b, l, r) = _prepare(x, kernel, stride, (1, 1), pad, mode, pad_value=0)
    if _is_int(x):
        s = view.sum(axis=(3, 4), dtype=np.int64)
    else:
        s = view.sum(axis=(3, 4))
    area = kh * kw
    if count_include_pad and count_include_invalid:
        return s, area
    # count the contributing positions per window
    ones = np.zeros((1, h + t + b, w + l + r, 1), dtype=np.int64)
    if count_include_pad:  # the explicit padding counts, the extra CEIL/SAME region does not
        ones[:, max(t - pt, 0):t + h + pb, max(l - pl, 0):l + w + pr, :] = 1
    else:
        ones[:, t:t + h, l:l + w, :] = 1
    cnt = windows(ones, kh, kw, stride[0], stride[1], 1, 1, oh, ow).sum(axis=(3, 4))[0, :, :, 0]
    cnt = np.maximum(cnt, 1)
    if np.all(cnt == cnt.flat[0]):
        return s, int(cnt.flat[0])
    return s, cnt[None, :, :, None]


# -- 3-D convolutions (XIR layout N, H, W, D, C; weights O, kh, kw, kd, I) ----------------------

def _depth_taps(x, kd, sd, dd, pn, pf, mode):
    """Depth-padded input and output depth: tap ``k`` reads ``xp[:, :, :, k*dd + od*sd]``."""
    d = x.shape[3]
    od = conv_out_size(d, kd, sd, dd, pn, pf, mode)
    if od <= 0:
        raise SimError(f"output depth {od} is not positive")
    lead, trail = _pads_for(d, kd, sd, dd, pn, pf, od, mode)
    widths = [(0, 0)] * 3 + [(lead, trail), (0, 0)]
    xp = np.pad(x, widths) if lead or trail else x
    return xp, od


def conv3d(x, wt, stride, dilation, pad, mode="FLOOR", depthwise=False):
    """3-D conv as a sum over depth taps of 2-D convs (stride/dilation (h, w, d), pad
    (l, r, t, b, near, far)); exact int64 for integer inputs."""
    kd = wt.shape[3]
    sh, sw, sd = stride
    dh, dw, dd = dilation
    xp, od = _depth_taps(x, kd, sd, dd, pad[4], pad[5], mode)
    n, h, w, _, c = xp.shape
    acc = None
    for k in range(kd):
        sl = xp[:, :, :, k * dd:k * dd + (od - 1) * sd + 1:sd, :]  # (n, h, w, od, c)
        x2 = np.ascontiguousarray(sl.transpose(0, 3, 1, 2, 4)).reshape(n * od, h, w, c)
        w2 = np.ascontiguousarray(wt[:, :, :, k, :])
        if depthwise:
            y = depthwise_conv2d(x2, w2, (sh, sw), (dh, dw), pad[:4], mode)
        else:
            y = conv2d(x2, w2, (sh, sw), (dh, dw), pad[:4], mode)
        acc = y if acc is None else acc + y
    _, oh, ow, oc = acc.shape
    return np.ascontiguousarray(acc.reshape(n, od, oh, ow, oc).transpose(0, 2, 3, 1, 4))


def transposed_conv3d(x, wt, stride, dilation, pad, mode="FLOOR", depthwise=False):
    """Transposed 3-D conv: 2-D transposed convs per depth tap, scattered along depth at
    ``z*stride + kz*dilation``, then the depth crop (near, far) like the 2-D pad crop."""
    n, h, w, d, c = x.shape
    kd = wt.shape[3]
    sh, sw, sd = stride
    dh, dw, dd = dilation
    fd = (d - 1) * sd + (kd - 1) * dd + 1
    x2 = np.ascontiguousarray(x.transpose(0, 3, 1, 2, 4)).reshape(n * d, h, w, c)
    full = None
    for k in range(kd):
        w2 = np.ascontiguousarray(wt[:, :, :, k, :])
        fn = transposed_depthwise_conv2d if depthwise else transposed_conv2d
        y = fn(x2, w2, (sh, sw), (dh, dw), pad[:4], mode)
        y = y.reshape(n, d, *y.shape[1:])
        if full is None:
            full = np.zeros((n, fd) + y.shape[2:], dtype=y.dtype)
        full[:, k * dd:k * dd + (d - 1) * sd + 1:sd] += y
    od = transposed_out_size(d, kd, sd, dd, pad[4], pad[5], mode)
    lead = max(fd - od, 0) // 2 if mode in ("SAME", "VALID") else pad[4]
    out = np.zeros((n, od) + full.shape[2:], dtype=full.dtype)
    src = full[:, lead:lead + od]
    out[:, :src.shape[1]] = src
    return np.ascontiguousarray(out.transpose(0, 2, 3, 1, 4))
