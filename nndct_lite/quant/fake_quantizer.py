"""``FakeQuantizer``: the runtime module at every quantization point.

It owns a spec (what to do), an observer (statistics, calib mode only) and the current
``QuantParams`` (the numbers). Mode FLOAT passes tensors through, CALIB observes then
fake-quantizes with the running parameters (as the original does batch by batch), TEST only
fake-quantizes with fixed parameters.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..calib import ObserverLike, Role, Scratch, make_observer
from ..config.spec import QuantSpec, TargetDevice
from ..numerics.fake_quant import (fake_quantize_affine, fake_quantize_pof2,
                                   fake_quantize_pof2_, ste)
from ..state.modes import QuantMode
from .params import QuantParams

__all__ = ["FakeQuantizer", "apply_params", "quantizer_of"]


def apply_params(x: torch.Tensor, params: QuantParams | None, spec: QuantSpec) -> torch.Tensor:
    """Fake-quantize ``x`` with ``params`` (identity when the params are unset)."""
    if params is None or not params.is_set:
        return x
    r = spec.int_range
    if params.fix_pos is not None:
        return ste(fake_quantize_pof2, x, params.fix_pos, r.qmin, r.qmax, spec.round_mode,
                   params.axis)
    return ste(fake_quantize_affine, x, params.scale, params.zero_point, r.qmin, r.qmax,
               spec.round_mode, params.axis)


class FakeQuantizer(nn.Module):
    """Quantization point ``key`` (a node name, or a parameter name)."""

    def __init__(self, key: str, spec: QuantSpec, role: Role, axis: int | None = None,
                 target: TargetDevice | None = None):
        super().__init__()
        self.key = key
        self.target = target
        self.spec = spec
        self.role = role
        self.axis = axis
        self.mode = QuantMode.FLOAT
        self.params: QuantParams | None = None
        self.observer: ObserverLike | None = None
        self.keep_params = False  # after fast finetune: calibration re-uses the fix positions
        self.nonfinite_batches = 0
        # test-mode fast path, set by the builder: the input tensor is owned (fresh, single
        # consumer) so it may be quantized in place; ``relu_fused``: the ReLU before this
        # quantizer was skipped, so clamp the codes at 0 (clamp(R(y), 0, qmax) == Q(relu(y)))
        self.inplace = False
        self.relu_fused = False
        self.scratch: Scratch | None = None   # the model's shared observer work buffer
        # ``datatype`` bfloat16 / float16 / float32: a round trip through that float type (an
        # identity for float32) instead of integer codes; never calibrated, no params
        self.cast: torch.dtype | None = None if spec.is_int else spec.datatype.torch_dtype

    def set_mode(self, mode: QuantMode) -> None:
        self.mode = mode
        if mode is QuantMode.CALIB and self.observer is None and not self.keep_params \
                and self.cast is None:
            obs = make_observer(self.spec, role=self.role, axis=self.axis,
                                target=self.target, name=self.key)
            obs.scratch = self.scratch
            self.observer = obs

    def observe(self, x: torch.Tensor) -> None:
        if self.keep_params:
            return
        obs = self.observer
        if obs is None:
            raise RuntimeError(f"quantizer {self.key} observes without an observer: it was not "
                               "put in calib mode")
        obs.observe(x.detach())
        self.nonfinite_batches = getattr(obs, "nonfinite_batches", 0)
        if self.role is Role.PARAM and self.params is not None and self.params.is_set:
            return
        self.params = obs.compute()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is QuantMode.FLOAT or not isinstance(x, torch.Tensor) \
                or not x.is_floating_point() or x.numel() == 0:
            return x
        calib = self.mode is QuantMode.CALIB
        if self.cast is not None:
            return self._cast(x, self.relu_fused and not calib)
        if calib:
            self.observe(x)
        p = self.params
        # test mode skipped a fused ReLU, so it clamps the codes at 0; in calibration the ReLU
        # still ran, and its output is fresh or the single-use tensor it rectified in place
        fused = self.relu_fused and not calib
        if self.inplace and p is not None and type(p.fix_pos) is int and not x.requires_grad:
            r = self.spec.int_range
            lo = max(r.qmin, 0) if fused else r.qmin
            return fake_quantize_pof2_(x, p.fix_pos, lo, r.qmax, self.spec.round_mode)
        if fused:
            x = torch.relu(x)
        return apply_params(x, p, self.spec)

    def _cast(self, x: torch.Tensor, fused: bool) -> torch.Tensor:
        if fused:
            x = torch.relu(x)
        cast = self.cast
        if cast is None or cast == x.dtype:
            return x
        return x.to(cast).to(x.dtype)

    def extra_repr(self) -> str:
        if self.cast is not None:
            return f"{self.key!r}, mode={self.mode.value}, datatype={self.spec.datatype.value}"
        return f"{self.key!r}, mode={self.mode.value}, params={self.params}"


def quantizer_of(mod: nn.Module, attr: str) -> FakeQuantizer | None:
    """The quantizer ``mod`` holds as ``attr`` (``weight_q``, ``bias_q``, ``out_q``), if any."""
    q = mod._modules.get(attr)
    if q is None:
        return None
    if not isinstance(q, FakeQuantizer):
        raise TypeError(f"{attr} of {type(mod).__name__} is a {type(q).__name__}, "
                        "not a FakeQuantizer")
    return q
