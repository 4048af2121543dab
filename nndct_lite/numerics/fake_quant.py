"""Quantize, dequantize and fake-quantize, power-of-two and float scale, per-tensor and per-channel.

All arithmetic happens on the tensor's device (no host round trips), in the tensor's dtype for
float32/float64; float16 and bfloat16 tensors are computed in float32 and the result cast back,
as the original's kernels do (numerics.md 1.4). The multiplier is applied with a multiplication,
never a division, as in the original kernels, so power-of-two ties are real ties.

>>> import torch
>>> fake_quantize_pof2(torch.tensor([0.3, 1.9, -1.0, 1.0]), 6 + 1, -128, 127, RoundMode.HALF_UP).tolist()
[0.296875, 0.9921875, -1.0, 0.9921875]
"""
from __future__ import annotations

import math
import sys
from typing import Sequence, Union, overload

import numpy as np
import torch

from . import native
from .rounding import RoundMode, scaled_round

__all__ = [
    "pof2_multiplier", "quantize_pof2", "dequantize_pof2", "fake_quantize_pof2",
    "fake_quantize_pof2_",
    "quantize_affine", "dequantize_affine", "fake_quantize_affine", "channel_view", "ste",
]

_MIN_NORMAL = sys.float_info.min
_TINY_SCALE = 2.0 ** -18
_MIN_F32_SCALE = 1.0 / float(np.finfo(np.float32).max)   # below it 1/scale overflows float32
_NARROW = (torch.float16, torch.bfloat16)


