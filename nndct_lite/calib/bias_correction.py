"""Bias correction (numerics.md 10): during calibration, move each conv/linear bias against the
per-channel mean error that quantization adds to the layer's output.

The state machine per layer: running averages ``E`` (of the quantization efficiency
``eff = 1.25 * log10(mean(out_f^2) / mean(err^2))``) and ``D`` (of its deviation); rate 0.05,
halved for a batch when ``E > 4``; the layer stops for good when ``E > 4.3``, ``D/E < 0.05`` or
``|dev - D/dev| < 0.05``. The bias is snapped to its grid only on the first batch; later moves
accumulate in float (the original's behaviour, T29).

The batch statistics (``mean(out_f^2)``, ``mean(err^2)``, the channel means of ``err``) come from
one fused pass (``numerics.native.bc_stats``, double accumulation) where the kernels are
available, else from torch ops in float32; the two agree to ~1e-7 relative."""
from __future__ import annotations

import math
from typing import Callable

import torch

from .base import dense_flat
from ..numerics import native

__all__ = ["BiasCorrector"]


def channel_mean(t: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """``t.mean(dim=dims)``; for a channels-last 4-D tensor with ``dims`` (0, 2, 3), one
    matrix-vector product over the ``(N*H*W, C)`` view (the generic reduction is ~3x slower
    there). Float32 sums in another order: the same mean to ~1e-7 relative."""
    if t.dim() == 4 and list(dims) == [0, 2, 3] and t.dtype in (torch.float32, torch.float64) \
            and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        rows = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
        ones = torch.ones(rows.shape[0], dtype=t.dtype, device=t.device)
        return (ones @ rows) / rows.shape[0]
    return t.mean(dim=dims)


def _flat32(t: torch.Tensor) -> torch.Tensor:
    f = dense_flat(t)
    return f if f.dtype in (torch.float32, torch.float64) else f.float()


class BiasCorrector:
    """Per-layer bias-correction state; the layer module drives it batch by batch."""

    def __init__(self, rate: float = 0.05):
        self.rate = rate
        self.E = 0.0
        self.D = 0.0
        self.stopped = False
        self.steps = 0
        self.float_bias: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def float_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight

    def current_bias(self, bias: torch.Tensor,
                     bias_q: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The bias the quantized layer uses now: Q(b_f) on the first batch, then b_k."""
        if self.bias is None:
            self.float_bias = bias.detach().clone()
            self.bias = bias_q(self.float_bias).detach().clone()
        return self.bias

    def step(self, out_q: torch.Tensor, out_f: torch.Tensor, dims: list[int], *,
             reuse_out_f: bool = False) -> None:
        """One batch: update the statistics and, unless stopped, the bias. With
        ``reuse_out_f`` (the caller made ``out_f`` for this call) it is overwritten."""
        bias = self.bias
        if self.stopped or bias is None:
            return
        fused = native.bc_stats(out_q, out_f, dims)
        if fused is not None:
            self.update(fused[1], fused[0], fused[2])
            return
        signal, noise, err = self._powers(out_q, out_f, reuse_out_f)
        rate = self._advance(signal, noise)
        if rate is not None:   # the channel means only when they are used
            self.bias = bias - rate * channel_mean(err, dims)
            self.steps += 1

    def measure(self, out_q: torch.Tensor, out_f: torch.Tensor, dims: list[int],
                reuse_out_f: bool = False) -> tuple[float, float, torch.Tensor | None]:
        """``(noise, signal, mean_err)`` of one batch, as ``step`` computes them (for callers
        that apply the update later, e.g. a step of several ranks; ``update`` applies it)."""
        fused = native.bc_stats(out_q, out_f, dims)
        mean_err: torch.Tensor | None
        if fused is not None:
            signal, noise, mean_err = fused
        else:
            signal, noise, err = self._powers(out_q, out_f, reuse_out_f)
            mean_err = None
        usable = noise != 0.0 and signal != 0.0 and math.isfinite(noise)
        if not usable:
            return noise, signal, None
        return noise, signal, mean_err if mean_err is not None else channel_mean(err, dims)

    def update(self, noise: float, signal: float, mean_err: torch.Tensor | None) -> None:
        """``step``'s state machine and bias move on a ``measure`` result."""
        rate = self._advance(signal, noise)
        if rate is not None:
            # a usable measurement (the only kind that moves) has its channel means
            if mean_err is None or self.bias is None:
                raise ValueError("a bias move needs the channel mean error and a current bias")
            self.bias = self.bias - rate * mean_err.to(device=self.bias.device)
            self.steps += 1

    @staticmethod
    def _powers(out_q: torch.Tensor, out_f: torch.Tensor,
                reuse_out_f: bool) -> tuple[float, float, torch.Tensor]:
        n = out_f.numel()
        f = _flat32(out_f)
        signal = float(torch.dot(f, f)) / n
        # -out_f + out_q is out_q - out_f bit for bit
        err = out_f.neg_().add_(out_q) if reuse_out_f and out_f is not out_q else out_q - out_f
        e = _flat32(err)
        return signal, float(torch.dot(e, e)) / n, err

    def _advance(self, signal: float, noise: float) -> float | None:
        """Advance ``E``/``D``; the rate of this batch's move, or None once stopped."""
        if noise == 0.0 or signal == 0.0 or not math.isfinite(noise):
            self.stopped = True
            return None
        eff = 1.25 * math.log10(signal / noise)
        dev = abs(eff - self.E)
        if dev == 0.0:
            self.stopped = True
            return None
        self.E = (4.0 * self.E + eff) / 5.0
        self.D = (4.0 * self.D + dev) / 5.0
        rate = self.rate / 2.0 if self.E > 4.0 else self.rate
        if self.E > 4.3 or self.D / self.E < 0.05 or abs(dev - self.D / dev) < 0.05:
            self.stopped = True
            return None
        return rate

    def correction(self) -> torch.Tensor | None:
        """``b_f - b_final`` (what bias_corr.pth stores), or None if the layer never ran."""
        if self.float_bias is None or self.bias is None:   # both are set on the first batch
            return None
        return (self.float_bias - self.bias).detach()
