"""Float-scale ``maxmin`` (numerics.md 3.1, 4.3): symmetric or asymmetric, per tensor or channel.

* symmetric, signed:   ``scale = max(|min|, |max|) / qmax``, zero point 0 (qmax 127 at 8 bit,
  also with narrow_range);
* symmetric, unsigned: ``scale = max / (2^bw - 1)``; a per-tensor minimum below 0 is an error,
  per-channel the maximum is clipped at 0;
* asymmetric:          ``scale = (max - min) / (2^bw - 1)``, ``z = round_half_even(-min / scale)``
  (z = 0 for a constant tensor, whose scale is 0).

Scales are computed in double from the tensor's (float32) extremes. With ``BatchMode.PER_BATCH``
(the original's default) every batch gives its own (scale, z) and the history is reduced with
``calib_statistic_method``; with ``BatchMode.ACCUMULATE`` the min and max accumulate and the scale
comes from them. Both merge exactly and independently of the batch order.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..config.spec import QuantSpec
from ..errors import ConfigError
from ..numerics.params import QuantParams
from .base import BatchMode, Observer, Role, rows
from .stats import ScaleHistory

__all__ = ["maxmin_scale", "MinMaxObserver"]


def maxmin_scale(mn: Sequence[float], mx: Sequence[float], spec: QuantSpec, *,
                 per_channel: bool = False, name: str | None = None):
    """``(scales, zero_points)`` per channel from per-channel minima and maxima (host floats).

    >>> from nndct_lite.config.spec import QuantSpec, RoundMode
    >>> maxmin_scale([-1.0], [3.0], QuantSpec(symmetry=False, round_mode=RoundMode.HALF_EVEN))
    ([0.01568627450980392], [64])
    """
    r = spec.int_range
    scales, zps = [], []
    for lo, hi in zip(mn, mx):
        lo, hi = float(lo), float(hi)
        if not spec.symmetry:
            # the range always holds 0, so the zero point is a code of the range (a tensor
            # with minimum above 0, e.g. a sigmoid output, got zero point -57 from [0.5, 0.7])
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            s = (hi - lo) / (r.qmax - r.qmin)
            scales.append(s)
            zps.append(round(-lo / s) if s > 0 else 0)
        elif r.qmin < 0:
            scales.append(max(abs(lo), abs(hi)) / r.qmax)
            zps.append(0)
        else:   # unsigned symmetric: the range is [0, max]; negative values clamp to 0
            scales.append(max(hi, 0.0) / r.qmax)
            zps.append(0)
    return scales, zps


def _finite_extremes(x2: torch.Tensor):
    """Per-row min and max of the finite values; rows with none give (0, 0)."""
    finite = torch.isfinite(x2)
    inf = torch.tensor(math.inf, dtype=x2.dtype, device=x2.device)
    mn = torch.where(finite, x2, inf).amin(dim=1)
    mx = torch.where(finite, x2, -inf).amax(dim=1)
    empty = ~finite.any(dim=1)
    zero = torch.zeros((), dtype=x2.dtype, device=x2.device)
    return torch.where(empty, zero, mn), torch.where(empty, zero, mx), bool(finite.any())


class MinMaxObserver(Observer):
    """Float-scale min/max calibration (see the module docstring)."""

    def __init__(self, spec: QuantSpec, *, role: Role, axis: int | None = None,
                 batch_mode: BatchMode = BatchMode.PER_BATCH, name: str | None = None):
        if spec.is_pof2:
            raise ConfigError("MinMaxObserver needs scale_type float", where=name,
                              hint="power-of-two maxmin is Pof2Observer with scope 1")
        self.batch_mode = batch_mode
        super().__init__(spec, role=role, axis=axis, name=name)

    def _options(self) -> tuple:
        return (self.batch_mode,)

    def reset(self) -> None:
        self.history = ScaleHistory()
        self.running: tuple[list[float], list[float]] | None = None

    def _extremes(self, x: torch.Tensor):
        x2 = rows(x, self.axis)
        mn, mx = x2.amin(dim=1), x2.amax(dim=1)  # aminmax(dim=) is ~20x slower on CPU
        lo, hi = torch.stack([mn, mx]).tolist()
        if all(map(math.isfinite, lo + hi)):
            return lo, hi
        self.nonfinite_batches += 1
        mn, mx, any_finite = _finite_extremes(x2)
        if not any_finite:
            return None
        lo, hi = torch.stack([mn, mx]).tolist()
        return lo, hi

    def _observe(self, x: torch.Tensor) -> bool:
        ext = self._extremes(x)
        if ext is None:
            return False
        lo, hi = ext
        if self.batch_mode is BatchMode.ACCUMULATE:
            maxmin_scale(lo, hi, self.spec, per_channel=self.per_channel, name=self.name)
            if self.running is None:
                self.running = (lo, hi)
            else:
                self.running = ([min(a, b) for a, b in zip(self.running[0], lo)],
                                [max(a, b) for a, b in zip(self.running[1], hi)])
        else:
            self.history.add(*maxmin_scale(lo, hi, self.spec, per_channel=self.per_channel,
                                           name=self.name))
        return True

    def compute(self) -> QuantParams:
        bw, qmax = self.spec.bit_width, self.spec.int_range.qmax
        if self.batch_mode is BatchMode.ACCUMULATE:
            if self.running is None:
                return QuantParams(bw, axis=self.axis)
            s, z = maxmin_scale(*self.running, self.spec, per_channel=self.per_channel,
                                name=self.name)
            f = [v * qmax for v in s]
        else:
            red = self.history.reduce(self.spec.calib_statistic_method, qmax)
            if red is None:
                return QuantParams(bw, axis=self.axis)
            s, z, f = red
        if self.axis is None:
            return QuantParams(bw, scale=s[0], zero_point=z[0], float_max=f[0])
        return QuantParams(bw, scale=tuple(s), zero_point=tuple(z), float_max=tuple(f),
                           axis=self.axis)

    def _merge(self, other: MinMaxObserver) -> None:
        self.history.merge(other.history)
        if other.running is not None:
            if self.running is None:
                self.running = (list(other.running[0]), list(other.running[1]))
            else:
                self.running = ([min(a, b) for a, b in zip(self.running[0], other.running[0])],
                                [max(a, b) for a, b in zip(self.running[1], other.running[1])])

    def _state(self) -> dict:
        lo, hi = self.running if self.running is not None else ([], [])
        return {**self.history.state(),
                "running_min": torch.tensor(lo, dtype=torch.float64),
                "running_max": torch.tensor(hi, dtype=torch.float64)}

    def _load_state(self, state: dict) -> None:
        self.history = ScaleHistory()
        self.history.load(state)
        lo = torch.as_tensor(state["running_min"]).tolist()
        hi = torch.as_tensor(state["running_max"]).tolist()
        self.running = (lo, hi) if lo else None
