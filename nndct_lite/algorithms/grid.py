"""The calibrated grid of a layer's weight quantizer, as the rounding methods need it.

GPTQ and AdaRound choose, for every weight, one of the values the layer's own weight quantizer can
produce; they never change the grid (its fix position or scale comes from calibration). This
module gives them that grid in three forms: the quantizer itself (``snap``: round to the nearest
grid value exactly as the layer does), and the grid in code units per output channel (``step``,
``zero``, ``qmin``/``qmax``) for rounding down or up.

Every value written back goes through ``snap``, so a tuned weight is a fixed point of the layer's
quantizer: the quantizer returns it unchanged and every DPU rule of the calibrated fix positions
still holds."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..numerics.fake_quant import channel_view
from ..quant.fake_quantizer import FakeQuantizer, apply_params, quantizer_of

__all__ = ["WeightGrid", "weight_grid"]


@dataclass(frozen=True)
class WeightGrid:
    """The grid of one weight tensor. ``step``, ``zero`` broadcast against the weight."""

    quantizer: FakeQuantizer
    step: torch.Tensor     # grid spacing (scale), per output channel or one value
    zero: torch.Tensor     # zero point in codes
    qmin: int
    qmax: int
    axis: int | None       # the per-channel axis of the weight (None: per tensor)

    def snap(self, w: torch.Tensor) -> torch.Tensor:
        """Round ``w`` (the weight's shape) to the grid, exactly as the layer's quantizer does."""
        with torch.no_grad():
            return apply_params(w.detach(), self.quantizer.params, self.quantizer.spec)

    def codes_floor(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(floor(w / step), w / step - floor)``: the code below each weight and how far above
        it the weight lies, in [0, 1)."""
        u = w.detach() / self.step
        low = torch.floor(u)
        return low, u - low

    def value(self, codes: torch.Tensor) -> torch.Tensor:
        """Grid values of integer ``codes`` (relative codes, before the zero point), clamped to
        the integer range; differentiable in ``codes``."""
        lo = self.qmin - self.zero
        hi = self.qmax - self.zero
        return torch.maximum(torch.minimum(codes, hi), lo) * self.step


def weight_grid(layer: nn.Module) -> WeightGrid | None:
    """The calibrated grid of ``layer.weight`` (None: no weight quantizer, or never calibrated)."""
    wq = quantizer_of(layer, "weight_q")
    weight = getattr(layer, "weight", None)
    if wq is None or wq.params is None or not wq.params.is_set or weight is None:
        return None
    p, r = wq.params, wq.spec.int_range
    like = weight.detach()
    if p.fix_pos is not None:
        fps = torch.as_tensor(p.fix_pos, dtype=torch.float64)
        step64 = torch.exp2(-fps)
        zero64 = torch.zeros_like(step64)
    else:
        step64 = torch.as_tensor(p.scale, dtype=torch.float64)
        zero64 = torch.as_tensor(p.zero_point, dtype=torch.float64).expand_as(step64)
    step = step64.to(like.dtype)
    zero = zero64.to(like.dtype)
    if p.axis is not None:
        step = channel_view(step, like.dim(), p.axis)
        zero = channel_view(zero, like.dim(), p.axis)
    return WeightGrid(wq, step, zero, r.qmin, r.qmax, p.axis)
