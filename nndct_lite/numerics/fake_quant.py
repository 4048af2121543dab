"""Quantize, dequantize and fake-quantize, power-of-two and float scale, per-tensor and per-channel.

All arithmetic happens in the tensor's dtype on the tensor's device (no host round trips). The
multiplier is applied with a multiplication, never a division, as in the original kernels, so
power-of-two ties are real ties (numerics.md 1.4).

>>> import torch
>>> fake_quantize_pof2(torch.tensor([0.3, 1.9, -1.0, 1.0]), 6 + 1, -128, 127, RoundMode.HALF_UP).tolist()
[0.296875, 0.9921875, -1.0, 0.9921875]
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

import torch

from .rounding import RoundMode, round_tensor

__all__ = [
    "pof2_multiplier", "quantize_pof2", "dequantize_pof2", "fake_quantize_pof2",
    "quantize_affine", "dequantize_affine", "fake_quantize_affine", "channel_view", "ste",
]

_MIN_NORMAL = sys.float_info.min
_TINY_SCALE = 2.0 ** -18


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
    return channel_view(torch.exp2(fps).to(like.dtype), like.dim(), axis)


def quantize_pof2(x: torch.Tensor, fp, qmin: int, qmax: int, mode: RoundMode,
                  axis: int | None = None) -> torch.Tensor:
    """Integer codes (in x's float dtype) ``clamp(R(x * 2^fp), qmin, qmax)``."""
    y = x * pof2_multiplier(fp, x, axis)
    return round_tensor(y, mode).clamp_(qmin, qmax)


def dequantize_pof2(q: torch.Tensor, fp, axis: int | None = None) -> torch.Tensor:
    """Values ``q * 2^-fp``."""
    if axis is None:
        return q * math.ldexp(1.0, -int(fp))
    return q * pof2_multiplier(-torch.as_tensor(fp), q, axis)


def fake_quantize_pof2(x: torch.Tensor, fp, qmin: int, qmax: int, mode: RoundMode,
                       axis: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` for a power-of-two scale; ``fp`` may be negative."""
    q = quantize_pof2(x, fp, qmin, qmax, mode, axis)
    if axis is None:
        return q.mul_(math.ldexp(1.0, -int(fp)))
    return q.mul_(pof2_multiplier(-torch.as_tensor(fp), q, axis))


def _inv_scale(scale, like: torch.Tensor, axis: int | None):
    """``1/scale`` computed in double, used in the tensor dtype (numerics.md 1.4, 3.1)."""
    if axis is None:
        s = float(scale)
        if s <= _MIN_NORMAL:
            s = _TINY_SCALE
        inv = torch.tensor(1.0 / s, dtype=torch.float64).to(like.dtype)
        return inv.item(), torch.reciprocal(inv).item()
    s = torch.as_tensor(scale, dtype=torch.float64, device=like.device)
    s = torch.where(s <= _MIN_NORMAL, torch.full_like(s, _TINY_SCALE), s)
    inv = (1.0 / s).to(like.dtype)
    return channel_view(inv, like.dim(), axis), channel_view(torch.reciprocal(inv), like.dim(), axis)


def _zp(zero_point, like: torch.Tensor, axis: int | None):
    if axis is None:
        return int(zero_point)
    z = torch.as_tensor(zero_point, device=like.device).to(like.dtype)
    return channel_view(z, like.dim(), axis)


def quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, mode: RoundMode,
                    axis: int | None = None) -> torch.Tensor:
    """Codes ``clamp(R(x * (1/scale)) + z, qmin, qmax)`` (float dtype)."""
    inv, _ = _inv_scale(scale, x, axis)
    q = round_tensor(x * inv, mode)
    return q.add_(_zp(zero_point, x, axis)).clamp_(qmin, qmax)


def dequantize_affine(q: torch.Tensor, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """Values ``(q - z) * (1 / (1/scale))``."""
    _, back = _inv_scale(scale, q, axis)
    return (q - _zp(zero_point, q, axis)) * back


def fake_quantize_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int,
                         mode: RoundMode, axis: int | None = None) -> torch.Tensor:
    """``dequantize(quantize(x))`` for a float scale and zero point."""
    inv, back = _inv_scale(scale, x, axis)
    z = _zp(zero_point, x, axis)
    q = round_tensor(x * inv, mode).add_(z).clamp_(qmin, qmax)
    return q.sub_(z).mul_(back)


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
