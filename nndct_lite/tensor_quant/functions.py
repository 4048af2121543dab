"""Tensor-level quantization with an ``amax`` range (pytorch-quantization semantics).

``tensor_quant(x, amax)`` gives the integer codes (as floats) and the scale
``scale = max_bound / amax``, where ``max_bound = 2^(num_bits-1) - 1`` signed and
``2^num_bits - 1`` unsigned; codes are ``clamp(round(x * scale), min_bound, max_bound)`` with
``torch.round`` (ties to even) and ``min_bound = -max_bound`` (narrow range), ``-max_bound - 1``
(full signed range) or ``0`` (unsigned). ``fake_tensor_quant`` returns ``codes / scale``.

``amax`` is a number or a tensor broadcastable to ``x`` (one value per channel). An ``amax`` of
zero (or below ``2^-24``) quantizes its values to 0 and reports scale 1; a negative ``amax`` is a
``ValueError``. Neither produces NaN.

Gradients are a clipped straight-through estimator: 1 where ``|x| <= amax``, 0 elsewhere; no
gradient flows to ``amax`` here (see :mod:`.quantizer` for a learned amax).

>>> import torch
>>> fake_tensor_quant(torch.tensor([0.5, 1.0, 2.0]), 1.0, num_bits=4).tolist()
[0.5714285969734192, 1.0, 1.0]
"""
from __future__ import annotations

import torch

__all__ = ["max_bound", "min_bound", "tensor_quant", "fake_tensor_quant", "ZERO_AMAX"]

#: an amax at or below this counts as zero (the smallest float16 subnormal step)
ZERO_AMAX = 2.0 ** -24


def max_bound(num_bits: int, unsigned: bool = False) -> int:
    """Largest code: ``2^(num_bits-1) - 1`` signed, ``2^num_bits - 1`` unsigned."""
    if not 2 <= int(num_bits) <= 16:
        raise ValueError(f"num_bits must be in 2..16, got {num_bits}")
    return (1 << num_bits) - 1 if unsigned else (1 << (num_bits - 1)) - 1


def min_bound(num_bits: int, unsigned: bool = False, narrow_range: bool = True) -> int:
    """Smallest code: 0 unsigned, ``-max_bound`` narrow, ``-max_bound - 1`` full range."""
    if unsigned:
        return 0
    top = max_bound(num_bits, False)
    return -top if narrow_range else -top - 1


def _amax_tensor(amax, x: torch.Tensor) -> torch.Tensor:
    a = torch.as_tensor(amax, device=x.device)
    if not a.is_floating_point():
        a = a.float()
    a = a.to(torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype)
    if a.numel() and bool((a < 0).any()):
        raise ValueError(f"amax must be >= 0, got a minimum of {float(a.min())}")
    return a


def _codes(x: torch.Tensor, a: torch.Tensor, num_bits: int, unsigned: bool,
           narrow_range: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scale): the forward arithmetic shared by both functions (no autograd)."""
    top = max_bound(num_bits, unsigned)
    bottom = min_bound(num_bits, unsigned, narrow_range)
    xw = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    zero = a <= ZERO_AMAX
    safe = torch.where(zero, torch.ones_like(a), a)
    scale = torch.div(safe.new_full((), float(top)), safe)   # true division (not 1/a * top)
    # an amax of zero: every value quantizes to 0 (scale 0 inside the product), scale 1 reported
    q = torch.clamp(torch.round(xw * torch.where(zero, torch.zeros_like(scale), scale)),
                    bottom, top)
    return q, torch.where(zero, torch.ones_like(scale), scale)


def _clip_mask(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (x.abs() <= a).to(x.dtype)


class _TensorQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, num_bits, unsigned, narrow_range):  # noqa: D401 - autograd API
        ctx.save_for_backward(x, a)
        q, scale = _codes(x.detach(), a.detach(), num_bits, unsigned, narrow_range)
        ctx.mark_non_differentiable(scale)
        return q.to(x.dtype), scale

    @staticmethod
    def backward(ctx, grad_q, grad_scale):
        x, a = ctx.saved_tensors
        return grad_q * _clip_mask(x, a), None, None, None, None


class _FakeTensorQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, num_bits, unsigned, narrow_range):  # noqa: D401 - autograd API
        ctx.save_for_backward(x, a)
        q, scale = _codes(x.detach(), a.detach(), num_bits, unsigned, narrow_range)
        return (q / scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, a = ctx.saved_tensors
        return grad * _clip_mask(x, a), None, None, None, None


def tensor_quant(x: torch.Tensor, amax, num_bits: int = 8, unsigned: bool = False,
                 narrow_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, scale)``: codes ``clamp(round(x * scale), min_bound, max_bound)`` in x's dtype,
    ``scale = max_bound / amax`` (float32 or float64, amax's shape). Clipped STE gradient."""
    return _TensorQuant.apply(x, _amax_tensor(amax, x), int(num_bits), bool(unsigned),
                              bool(narrow_range))


def fake_tensor_quant(x: torch.Tensor, amax, num_bits: int = 8, unsigned: bool = False,
                      narrow_range: bool = True) -> torch.Tensor:
    """``codes / scale`` (see :func:`tensor_quant`), x's dtype; clipped STE gradient."""
    return _FakeTensorQuant.apply(x, _amax_tensor(amax, x), int(num_bits), bool(unsigned),
                                  bool(narrow_range))