def _widen(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32 (the original converts and converts back); others as is."""
    return x.float() if x.dtype in _NARROW else x


def channel_view(values: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """Reshape a 1-D per-channel tensor so it broadcasts along ``axis`` of an ``ndim`` tensor."""
    axis = axis % ndim
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def pof2_multiplier(fp, like: torch.Tensor, axis: int | None = None) -> torch.Tensor | float:
    """``2^fp`` as a Python float (per-tensor) or a broadcastable tensor (per-channel)."""
    if axis is None:
        return math.ldexp(1.0, int(fp))
    fps = torch.as_tensor(fp, dtype=torch.float64, device=like.device)
    return channel_view(torch.exp2(fps).to(_widen(like).dtype), like.dim(), axis)


def quantize_pof2(x: torch.Tensor, fp, qmin: int, qmax: int, mode: RoundMode,
                  axis: int | None = None) -> torch.Tensor:
    """Integer codes ``clamp(R(x * 2^fp), qmin, qmax)`` as floats: in x's dtype for
    float32/float64, in float32 for float16/bfloat16 (which cannot hold every 16-bit code)."""
    xw = _widen(x)
    return scaled_round(xw, pof2_multiplier(fp, xw, axis), mode).clamp_(qmin, qmax)


def dequantize_pof2(q: torch.Tensor, fp, axis: int | None = None) -> torch.Tensor:
    """Values ``q * 2^-fp``."""
    if axis is None:
        return q * math.ldexp(1.0, -int(fp))
    return q * pof2_multiplier(-torch.as_tensor(fp), q, axis)


def fake_quantize_pof2(x: torch.Tensor, fp, qmin: int, qmax: int, mode: RoundMode,
                       axis: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` for a power-of-two scale; ``fp`` may be negative.

    Returns a new tensor of x's dtype; one temporary, no host synchronisation.
    """
    xw = _widen(x)
    q = scaled_round(xw, pof2_multiplier(fp, xw, axis), mode).clamp_(qmin, qmax)
    if axis is None:
        q.mul_(math.ldexp(1.0, -int(fp)))
    else:
        q.mul_(pof2_multiplier(-torch.as_tensor(fp), xw, axis))
    _saturate(q, fp, qmin, qmax)
    return q.to(x.dtype)


def _saturate(values: torch.Tensor, fp, qmin: int, qmax: int) -> None:
    """A code times 2^-fp beyond the dtype's range (only for fp < bit_width - 128 in float32,
    i.e. |x| near FLT_MAX) saturates to +-max instead of becoming +-inf."""
    lowest = min(fp) if isinstance(fp, (tuple, list)) else int(fp)
    big = torch.finfo(values.dtype).max
    if math.ldexp(max(-qmin, qmax), -lowest) > big:
        values.clamp_(-big, big)


def fake_quantize_pof2_(x: torch.Tensor, fp: int, qmin: int, qmax: int,
                        mode: RoundMode) -> torch.Tensor:
    """In-place ``fake_quantize_pof2`` of a float32 per-tensor activation the caller owns
    (bit-identical to the out-of-place version; falls back to it outside the fast cases)."""
    if x.dtype != torch.float32 or not -100 < int(fp) < 100 or x.requires_grad:
        return x.copy_(fake_quantize_pof2(x, fp, qmin, qmax, mode))
    if mode in (RoundMode.HALF_UP, RoundMode.HALF_EVEN) and \
            native.fake_quantize_(x, int(fp), qmin, qmax, mode is RoundMode.HALF_UP):
        return x   # one fused pass, the same bits as the ops below
    m = math.ldexp(1.0, int(fp))
    if mode is RoundMode.HALF_UP:
        x.mul_(2.0 * m).floor_().mul_(0.5).ceil_()
    elif mode is RoundMode.HALF_EVEN:
        x.mul_(m).round_()
    else:
        return x.copy_(fake_quantize_pof2(x, fp, qmin, qmax, mode))
    return x.clamp_(qmin, qmax).mul_(math.ldexp(1.0, -int(fp)))


Scale = Union[float, Sequence[float], torch.Tensor]


@overload
def _inv_scale(scale: Scale, like: torch.Tensor, axis: None) -> tuple[float, float]: ...


@overload
def _inv_scale(scale: Scale, like: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def _inv_scale(scale: Scale, like: torch.Tensor,
               axis: int | None) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]: ...


def _inv_scale(scale: Scale, like: torch.Tensor,
               axis: int | None) -> tuple[float, float] | tuple[torch.Tensor, torch.Tensor]:
    """``1/scale`` computed in double, used in the compute dtype, and ``1/(1/scale)`` in that
    dtype (numerics.md 1.4, 3.1). A scale <= the smallest normal double becomes 2^-18."""
    work = _widen(like).dtype
    if axis is None:
        if isinstance(scale, Sequence):
            raise TypeError(f"a per-tensor scale is one number, got {scale!r}")
        s = float(scale)
        if s <= _MIN_NORMAL or (work != torch.float64 and s < _MIN_F32_SCALE):
            s = _TINY_SCALE
        if work == torch.float64:
            inv = 1.0 / s
            return inv, 1.0 / inv
        inv32 = np.float32(1.0 / s)
        return float(inv32), float(np.float32(1.0) / inv32)
    st = torch.as_tensor(scale, dtype=torch.float64, device=like.device)
    tiny = _MIN_NORMAL if work == torch.float64 else _MIN_F32_SCALE
    st = torch.where(st <= tiny, torch.full_like(st, _TINY_SCALE), st)
    inv_t = (1.0 / st).to(work)
    return (channel_view(inv_t, like.dim(), axis),
            channel_view(torch.reciprocal(inv_t), like.dim(), axis))


def _zp(zero_point, like: torch.Tensor, axis: int | None):
    if axis is None:
        return int(zero_point)
    if isinstance(zero_point, (list, tuple)) and not any(zero_point):
        return 0  # all-zero per-channel zero points: scalar bounds, no broadcast clamp
    z = torch.as_tensor(zero_point, device=like.device).to(_widen(like).dtype)
    return channel_view(z, like.dim(), axis)


def _code_bounds(z, qmin: int, qmax: int):
    """``clamp(R + z, qmin, qmax) - z == clamp(R, qmin - z, qmax - z)`` (all exact integers)."""
    return qmin - z, qmax - z


def quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, mode: RoundMode,
                    axis: int | None = None) -> torch.Tensor:
    """Codes ``clamp(R(x * (1/scale)) + z, qmin, qmax)`` (float dtype; float32 for float16)."""
    xw = _widen(x)
    inv, _ = _inv_scale(scale, xw, axis)
    z = _zp(zero_point, xw, axis)
    lo, hi = _code_bounds(z, qmin, qmax)
    return scaled_round(xw, inv, mode).clamp_(lo, hi).add_(z)


def dequantize_affine(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """Values ``(q - z) * (1 / (1/scale))``."""
    _, back = _inv_scale(scale, q, axis)
    qw = _widen(q)
    return ((qw - _zp(zero_point, q, axis)) * back).to(q.dtype)


def fake_quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int,
                         mode: RoundMode, axis: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` for a float scale and zero point (new tensor, x's dtype)."""
    xw = _widen(x)
    inv, back = _inv_scale(scale, xw, axis)
    lo, hi = _code_bounds(_zp(zero_point, xw, axis), qmin, qmax)
    q = scaled_round(xw, inv, mode).clamp_(lo, hi)
    return q.mul_(back).to(x.dtype)


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, args):  # noqa: D401 - autograd signature
        return fn(x.detach(), *args)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def ste(fn, x: torch.Tensor, *args) -> torch.Tensor:
    """Apply ``fn(x, *args)`` with a straight-through (identity) gradient for ``x``."""
    if x.requires_grad and torch.is_grad_enabled():
        return _STE.apply(x, fn, args)
    return fn(x, *args)
