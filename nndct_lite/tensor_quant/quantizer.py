"""``QuantDescriptor``, ``TensorQuantizer`` and the ``QuantConv2d`` / ``QuantLinear`` layers.

A ``TensorQuantizer`` fake-quantizes with an ``amax`` (per tensor, or per channel along
``axis``), collects statistics with the project's observers when calibrating
(``calib_method="max"``: :class:`~nndct_lite.calib.MinMaxObserver` with a running min/max;
``"histogram"``: :class:`~nndct_lite.calib.HistogramObserver` with one accumulated histogram)
and turns them into an amax with ``load_calib_amax(method)``.

``learn_amax=True`` makes ``amax`` a Parameter trained with the LSQ gradient of the step
``s = amax / max_bound`` (Esser et al., "Learned Step Size Quantization"), expressed for amax:
``d out / d amax = (round(v) - v) / max_bound`` where ``v = x * max_bound / amax`` is inside the
range and ``code / max_bound`` where it is clipped (the clipped code). The input keeps its clipped
STE gradient. LSQ's gradient scale ``1/sqrt(N * max_bound)`` is not applied: scale the learning
rate of the amax parameters instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..calib import BatchMode, HistogramObserver, MinMaxObserver, Role, search_amax
from ..config.spec import CalibMethod, QuantSpec, ScaleType
from ..numerics.fake_quant import channel_view
from ..numerics.rounding import RoundMode
from .functions import ZERO_AMAX, fake_tensor_quant, max_bound, min_bound, tensor_quant

__all__ = ["QuantDescriptor", "TensorQuantizer", "QuantConv2d", "QuantLinear",
           "fake_tensor_quant_learned"]

_CALIB_METHODS = ("max", "histogram")
_AMAX_METHODS = ("max", "percentile", "mse", "entropy")


@dataclass(frozen=True)
class QuantDescriptor:
    """How a :class:`TensorQuantizer` quantizes.

    ``axis``: None per tensor, an int for one amax per index along that axis (0: output channels
    of a conv/linear weight). ``amax``: a fixed initial amax (else calibrate). ``fake_quant``:
    return ``codes / scale`` (True) or the codes (False). ``calib_method``: which statistics
    calibration collects ("max" or "histogram").
    """

    num_bits: int = 8
    axis: int | None = None
    amax: float | None = None
    unsigned: bool = False
    narrow_range: bool = True
    calib_method: str = "max"
    fake_quant: bool = True
    learn_amax: bool = False

    def __post_init__(self) -> None:
        max_bound(self.num_bits, self.unsigned)   # checks num_bits
        if self.calib_method not in _CALIB_METHODS:
            raise ValueError(f"calib_method must be one of {_CALIB_METHODS}, "
                             f"got {self.calib_method!r}")
        if self.axis is not None and not isinstance(self.axis, int):
            raise ValueError(f"axis must be None or one int, got {self.axis!r}")
        if self.calib_method == "histogram" and self.axis is not None:
            raise ValueError("histogram calibration is per tensor: use calib_method='max' "
                             "with an axis")
        if self.amax is not None and not self.amax >= 0:
            raise ValueError(f"amax must be >= 0, got {self.amax}")


class _LearnedAmaxFakeQuant(torch.autograd.Function):
    """Fake quant with the clipped STE for x and the LSQ gradient for amax (module docstring)."""

    @staticmethod
    def forward(ctx, x, a, num_bits, unsigned, narrow_range):  # noqa: D401 - autograd API
        top = max_bound(num_bits, unsigned)
        bottom = min_bound(num_bits, unsigned, narrow_range)
        a = a.detach().clamp_min(ZERO_AMAX)
        scale = torch.div(a.new_full((), float(top)), a)
        q = torch.clamp(torch.round(x.detach() * scale), bottom, top)
        ctx.save_for_backward(x, a)
        ctx.bounds = (bottom, top)
        return (q / scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, a = ctx.saved_tensors
        bottom, top = ctx.bounds
        v = x * torch.div(a.new_full((), float(top)), a)
        r = torch.round(v)
        inside = (r >= bottom) & (r <= top)
        gx = grad * (x.abs() <= a).to(grad.dtype)
        da = torch.where(inside, (r - v) / top, r.clamp(bottom, top) / top) * grad
        # reduce to amax's shape (amax broadcasts against x)
        while da.dim() > a.dim():
            da = da.sum(0)
        for d in range(a.dim()):
            if a.shape[d] == 1 and da.shape[d] != 1:
                da = da.sum(d, keepdim=True)
        return gx, da.reshape(a.shape), None, None, None


def fake_tensor_quant_learned(x: torch.Tensor, amax: torch.Tensor, num_bits: int = 8,
                              unsigned: bool = False, narrow_range: bool = True) -> torch.Tensor:
    """``fake_tensor_quant`` whose ``amax`` (a tensor) also gets the LSQ gradient."""
    return _LearnedAmaxFakeQuant.apply(x, amax, int(num_bits), bool(unsigned),
                                       bool(narrow_range))


def _calib_spec(desc: QuantDescriptor, method: CalibMethod, percentile: float = 99.99
                ) -> QuantSpec:
    return QuantSpec(bit_width=desc.num_bits, method=method, round_mode=RoundMode.HALF_EVEN,
                     symmetry=True, signed=not desc.unsigned, narrow_range=desc.narrow_range,
                     scale_type=ScaleType.FLOAT, percentage=percentile)


class TensorQuantizer(nn.Module):
    """Quantizes one tensor as its :class:`QuantDescriptor` says; see the module docstring.

    States: quantization on/off (``enable()`` / ``disable()``), calibration on/off
    (``enable_calib()`` / ``disable_calib()``). While calibrating, tensors are observed and
    returned unquantized unless quantization is on and an amax is set.
    """

    amax: torch.Tensor | None     # a buffer, or a Parameter with learn_amax

    def __init__(self, desc: QuantDescriptor = QuantDescriptor()):
        super().__init__()
        self.desc = desc
        self._quant = True
        self._calib = False
        self._observer: MinMaxObserver | HistogramObserver | None = None
        self._running_max: float | None = None    # exact max|x|, beside the histogram
        if desc.learn_amax:
            init = torch.tensor(1.0 if desc.amax is None else float(desc.amax))
            self.amax = nn.Parameter(init)
        else:
            self.register_buffer("amax", None if desc.amax is None
                                 else torch.tensor(float(desc.amax)))

    # ------------------------------------------------------------------ switches
    def enable(self) -> None:
        self._quant = True

    def disable(self) -> None:
        self._quant = False

    enable_quant = enable
    disable_quant = disable

    @property
    def quant_enabled(self) -> bool:
        return self._quant

    def enable_calib(self) -> None:
        """Start (or continue) collecting statistics."""
        self._calib = True
        if self._observer is None:
            d = self.desc
            if d.calib_method == "max":
                self._observer = MinMaxObserver(_calib_spec(d, CalibMethod.MAXMIN),
                                                role=Role.ACTIVATION, axis=d.axis,
                                                batch_mode=BatchMode.ACCUMULATE)
            else:
                self._observer = HistogramObserver(_calib_spec(d, CalibMethod.PERCENTILE),
                                                   role=Role.ACTIVATION,
                                                   batch_mode=BatchMode.ACCUMULATE)

    def disable_calib(self) -> None:
        self._calib = False

    def reset_calib(self) -> None:
        """Forget the collected statistics."""
        self._observer = None
        self._running_max = None

    @property
    def observer(self):
        return self._observer

    # ------------------------------------------------------------------ amax
    def load_calib_amax(self, method: str | None = None, percentile: float = 99.99) -> None:
        """Set ``amax`` from the collected statistics with ``method``: "max" (the default for
        "max" calibration), or "percentile" / "mse" / "entropy" (histogram calibration; the
        default there is "percentile")."""
        obs = self._observer
        if obs is None or not obs.batches:
            raise RuntimeError("load_calib_amax() needs statistics: call enable_calib(), "
                               "forward some data, then load_calib_amax()")
        hist = isinstance(obs, HistogramObserver)
        method = method or ("percentile" if hist else "max")
        if method not in _AMAX_METHODS:
            raise ValueError(f"method must be one of {_AMAX_METHODS}, got {method!r}")
        if method == "max":
            values: list[float]
            if isinstance(obs, HistogramObserver):
                values = [self._running_max or 0.0]
            elif obs.running is None:
                values = [0.0]
            elif self.desc.unsigned:
                values = [max(b, 0.0) for b in obs.running[1]]
            else:
                lo, hi = obs.running
                values = [max(abs(a), abs(b)) for a, b in zip(lo, hi)]
            amax = torch.tensor(values if self.desc.axis is not None else values[0],
                                dtype=torch.float64)
        else:
            if not isinstance(obs, HistogramObserver):
                raise ValueError(f"method {method!r} needs the histogram: build the quantizer "
                                 "with QuantDescriptor(calib_method='histogram')")
            amax = torch.tensor(self._histogram_amax(obs, method, percentile),
                                dtype=torch.float64)
        self._set_amax(amax.float())

    @staticmethod
    def _histogram_amax(obs: HistogramObserver, method: str, percentile: float) -> float:
        cut = obs.hist.cropped()
        if cut is None or obs.hist.exp is None:
            return 0.0
        h, edges = cut
        if h.size < 2:
            return float(edges[-1])
        spec = obs.spec.with_(method=CalibMethod(method), percentage=percentile)
        n = h.size
        return search_amax(h, edges, spec, start_bin=n * 3 // 4, stride=max(1, n // 128))

    def _set_amax(self, value: torch.Tensor) -> None:
        dev = self.amax.device if self.amax is not None else None
        value = value.to(dev) if dev is not None else value
        if isinstance(self.amax, nn.Parameter):
            with torch.no_grad():
                if self.amax.shape != value.shape:
                    self.amax = nn.Parameter(value.clone())
                else:
                    self.amax.copy_(value)
        else:
            self.amax = value.clone()

    # ------------------------------------------------------------------ forward
    def _observe(self, x: torch.Tensor) -> None:
        obs = self._observer
        assert obs is not None
        obs.observe(x.detach())
        if isinstance(obs, HistogramObserver) and x.numel():
            finite = x.detach()[torch.isfinite(x.detach())]
            if finite.numel():
                m = float(finite.abs().max())
                self._running_max = m if self._running_max is None else max(self._running_max, m)

    def _amax_for(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if self.desc.axis is not None and a.dim() == 1:
            a = channel_view(a, x.dim(), self.desc.axis)
        return a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._calib:
            self._observe(x)
        if not self._quant or self.amax is None:
            if self._quant and not self._calib:
                raise RuntimeError("TensorQuantizer has no amax: calibrate it "
                                   "(enable_calib(), forward, load_calib_amax()) or give "
                                   "QuantDescriptor(amax=...)")
            return x
        d = self.desc
        a = self._amax_for(x, self.amax)
        if not d.fake_quant:
            return tensor_quant(x, a, d.num_bits, d.unsigned, d.narrow_range)[0]
        if isinstance(self.amax, nn.Parameter):
            return fake_tensor_quant_learned(x, a, d.num_bits, d.unsigned, d.narrow_range)
        return fake_tensor_quant(x, a, d.num_bits, d.unsigned, d.narrow_range)

    def extra_repr(self) -> str:
        d = self.desc
        amax = None if self.amax is None else (
            f"{float(self.amax):.6g}" if self.amax.numel() == 1 else f"[{self.amax.numel()}]")
        return (f"num_bits={d.num_bits}, axis={d.axis}, unsigned={d.unsigned}, "
                f"narrow_range={d.narrow_range}, amax={amax}, quant={self._quant}, "
                f"calib={self._calib}")


_DEFAULT_INPUT = QuantDescriptor()
_DEFAULT_WEIGHT = QuantDescriptor(axis=0)


class _QuantLayer:
    def _init_quantizers(self, quant_desc_input: QuantDescriptor | None,
                         quant_desc_weight: QuantDescriptor | None) -> None:
        self.input_quantizer = TensorQuantizer(quant_desc_input or _DEFAULT_INPUT)
        self.weight_quantizer = TensorQuantizer(quant_desc_weight or _DEFAULT_WEIGHT)


class QuantConv2d(_QuantLayer, nn.Conv2d):
    """``nn.Conv2d`` on the fake-quantized input and weight (weights per output channel by
    default); the bias stays float."""

    def __init__(self, *args, quant_desc_input: QuantDescriptor | None = None,
                 quant_desc_weight: QuantDescriptor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quantizers(quant_desc_input, quant_desc_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight),
                                  self.bias)


class QuantLinear(_QuantLayer, nn.Linear):
    """``nn.Linear`` on the fake-quantized input and weight (weights per output feature by
    default); the bias stays float."""

    def __init__(self, *args, quant_desc_input: QuantDescriptor | None = None,
                 quant_desc_weight: QuantDescriptor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quantizers(quant_desc_input, quant_desc_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)
