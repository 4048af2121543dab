"""The trainable quantizers QAT swaps in for the generated model's ``FakeQuantizer``s.

:class:`TrainablePof2Quantizer` (DPU, power-of-two): ``log2_t``, the log2 of the threshold,
``fix_pos = (bit_width - 1) - ceil(log2_t)``, trained with the TQT gradient (Jain et al.,
"Trained Quantization Thresholds") or kept fixed; :class:`TrainableScaleQuantizer` (CPU/GPU,
float scales): ``log_scale`` trained with the LSQ gradient (Esser et al., "Learned Step Size
Quantization") or kept fixed. Both give the input the clipped straight-through estimator (1
inside the range, 0 outside). See docs/qat.md for the formulas.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from ..numerics.fake_quant import channel_view, fake_quantize_affine, fake_quantize_pof2
from ..numerics.params import QuantParams
from ..numerics.rounding import round_tensor
from ..quant.fake_quantizer import FakeQuantizer
from ..state.modes import QuantMode

__all__ = ["TrainablePof2Quantizer", "TrainableScaleQuantizer"]


def _device_of(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _fix_pos_of(log2_t: torch.Tensor, bit_width: int):
    fp = ((bit_width - 1) - torch.ceil(log2_t.detach())).to(torch.int64)
    return int(fp) if fp.dim() == 0 else tuple(int(v) for v in fp.tolist())


def _log2_t_of(fix_pos, bit_width: int) -> torch.Tensor:
    """The middle of the log2 interval that gives ``fix_pos`` (robust to small steps)."""
    fp = torch.as_tensor(fix_pos, dtype=torch.float32)
    return (bit_width - 1) - fp - 0.5


class _TqtFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, log2_t, bit_width, qmin, qmax, mode, axis):  # noqa: D401 - autograd API
        fp = _fix_pos_of(log2_t, bit_width)
        ctx.save_for_backward(x)
        ctx.info = (fp, qmin, qmax, mode, axis, log2_t.shape)
        return fake_quantize_pof2(x.detach(), fp, qmin, qmax, mode, axis)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        fp, qmin, qmax, mode, axis, t_shape = ctx.info
        if axis is None:
            mult: Any = math.ldexp(1.0, fp)
        else:
            mult = channel_view(torch.exp2(torch.tensor(fp, dtype=torch.float64)).to(x.dtype),
                                x.dim(), axis).to(x.device)
        v = x * mult
        inside = (v >= qmin) & (v <= qmax)
        gx = grad * inside.to(grad.dtype)
        gt = None
        if ctx.needs_input_grad[1]:
            r = round_tensor(v, mode)
            d = torch.where(inside, r - v, torch.where(v < qmin, float(qmin), float(qmax)))
            g = grad * d * (math.log(2.0) / mult)
            if axis is None:
                gt = g.sum().reshape(t_shape)
            else:
                ax = axis % x.dim()
                gt = g.sum(dim=[i for i in range(x.dim()) if i != ax]).reshape(t_shape)
        return gx, gt, None, None, None, None, None


class TrainablePof2Quantizer(FakeQuantizer):
    """A power-of-two ``FakeQuantizer`` whose fix position comes from ``log2_t`` (see the module
    docstring). ``params`` reads the current fix position; assigning ``params`` moves it."""

    def __init__(self, base: FakeQuantizer, params: QuantParams | None, learn: bool):
        super().__init__(base.key, base.spec, base.role, base.axis, base.target)
        self.relu_fused = base.relu_fused
        self.mode = QuantMode.TEST
        if params is None or params.fix_pos is None:
            self.register_buffer("log2_t", None)
            return
        t = _log2_t_of(params.fix_pos, self.spec.bit_width).to(_device_of(base))
        if learn:
            self.log2_t = nn.Parameter(t)
        else:
            self.register_buffer("log2_t", t)

    @property
    def params(self) -> QuantParams | None:
        t = self.__dict__.get("_parameters", {}).get("log2_t")
        if t is None:
            t = self.__dict__.get("_buffers", {}).get("log2_t")
        if t is None:
            return None
        fp = _fix_pos_of(t, self.spec.bit_width)
        return QuantParams(self.spec.bit_width, fix_pos=fp,
                           axis=self.axis if isinstance(fp, tuple) else None)

    @params.setter
    def params(self, value: QuantParams | None) -> None:
        t = self.__dict__.get("_parameters", {}).get("log2_t")
        if t is None:
            t = self.__dict__.get("_buffers", {}).get("log2_t")
        if t is None or value is None or value.fix_pos is None:
            return      # FakeQuantizer.__init__ sets None; an unquantized point stays so
        with torch.no_grad():
            t.copy_(_log2_t_of(value.fix_pos, self.spec.bit_width).reshape(t.shape))

    def set_mode(self, mode: QuantMode) -> None:
        self.mode = QuantMode.TEST if mode is not QuantMode.FLOAT else mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.log2_t
        if self.mode is QuantMode.FLOAT or t is None or not isinstance(x, torch.Tensor) \
                or not x.is_floating_point() or x.numel() == 0:
            return x
        if self.relu_fused:          # the ReLU module handed its input straight here
            x = torch.relu(x)
        r = self.spec.int_range
        axis = self.axis if t.dim() else None
        return _TqtFakeQuant.apply(x, t, self.spec.bit_width, r.qmin, r.qmax,
                                   self.spec.round_mode, axis)

    def extra_repr(self) -> str:
        p = self.params
        return f"{self.key!r}, fix_pos={None if p is None else p.fix_pos}, " \
               f"learned={isinstance(self.log2_t, nn.Parameter)}"


class _LsqFakeQuant(torch.autograd.Function):
    """Float-scale fake quant; gradients: clipped STE for x, LSQ for ``log_s``."""

    @staticmethod
    def forward(ctx, x, log_s, zero_point, qmin, qmax, mode, axis):  # noqa: D401 - autograd API
        s = torch.exp(log_s.detach())
        scale = float(s) if axis is None else s
        ctx.save_for_backward(x)
        ctx.info = (s, zero_point, qmin, qmax, mode, axis, log_s.shape)
        return fake_quantize_affine(x.detach(), scale, zero_point, qmin, qmax, mode, axis)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s, zero_point, qmin, qmax, mode, axis, s_shape = ctx.info
        if axis is None:
            st: Any = float(s)
            z: Any = int(zero_point)
        else:
            st = channel_view(s.to(x.dtype), x.dim(), axis)
            z = channel_view(torch.as_tensor(zero_point, dtype=x.dtype, device=x.device),
                             x.dim(), axis)
        v = x / st
        lo, hi = qmin - z, qmax - z
        inside = (v >= lo) & (v <= hi)
        gx = grad * inside.to(grad.dtype)
        gs = None
        if ctx.needs_input_grad[1]:
            d = torch.where(inside, round_tensor(v, mode) - v,
                            torch.where(v < lo, lo + v * 0, hi + v * 0))
            g = grad * d * st
            if axis is None:
                gs = g.sum().reshape(s_shape)
            else:
                ax = axis % x.dim()
                gs = g.sum(dim=[i for i in range(x.dim()) if i != ax]).reshape(s_shape)
            gs = gs.to(s.dtype)
        return gx, gs, None, None, None, None, None


class TrainableScaleQuantizer(FakeQuantizer):
    """A float-scale ``FakeQuantizer`` whose scale is ``exp(log_scale)`` (float64, one value or
    one per channel), learned with LSQ or fixed; the zero point stays as calibrated. ``params``
    reads the current scale; assigning ``params`` sets it."""

    def __init__(self, base: FakeQuantizer, params: QuantParams | None, learn: bool):
        super().__init__(base.key, base.spec, base.role, base.axis, base.target)
        self.relu_fused = base.relu_fused
        self.mode = QuantMode.TEST
        self.zero_point: int | tuple[int, ...] = 0
        if params is None or params.scale is None:
            self.register_buffer("log_scale", None)
            return
        self.zero_point = params.zero_point
        t = torch.log(torch.as_tensor(params.scale, dtype=torch.float64)).to(_device_of(base))
        if learn:
            self.log_scale = nn.Parameter(t)
        else:
            self.register_buffer("log_scale", t)

    def _log_scale(self) -> torch.Tensor | None:
        t = self.__dict__.get("_parameters", {}).get("log_scale")
        if t is None:
            t = self.__dict__.get("_buffers", {}).get("log_scale")
        return t

    @property
    def params(self) -> QuantParams | None:
        t = self._log_scale()
        if t is None:
            return None
        qmax = self.spec.int_range.qmax
        s = torch.exp(t.detach()).cpu()
        if s.dim() == 0:
            zp = int(self.zero_point) if isinstance(self.zero_point, int) \
                else int(self.zero_point[0])
            return QuantParams(self.spec.bit_width, scale=float(s), zero_point=zp,
                               float_max=float(s) * qmax)
        scales = tuple(float(v) for v in s.tolist())
        zps = self.zero_point if isinstance(self.zero_point, tuple) \
            else (int(self.zero_point),) * len(scales)
        return QuantParams(self.spec.bit_width, scale=scales, zero_point=zps,
                           float_max=tuple(v * qmax for v in scales),
                           axis=self.axis)

    @params.setter
    def params(self, value: QuantParams | None) -> None:
        t = self._log_scale()
        if t is None or value is None or value.scale is None:
            return      # FakeQuantizer.__init__ sets None; an unquantized point stays so
        with torch.no_grad():
            t.copy_(torch.log(torch.as_tensor(value.scale, dtype=torch.float64)).reshape(t.shape))
        self.zero_point = value.zero_point

    def set_mode(self, mode: QuantMode) -> None:
        self.mode = QuantMode.TEST if mode is not QuantMode.FLOAT else mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self._log_scale()
        if self.mode is QuantMode.FLOAT or t is None or not isinstance(x, torch.Tensor) \
                or not x.is_floating_point() or x.numel() == 0:
            return x
        if self.relu_fused:
            x = torch.relu(x)
        r = self.spec.int_range
        axis = self.axis if t.dim() else None
        return _LsqFakeQuant.apply(x, t, self.zero_point, r.qmin, r.qmax, self.spec.round_mode,
                                   axis)

    def extra_repr(self) -> str:
        p = self.params
        return f"{self.key!r}, scale={None if p is None else p.scale}, " \
               f"learned={isinstance(self._log_scale(), nn.Parameter)}"
